"""The checks after every simulation run: what must hold whatever the faults were.

1. every canonical epoch whose window closed is batched exactly once (batch ids 1..n, each
   once, `BatchCountKey` = n);
2. each batch holds exactly the well-formed submissions whose header is a block of the
   window on the canonical chain, grouped by project (windows closed by a block a reorg
   later orphaned are irreversible at CONFIRMATIONS=0: counted, checked for exactly-once);
3. no finalizer-queue item lost or duplicated: consumed + still queued = pushed by the
   committed effects (the journal's replay);
4. exactly one submitBatchSize per batched epoch (identical retries of an HTTP call are
   at-least-once delivery and counted apart);
5. a run with crashes, outages and slow relayers has the digest of the clean run of the
   same seed (checked by the harness, which runs that twin);
6. no commit after lease loss (`failover`): an active paused past its lease that resumes
   after a standby took over is refused its commit (`LeaseLost`, nothing of its step
   written) and sends no relayer call or alert.

A reorg deeper than MAX_REORG_DEPTH (`deepreorg`) has one documented consequence: an epoch
released in a replaced block was batched on the chain that no longer exists, and is batched
again from the new chain (the core forgets it, `core.history`). Those earlier generations'
queue items stay pushed (they cannot be undone) and are taken off before checks 1, 2 and 4
(`superseded`, from the journal's replay): the new chain's epoch must still be batched
exactly once, with exactly its window's submissions, with one submitBatchSize of its own.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from seqcollector.core.addresses import checksum
from sim.faults import FenceCheck
from sim.keysum import KeySum
from sim.record import InvariantResult
from sim.timeline import Superseded

Epoch = tuple[str, int]  # (lowercase market, epoch)


def batched_exactly_once(
    canonical: set[Epoch],
    batch_ids: dict[Epoch, list[int]],
    batch_counts: dict[Epoch, int],
    superseded: dict[Epoch, Superseded] | None = None,
    rebatch: list[str] | None = None,
) -> InvariantResult:
    """`batch_ids`: per epoch, the BatchID of every queue item seen (consumed or queued);
    `superseded`: the earlier generations' items of epochs batched again after a deep reorg;
    `rebatch`: the problems `rebatched_after_deep_reorgs` found."""
    problems: list[str] = []
    gone = superseded or {}
    problems += rebatch or []
    for epoch in sorted(canonical):
        count = batch_counts.get(epoch)
        ids = _without(batch_ids.get(epoch, []), gone[epoch].batch_ids if epoch in gone else [])
        if count is None:
            problems.append(f"{_name(epoch)} never batched")
        elif ids != list(range(1, count + 1)):
            problems.append(f"{_name(epoch)} batch ids {ids}, BatchCountKey {count}")
    extra = sorted(set(batch_ids) - set(batch_counts))
    problems += [f"{_name(e)} has queue items but no BatchCountKey" for e in extra]
    return _result("every canonical epoch batched exactly once", problems, len(canonical))


def rebatched_after_deep_reorgs(
    required: set[Epoch], opened_hash: dict[Epoch, str], canonical_release: dict[Epoch, str]
) -> list[str]:
    """The epochs of `required` (released in blocks a deep reorg replaced last) whose
    window was not opened on the canonical release block: the new chain's epoch was never
    batched (the old chain's batches stood in for it)."""
    return [
        f"{_name(e)} released again on the new chain after a deep reorg, never batched from it"
        for e in sorted(required)
        if opened_hash.get(e) != canonical_release.get(e)
    ]


def batches_hold_window_submissions(
    expected: dict[Epoch, KeySum],
    got: dict[Epoch, KeySum],
    misplaced: list[str],
    superseded: dict[Epoch, Superseded] | None = None,
) -> InvariantResult:
    """`expected`: per epoch closed on the canonical chain, the multiset digest of the
    well-formed members of its canonical window's sets; `got`: of the keys in its batches
    (less those of its superseded generations)."""
    problems = [f"keys not grouped by project, or unsorted: {m}" for m in misplaced]
    gone = superseded or {}
    for epoch, want in sorted(expected.items()):
        have = got.get(epoch, KeySum())
        if epoch in gone:
            have = have.minus(gone[epoch].keys)
        if have != want:
            problems.append(
                f"{_name(epoch)}: {have.count} keys in batches, {want.count} expected"
                " (or other keys)"
            )
    return _result("batches hold exactly the in-window submissions", problems, len(expected))


def queue_items_exactly_once(pushed: Counter[str], seen: Counter[str]) -> InvariantResult:
    """Digests of the items the committed effects pushed vs. consumed + still queued."""
    lost, extra = pushed - seen, seen - pushed
    problems = [f"{sum(lost.values())} item(s) lost"] if lost else []
    problems += [f"{sum(extra.values())} item(s) duplicated or unknown"] if extra else []
    return _result("no finalizer-queue item lost or duplicated", problems, sum(pushed.values()))


def one_batch_size_call_per_epoch(
    batched: set[Epoch],
    calls: list[dict[str, Any]],
    superseded: dict[Epoch, Superseded] | None = None,
) -> tuple[InvariantResult, int]:
    """(result, identical repeats): one distinct body per batched epoch (per generation of
    an epoch batched again after a deep reorg), none for others."""
    bodies: dict[Epoch, set[str]] = {}
    total = 0
    gone = superseded or {}
    for call in calls:
        epoch = (str(call["dataMarketAddress"]).lower(), int(call["epochID"]))
        bodies.setdefault(epoch, set()).add(json.dumps(call, sort_keys=True))
        total += 1
    allowed = {e: 1 + (gone[e].generations if e in gone else 0) for e in bodies}
    problems = [
        f"{_name(e)}: {len(b)} different calls"
        for e, b in bodies.items()
        if not 1 <= len(b) <= allowed[e]
    ]
    problems += [f"{_name(e)}: no submitBatchSize" for e in sorted(batched - set(bodies))]
    problems += [f"{_name(e)}: call for an epoch never batched" for e in set(bodies) - batched]
    repeats = total - sum(len(b) for b in bodies.values())
    return _result("exactly one submitBatchSize per epoch", problems, len(batched)), repeats


def same_digest(digest: str, clean_digest: str) -> InvariantResult:
    problems = [] if digest == clean_digest else [f"{digest} != clean run's {clean_digest}"]
    return _result("same effects digest as the clean run of the seed", problems, 1)


def _without(items: list[int], taken: list[int]) -> list[int]:
    """Sorted `items` less the multiset `taken` (which may hold what items lack)."""
    left = Counter(items)
    left.subtract(Counter(taken))
    return sorted(left.elements())


def _name(epoch: Epoch) -> str:
    return f"market {checksum(epoch[0])} epoch {epoch[1]}"


def no_commit_after_lease_loss(checks: list[FenceCheck]) -> InvariantResult:
    """Each `FenceCheck` (a paused active resuming after a standby took over): its commit
    refused with `LeaseLost`, none of its step's keys changed, no POST started."""
    problems = []
    for c in checks:
        where = f"paused active at input {c.seq} (block {c.block})"
        if c.commit != "LeaseLost":
            problems.append(f"{where}: commit {c.commit}, not LeaseLost")
        if c.wrote:
            problems.append(f"{where}: wrote {', '.join(c.wrote[:3])}")
        if not c.sent_nothing:
            problems.append(f"{where}: delivery {c.delivery}, {c.posts} POST(s) started")
    return _result("no commit after lease loss", problems, len(checks))


def _result(name: str, problems: list[str], checked: int) -> InvariantResult:
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return InvariantResult(name, False, "; ".join(problems[:3]) + more)
    return InvariantResult(name, True, f"{checked} checked")

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
   same seed (checked by the harness, which runs that twin).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from seqcollector.core.addresses import checksum
from sim.keysum import KeySum
from sim.record import InvariantResult

Epoch = tuple[str, int]  # (lowercase market, epoch)


def batched_exactly_once(
    canonical: set[Epoch], batch_ids: dict[Epoch, list[int]], batch_counts: dict[Epoch, int]
) -> InvariantResult:
    """`batch_ids`: per epoch, the BatchID of every queue item seen (consumed or queued)."""
    problems = []
    for epoch in sorted(canonical):
        count = batch_counts.get(epoch)
        ids = sorted(batch_ids.get(epoch, []))
        if count is None:
            problems.append(f"{_name(epoch)} never batched")
        elif ids != list(range(1, count + 1)):
            problems.append(f"{_name(epoch)} batch ids {ids}, BatchCountKey {count}")
    extra = sorted(set(batch_ids) - set(batch_counts))
    problems += [f"{_name(e)} has queue items but no BatchCountKey" for e in extra]
    return _result("every canonical epoch batched exactly once", problems, len(canonical))


def batches_hold_window_submissions(
    expected: dict[Epoch, KeySum], got: dict[Epoch, KeySum], misplaced: list[str]
) -> InvariantResult:
    """`expected`: per epoch closed on the canonical chain, the multiset digest of the
    well-formed members of its canonical window's sets; `got`: of the keys in its batches."""
    problems = [f"keys not grouped by project, or unsorted: {m}" for m in misplaced]
    for epoch, want in sorted(expected.items()):
        have = got.get(epoch, KeySum())
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
    batched: set[Epoch], calls: list[dict[str, Any]]
) -> tuple[InvariantResult, int]:
    """(result, identical repeats): one distinct body per batched epoch, none for others."""
    bodies: dict[Epoch, set[str]] = {}
    total = 0
    for call in calls:
        epoch = (str(call["dataMarketAddress"]).lower(), int(call["epochID"]))
        bodies.setdefault(epoch, set()).add(json.dumps(call, sort_keys=True))
        total += 1
    problems = [f"{_name(e)}: {len(b)} different calls" for e, b in bodies.items() if len(b) != 1]
    problems += [f"{_name(e)}: no submitBatchSize" for e in sorted(batched - set(bodies))]
    problems += [f"{_name(e)}: call for an epoch never batched" for e in set(bodies) - batched]
    repeats = total - len(bodies)
    return _result("exactly one submitBatchSize per epoch", problems, len(batched)), repeats


def same_digest(digest: str, clean_digest: str) -> InvariantResult:
    problems = [] if digest == clean_digest else [f"{digest} != clean run's {clean_digest}"]
    return _result("same effects digest as the clean run of the seed", problems, 1)


def _name(epoch: Epoch) -> str:
    return f"market {checksum(epoch[0])} epoch {epoch[1]}"


def _result(name: str, problems: list[str], checked: int) -> InvariantResult:
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return InvariantResult(name, False, "; ".join(problems[:3]) + more)
    return InvariantResult(name, True, f"{checked} checked")

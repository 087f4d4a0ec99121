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
from collections.abc import Iterable
from typing import Any

from seqcollector.core.addresses import checksum
from seqcollector.core.batching import parse_member
from sim.record import InvariantResult

Epoch = tuple[str, int]  # (lowercase market, epoch)


def _items(raw_items: Iterable[str]) -> list[dict[str, Any]]:
    return [json.loads(i) for i in raw_items]


def batched_exactly_once(
    canonical: set[Epoch], queue_items: list[str], batch_counts: dict[Epoch, int]
) -> InvariantResult:
    problems = []
    by_epoch: dict[Epoch, list[int]] = {}
    for item in _items(queue_items):
        by_epoch.setdefault((item["DataMarketAddress"].lower(), item["EpochID"]), []).append(
            item["BatchID"]
        )
    for epoch in sorted(canonical):
        count = batch_counts.get(epoch)
        ids = sorted(by_epoch.get(epoch, []))
        if count is None:
            problems.append(f"{_name(epoch)} never batched")
        elif ids != list(range(1, count + 1)):
            problems.append(f"{_name(epoch)} batch ids {ids}, BatchCountKey {count}")
    extra = sorted(set(by_epoch) - set(batch_counts))
    problems += [f"{_name(e)} has queue items but no BatchCountKey" for e in extra]
    return _result("every canonical epoch batched exactly once", problems, len(canonical))


def batches_hold_window_submissions(
    expected: dict[Epoch, set[str]], queue_items: list[str]
) -> InvariantResult:
    """`expected`: per epoch closed on the canonical chain, the well-formed members of the
    sets of its canonical window blocks."""
    got: dict[Epoch, list[str]] = {}
    problems = []
    for item in _items(queue_items):
        epoch = (item["DataMarketAddress"].lower(), item["EpochID"])
        for project, keys in item["Batch"].items():
            wrong = [k for k in keys if (parse_member(k) or ("", 0))[0] != project]
            if wrong or keys != sorted(keys):
                problems.append(f"{_name(epoch)} project {project}: keys {wrong or keys}")
            got.setdefault(epoch, []).extend(keys)
    for epoch, members in sorted(expected.items()):
        keys = got.get(epoch, [])
        if len(keys) != len(set(keys)) or set(keys) != members:
            missing, extra = sorted(members - set(keys)), sorted(set(keys) - members)
            problems.append(f"{_name(epoch)}: missing {missing[:3]}, unexpected {extra[:3]}")
    return _result("batches hold exactly the in-window submissions", problems, len(expected))


def queue_items_exactly_once(
    pushed: list[str], consumed: list[str], remaining: list[str]
) -> InvariantResult:
    want, have = Counter(pushed), Counter(consumed) + Counter(remaining)
    problems = [f"lost: {i[:120]}" for i in (want - have)] + [
        f"duplicated or unknown: {i[:120]}" for i in (have - want)
    ]
    return _result("no finalizer-queue item lost or duplicated", problems, len(pushed))


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

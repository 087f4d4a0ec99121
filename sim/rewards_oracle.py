"""The rewards invariants of a simulation, from an oracle written apart from the core: what
the finalizer counted (its own tallies, snapshotted after every drain), the day the chain
says (`dayCounter` at a block), and what the relayer accepted.

6. every day's final update (P3) is sent exactly once for every slot that reached the
   daily quota, with the finalizer's count of that day, `eligibleNodes` = how many slots
   reached it; a day nobody reached gets none; chunks of REWARDS_UPDATE_BATCH_SIZE, slots
   ascending; none for a day not over. A day is due once an epoch was batched on a later
   day and another BufferEpochs (5) above it too (`due_days`).
7. a periodic update (P1) at every interval epoch batched on the canonical chain: the
   current day's counts of slots 1..TotalNodesCount as the finalizer had them when the
   epoch was batched, all chunks delivered; none when there were no counts yet.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqcollector.core.addresses import checksum
from sim.record import InvariantResult

MarketDay = tuple[str, int]  # (lowercase market, day)
PATH = "/submitUpdateRewards"
BUFFER_EPOCHS = 5  # the Go collector's constant: a day's final update waits this many epochs


@dataclass
class CountLog:
    """The finalizer's tallies after each drain, labelled with the chain head the drain
    started at: a batch committed at block h read what the last drain labelled < h wrote."""

    entries: list[tuple[int, dict[MarketDay, dict[int, int]]]] = field(default_factory=list)

    def note(self, head: int, counted: Mapping[MarketDay, Counter[int]]) -> None:
        self.entries.append((head, {k: dict(v) for k, v in counted.items()}))

    def before(self, block: int) -> dict[MarketDay, dict[int, int]]:
        found: dict[MarketDay, dict[int, int]] = {}
        for head, counts in self.entries:
            if head >= block:
                break
            found = counts
        return found


def _body(b: Mapping[str, Any]) -> str:
    """A delivered body without its token, comparable with an expected one."""
    return json.dumps({k: v for k, v in b.items() if k != "authToken"}, sort_keys=True)


def _chunks(
    lc: str, day: int, counts: Mapping[int, int], size: int, eligible: int
) -> list[dict[str, Any]]:
    slots = sorted(counts)
    return [
        {
            "dataMarketAddress": checksum(lc),
            "slotIDs": slots[i : i + size],
            "submissionsList": [counts[s] for s in slots[i : i + size]],
            "day": day,
            "eligibleNodes": eligible,
        }
        for i in range(0, len(slots), size)
    ]


def due_days(
    batched: Mapping[tuple[str, int], int],
    day_at: Callable[[str, int], int],
    buffer: int = BUFFER_EPOCHS,
) -> tuple[set[MarketDay], set[MarketDay]]:
    """(days whose final update is due, days that are over), per market, from the epochs
    batched on the canonical chain (`batched`: epoch -> the block it was batched at) and the
    chain's days: day L is over once an epoch was batched on a later day, and due once an
    epoch `buffer` or more above the first of those was batched too."""
    due: set[MarketDay] = set()
    over: set[MarketDay] = set()
    by_market: dict[str, list[tuple[int, int]]] = {}
    for (lc, epoch), block in batched.items():
        by_market.setdefault(lc, []).append((epoch, day_at(lc, block)))
    for lc, rows in by_market.items():
        rows.sort()
        top = rows[-1][0]
        for day in range(1, max(d for _, d in rows)):
            later = [e for e, d in rows if d > day]
            over.add((lc, day))
            if later and top >= later[0] + buffer:
                due.add((lc, day))
    return due, over


def final_updates_exactly_once(
    delivered: Sequence[Mapping[str, Any]],
    counted: Mapping[MarketDay, Counter[int]],
    eligible: Mapping[MarketDay, set[int]],
    due: set[MarketDay],
    over: set[MarketDay],
    batch_size: int,
) -> InvariantResult:
    """Invariant 6 (`delivered`: every body the relayer accepted, repeats kept; `due`, `over`:
    from `due_days`)."""
    finals: dict[MarketDay, set[str]] = {}
    for b in delivered:
        if b["slotIDs"] and b["eligibleNodes"] > 0:
            key = (str(b["dataMarketAddress"]).lower(), int(b["day"]))
            finals.setdefault(key, set()).add(_body(b))
    problems: list[str] = []
    checked = 0
    for key in sorted(over):
        lc, day = key
        got = finals.pop(key, set())
        slots = eligible.get(key, set())
        if key not in due and not got:
            continue  # over, but its buffer epochs were not all batched: not due yet
        checked += 1
        counts = {s: counted[key][s] for s in slots}
        want = {_body(c) for c in _chunks(lc, day, counts, batch_size, len(slots))}
        if got != want:
            problems.append(
                f"market {checksum(lc)} day {day}: final update {sorted(got) or 'none'}, "
                f"the finalizer's eligible slots {sorted(slots)} with counts {counts} "
                f"({len(want)} chunk(s))"
            )
    problems += [
        f"market {checksum(lc)} day {day}: a final update for a day not over"
        for lc, day in sorted(finals)
    ]
    return InvariantResult(
        "every day's final reward update exactly once, with the finalizer's counts",
        not problems,
        "; ".join(problems[:3]) if problems else f"{checked} market-days checked",
    )


async def periodic_update_every_interval(
    delivered: Sequence[Mapping[str, Any]],
    committed: Mapping[tuple[str, int], list[dict[str, Any]]],
    batched_at: Mapping[tuple[str, int], int],
    counts: CountLog,
    day_at: Callable[[str, int], Awaitable[int]],
    interval: int,
    total_nodes: int,
    batch_size: int,
) -> InvariantResult:
    """Invariant 7. `committed`: the periodic calls' bodies the run committed, by (market,
    epoch); `batched_at`: the canonical block each interval epoch was batched at; `day_at`:
    the chain's day of a market at a block."""
    seen = {_body(b) for b in delivered}
    problems: list[str] = []
    checked = 0
    for (lc, epoch), block in sorted(batched_at.items()):
        if epoch % interval:
            continue
        checked += 1
        day = await day_at(lc, block)
        had = counts.before(block).get((lc, day), {})
        present = {s: n for s, n in had.items() if 1 <= s <= total_nodes}
        want = [_body(c) for c in _chunks(lc, day, present, batch_size, 0)]
        got = [_body(b) for b in committed.get((lc, epoch), [])]
        where = f"market {checksum(lc)} epoch {epoch} (block {block}, day {day})"
        if got != want:
            problems.append(f"{where}: periodic update {got or 'none'}, expected {want or 'none'}")
        elif any(b not in seen for b in got):
            problems.append(f"{where}: a periodic chunk committed but never delivered")
    return InvariantResult(
        "a periodic reward update at every interval, with the finalizer's counts",
        not problems,
        "; ".join(problems[:3]) if problems else f"{checked} interval epochs checked",
    )

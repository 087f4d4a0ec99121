"""Days: the current day of each market (from the chain) and the per-day slot counts.

The day comes from the chain only: `dayCounter` read with the market parameters at start,
then every DayStartedEvent. `CurrentDayKey.<lc>` is written when the chain says the day
changed. Each batched epoch adds its submission keys to the day's
`SlotSubmissionsKey.<lc>.<day>.<slot>` (one INCRBY per slot, not per key as Go does); the
TTL is set on a key's first increment of the day only (`MarketState.counted_slots`).
"""

from __future__ import annotations

from bisect import bisect_left

from seqcollector.core import keys
from seqcollector.core.abi import DayStarted
from seqcollector.core.effects import Effect, IncrementBy, SetValue
from seqcollector.core.state import MarketState, State


def on_day_started(ms: MarketState, event: DayStarted, out: list[Effect]) -> bool:
    """DayStartedEvent: the market's day moves on. -> the domain changed."""
    ms.day = event.day
    out.append(SetValue(keys.current_day(event.market), str(event.day)))
    return True


def count_slots(
    state: State, lc: str, ms: MarketState, slot_counts: list[tuple[int, int]], out: list[Effect]
) -> None:
    """Add a batched epoch's (slot, keys) counts to the current day's slot counters."""
    day = ms.day if ms.day is not None else 0
    if ms.counted_day != day:
        ms.counted_day, ms.counted_slots = day, []
    ttl_s = state.config.slot_submissions_ttl_s
    for slot, n in slot_counts:
        first = _add_sorted(ms.counted_slots, slot)
        out.append(IncrementBy(keys.slot_submissions(lc, day, slot), n, ttl_s if first else None))


def _add_sorted(values: list[int], value: int) -> bool:
    """Insert into a sorted list; True if it was not there."""
    i = bisect_left(values, value)
    if i < len(values) and values[i] == value:
        return False
    values.insert(i, value)
    return True

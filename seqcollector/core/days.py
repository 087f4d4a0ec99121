"""Days: the current day of each market (from the chain), the per-day slot counts, and the
day rollover markers.

The day comes from the chain only: `dayCounter` read with the market parameters at start,
then every DayStartedEvent. `CurrentDayKey.<lc>` is written when the chain says the day
changed. Each batched epoch adds its submission keys to the day's
`SlotSubmissionsKey.<lc>.<day>.<slot>` (one INCRBY per slot, not per key as Go does); the
TTL is set on a key's first increment of the day only (`MarketState.counted_slots`).

Day transition at batch preparation, as the Go collector does it (handleDayTransition): when
the market's day has moved past `LastKnownDay`, a rollover marker for that day is stored
(`DayRolloverEpochMarkerSetKey.<lc>` gets the epoch, `DayRolloverEpochMarkerDetailsKey` the
Go JSON, BufferEpoch = epoch + 5) and `LastKnownDayKey.<lc>` moves on; every key with a TTL.
The marker fires at the first batch preparation of the same market whose epoch is >=
BufferEpoch (Go: any market's epoch == BufferEpoch, R3, R4), once per (market, day): the
decision is history (`State.days`), never rewound. Only a day moving forward makes a marker
(a reorged DayStartedEvent that takes the day back changes nothing here).
"""

from __future__ import annotations

from bisect import bisect_left

from seqcollector.core import keys
from seqcollector.core.abi import DayStarted
from seqcollector.core.addresses import lower_address
from seqcollector.core.batching import go_json
from seqcollector.core.effects import Effect, IncrementBy, SetAdd, SetValue
from seqcollector.core.inputs import StoredDays
from seqcollector.core.reporting import count, reject
from seqcollector.core.state import DayMarker, MarketDays, MarketState, State

BUFFER_EPOCHS = 5  # Go's BufferEpochs: the final update waits this many epochs
DAY_KEYS_TTL_S = 7 * 24 * 3600  # LastKnownDay and rollover marker keys (Go: none)


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


def market_days(state: State, lc: str) -> MarketDays:
    md = state.days.get(lc)
    if md is None:
        md = state.days[lc] = MarketDays()
    return md


def transition(
    state: State, lc: str, ms: MarketState, epoch: int, out: list[Effect]
) -> list[DayMarker]:
    """Batch preparation of `epoch`: note a day rollover, then return the markers now due
    (BufferEpoch <= epoch), taken out of the pending ones and recorded as fired."""
    md = market_days(state, lc)
    day = ms.day
    taken = any(m.epoch == epoch for m in md.markers)
    if day is not None and (md.last_known_day is None or day > md.last_known_day) and taken:
        # A pending marker already has this epoch (a reorg deeper than MAX_REORG_DEPTH made
        # the epoch batched again): its keys are named by epoch, so this day's marker waits
        # for the next batch preparation, with an epoch of its own.
        count(state, "day_transition_deferred", 1)
    elif day is not None and (md.last_known_day is None or day > md.last_known_day):
        old = md.last_known_day
        if old is not None and old not in md.fired and all(m.day != old for m in md.markers):
            marker = DayMarker(old, epoch, epoch + BUFFER_EPOCHS)
            md.markers.append(marker)
            md.markers.sort(key=lambda m: m.day)
            out.append(SetAdd(keys.rollover_marker_set(lc), str(epoch), DAY_KEYS_TTL_S))
            details = {
                "LastKnownDay": str(old),
                "CurrentEpoch": epoch,
                "BufferEpoch": marker.buffer_epoch,
            }
            out.append(
                SetValue(keys.rollover_marker_details(lc, epoch), go_json(details), DAY_KEYS_TTL_S)
            )
        md.last_known_day = day
        out.append(SetValue(keys.last_known_day(lc), str(day), DAY_KEYS_TTL_S))
        _prune(state, md, day)
    due = [m for m in md.markers if m.buffer_epoch <= epoch]
    if due:
        md.markers = [m for m in md.markers if m.buffer_epoch > epoch]
        for m in due:
            _add_sorted(md.fired, m.day)
    return due


def on_stored_days(state: State, inp: StoredDays, out: list[Effect]) -> bool:
    """A market's day record as Redis held it at start: adopted if the core has none of its
    own for that market (a first start on this namespace, e.g. a switch from the Go
    collector), else ignored (the core's own record is the truth). -> the domain changed
    (never: days are history)."""
    lc = lower_address(inp.market)
    what = f"stored days of market {inp.market[:64]}"
    if lc is None or lc not in state.domain.markets:
        reject(state, out, "unconfigured_market", what)
        return False
    if not state.config.rewards:
        return False
    numbers = [inp.last_known_day or 0, *(n for m in inp.markers for n in m)]
    if any(not 0 <= n < 2**62 for n in numbers):
        reject(state, out, "number_out_of_range", f"{what}: a day or epoch out of range")
        return False
    md = market_days(state, lc)
    if md.last_known_day is not None or md.markers or md.fired:
        count(state, "stored_days_ignored", 1)
        return False
    md.last_known_day = inp.last_known_day
    by_day: dict[int, DayMarker] = {}
    for day, epoch, buffer_epoch in sorted(inp.markers):
        if day >= 1 and (inp.last_known_day is None or day < inp.last_known_day):
            by_day.setdefault(day, DayMarker(day, epoch, buffer_epoch))
    md.markers = [by_day[d] for d in sorted(by_day)]
    count(state, "stored_markers_adopted", len(md.markers))
    return False


def final_pending(md: MarketDays, day: int) -> bool:
    """A rollover marker for `day` exists and has not fired: its final update is to come."""
    return any(m.day == day for m in md.markers)


def _prune(state: State, md: MarketDays, day: int) -> None:
    """Forget fired and zero-count days P2 no longer looks at (older than its buffer)."""
    oldest = day - state.config.past_days_buffer - 1
    md.fired = [d for d in md.fired if d >= oldest]
    md.zero = [d for d in md.zero if d >= oldest]


def _add_sorted(values: list[int], value: int) -> bool:
    """Insert into a sorted list; True if it was not there."""
    i = bisect_left(values, value)
    if i < len(values) and values[i] == value:
        return False
    values.insert(i, value)
    return True

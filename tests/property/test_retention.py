"""The cleanup's retention rule (`core.retention`), over arbitrary knowledge and key names.

- a submission set of an open window is never stale, whatever else is true (even listed as
  batched, below the floor, far below the horizon);
- a batched epoch's sets are stale (when its window is not open);
- keys of markets not configured, and families the rule does not know, are kept;
- a rollover marker's details are stale exactly when the marker set was read and the epoch is
  not in it.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seqcollector.core.retention import (
    FAR_BELOW_EPOCHS,
    Family,
    Knowledge,
    Observed,
    Retained,
    verdict,
)

MARKETS = ["0x" + c * 40 for c in "abc"]
OTHER = "0x" + "d" * 40
epochs = st.integers(0, 2**64 - 1) | st.integers(0, 300)
headers = st.text(min_size=1, max_size=70).filter(lambda h: "\n" not in h) | st.sampled_from(
    ["0x" + "1f" * 32]
)


@st.composite
def retained(draw: st.DrawFn) -> Retained:
    return Retained(
        open_epochs=tuple(sorted(draw(st.sets(epochs, max_size=6)))),
        batched_epochs=tuple(sorted(draw(st.sets(epochs, max_size=6)))),
        batched_floor=draw(st.integers(-1, 400)),
    )


@st.composite
def knowledge(draw: st.DrawFn) -> Knowledge:
    markets = draw(st.lists(st.sampled_from(MARKETS), min_size=1, unique=True))
    observed = {
        lc: Observed(
            rollover_markers=draw(st.none() | st.sets(epochs, max_size=5).map(sorted).map(tuple)),
            go_marker_members=draw(st.none() | st.sets(epochs, max_size=5).map(sorted).map(tuple)),
            go_marker_limits=draw(st.dictionaries(epochs, st.integers(0, 10**9), max_size=5)),
        )
        for lc in markets
    }
    return Knowledge(
        retained={lc: draw(retained()) for lc in markets},
        observed=observed,
        head_block=draw(st.none() | st.integers(0, 10**9)),
    )


def set_key(lc: str, epoch: int, header: str) -> str:
    return f"SnapshotCollector.{lc}.{epoch}.{header}"


@given(knowledge(), st.data(), headers)
def test_a_set_of_an_open_window_is_never_stale(k: Knowledge, data: st.DataObject, h: str) -> None:
    lc = data.draw(st.sampled_from(sorted(k.retained)))
    r = k.retained[lc]
    epoch = data.draw(st.sampled_from(r.open_epochs) if r.open_epochs else epochs)
    # whatever else is true: the same epoch also listed as batched, below the floor
    r = Retained(
        open_epochs=tuple(sorted({*r.open_epochs, epoch})),
        batched_epochs=tuple(sorted({*r.batched_epochs, epoch})),
        batched_floor=max(r.batched_floor, data.draw(st.integers(-1, 2**64))),
    )
    k = Knowledge(retained={**k.retained, lc: r}, observed=k.observed, head_block=k.head_block)
    v = verdict(set_key(lc, epoch, h), k)
    assert v.family is Family.SUBMISSION_SET and not v.stale, v


@given(knowledge(), st.data(), headers)
def test_a_batched_epochs_sets_are_stale(k: Knowledge, data: st.DataObject, h: str) -> None:
    lc = data.draw(st.sampled_from(sorted(k.retained)))
    r = k.retained[lc]
    below_floor = st.integers(0, r.batched_floor) if r.batched_floor >= 0 else st.nothing()
    candidates = [e for e in r.batched_epochs if e not in r.open_epochs]
    choice = st.sampled_from(candidates) if candidates else st.nothing()
    epoch = data.draw(choice | below_floor.filter(lambda e: e not in r.open_epochs))
    v = verdict(set_key(lc, epoch, h), k)
    assert v.stale and v.market == lc, v


@given(knowledge(), epochs, headers)
def test_an_epoch_not_reached_is_kept(k: Knowledge, epoch: int, h: str) -> None:
    lc = sorted(k.retained)[0]
    r = k.retained[lc]
    horizon = r.horizon()
    if r.is_batched(epoch) or (horizon is not None and epoch < horizon - FAR_BELOW_EPOCHS):
        return
    assert not verdict(set_key(lc, epoch, h), k).stale


@given(knowledge(), epochs, headers)
def test_far_below_everything_open_is_stale(k: Knowledge, epoch: int, h: str) -> None:
    lc = sorted(k.retained)[0]
    r = k.retained[lc]
    horizon = r.horizon()
    if r.is_open(epoch) or horizon is None or epoch >= horizon - FAR_BELOW_EPOCHS:
        return
    assert verdict(set_key(lc, epoch, h), k).stale


@given(knowledge(), epochs, headers)
def test_keys_of_markets_not_configured_are_kept(k: Knowledge, epoch: int, h: str) -> None:
    for key in (
        set_key(OTHER, epoch, h),
        set_key(sorted(k.retained)[0].upper().replace("0X", "0x"), epoch, h),
        f"DayRolloverEpochMarkerDetailsKey.{OTHER}.{epoch}",
        f"EpochMarkerDetailsKey.{OTHER}.{epoch}",
        f"EpochMarkerSetKey.{OTHER}",
    ):
        v = verdict(key, k)
        assert not v.stale and v.market is None, (key, v)


@given(knowledge(), st.text(max_size=80))
def test_unknown_families_are_kept(k: Knowledge, key: str) -> None:
    lc = sorted(k.retained)[0]
    for name in (key, f"x{key}", f"BatchCountKey.{lc}.1", f"DayRolloverEpochMarkerSetKey.{lc}"):
        v = verdict(name, k)
        if v.family is Family.UNKNOWN:
            assert not v.stale


@given(knowledge(), st.text(max_size=30))
def test_malformed_names_of_known_families_are_kept(k: Knowledge, junk: str) -> None:
    lc = sorted(k.retained)[0]
    for name in (
        f"SnapshotCollector.{lc}.{junk}",  # no header, or an epoch that is not decimal
        f"SnapshotCollector.{lc}.0{junk}5.0xab",
        f"SnapshotCollector.{lc}.5.",
        f"DayRolloverEpochMarkerDetailsKey.{lc}.x{junk}",
        f"DayRolloverEpochMarkerDetailsKey.{lc}.5.{junk}",
    ):
        parts = name.split(".")
        if name.startswith("SnapshotCollector") and len(parts) >= 4 and parts[2].isdigit():
            continue  # a well-formed name after all
        assert not verdict(name, k).stale, name


@given(knowledge(), st.data())
def test_rollover_details_stale_exactly_when_fired(k: Knowledge, data: st.DataObject) -> None:
    lc = data.draw(st.sampled_from(sorted(k.retained)))
    epoch = data.draw(epochs)
    markers = k.observed[lc].rollover_markers
    v = verdict(f"DayRolloverEpochMarkerDetailsKey.{lc}.{epoch}", k)
    assert v.family is Family.ROLLOVER_DETAILS
    assert v.stale == (markers is not None and epoch not in markers)


@given(knowledge(), st.data())
def test_go_marker_details_stale_exactly_when_limit_past(k: Knowledge, data: st.DataObject) -> None:
    lc = data.draw(st.sampled_from(sorted(k.retained)))
    epoch = data.draw(epochs)
    limit = k.observed[lc].go_marker_limits.get(epoch)
    v = verdict(f"EpochMarkerDetailsKey.{lc}.{epoch}", k)
    assert v.stale == (limit is not None and k.head_block is not None and k.head_block > limit)


def test_nothing_known_keeps_every_set() -> None:
    k = Knowledge(retained={MARKETS[0]: Retained()})
    for epoch in (0, 1, 5, 10**6):
        assert not verdict(set_key(MARKETS[0], epoch, "0xab"), k).stale

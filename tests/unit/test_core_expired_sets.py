"""Windows read after their submission sets' TTL (catch-up after a long outage): batched with
what remains, one High alert per market naming the epochs, decided from journaled inputs."""

from __future__ import annotations

from corekit import block, epoch_released, of, run, started
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcollector.core.effects import Alert, ListPush, QuerySubmissionSets
from seqcollector.core.expired_sets import ALERT_EVERY
from seqcollector.core.inputs import SubmissionSets

TTL = 1200


def _window(state, n: int, epoch: int) -> tuple[QuerySubmissionSets, int]:  # type: ignore[no-untyped-def]
    """Release `epoch` at block n, close it -> its query and deadline."""
    run(state, block(n), epoch_released(n, epoch))
    deadline = state.domain.markets[next(iter(state.domain.markets))].windows[epoch].deadline
    m = n + 1
    while True:
        queries = of(run(state, block(m)), QuerySubmissionSets)
        if queries:
            return queries[0], deadline
        m += 1


def _answer(q: QuerySubmissionSets, read_at: int, ttl: int = TTL) -> SubmissionSets:
    member = f"{q.market}.{q.epoch}.p.1"
    return SubmissionSets(q.query_id, q.market, q.epoch, [member], read_at=read_at, sets_ttl_s=ttl)


def test_late_windows_are_batched_and_alerted_once_when_caught_up() -> None:
    state = started()
    late = []
    n = 101
    for epoch in (1, 2, 3):
        q, deadline = _window(state, n, epoch)
        effects = run(state, _answer(q, deadline + TTL + 60))
        assert of(effects, ListPush), "batched with what remains"
        assert of(effects, Alert) == []  # held: one alert for the run of late epochs
        late.append(epoch)
        n = state.head.number + 1
    q, deadline = _window(state, n, 4)
    [alert] = of(run(state, _answer(q, deadline + 5)), Alert)  # read in time: caught up
    assert alert.severity == "High"
    assert "epochs 1..3" in alert.message and "3 window(s)" in alert.message
    assert alert.id.endswith(":1-3")
    assert state.expired_sets == {}
    assert state.counters["windows_past_sets_ttl"] == 3


def test_no_clock_or_no_ttl_decides_nothing() -> None:
    """Answers of journals written before this (read_at 0) and simulations: no alert."""
    state = started()
    q, deadline = _window(state, 101, 1)
    assert of(run(state, _answer(q, 0)), Alert) == []
    q, deadline = _window(state, state.head.number + 1, 2)
    assert of(run(state, _answer(q, deadline + 10 * TTL, ttl=0)), Alert) == []
    assert state.expired_sets == {}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_every_late_epoch_is_alerted_exactly_once(lateness: list[bool]) -> None:
    state = started()
    alerted: list[int] = []
    n = 101
    late = [e for e, is_late in enumerate(lateness, start=1) if is_late]
    for epoch, is_late in enumerate([*lateness, False], start=1):
        q, deadline = _window(state, n, epoch)
        read_at = deadline + (TTL + 1 if is_late and epoch <= len(lateness) else 1)
        for alert in of(run(state, _answer(q, read_at)), Alert):
            first, last = map(int, alert.id.rsplit(":", 1)[1].split("-"))
            alerted += [e for e in late if first <= e <= last]
        n = state.head.number + 1
    assert sorted(alerted) == late


def test_a_long_catch_up_alerts_every_hundred_epochs() -> None:
    state = started()
    alerts = []
    n = 101
    for epoch in range(1, ALERT_EVERY + 2):
        q, deadline = _window(state, n, epoch)
        alerts += of(run(state, _answer(q, deadline + TTL + 1)), Alert)
        n = state.head.number + 1
    assert [a.id.rsplit(":", 1)[1] for a in alerts] == [f"1-{ALERT_EVERY}"]
    assert state.expired_sets[next(iter(state.expired_sets))] == [ALERT_EVERY + 1]

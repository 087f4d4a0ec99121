"""The query registry, window phases, the core's own invariants and the state format."""

from __future__ import annotations

import msgspec
import pytest
from corekit import MARKET, block, epoch_released, of, run, started

from seqcollector.core import (
    Rewind,
    SubmissionSets,
    dump_state,
    invariants,
    load_state,
    pending_queries,
)
from seqcollector.core.effects import ListPush, QuerySubmissionSets, Rejected
from seqcollector.core.state import STATE_FORMAT, Phase, StateFormatError, Window


def closed(epoch: int = 7) -> tuple[object, QuerySubmissionSets]:
    state = started(window=6)
    run(state, block(101), epoch_released(101, epoch))
    for n in (102, 103, 104):
        run(state, block(n))
    [query] = of(run(state, block(105)), QuerySubmissionSets)
    return state, query


def reasons(effects: list[object]) -> list[str]:
    return [e.reason for e in effects if isinstance(e, Rejected)]


def test_a_window_moves_open_queried_and_is_removed_when_batched() -> None:
    state = started(window=6)
    run(state, block(101), epoch_released(101, 7))
    assert state.domain.markets[MARKET].windows[7].phase is Phase.OPEN
    for n in (102, 103, 104, 105):
        run(state, block(n))
    assert state.domain.markets[MARKET].windows[7].phase is Phase.QUERIED
    [query] = pending_queries(state)
    assert state.domain.queries == {query.query_id: query}
    answer = SubmissionSets(query.query_id, MARKET, 7, [f"{MARKET}.7.p.1"])
    pushed = of(run(state, answer), ListPush)
    assert len(pushed) == 1
    assert 7 not in state.domain.markets[MARKET].windows and state.domain.queries == {}
    invariants.check(state)


def test_an_answer_is_accepted_once_and_others_are_counted_refusals() -> None:
    state, query = closed()
    other_epoch = SubmissionSets(query.query_id, MARKET, 8, [])
    assert reasons(run(state, other_epoch)) == ["mismatched_query_result"]
    unknown = SubmissionSets(query.query_id + 99, MARKET, 7, [])
    assert reasons(run(state, unknown)) == ["stale_query_result"]
    answer = SubmissionSets(query.query_id, MARKET, 7, [f"{MARKET}.7.p.1"])
    assert reasons(run(state, answer)) == []
    assert reasons(run(state, answer)) == ["stale_query_result"]  # the second time
    assert state.counters["stale_query_result"] == 2
    assert state.counters["mismatched_query_result"] == 1
    invariants.check(state)


def test_a_rewind_takes_back_the_queries_issued_after_its_block() -> None:
    state, query = closed()
    assert pending_queries(state) == [query]
    run(state, Rewind(104))  # before the closing block: the window is open again
    assert pending_queries(state) == []
    assert state.domain.markets[MARKET].windows[7].phase is Phase.OPEN
    late = SubmissionSets(query.query_id, MARKET, 7, [f"{MARKET}.7.p.1"])
    assert reasons(run(state, late)) == ["stale_query_result"]
    [again] = of(run(state, block(105, branch=1, parent_branch=0)), QuerySubmissionSets)
    assert again.query_id > query.query_id  # ids are never reused
    invariants.check(state)


def test_invariants_name_what_is_broken() -> None:
    state, query = closed()
    invariants.check(state)
    broken = load_state(dump_state(state))
    broken.domain.markets[MARKET].windows[7].phase = Phase.OPEN  # a query without its owner
    broken.domain.markets[MARKET].windows[9] = Window(9, 101, 0, Phase.QUERIED)
    broken.blocks.pop(2)
    broken.counters["batches"] = -1
    found = invariants.violations(broken)
    assert any(f"query {query.query_id}" in v and "no live owner" in v for v in found), found
    assert any("epoch 9 is QUERIED with no pending query" in v for v in found), found
    assert any("are not linked" in v for v in found), found
    assert any("counter batches is -1" in v for v in found), found
    with pytest.raises(invariants.InvariantError, match="no live owner"):
        invariants.check(broken)


def test_a_state_of_another_format_is_refused_with_what_to_do() -> None:
    state = started()
    assert state.format == STATE_FORMAT
    assert load_state(dump_state(state)).format == STATE_FORMAT
    as_map = msgspec.msgpack.decode(dump_state(state))
    as_map["format"] = STATE_FORMAT + 1
    with pytest.raises(StateFormatError, match=f"format {STATE_FORMAT + 1}") as raised:
        load_state(msgspec.msgpack.encode(as_map))
    assert "--namespace" in str(raised.value) and "replay" in str(raised.value)
    del as_map["format"]  # written before the field existed
    with pytest.raises(StateFormatError, match="format 1,"):
        load_state(msgspec.msgpack.encode(as_map))

"""Windows: block timestamps only; the closing block is not part of the window."""

from corekit import block, epoch_released, h, of, run, started

from seqcollector.core import Tick, pending_queries
from seqcollector.core.effects import QuerySubmissionSets, Rejected, SetValue


def test_every_block_sets_its_hash_key_lowercase_with_ttl():
    state = started()
    effects = run(state, block(101))
    assert effects == [SetValue("BlockHashByNumberKey.101", h(101), 1800)]


def test_window_holds_blocks_up_to_deadline_and_closes_on_first_block_past_it():
    state = started(window=6)  # blocks every 2 s: release block and the 3 after it are inside
    assert run(state, block(101), epoch_released(101, 7)) == [
        SetValue("BlockHashByNumberKey.101", h(101), 1800)
    ]
    for n in (102, 103, 104):
        assert of(run(state, block(n)), QuerySubmissionSets) == []
    closing = run(state, block(105))
    [query] = of(closing, QuerySubmissionSets)
    market = state.config.markets[0]
    assert query.epoch == 7 and query.market == market
    assert query.keys == [f"SnapshotCollector.{market}.7.{h(n)}" for n in (101, 102, 103, 104)]
    assert pending_queries(state) == [query]


def test_windows_of_several_epochs_overlap_and_close_in_epoch_order():
    state = started(window=6)
    run(state, block(101), epoch_released(101, 1), block(102), epoch_released(102, 2))
    run(state, block(103), block(104))
    q1 = of(run(state, block(105)), QuerySubmissionSets)
    q2 = of(run(state, block(106)), QuerySubmissionSets)
    assert [q.epoch for q in q1] == [1] and [q.epoch for q in q2] == [2]
    assert q1[0].query_id < q2[0].query_id


def test_tick_closes_window_when_chain_stalls():
    state = started(window=6)
    run(state, block(101), epoch_released(101, 3))
    assert of(run(state, Tick(state.head.timestamp + 6)), QuerySubmissionSets) == []
    [query] = of(run(state, Tick(state.head.timestamp + 7)), QuerySubmissionSets)
    assert query.keys[-1].endswith(h(101))


def test_out_of_order_and_unlinked_blocks_are_refused_not_raised():
    state = started()
    [r] = of(run(state, block(102)), Rejected)
    assert r.reason == "block_out_of_order" and "skipped" in r.detail
    [r] = of(run(state, block(100)), Rejected)
    assert "rewind" in r.detail
    [r] = of(run(state, block(101, branch=1)), Rejected)
    assert r.reason == "parent_mismatch"
    assert state.head.number == 100
    assert state.counters["block_out_of_order"] == 2


def test_duplicate_release_is_refused():
    state = started()
    run(state, block(101), epoch_released(101, 4))
    [r] = of(run(state, epoch_released(101, 4)), Rejected)
    assert r.reason == "duplicate_epoch"

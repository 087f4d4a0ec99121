"""Rewinds: state restored as of a block, orphaned keys deleted, batches at most once."""

from corekit import MARKET, block, epoch_released, h, of, run, started

from seqcollector.core import Rewind, SubmissionSets, dump_state, pending_queries
from seqcollector.core.effects import Alert, DeleteKeys, ListPush, QuerySubmissionSets, Rejected
from seqcollector.core.state import load_state


def test_rewind_deletes_orphaned_block_keys_and_accepts_the_new_branch():
    state = started()
    run(state, block(101), block(102), block(103))
    effects = run(state, Rewind(101))
    assert effects == [DeleteKeys(["BlockHashByNumberKey.102", "BlockHashByNumberKey.103"])]
    assert state.head.number == 101
    assert of(run(state, block(102, branch=1, parent_branch=0)), Rejected) == []
    assert state.head.hash == h(102, 1)


def test_rewind_reopens_a_window_released_before_and_drops_one_released_after():
    state = started(window=6)
    run(state, block(101), epoch_released(101, 1), block(102), epoch_released(102, 2))
    before = dump_state(state)
    run(state, block(103))
    run(state, Rewind(101))
    assert sorted(state.domain.markets[MARKET].windows) == [1]
    # the new branch releases epoch 2 at another block: its window follows the new branch
    run(state, block(102, branch=1, parent_branch=0), block(103, branch=1))
    run(state, epoch_released(103, 2, branch=1))
    assert state.domain.markets[MARKET].windows[2].opened_at == 103
    assert load_state(before).domain.markets[MARKET].windows[2].opened_at == 102


def test_an_epoch_is_batched_at_most_once_across_a_rewind():
    state = started(window=6)
    run(state, block(101), epoch_released(101, 5), block(102), block(103), block(104))
    [query] = of(run(state, block(105)), QuerySubmissionSets)
    first = run(state, SubmissionSets(query.query_id, MARKET, 5, [f"{MARKET}.5.p.1"]))
    assert len(of(first, ListPush)) == 1
    run(state, Rewind(104))  # the closing block is orphaned, but the epoch is batched:
    assert 5 not in state.domain.markets[MARKET].windows  # its window does not come back
    again = run(state, block(105, branch=1, parent_branch=0))
    assert of(again, QuerySubmissionSets) == [] and of(again, Rejected) == []
    assert pending_queries(state) == []
    # and a release of the same epoch on the new branch is refused
    [r] = of(run(state, epoch_released(105, 5, branch=1)), Rejected)
    assert r.reason == "epoch_already_batched"


def test_pending_query_survives_a_rewind_above_its_closing_block():
    state = started(window=6)
    run(state, block(101), epoch_released(101, 5), block(102), block(103), block(104))
    [query] = of(run(state, block(105)), QuerySubmissionSets)
    run(state, block(106), block(107), Rewind(105))
    assert pending_queries(state) == [query]
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, [f"{MARKET}.5.p.1"]))
    assert len(of(effects, ListPush)) == 1


def test_reorg_deeper_than_supported_is_alerted_and_counted_not_raised():
    state = started(max_reorg_depth=3)
    for n in range(101, 111):
        run(state, block(n))
    effects = run(state, Rewind(105))
    assert [r.reason for r in of(effects, Rejected)] == ["reorg_too_deep"]
    [alert] = of(effects, Alert)
    assert alert.severity == "High" and "MAX_REORG_DEPTH=3" in alert.message
    assert state.counters["reorg_too_deep"] == 1
    assert of(run(state, block(106, branch=1, parent_branch=0)), Rejected) == []


def test_history_and_snapshots_stay_bounded():
    state = started(window=6, max_reorg_depth=16)
    for n in range(101, 3000):
        run(state, block(n))
        if n % 10 == 0:
            run(state, epoch_released(n, n // 10))
    assert len(state.blocks) <= 16 + 1 + 128
    assert len(state.snapshots) <= (16 + 128) // 10 + 2


def test_a_too_deep_reorg_drops_the_orphaned_branch_snapshots():
    """Snapshots stay sorted and on the kept branch (pruning bisects them)."""
    state = started(window=60, max_reorg_depth=3)
    run(state, block(101), block(102), epoch_released(102, 1), block(103), block(104))
    assert [s.block for s in state.snapshots] == [99, 102]
    run(state, Rewind(100))  # too deep
    assert [s.block for s in state.snapshots] == [99]
    run(state, block(101, branch=1, parent_branch=0), block(102, branch=1))
    blocks = [s.block for s in state.snapshots]
    assert blocks == sorted(blocks) == [99, 100]
    run(state, block(103, branch=1), Rewind(101))
    assert state.domain.markets[MARKET].windows == {}


def test_a_rewind_to_between_close_and_answer_does_not_batch_again():
    """Found by the stateful test: the snapshot between a window's close and its answer
    holds the pending query; restoring it must not let the epoch be batched twice."""
    state = started(window=6)
    run(state, block(101), epoch_released(101, 5), block(102), block(103), block(104))
    [query] = of(run(state, block(105)), QuerySubmissionSets)
    run(state, block(106))  # a block between the close and the answer
    answer = SubmissionSets(query.query_id, MARKET, 5, [f"{MARKET}.5.p.1"])
    assert len(of(run(state, answer), ListPush)) == 1
    run(state, Rewind(105))
    assert pending_queries(state) == []
    again = run(state, answer)
    assert of(again, ListPush) == [] and [r.reason for r in of(again, Rejected)] == [
        "stale_query_result"
    ]

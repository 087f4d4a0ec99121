"""Reorgs deeper than the retained history (issue 8 part 3): anchors, rewinds below the
blocks held, every replaced block-hash key deleted, the new chain's epochs batched."""

from corekit import MARKET, block, config, epoch_released, h, of, params, run, started

from seqcollector.core import Rewind, SubmissionSets, dump_state, new_state, step
from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    ListPush,
    QuerySubmissionSets,
    Rejected,
    RelayerCall,
)
from seqcollector.core.history import MAX_KEYS_DELETED, anchor_refs, level
from seqcollector.core.state import load_state


def mine(state, first: int, last: int, branch: int = 0, fork: int | None = None) -> None:
    """Blocks first..last of `branch`; the first one's parent on branch `fork`."""
    for n in range(first, last + 1):
        parent = fork if n == first and fork is not None else None
        assert of(run(state, block(n, branch, parent)), Rejected) == [], n


def test_anchors_are_exponentially_spaced_bounded_and_survive_a_restart():
    state = started(max_reorg_depth=8)  # block 100 processed
    mine(state, 101, 5000)
    numbers = [ref.number for ref in anchor_refs(state)]
    assert numbers[0] == 100  # the first block processed
    assert numbers == sorted(set(numbers)) and len(numbers) <= 64
    # one per level: the latest multiple of 2^k for every k up to the top one
    assert [n for n in numbers[1:] if n >= 4096] == [4096, 4608, 4864, 4992, 5000]
    levels = [level(n) for n in numbers[1:]]
    assert levels == sorted(levels, reverse=True)
    assert anchor_refs(load_state(dump_state(state))) == anchor_refs(state)


def test_rewind_below_the_blocks_held_resumes_from_the_anchor_and_links_to_it():
    state = started(max_reorg_depth=8)
    mine(state, 101, 700)
    assert state.blocks[0].number > 512  # 512 is an anchor, no longer held
    effects = run(state, Rewind(512))
    # old code: only the keys of blocks still held were deleted, and the head stayed the
    # held block above 512, so the new chain's block 513 never linked
    [deleted] = of(effects, DeleteKeys)
    assert deleted.keys == [f"BlockHashByNumberKey.{n}" for n in range(513, 701)]
    assert state.head.number == 512 and state.head.hash == h(512)
    assert [r.reason for r in of(effects, Rejected)] == ["reorg_too_deep"]
    [alert] = of(effects, Alert)
    assert "reorg of 188 blocks to block 512" in alert.message
    assert "resumed from anchor block" in alert.message
    assert "BlockHashByNumberKey of blocks 513..700" in alert.message
    assert state.counters["chain_resets"] == 1 and "unlinked_bases" not in state.counters
    mine(state, 513, 800, branch=1, fork=0)  # every block of the new chain applied
    assert state.head.number == 800


def test_rewind_with_nothing_in_common_takes_the_next_block_as_a_new_base():
    state = started(max_reorg_depth=8)
    mine(state, 101, 300)
    effects = run(state, Rewind(-1))
    [deleted] = of(effects, DeleteKeys)
    assert deleted.keys == [f"BlockHashByNumberKey.{n}" for n in range(0, 301)]
    assert state.head is None and anchor_refs(state) == []
    [alert] = of(effects, Alert)
    assert "new base, its parent unchecked" in alert.message
    assert state.counters["unlinked_bases"] == 1
    # another chain, from block 0: accepted, linked from there on
    mine(state, 0, 400, branch=7, fork=99)
    assert state.head.number == 400 and anchor_refs(state)[0].number == 0


def test_block_hash_key_deletions_are_bounded_and_the_rest_named():
    state = new_state(config(max_reorg_depth=8))
    step(state, params())
    mine(state, 200_000, 200_010)
    effects = run(state, Rewind(10))
    [deleted] = of(effects, DeleteKeys)
    assert len(deleted.keys) == MAX_KEYS_DELETED
    assert deleted.keys[0] == "BlockHashByNumberKey.100011"
    assert deleted.keys[-1] == "BlockHashByNumberKey.200010"
    [alert] = of(effects, Alert)
    assert "those of blocks 11..100010 expire by their TTL 1800 s" in alert.message


def test_epochs_of_replaced_blocks_are_batched_again_from_the_new_chain():
    state = started(window=6, max_reorg_depth=8)
    mine(state, 101, 120)
    run(state, epoch_released(120, 7))
    mine(state, 121, 123)
    [query] = of(run(state, block(124)), QuerySubmissionSets)
    pushed = run(state, SubmissionSets(query.query_id, MARKET, 7, [f"{MARKET}.7.p.1"]))
    assert len(of(pushed, ListPush)) == 1
    mine(state, 125, 140)
    effects = run(state, Rewind(110))  # 30 deep: beyond MAX_REORG_DEPTH=8
    [alert] = of(effects, Alert)
    assert "cannot be undone" in alert.message and "epochs [7]" in alert.message
    assert state.counters["batches_not_undone"] == 1
    # the new chain releases epoch 7 again, at another block: batched again (old code:
    # refused as epoch_already_batched, the new chain's epoch never batched)
    mine(state, 111, 118, branch=1, fork=0)
    assert of(run(state, epoch_released(118, 7, branch=1)), Rejected) == []
    mine(state, 119, 121, branch=1)
    [again] = of(run(state, block(122, branch=1)), QuerySubmissionSets)
    assert again.epoch == 7 and again.keys[0].endswith(h(118, 1))
    second = run(state, SubmissionSets(again.query_id, MARKET, 7, [f"{MARKET}.7.p.2"]))
    assert len(of(second, ListPush)) == 1
    # its relayer call has an id of its own: marking the old chain's call done after its
    # POST must not remove the new chain's from the outbox
    [first_call], [second_call] = of(pushed, RelayerCall), of(second, RelayerCall)
    assert first_call.id != second_call.id


def test_shallow_reorgs_keep_at_most_once_and_the_epochs_released_below_stay():
    state = started(window=6, max_reorg_depth=40)
    run(state, epoch_released(100, 3))
    mine(state, 101, 103)
    [query] = of(run(state, block(104)), QuerySubmissionSets)
    run(state, SubmissionSets(query.query_id, MARKET, 3, [f"{MARKET}.3.p.1"]))
    mine(state, 105, 110)
    effects = run(state, Rewind(101))  # within MAX_REORG_DEPTH: no alert, rule unchanged
    assert of(effects, Alert) == []
    mine(state, 102, 106, branch=1, fork=0)
    [r] = of(run(state, epoch_released(106, 3, branch=1)), Rejected)
    assert r.reason == "epoch_already_batched"

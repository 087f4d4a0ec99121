"""The invariant checks catch what they are for (a checker that never fails proves nothing)."""

from __future__ import annotations

from collections import Counter

from sim import invariants
from sim.keysum import KeySum

M = "0x" + "ab" * 20


def keys(*members: str) -> KeySum:
    k = KeySum()
    for m in members:
        k.add(m)
    return k


def test_missing_and_duplicated_batches_are_caught() -> None:
    assert invariants.batched_exactly_once({(M, 1)}, {(M, 1): [2, 1]}, {(M, 1): 2}).ok
    assert not invariants.batched_exactly_once({(M, 1), (M, 2)}, {(M, 1): [1, 2]}, {(M, 1): 2}).ok
    assert not invariants.batched_exactly_once({(M, 1)}, {(M, 1): [1, 2, 1]}, {(M, 1): 2}).ok
    assert not invariants.batched_exactly_once(set(), {(M, 3): [1]}, {}).ok


def test_wrong_batch_contents_are_caught() -> None:
    want = {(M, 1): keys("a", "b")}
    assert invariants.batches_hold_window_submissions(want, {(M, 1): keys("b", "a")}, []).ok
    assert not invariants.batches_hold_window_submissions(want, {(M, 1): keys("a")}, []).ok
    assert not invariants.batches_hold_window_submissions(
        want, {(M, 1): keys("a", "b", "b")}, []
    ).ok
    assert not invariants.batches_hold_window_submissions(want, {(M, 1): keys("a", "c")}, []).ok
    assert not invariants.batches_hold_window_submissions({}, {}, ["epoch 1 project p"]).ok


def test_lost_or_duplicated_queue_items_are_caught() -> None:
    assert invariants.queue_items_exactly_once(Counter({"a": 1, "b": 1}), Counter("ab")).ok
    assert not invariants.queue_items_exactly_once(Counter("ab"), Counter("a")).ok
    assert not invariants.queue_items_exactly_once(Counter("a"), Counter("aa")).ok


def test_conflicting_or_missing_relayer_calls_are_caught() -> None:
    call = {"dataMarketAddress": M, "epochID": 1, "batchSize": 2}
    ok, repeats = invariants.one_batch_size_call_per_epoch({(M, 1)}, [call, dict(call)])
    assert ok.ok and repeats == 1
    bad, _ = invariants.one_batch_size_call_per_epoch({(M, 1)}, [call, {**call, "batchSize": 3}])
    assert not bad.ok
    none, _ = invariants.one_batch_size_call_per_epoch({(M, 1), (M, 2)}, [call])
    assert not none.ok and "epoch 2" in none.detail


def test_digest_mismatch_is_caught() -> None:
    assert invariants.same_digest("a" * 64, "a" * 64).ok
    assert not invariants.same_digest("a" * 64, "b" * 64).ok

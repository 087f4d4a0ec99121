"""The invariant checks catch what they are for (a checker that never fails proves nothing)."""

from __future__ import annotations

import json

from sim import invariants

M = "0x" + "ab" * 20


def item(epoch: int, batch_id: int, batch: dict[str, list[str]]) -> str:
    return json.dumps(
        {"DataMarketAddress": M, "EpochID": epoch, "BatchID": batch_id, "Batch": batch}
    )


def key(epoch: int, project: str, slot: int) -> str:
    return f"{M}.{epoch}.{project}.{slot}"


def test_missing_and_duplicated_batches_are_caught() -> None:
    good = [item(1, 1, {"p": [key(1, "p", 1)]}), item(1, 2, {"q": [key(1, "q", 2)]})]
    assert invariants.batched_exactly_once({(M, 1)}, good, {(M, 1): 2}).ok
    assert not invariants.batched_exactly_once({(M, 1), (M, 2)}, good, {(M, 1): 2}).ok
    assert not invariants.batched_exactly_once({(M, 1)}, [*good, good[0]], {(M, 1): 2}).ok


def test_wrong_batch_contents_are_caught() -> None:
    batch = [item(1, 1, {"p": [key(1, "p", 1)]})]
    assert invariants.batches_hold_window_submissions({(M, 1): {key(1, "p", 1)}}, batch).ok
    missing = {key(1, "p", 1), key(1, "p", 2)}
    assert not invariants.batches_hold_window_submissions({(M, 1): missing}, batch).ok
    misplaced = [item(1, 1, {"q": [key(1, "p", 1)]})]
    assert not invariants.batches_hold_window_submissions({(M, 1): {key(1, "p", 1)}}, misplaced).ok


def test_lost_or_duplicated_queue_items_are_caught() -> None:
    a, b = item(1, 1, {}), item(2, 1, {})
    assert invariants.queue_items_exactly_once([a, b], [a], [b]).ok
    assert not invariants.queue_items_exactly_once([a, b], [a], []).ok
    assert not invariants.queue_items_exactly_once([a], [a], [a]).ok


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

"""The rewards oracle (`sim.rewards_oracle`) says no to each way a reward update can be
wrong: a final update missing, partial, sent with other counts, twice over different
chunks, for a zero-eligible day or a day not over; a periodic update missing, different
from the finalizer's tallies at batch time, or committed and never delivered."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from seqcollector.core.addresses import checksum
from sim.rewards_oracle import (
    CountLog,
    due_days,
    final_updates_exactly_once,
    periodic_update_every_interval,
)

LC = "0x0c2e22fe7526faef28e7a58c84f8723defce200c"
A = checksum(LC)


def body(slots: list[int], counts: list[int], day: int, eligible: int) -> dict[str, Any]:
    return {
        "dataMarketAddress": A,
        "slotIDs": slots,
        "submissionsList": counts,
        "day": day,
        "eligibleNodes": eligible,
        "authToken": "t",
    }


COUNTED = {(LC, 1): Counter({1: 4, 3: 2, 7: 5}), (LC, 2): Counter({1: 1})}
ELIGIBLE = {(LC, 1): {1, 3, 7}}
RIGHT = [body([1, 3], [4, 2], 1, 3), body([7], [5], 1, 3)]


def finals(delivered: list[dict[str, Any]], due: bool = True) -> bool:
    over = {(LC, 1), (LC, 2)}
    return final_updates_exactly_once(
        delivered, COUNTED, ELIGIBLE, over if due else set(), over, 2
    ).ok


def test_the_right_final_update_passes_repeats_included() -> None:
    assert finals(RIGHT + RIGHT[:1])  # an at-least-once repeat is the same update
    assert finals([], due=False)  # over, not due yet: nothing required


@pytest.mark.parametrize(
    "delivered",
    [
        [],  # missing
        RIGHT[:1],  # a chunk missing
        [body([1, 3], [4, 9], 1, 3), RIGHT[1]],  # another count
        [*RIGHT, body([3, 7], [2, 5], 1, 3)],  # slots sent twice in other chunks
        [body([1, 3], [4, 2], 1, 4), body([7], [5], 1, 4)],  # eligibleNodes wrong
        [*RIGHT, body([1], [1], 2, 1)],  # day 2: nobody eligible, yet a final
        [*RIGHT, body([1], [1], 3, 1)],  # day 3 is not over
    ],
)
def test_a_wrong_final_update_fails(delivered: list[dict[str, Any]]) -> None:
    assert not finals(delivered)


def test_due_days_need_an_epoch_five_above_the_first_of_the_next_day() -> None:
    day = {10: 1, 11: 1, 12: 2, 13: 2, 16: 2, 17: 3}  # block -> day
    batched = {(LC, e): b for e, b in [(1, 10), (2, 11), (3, 12), (4, 13), (8, 16), (9, 17)]}
    due, over = due_days(batched, lambda lc, b: day[b])
    assert over == {(LC, 1), (LC, 2)}
    assert due == {(LC, 1)}  # day 2's first epoch is 9: 14 never batched


def periodic(committed: list[dict[str, Any]], delivered: list[dict[str, Any]]) -> bool:
    counts = CountLog()
    counts.note(5, {(LC, 1): Counter({2: 3, 9: 1})})  # 9 > TotalNodesCount
    counts.note(20, {(LC, 1): Counter({2: 8})})  # after the batch: not what it read

    async def day_at(lc: str, block: int) -> int:
        return 1

    async def check() -> bool:
        result = await periodic_update_every_interval(
            delivered, {(LC, 4): committed}, {(LC, 4): 12, (LC, 5): 13}, counts, day_at, 2, 8, 5
        )
        return result.ok

    return anyio.run(check)


def test_periodic_updates() -> None:
    right = [body([2], [3], 1, 0)]
    assert periodic(right, right)
    assert not periodic([], [])  # missing
    assert not periodic([body([2], [8], 1, 0)], [body([2], [8], 1, 0)])  # later counts
    assert not periodic(right, [])  # committed, never delivered

"""The simulated finalizer's eligibility keys on a real redis-server, as the production
finalizer writes them: per-slot daily counts (TTL 3 days), per-epoch hashes (HINCRBY: batches
of one epoch add up), the eligible set at the daily quota, discarded submissions (a minority
CID), the day as FetchCurrentDay sees it when the batch is finalized, the record kept for the
rewards oracle, and the state cacher's TotalNodesCount."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from seqcollector.runtime.executor import redis_client
from sim.finalizer import ELIGIBLE_TTL_S, Finalizer, FinalizerProcess, judge, snapshot_cid
from sim.state_cacher import write_state_cache

pytestmark = pytest.mark.anyio
LC = "0x0c2e22fe7526faef28e7a58c84f8723defce200c"
EIP55 = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c"


def key(epoch: int, project: str, slot: int) -> str:
    return f"{LC}.{epoch}.{project}.{slot}"


def item(epoch: int, batch_id: int, batch: dict[str, list[str]]) -> str:
    return json.dumps(
        {"DataMarketAddress": EIP55, "EpochID": epoch, "BatchID": batch_id, "Batch": batch},
        separators=(",", ":"),
    )


def value(cid: str) -> str:
    return f'3f2b9c1e-0000-4000-8000-000000000000.{{"request":{{"snapshotCid":"{cid}"}}}}'


@pytest.fixture
async def redis(redis_url: str) -> Any:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


async def queue(redis: aioredis.Redis, *items: str) -> None:
    for text in items:
        await redis.lpush("finalizerQueue", text)


async def test_counts_per_slot_per_epoch_and_the_eligible_set(redis: aioredis.Redis) -> None:
    await redis.set(f"CurrentDayKey.{LC}", 3)
    # epoch 7 in two batches; slot 2 submits for two projects (one in each batch)
    await queue(
        redis,
        item(7, 1, {"a": [key(7, "a", 1), key(7, "a", 2)]}),
        item(7, 2, {"b": [key(7, "b", 2), key(7, "b", 3)]}),
    )
    finalizer = Finalizer(redis, daily_quota=2)
    assert await finalizer.drain() == 2
    await queue(redis, item(8, 1, {"a": [key(8, "a", 1)]}))
    assert await finalizer.drain() == 1
    counts = {s: await redis.get(f"EligibleSlotSubmissionsKey.{LC}.3.{s}") for s in (1, 2, 3)}
    assert counts == {1: b"2", 2: b"2", 3: b"1"}
    assert await redis.hgetall(f"EligibleSlotSubmissionByEpochKey.{LC}.3.7") == {
        b"1": b"1",
        b"2": b"2",  # HINCRBY across the epoch's batches (an HSET would leave 1)
        b"3": b"1",
    }
    assert await redis.hgetall(f"EligibleSlotSubmissionByEpochKey.{LC}.3.8") == {b"1": b"1"}
    assert await redis.smembers(f"EligibleNodeByDayKey.{LC}.3") == {b"1", b"2"}
    for name in (
        f"EligibleSlotSubmissionsKey.{LC}.3.1",
        f"EligibleSlotSubmissionByEpochKey.{LC}.3.7",
        f"EligibleNodeByDayKey.{LC}.3",
    ):
        assert ELIGIBLE_TTL_S - 60 < await redis.ttl(name) <= ELIGIBLE_TTL_S, name
    assert finalizer.counted == {(LC, 3): {1: 2, 2: 2, 3: 1}}
    assert finalizer.eligible == {(LC, 3): {1, 2}}
    assert await redis.keys("DiscardedSubmissionKey.*") == []  # every CID unknown: all kept


async def test_a_minority_cid_is_discarded_and_not_counted(redis: aioredis.Redis) -> None:
    await redis.set(f"CurrentDayKey.{LC}", 2)
    keys = [key(5, "p", s) for s in (1, 2, 3, 4)]
    for k, cid in zip(keys, ["bafyX", "bafyY", "bafyX", "bafyZ"], strict=True):
        await redis.set(k, value(cid))
    tie = [key(5, "q", s) for s in (1, 2)]
    await redis.set(tie[0], value("bafyA"))
    await redis.set(tie[1], value("bafyB"))
    await queue(redis, item(5, 1, {"p": keys, "q": tie}))
    finalizer = Finalizer(redis, daily_quota=10)
    await finalizer.drain()
    discarded = await redis.hgetall(f"DiscardedSubmissionKey.{LC}.2.5")
    assert list(discarded) == [b"p"]  # q: no two agree, both kept
    assert json.loads(discarded[b"p"]) == {
        "MostFrequentSnapshotCID": "bafyX",
        "DiscardedSubmissionCount": 2,
        "DiscardedSubmissions": {"2": ["bafyY"], "4": ["bafyZ"]},
    }
    assert finalizer.counted == {(LC, 2): {1: 2, 2: 1, 3: 1}}
    assert finalizer.discarded == {(LC, 2): 2}
    assert await redis.ttl(f"DiscardedSubmissionKey.{LC}.2.5") > ELIGIBLE_TTL_S - 60


def test_judge_and_cid_rules() -> None:
    assert judge(["k1", "k2"], {"k1": "b", "k2": "a"}) == (None, [])  # no agreement
    assert judge(["k1", "k2", "k3", "k4"], {"k1": "b", "k2": "b", "k3": "a", "k4": "a"}) == (
        "a",  # a tie between agreeing CIDs: the smallest
        ["k1", "k2"],
    )
    assert judge(["k1", "k2", "k3"], {"k1": "a", "k2": "a", "k3": None}) == ("a", [])
    assert snapshot_cid(value("bafyQ")) == "bafyQ"
    assert snapshot_cid('u.{"request":{"slotId":1},"snapshotCid":"bafyT"}') == "bafyT"
    assert snapshot_cid(b"u.not json") is None
    assert snapshot_cid(None) is None
    assert snapshot_cid('u.{"request":{"snapshotCid":""}}') is None


async def test_the_day_is_the_one_current_when_the_batch_is_finalized(
    redis: aioredis.Redis,
) -> None:
    asked: list[str] = []

    async def day_counter(market: str) -> int:
        asked.append(market)
        return 4

    finalizer = Finalizer(redis, daily_quota=1, day_of=day_counter)
    await queue(redis, item(9, 1, {"a": [key(9, "a", 1)]}))
    await finalizer.drain()  # no CurrentDayKey: the contract's dayCounter
    await redis.set(f"CurrentDayKey.{LC}", 5)  # the collector rolled the day over
    await queue(redis, item(10, 1, {"a": [key(10, "a", 1)]}))
    await finalizer.drain()
    assert asked == [LC]
    assert await redis.get(f"EligibleSlotSubmissionsKey.{LC}.4.1") == b"1"
    assert await redis.get(f"EligibleSlotSubmissionsKey.{LC}.5.1") == b"1"
    assert finalizer.eligible == {(LC, 4): {1}, (LC, 5): {1}}
    plain = Finalizer(redis)
    await redis.delete(f"CurrentDayKey.{LC}")
    assert await plain.current_day(LC) == 1  # neither: day 1, as before


async def test_a_finalizer_process_sends_back_what_it_counted(
    redis: aioredis.Redis, redis_url: str
) -> None:
    await redis.set(f"CurrentDayKey.{LC}", 2)
    with FinalizerProcess(redis_url, daily_quota=1) as process:
        await queue(redis, item(3, 1, {"a": [key(3, "a", 6)]}))
        done = process.finish(redis)
    assert done.counted == {(LC, 2): {6: 1}}
    assert done.eligible == {(LC, 2): {6}}
    assert sum(done.consumed.values()) == 1


async def test_the_state_cacher_writes_total_nodes_and_market_keys(
    redis: aioredis.Redis,
) -> None:
    await write_state_cache(redis, 8, epochs_in_a_day={LC: 10}, daily_quota={LC: 6})
    assert await redis.get("TotalNodesCount") == b"8"
    assert await redis.get(f"ProtocolState.{EIP55}.EpochsInADay") == b"10"
    assert await redis.hget("DailySnapshotQuotaTableKey", EIP55) == b"6"
    assert await redis.ttl("TotalNodesCount") == -1
    with pytest.raises(ValueError, match="TotalNodesCount must be >= 0"):
        await write_state_cache(redis, -1)

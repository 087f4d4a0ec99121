"""The cleanup pass on a real redis-server, judged on a state the real pipeline committed.

The pipeline batches epoch 100 (its sets read from Redis), then opens the window of epoch
120; the store also holds sets of other epochs and markets, rollover markers (one pending,
one fired) and the Go collector's dead epoch markers. The pass deletes exactly the stale
ones; the Go start-up cleanup (one DEL of every `SnapshotCollector.<lc>*` key) deletes the
open window's set, and the window is then batched without its submissions.
"""

from __future__ import annotations

import hashlib
import json

import anyio
import pytest
import redis.asyncio as aioredis
from eth_abi.abi import encode

from seqcollector.core import Block, CoreConfig, Log, MarketParams
from seqcollector.core.abi import EPOCH_RELEASED
from seqcollector.runtime.cleanup import (
    NoStoredState,
    cleanup_namespace,
    periodic_cleanup,
    run_beside,
)
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.roundtrips import counting_redis

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

PS = "0x" + "aa" * 20
LC = "0x" + "5c" * 20
OTHER = "0x" + "77" * 20  # not configured
NS = "seqcollector:cleanup"
T0 = 1_700_000_000


def bh(n: int) -> str:
    return "0x" + hashlib.sha256(f"b{n}".encode()).hexdigest()


def block(n: int) -> Block:
    return Block(n, bh(n), bh(n - 1), T0 + 2 * n)


def released(n: int, epoch: int) -> Log:
    data = "0x" + encode(["uint256"] * 3, [1, 2, 3]).hex()
    topics = [EPOCH_RELEASED, "0x" + "00" * 12 + LC[2:], "0x" + epoch.to_bytes(32, "big").hex()]
    return Log(PS, topics, data, n, bh(n), 0)


def sset(epoch: int, header: str, lc: str = LC) -> str:
    return f"SnapshotCollector.{lc}.{epoch}.{header}"


def member(epoch: int, project: str, slot: int) -> str:
    return f"{LC}.{epoch}.{project}.{slot}"


async def seed_and_run(redis: aioredis.Redis) -> Pipeline:
    """Batch epoch 100 (window blocks 100..103), open epoch 120 at block 105; commit."""
    await redis.sadd(sset(100, bh(100)), member(100, "p1", 1), member(100, "p2", 2))
    await redis.sadd(sset(120, bh(105)), member(120, "p1", 1), member(120, "p2", 2))
    config = CoreConfig(protocol_state=PS, markets=[LC], batch_size=5)
    pipeline = Pipeline(RedisExecutor(redis, NS), config)
    await pipeline.open()
    await pipeline.apply([MarketParams(LC, 6, 864_000_000, 1000, 10, 1)])
    await pipeline.apply([block(100), released(100, 100)])
    for n in range(101, 105):
        await pipeline.apply([block(n)])
    await pipeline.apply([block(105), released(105, 120)])
    return pipeline


async def seed_others(redis: aioredis.Redis) -> None:
    await redis.sadd(sset(50, "0xaa"), "x")  # far below the open epoch 120: stale
    await redis.sadd(sset(115, "0xab"), "x")  # just below it: kept
    await redis.sadd(sset(121, "0xac"), "x")  # newer: kept
    await redis.sadd(sset(100, "0xad", OTHER), "x")  # market not configured: kept
    await redis.set("BatchCountKey." + LC + ".100", 1)  # not a cleanup family: kept
    await redis.sadd(f"DayRolloverEpochMarkerSetKey.{LC}", 130)
    marker = {"LastKnownDay": "3", "CurrentEpoch": 130, "BufferEpoch": 135}
    await redis.set(f"DayRolloverEpochMarkerDetailsKey.{LC}.130", json.dumps(marker))  # kept
    await redis.set(f"DayRolloverEpochMarkerDetailsKey.{LC}.90", json.dumps(marker))  # fired
    await redis.sadd(f"EpochMarkerSetKey.{LC}", 7, 8)
    past = {"EpochReleaseBlockNumber": 1, "SubmissionLimitBlockNumber": 50}
    future = {"EpochReleaseBlockNumber": 1, "SubmissionLimitBlockNumber": 10**6}
    await redis.set(f"EpochMarkerDetailsKey.{LC}.7", json.dumps(past))  # head 105 > 50: stale
    await redis.set(f"EpochMarkerDetailsKey.{LC}.8", json.dumps(future))  # kept, so is the set


KEPT = [
    sset(120, bh(105)),
    sset(115, "0xab"),
    sset(121, "0xac"),
    sset(100, "0xad", OTHER),
    f"BatchCountKey.{LC}.100",
    f"DayRolloverEpochMarkerSetKey.{LC}",
    f"DayRolloverEpochMarkerDetailsKey.{LC}.130",
    f"EpochMarkerSetKey.{LC}",
    f"EpochMarkerDetailsKey.{LC}.8",
]
STALE = [
    sset(100, bh(100)),
    sset(50, "0xaa"),
    f"DayRolloverEpochMarkerDetailsKey.{LC}.90",
    f"EpochMarkerDetailsKey.{LC}.7",
]


async def exists(redis: aioredis.Redis, keys: list[str]) -> dict[str, bool]:
    return {k: bool(await redis.exists(k)) for k in keys}


async def test_the_pass_deletes_exactly_the_stale_keys(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        pipeline = await seed_and_run(redis)
        assert sorted(pipeline.state.domain.markets[LC].windows) == [120]
        await seed_others(redis)
        dry = await cleanup_namespace(redis, NS, [LC], dry_run=True)
        assert dry.stale == len(STALE) and dry.deleted == 0
        assert all((await exists(redis, KEPT + STALE)).values())  # a dry run deletes nothing
        assert any(sset(100, bh(100)) in e for e in dry.families["submission_set"].examples)
        report = await cleanup_namespace(redis, NS, [LC])
        assert report.complete and report.deleted == len(STALE)
        fams = report.families
        assert (fams["submission_set"].stale, fams["submission_set"].deleted) == (2, 2)
        assert fams["rollover_details"].deleted == 1
        assert fams["go_epoch_marker_details"].deleted == 1
        assert fams["go_epoch_marker_set"].deleted == 0
        assert await exists(redis, KEPT) == dict.fromkeys(KEPT, True)
        assert await exists(redis, STALE) == dict.fromkeys(STALE, False)
        again = await cleanup_namespace(redis, NS, [LC])
        assert again.deleted == 0  # nothing left to delete
    finally:
        await redis.aclose()


async def test_the_go_marker_set_goes_when_every_member_is_past(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await seed_and_run(redis)
        await redis.sadd(f"EpochMarkerSetKey.{LC}", 7, 9)  # 9 has no details: nothing to wait for
        past = {"EpochReleaseBlockNumber": 1, "SubmissionLimitBlockNumber": 50}
        await redis.set(f"EpochMarkerDetailsKey.{LC}.7", json.dumps(past))
        report = await cleanup_namespace(redis, NS, [LC])
        assert report.families["go_epoch_marker_set"].deleted == 1
        assert not await redis.exists(f"EpochMarkerSetKey.{LC}", f"EpochMarkerDetailsKey.{LC}.7")
    finally:
        await redis.aclose()


async def go_startup_cleanup(redis: aioredis.Redis, lc: str) -> None:
    """The Go collector's CleanupSubmissionSet (cleanup.go): every scanned key is appended
    to the delete list besides the old epochs, so one DEL takes all of the market's sets."""
    keys = [k async for k in redis.scan_iter(match=f"SnapshotCollector.{lc}*", count=100)]
    if keys:
        await redis.delete(*keys)


async def ours(redis: aioredis.Redis, lc: str) -> None:
    await cleanup_namespace(redis, NS, [lc])


@pytest.mark.parametrize(
    "cleanup",
    [
        pytest.param(go_startup_cleanup, marks=pytest.mark.xfail(strict=True), id="go"),
        pytest.param(ours, id="ours"),
    ],
)
async def test_start_up_cleanup_keeps_the_sets_of_open_windows(redis_url: str, cleanup) -> None:  # type: ignore[no-untyped-def]
    """Go defect: the start-up cleanup deletes the open window's set; epoch 120 is then
    batched without its submissions. Ours keeps it, and the batch holds both projects."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        pipeline = await seed_and_run(redis)
        await cleanup(redis, LC)
        assert await redis.exists(sset(120, bh(105)))
        before = await redis.llen("finalizerQueue")
        for n in range(106, 110):  # the window of epoch 120 closes
            await pipeline.apply([block(n)])
        pushed = await redis.lrange("finalizerQueue", 0, -1)
        assert len(pushed) == before + 1
        batch = json.loads(pushed[0])
        assert batch["EpochID"] == 120 and sorted(batch["Batch"]) == ["p1", "p2"]
    finally:
        await redis.aclose()


async def test_no_stored_state_is_refused_when_required(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await redis.sadd(sset(1, "0xaa"), "x")
        with pytest.raises(NoStoredState, match="holds no stored state"):
            await cleanup_namespace(redis, NS, [LC], require_state=True)
        report = await cleanup_namespace(redis, NS, [LC])  # in `run`: nothing known, all kept
        assert report.deleted == 0 and await redis.exists(sset(1, "0xaa"))
    finally:
        await redis.aclose()


async def test_round_trips_and_budget(redis_url: str) -> None:
    """5,000 batched sets: SCAN COUNT 1000 and one UNLINK per SCAN batch; an exhausted
    budget stops the pass, says so, and the next pass finishes the job."""
    redis, trips = counting_redis(redis_url)
    try:
        await seed_and_run(redis)
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(5000):
                pipe.sadd(sset(100, f"0x{i:04x}"), "x")
            await pipe.execute()
        trips.reset()
        report = await cleanup_namespace(redis, NS, [LC])
        assert report.families["submission_set"].deleted == 5001
        # state read + ~6 SCANs + ~6 UNLINKs + 2 scans and a SMEMBERS for the marker families
        assert trips.count <= 20, trips.count
        assert report.round_trips == trips.count - 1
        await redis.sadd(sset(100, "0xffff"), "x")
        cut = await cleanup_namespace(redis, NS, [LC], budget_s=0)
        assert not cut.complete and cut.deleted == 0
        assert (await cleanup_namespace(redis, NS, [LC])).deleted == 1
    finally:
        await redis.aclose()


async def test_periodic_pass_runs_beside_the_collector(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await seed_and_run(redis)
        await redis.sadd(sset(50, "0xaa"), "x")

        async def main() -> None:
            with anyio.fail_after(10):
                while await redis.exists(sset(50, "0xaa")):
                    await anyio.sleep(0.01)

        async def background() -> None:
            await periodic_cleanup(redis, NS, [LC], op_timeout_s=5, interval_s=0.05)

        await run_beside(main, background)  # returns: main ended, the periodic pass cancelled

        async def failing() -> None:
            raise KeyError("main's own error")

        with pytest.raises(KeyError, match="main's own error"):  # not an exception group
            await run_beside(failing, background)
    finally:
        await redis.aclose()

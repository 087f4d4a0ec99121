"""The outbox by lanes, on a real redis-server and a relayer on loopback: a failing
`/submitUpdateRewards` never holds back `/submitBatchSize`; reward chunks go out at most
CONCURRENT_SUBMISSION_COUNT_UPDATES at a time; RETRY_LIMITS attempts per pass and
BATCH_PROCESSING_TIMEOUT per relayer call; nothing lost or sent twice across a restart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from lanekit import LaneRelayer, batch_size, commit, reward_chunk

from seqcollector.core.effects import Alert, Effect
from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.outbox import OutboxDispatcher

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NS = "lanes"
BATCH, REWARDS = "/submitBatchSize", "/submitUpdateRewards"


@pytest.fixture
def relayer() -> Iterator[LaneRelayer]:
    with LaneRelayer() as server:
        yield server


@pytest.fixture
async def redis(redis_url: str) -> Any:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


def outbox(redis: aioredis.Redis, relayer: LaneRelayer, **kwargs: Any) -> OutboxDispatcher:
    settings: dict[str, Any] = {
        "max_attempts": 2,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        "http_timeout_s": 10.0,
        **kwargs,
    }
    return OutboxDispatcher(redis, NS, relayer.url, "tok", relayer.url + "/alerts", **settings)


async def pending(redis: aioredis.Redis) -> list[str]:
    return [i.decode() for i in await redis.zrange(StoreLayout(NS).outbox_pending, 0, -1)]


async def test_failing_reward_lane_never_holds_back_batch_sizes(
    redis: aioredis.Redis, relayer: LaneRelayer
) -> None:
    """200 reward chunks ahead of 5 batch sizes in the outbox, the reward path answering 500:
    the batch sizes all go out, in order, in the first pass; the chunks stay pending (none
    dropped) and go out once the relayer takes them."""
    executor = RedisExecutor(redis, NS)
    rewards: list[Effect] = [reward_chunk(1, 2 * i + 1) for i in range(200)]
    await commit(executor, [rewards, [batch_size(e) for e in (7, 8)], [batch_size(9)]])
    await commit(executor, [[batch_size(10), Alert("a:1", "s", "m", "High"), batch_size(11)]])
    relayer.failing_paths = {REWARDS}

    async with outbox(redis, relayer, reward_concurrency=4) as dispatcher:
        with anyio.fail_after(30):
            assert await dispatcher.deliver_pending(limit=500) == 6  # 5 sizes + the alert
        assert relayer.requests(BATCH) == [f"epoch:{e}" for e in (7, 8, 9, 10, 11)]
        assert len(relayer.requests(REWARDS)) == 400  # 2 attempts (RETRY_LIMITS) each
        assert len(await pending(redis)) == 200

        relayer.failing_paths = set()
        assert await dispatcher.deliver_pending(limit=500) == 200

    assert await pending(redis) == []
    assert sorted(relayer.answered_200(REWARDS).values()) == [1] * 200


async def test_batch_sizes_go_out_while_reward_lane_keeps_failing_under_run(
    redis: aioredis.Redis, relayer: LaneRelayer
) -> None:
    """`run`: each lane loops on its own. Batch sizes committed while the reward lane is
    failing (and backing off) are delivered without waiting for it."""
    executor = RedisExecutor(redis, NS)
    await commit(executor, [[reward_chunk(1, 2 * i + 1) for i in range(50)]])
    relayer.failing_paths = {REWARDS}
    dispatcher = outbox(redis, relayer, max_attempts=3, backoff_initial_s=0.2, backoff_max_s=0.5)
    async with dispatcher, anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run, 0.01)
        for epoch in range(1, 6):
            await commit(executor, [[batch_size(epoch)]])
            with anyio.fail_after(10):
                while dispatcher.lanes[BATCH].delivered < epoch:
                    await anyio.sleep(0.01)
        # the reward lane is still in its first pass (50 chunks x 3 attempts with waits)
        assert dispatcher.lanes[REWARDS].delivered == 0
        tg.cancel_scope.cancel()
    assert relayer.requests(BATCH) == [f"epoch:{e}" for e in range(1, 6)]
    assert len(await pending(redis)) == 50


@pytest.mark.parametrize("bound", [1, 3, 8])
async def test_reward_chunks_in_flight_never_exceed_the_bound(
    redis: aioredis.Redis, relayer: LaneRelayer, bound: int
) -> None:
    """The server holds each request until `bound` are in flight: it sees exactly `bound`
    at once, never more, and batch sizes keep their own single lane beside them."""
    executor = RedisExecutor(redis, NS)
    await commit(executor, [[reward_chunk(2, 2 * i + 1) for i in range(40)] + [batch_size(1)]])
    relayer.hold_until, relayer.hold_max_s = bound + 1, 20.0
    async with outbox(redis, relayer, reward_concurrency=bound) as dispatcher:
        with anyio.fail_after(60):
            assert await dispatcher.deliver_pending() == 41
    assert relayer.peak_in_flight == bound + 1  # the bound, plus the batch size lane's one
    assert dispatcher.lanes[REWARDS].peak_in_flight == bound
    assert dispatcher.lanes[BATCH].peak_in_flight == 1
    assert await pending(redis) == []


async def test_nothing_lost_or_sent_twice_across_a_dispatcher_restart(
    redis: aioredis.Redis, redis_url: str, relayer: LaneRelayer
) -> None:
    """A dispatcher cancelled mid-delivery (reward chunks in flight), then a new one on a
    new client: every entry answered 200 exactly once, each with its id, none left."""
    executor = RedisExecutor(redis, NS)
    chunks = [reward_chunk(3, 2 * i + 1) for i in range(150)]
    await commit(executor, [[*chunks[:75], batch_size(1)], [*chunks[75:], batch_size(2)]])
    relayer.delay_s = 0.01
    first = outbox(redis, relayer, reward_concurrency=5)
    async with first, anyio.create_task_group() as tg:
        tg.start_soon(first.run, 0.01)
        with anyio.fail_after(30):
            while first.lanes[REWARDS].delivered < 40:
                await anyio.sleep(0.005)
        assert first.lanes[REWARDS].in_flight > 0  # cancelled with chunks in flight
        tg.cancel_scope.cancel()
    left = await pending(redis)
    assert 0 < len(left) < 152

    second_client = redis_client(redis_url)
    try:
        async with outbox(second_client, relayer, reward_concurrency=5) as second:
            with anyio.fail_after(30):
                while await second.deliver_pending():
                    pass
    finally:
        await second_client.aclose()
    assert await pending(redis) == []
    assert await redis.hlen(StoreLayout(NS).outbox) == 0
    expected = {f"chunk:3:{2 * i + 1}" for i in range(150)}
    assert set(relayer.answered_200(REWARDS)) == expected
    assert len(relayer.requests(REWARDS)) == 150  # not one sent twice
    assert relayer.requests(BATCH) == ["epoch:1", "epoch:2"]


@pytest.mark.parametrize("retry_limits", [1, 3])
async def test_retry_limits_is_the_attempts_per_pass(
    redis: aioredis.Redis, relayer: LaneRelayer, retry_limits: int
) -> None:
    """RETRY_LIMITS=n: n POSTs per pass for an entry the relayer refuses; the entry stays
    pending, and the next pass makes n more (never dropped)."""
    await commit(RedisExecutor(redis, NS), [[batch_size(1), reward_chunk(1, 1)]])
    relayer.failing_paths = {BATCH, REWARDS}
    async with outbox(redis, relayer, max_attempts=retry_limits) as dispatcher:
        assert await dispatcher.deliver_pending() == 0
        assert len(relayer.requests(BATCH)) == len(relayer.requests(REWARDS)) == retry_limits
        assert await dispatcher.deliver_pending() == 0
        assert len(relayer.requests(BATCH)) == 2 * retry_limits
    assert len(await pending(redis)) == 2


async def test_batch_processing_timeout_bounds_one_calls_attempts(
    redis: aioredis.Redis, relayer: LaneRelayer
) -> None:
    """BATCH_PROCESSING_TIMEOUT bounds a relayer call's attempts in a pass, the attempt in
    flight included (HTTP_TIMEOUT is far longer here): the pass ends, the call stays pending."""
    await commit(RedisExecutor(redis, NS), [[batch_size(1)]])
    relayer.hold_until, relayer.hold_max_s = 99, 5.0  # every answer takes 5 s
    async with outbox(redis, relayer, max_attempts=5, pass_timeout_s=0.3) as dispatcher:
        started = anyio.current_time()
        assert await dispatcher.deliver_pending() == 0
        assert anyio.current_time() - started < 4.0
    assert relayer.requests(BATCH) == []  # the one attempt was still held when it ended
    assert await pending(redis) == ["submitBatchSize:1"]

"""The collector loop and the outbox under a lease (issue 11 §2), on a synthetic chain, on a
real redis-server and on fakeredis: the loop renews the lease past its TTL; when another
holder takes it, the loop stops with `LeaseLost` and writes nothing more, and the outbox
sends nothing."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from seqcollector.core import Input
from seqcollector.core.effects import RelayerCall
from seqcollector.runtime.compose import CollectorRoot, Pace, compose_collector
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.lease import Lease, LeaseLost
from sim.relayer import Relayer
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

pytestmark = pytest.mark.anyio

SPEC = WorldSpec(seed=5, markets=1, blocks=120)
NS = "seqcollector:lease"
KEYS = StoreLayout(NS)
PACE = Pace(dispatch_interval_s=0.01, retry_first_s=0.001, retry_max_s=0.02)


class SlowSource:
    """The synthetic world, one unit every `every_s` (so a run outlives the lease TTL)."""

    def __init__(self, world: SyntheticWorld, redis: aioredis.Redis, every_s: float) -> None:
        self.inner = SyntheticSource(world, redis)
        self.every_s = every_s
        self.chain_head = self.inner.chain_head

    async def units(self) -> AsyncGenerator[Sequence[Input], None]:
        async for unit in self.inner.units():
            await anyio.sleep(self.every_s)
            yield unit


def root_for(redis: aioredis.Redis, relayer: Relayer, lease: Lease) -> CollectorRoot:
    world = SyntheticWorld(SPEC)
    config = world.core_config(batch_size=3, max_reorg_depth=8)
    return compose_collector(
        RedisExecutor(redis, NS),
        config,
        relayer.delivery(),
        pace=PACE,
        handle_signals=False,
        lease=lease,
    )


async def test_the_loop_renews_its_lease_past_the_ttl(redis_backend: Any) -> None:
    redis = redis_backend.client()
    lease = Lease(redis, NS, ttl_s=0.6, holder="a:1:x")
    await lease.acquire()
    with Relayer() as relayer:
        root = root_for(redis, relayer, lease)
        pipeline = root.pipeline()
        await pipeline.open()
        source = SlowSource(SyntheticWorld(SPEC), redis, every_s=0.015)  # ~2 s in all
        with anyio.fail_after(30):
            await root.collector(pipeline, source).run()
        await pipeline.close()
        await root.dispatcher.aclose()
    assert await redis.get(KEYS.lease) == b"a:1:x:1"  # still ours, token 1: renewed throughout
    assert relayer.bodies("/submitBatchSize")  # and it delivered


async def test_lease_taken_stops_the_loop_and_nothing_more_is_written(redis_backend: Any) -> None:
    redis = redis_backend.client()
    lease = Lease(redis, NS, ttl_s=5, holder="a:1:x")
    await lease.acquire()
    with Relayer() as relayer:
        root = root_for(redis, relayer, lease)
        pipeline = root.pipeline()
        await pipeline.open()
        source = SlowSource(SyntheticWorld(SPEC), redis, every_s=0.01)
        collector = root.collector(pipeline, source)

        async def take_over() -> None:
            while pipeline.seq < 40:
                await anyio.sleep(0.01)
            await redis.delete(KEYS.lease)  # the lease expired (paused process)
            other = Lease(redis, NS, ttl_s=5, holder="b:2:y")
            assert (await other.acquire()).token == 2

        lost: list[LeaseLost] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_over)
            try:
                with anyio.fail_after(30):
                    await collector.run()
            except LeaseLost as exc:
                lost.append(exc)
        assert len(lost) == 1 and "lease lost (a:1:x:1) while" in str(lost[0])
        assert "standby" in str(lost[0])
        checkpoint = await redis.get(KEYS.checkpoint)
        posted = len(relayer.requests)
        await anyio.sleep(0.1)
        assert await redis.get(KEYS.checkpoint) == checkpoint  # nothing committed after
        assert len(relayer.requests) == posted
        assert pipeline.seq < len(list(SyntheticWorld(SPEC).inputs()))
        assert lease.value is None
        await pipeline.close()
        await root.dispatcher.aclose()


async def test_outbox_sends_nothing_without_the_lease(redis_backend: Any) -> None:
    redis = redis_backend.client()
    lease = Lease(redis, NS, ttl_s=5, holder="a:1:x")
    await lease.acquire()
    with Relayer() as relayer:
        root = root_for(redis, relayer, lease)
        await root.executor.load()
        calls = [RelayerCall(f"c:{i}", "/submitBatchSize", {"n": i}) for i in range(3)]
        assert await root.executor.commit(1, 1, calls, b"state")
        await redis.delete(KEYS.lease)
        await Lease(redis, NS, ttl_s=5, holder="b:2:y").acquire()
        with pytest.raises(LeaseLost, match="delivering outbox entry"):
            await root.dispatcher.deliver_pending()
        assert relayer.requests == []
        assert await redis.zcard(KEYS.outbox_pending) == 3  # left for the new holder
        await root.dispatcher.aclose()

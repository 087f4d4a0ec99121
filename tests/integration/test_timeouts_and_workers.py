"""Hierarchical deadlines and worker pools of the pipeline (anyio scopes, capacity limiters)."""

from __future__ import annotations

import time

import anyio
import pytest

from seqcollector.config import Timeouts
from seqcollector.core import Input, SubmissionSets, Tick, dump_state, new_state
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.executor import RedisExecutor, embedded_redis
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.workers import WorkerPool, WorkerUnavailable
from sim.synthetic import SyntheticWorld, WorldSpec, drive

pytestmark = pytest.mark.anyio


class SlowReads(RedisExecutor):
    """Every submission-set read takes `delay_s`; counts reads running at once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(embedded_redis(), "t")
        self.delay_s = delay_s
        self.running = self.peak = 0

    def reader(self) -> SubmissionSetReader:
        slow = self

        class Slow(SubmissionSetReader):
            async def answer(self, query: QuerySubmissionSets) -> SubmissionSets:
                slow.running += 1
                slow.peak = max(slow.peak, slow.running)
                try:
                    await anyio.sleep(slow.delay_s)
                finally:
                    slow.running -= 1
                return SubmissionSets(query.query_id, query.market, query.epoch, [])

        return Slow(self.redis)


def world_inputs(markets: int) -> tuple[list[Input], object]:
    """A few blocks with a window open per market, then a tick that closes them all at once."""
    world = SyntheticWorld(WorldSpec(markets=markets, blocks=4, window_s=600))
    config = world.core_config()
    inputs: list[Input] = list(drive(world, config))
    return [*inputs, Tick(now=2_000_000_000)], config


async def pipeline_for(executor: SlowReads, timeouts: Timeouts, pool: WorkerPool) -> Pipeline:
    _, config = world_inputs(3)
    p = Pipeline(executor, config, timeouts, workers=pool, reader=executor.reader())  # type: ignore[arg-type]
    await p.open()
    return p


async def test_windows_of_several_markets_are_read_concurrently_within_the_pool() -> None:
    inputs, _ = world_inputs(3)
    executor = SlowReads(0.05)
    p = await pipeline_for(executor, Timeouts(), WorkerPool("t", 2, 5.0))
    await p.apply(inputs)
    assert executor.peak == 2  # three markets close together; the pool holds two workers


async def test_a_slow_market_read_fails_at_market_processing_and_rolls_back() -> None:
    inputs, _ = world_inputs(1)
    executor = SlowReads(1.0)
    timeouts = Timeouts(market_processing=0.05, batch_preparation=5, event_processing=10)
    p = await pipeline_for(executor, timeouts, WorkerPool("t", 2, 5.0))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await p.apply(inputs)
    assert time.monotonic() - started < 0.9
    # nothing applied: the in-memory state is the committed one (here, the initial state)
    assert p.seq == 0 and dump_state(p.state) == dump_state(new_state(p.config))


async def test_a_child_deadline_never_outlives_its_parent() -> None:
    inputs, _ = world_inputs(1)
    executor = SlowReads(1.0)
    # the market read alone may take 30 s, but the whole group has 0.1 s
    timeouts = Timeouts(market_processing=30, batch_preparation=60, event_processing=0.1)
    p = await pipeline_for(executor, timeouts, WorkerPool("t", 2, 5.0))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await p.apply(inputs)
    assert time.monotonic() - started < 0.9


async def test_worker_acquisition_times_out_with_a_clear_error() -> None:
    pool = WorkerPool("batch preparation", 1, 0.05)
    async with pool.worker("market A epoch 1"):
        with pytest.raises(WorkerUnavailable, match=r"no worker for market B epoch 2 within"):
            async with pool.worker("market B epoch 2"):
                pass
    async with pool.worker("again"):
        assert pool.busy == 1
    assert pool.acquired == 2

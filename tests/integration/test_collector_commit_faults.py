"""The collector over commits Redis refuses or data Redis lost (issue 8, parts 2 and 5), on a
synthetic chain and a real redis-server, with alerts posted to a loopback HTTP server.

- `finalizerQueue` held as a string: the step that pushes batches is refused whole, retried
  with every failure reported and alerted with the key and its type, and once the key is
  deleted every batch is in the queue (the old executor committed the step without them).
- FLUSHALL under the collector: reported as Redis losing data (not "another writer"), an
  alert is posted, and nothing more is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from seqcollector.core import CoreConfig
from seqcollector.core import keys as K
from seqcollector.core.effects import Effect
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisDataLost, RedisExecutor, embedded_redis
from seqcollector.runtime.failures import Failure, FailureReporter
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.replay import replay_journal
from sim.relayer import Relayer
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

SPEC = WorldSpec(seed=3, markets=2, blocks=160)
NS = "seqcollector:faults"


class RecordingReporter(FailureReporter):
    def __init__(self, alert_url: str) -> None:
        super().__init__(alert_url=alert_url, timeout_s=2.0)
        self.failures: list[Failure] = []

    async def report(self, failure: Failure, severity: str = "High", always: bool = False) -> None:
        self.failures.append(failure)
        await super().report(failure, severity, always)


def collector_for(
    redis: aioredis.Redis, executor: RedisExecutor, journal: Path, reporter: FailureReporter
) -> tuple[Collector, Pipeline]:
    world = SyntheticWorld(SPEC)
    config: CoreConfig = world.core_config(batch_size=3, max_reorg_depth=8)
    pipeline = Pipeline(executor, config, journal=journal)
    collector = Collector(
        pipeline,
        SyntheticSource(world, redis),
        reporter=reporter,
        handle_signals=False,
        group_max=4,
        retry_first_s=0.01,
        retry_max_s=0.05,
    )
    return collector, pipeline


async def finalizer_queue(redis: aioredis.Redis) -> list[bytes]:
    return list(reversed(await redis.lrange(K.FINALIZER_QUEUE, 0, -1)))


async def test_refused_step_is_retried_until_the_key_is_fixed_then_every_batch_lands(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.set(K.FINALIZER_QUEUE, "not a list")
    journal = tmp_path / "run.jsonl"
    with Relayer() as slack:
        reporter = RecordingReporter(slack.url + "/slack")
        collector, pipeline = collector_for(redis, RedisExecutor(redis, NS), journal, reporter)
        await pipeline.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(collector.run)
            with anyio.fail_after(30):
                while len(reporter.failures) < 5:
                    await anyio.sleep(0.01)
            stuck_at = pipeline.seq
            await anyio.sleep(0.2)
            assert pipeline.seq == stuck_at  # the refused step holds everything after it
            assert await redis.get(K.FINALIZER_QUEUE) == b"not a list"
            await redis.delete(K.FINALIZER_QUEUE)  # the operator's fix
        await pipeline.close()
        alerts = slack.bodies("/slack")

    refused = "finalizerQueue is a string, LPUSH needs a list"
    assert all(refused in f.error and f.operation == "apply" for f in reporter.failures)
    assert all(f.block is not None for f in reporter.failures)
    assert len(alerts) == 1 and refused in alerts[0]["error_msg"]  # then rate-limited
    # Every batch is in the queue, as a replay of the journal into a clean store gives.
    store = embedded_redis()
    result = await replay_journal(journal, store, "replay")
    assert pipeline.digest is not None and pipeline.digest.hexdigest() == result.digest
    live = await finalizer_queue(redis)
    assert live == await finalizer_queue(store) and len(live) > 20
    await redis.aclose()


class FlushingExecutor(RedisExecutor):
    """Runs FLUSHALL (Redis losing everything) just before its `flush_at`-th commit."""

    def __init__(self, redis: aioredis.Redis, namespace: str, flush_at: int) -> None:
        super().__init__(redis, namespace)
        self.flush_at = flush_at
        self.commits = 0

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        self.commits += 1
        if self.commits == self.flush_at:
            await self._redis.flushall()
        return await super().commit(seq, block, effects, state)


async def test_flushall_stops_the_collector_with_an_alert_saying_redis_lost_data(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    executor = FlushingExecutor(redis, NS, flush_at=6)
    with Relayer() as slack:
        reporter = RecordingReporter(slack.url + "/slack")
        collector, pipeline = collector_for(redis, executor, tmp_path / "j.jsonl", reporter)
        await pipeline.open()
        with pytest.raises(BaseExceptionGroup) as info, anyio.fail_after(30):
            await collector.run()
        await pipeline.close()
        alerts = slack.bodies("/slack")

    assert info.group_contains(RedisDataLost)
    assert executor.commits == 6  # stopped at once: not retried
    assert await redis.exists(StoreLayout(NS).checkpoint, StoreLayout(NS).state) == 0
    [failure] = reporter.failures
    assert failure.error.startswith("RedisDataLost: namespace 'seqcollector:faults': the checkp")
    assert "Redis lost data (FLUSHALL/FLUSHDB" in failure.error
    assert failure.action == "stopped, not retried"
    [alert] = alerts
    assert alert["process_name"] == "SequencerEventCollector: apply"
    assert "Redis lost data" in alert["error_msg"] and "another writer" not in alert["error_msg"]
    assert "stopped, not retried" in alert["error_msg"]
    await redis.aclose()


async def test_a_fatal_alert_is_sent_even_right_after_another_alert(
    redis_url: str, tmp_path: Path
) -> None:
    """The reporter alerts at most once a minute per operation, but a failure that stops the
    collector is always alerted."""
    redis = aioredis.Redis.from_url(redis_url)
    await redis.set(K.FINALIZER_QUEUE, "not a list")  # a retried failure alerts first
    executor = FlushingExecutor(redis, NS, flush_at=40)
    with Relayer() as slack:
        reporter = RecordingReporter(slack.url + "/slack")
        collector, pipeline = collector_for(redis, executor, tmp_path / "j.jsonl", reporter)
        await pipeline.open()
        with pytest.raises(BaseExceptionGroup) as info, anyio.fail_after(30):
            await collector.run()
        await pipeline.close()
        alerts = slack.bodies("/slack")

    assert info.group_contains(RedisDataLost)
    assert [("LPUSH needs a list" in a["error_msg"]) for a in alerts] == [True, False]
    assert "Redis lost data" in alerts[1]["error_msg"]
    await redis.aclose()

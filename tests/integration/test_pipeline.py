"""The live pipeline on a synthetic chain and a real Redis: recording, retries, restarts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from seqcollector.core import CoreConfig
from seqcollector.core.effects import Effect
from seqcollector.journal_dir import JournalDirSpec
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor, embedded_redis
from seqcollector.runtime.pipeline import Pipeline, ResumeError
from seqcollector.runtime.replay import replay_journal
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

pytestmark = pytest.mark.anyio

SPEC = WorldSpec(seed=3, markets=2, blocks=160, reorgs=((1050, 4), (1120, 2)))
NS = "seqcollector:test"


def world_and_config() -> tuple[SyntheticWorld, CoreConfig]:
    world = SyntheticWorld(SPEC)
    return world, world.core_config(batch_size=3, max_reorg_depth=8)


class FlakyExecutor(RedisExecutor):
    """Fails some commits before sending them, and some after they landed (lost reply)."""

    def __init__(self, redis: aioredis.Redis, namespace: str, seed: int) -> None:
        super().__init__(redis, namespace)
        self.rng = random.Random(seed)
        self.failures = 0

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        roll = self.rng.random()
        if roll < 0.15:
            self.failures += 1
            raise RedisConnectionError("injected: connection lost before EXEC")
        done = await super().commit(seq, block, effects, state)
        if roll > 0.9:
            self.failures += 1
            raise RedisConnectionError("injected: reply lost after EXEC")
        return done


async def run_collector(
    redis: aioredis.Redis,
    journal: Path | JournalDirSpec,
    executor: RedisExecutor | None = None,
    stop_at_block: int | None = None,
) -> Pipeline:
    world, config = world_and_config()
    pipeline = Pipeline(executor or RedisExecutor(redis, NS), config, journal=journal)
    await pipeline.open()
    source = SyntheticSource(world, redis)
    stop = None
    if stop_at_block is not None:

        def stop(p: Pipeline) -> bool:
            return p.state.head is not None and p.state.head.number >= stop_at_block

    collector = Collector(
        pipeline, source, stop_when=stop, handle_signals=False, group_max=4, retry_first_s=0.01
    )
    await collector.run()
    await pipeline.close()
    return pipeline


async def queue(redis: aioredis.Redis) -> list[bytes]:
    return list(reversed(await redis.lrange("finalizerQueue", 0, -1)))


async def replayed(journal: Path) -> tuple[str, list[bytes]]:
    store = embedded_redis()
    result = await replay_journal(journal, store, "replay")
    return result.digest, await queue(store)


async def test_recorded_run_replays_to_the_same_digest_and_queue(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    journal = tmp_path / "run.jsonl"
    pipeline = await run_collector(redis, journal)
    assert pipeline.digest is not None
    digest, replay_queue = await replayed(journal)
    assert pipeline.digest.hexdigest() == digest
    live_queue = await queue(redis)
    assert live_queue == replay_queue and len(live_queue) > 20
    assert pipeline.state.counters["rewinds"] == 2
    await redis.aclose()


async def test_failed_commits_are_retried_without_loss_or_duplicates(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    journal = tmp_path / "flaky.jsonl"
    executor = FlakyExecutor(redis, NS, seed=5)
    pipeline = await run_collector(redis, journal, executor=executor)
    assert executor.failures > 5
    digest, replay_queue = await replayed(journal)
    assert pipeline.digest is not None and pipeline.digest.hexdigest() == digest
    assert await queue(redis) == replay_queue
    await redis.aclose()


async def test_restart_resumes_from_the_checkpoint_and_the_journal(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    journal = tmp_path / "restart.jsonl"
    first = await run_collector(redis, journal, stop_at_block=1080)
    assert first.state.head is not None and 1080 <= first.state.head.number < 1159
    # a crash can leave journal lines that were never committed: they must be dropped
    with journal.open("ab") as f:
        f.write(b'{"type":"tick","now":1}\n')
    second = await run_collector(redis, journal)  # a fresh process: same namespace, journal
    assert second.digest is not None
    digest, replay_queue = await replayed(journal)
    assert second.digest.hexdigest() == digest
    assert await queue(redis) == replay_queue
    await redis.aclose()


async def test_resume_refuses_a_recording_it_cannot_continue(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await run_collector(redis, tmp_path / "a.jsonl", stop_at_block=1010)
    _, config = world_and_config()
    pipeline = Pipeline(RedisExecutor(redis, NS), config, journal=tmp_path / "other.jsonl")
    with pytest.raises(ResumeError, match="journal does not exist"):
        await pipeline.open()
    await redis.aclose()


async def test_a_stop_before_the_collector_runs_is_not_lost(redis_url: str, tmp_path: Path) -> None:
    """A stop that comes while the collector is still starting (between construction and
    its task group) ends `run` at once: it used to be dropped, and the collector ran on."""
    world, config = world_and_config()
    redis = aioredis.Redis.from_url(redis_url)
    pipeline = Pipeline(RedisExecutor(redis, NS), config, journal=tmp_path / "j.jsonl")
    await pipeline.open()
    collector = Collector(pipeline, SyntheticSource(world, redis), handle_signals=False)
    collector.stop()
    await collector.run()
    assert collector.stopped and collector.blocks_applied == 0
    await pipeline.close()
    await redis.aclose()

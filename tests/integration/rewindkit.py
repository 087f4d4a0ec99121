"""Stored states for the rewind tests: the live pipeline (`Pipeline` + `Collector`) over the
synthetic chain and dequeuer, into a real Redis, stopped at a chosen block or resumed from
one, exactly as `seqcollector run` commits (one unit per commit here, so a stop lands on
the block asked for)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path

import redis.asyncio as aioredis

from seqcollector.core import Block, CoreConfig, Input, Rewind, State, load_state
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.pipeline import Pipeline
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

NS = "seqcollector"
FIRST = 1000
MAX_DEPTH = 32
HEAD = FIRST + 80  # where the first run stops
TO = HEAD - 25  # where it is rewound to (within MAX_DEPTH): epochs released and batched above it


def spec(reorg_after_head: bool = False) -> WorldSpec:
    """Two markets, an epoch every 10 blocks each, 15-block windows; with
    `reorg_after_head`, the chain replaces blocks TO+1..HEAD right after HEAD (a reorg
    whose common ancestor is TO)."""
    reorgs = ((HEAD + 1, HEAD - TO),) if reorg_after_head else ()
    return WorldSpec(seed=11, markets=2, blocks=140, first_block=FIRST, reorgs=reorgs)


def config_of(world: SyntheticWorld) -> CoreConfig:
    return world.core_config(batch_size=3, max_reorg_depth=MAX_DEPTH)


class ResumedSource:
    """The world's units from the first that `start` accepts on (the submissions of the
    skipped units are written all the same, as the dequeuer went on meanwhile)."""

    def __init__(
        self, world: SyntheticWorld, redis: aioredis.Redis, start: Callable[[list[Input]], bool]
    ) -> None:
        self.inner = SyntheticSource(world, redis)
        self.start = start
        self.chain_head = self.inner.chain_head

    async def units(self) -> AsyncGenerator[list[Input], None]:
        started = False
        async for unit in self.inner.units():
            started = started or self.start(unit)
            if started:
                yield unit


def from_block(n: int) -> Callable[[list[Input]], bool]:
    return lambda unit: isinstance(unit[0], Block) and unit[0].number == n


def from_rewind(unit: list[Input]) -> bool:
    return isinstance(unit[0], Rewind)


async def run(
    redis: aioredis.Redis,
    world: SyntheticWorld,
    stop_at: int | None = None,
    start: Callable[[list[Input]], bool] = lambda unit: True,
    journal: Path | None = None,
) -> Pipeline:
    """Run the collector on `redis` over `world` (from the first unit `start` accepts),
    until block `stop_at` is committed or the world ends; recording `journal` if given."""
    config = config_of(world)
    pipeline = Pipeline(RedisExecutor(redis, NS), config, journal=journal, check_invariants=True)
    await pipeline.open()

    def stop(p: Pipeline) -> bool:
        return stop_at is not None and p.state.head is not None and p.state.head.number >= stop_at

    collector = Collector(
        pipeline,
        ResumedSource(world, redis, start),
        stop_when=stop,
        handle_signals=False,
        group_max=1,
        retry_first_s=0.01,
    )
    await collector.run()
    await pipeline.close()
    return pipeline


async def stored_state(redis: aioredis.Redis) -> State:
    raw = await redis.get(StoreLayout(NS).state)
    assert raw is not None
    return load_state(raw)


async def checkpoint_block(redis: aioredis.Redis) -> int | None:
    raw = await redis.get(StoreLayout(NS).checkpoint)
    assert raw is not None
    block: int | None = json.loads(raw)["block"]
    return block


async def queue(redis: aioredis.Redis) -> list[bytes]:
    return list(reversed(await redis.lrange("finalizerQueue", 0, -1)))


def batch_ids(items: Sequence[bytes]) -> list[tuple[str, int, int]]:
    return [(d["DataMarketAddress"], d["EpochID"], d["BatchID"]) for d in map(json.loads, items)]


async def values(redis: aioredis.Redis, pattern: str) -> dict[bytes, bytes | None]:
    found = sorted(await redis.keys(pattern))
    return dict(zip(found, await redis.mget(found), strict=True)) if found else {}

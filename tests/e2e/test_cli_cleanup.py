"""`seqcollector cleanup [--dry-run]` in a subprocess against a real redis-server: what it
would delete per family with counts and examples, then deletes it; without a stored state
it refuses in one line (exit 2), since it cannot know which windows are open."""

from __future__ import annotations

import hashlib
import json

import pytest
import redis.asyncio as aioredis
from eth_abi.abi import encode
from test_cli_errors import cli, one_line

from seqcollector.core import Block, CoreConfig, Log, MarketParams
from seqcollector.core.abi import EPOCH_RELEASED
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.pipeline import Pipeline

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

PS = "0x" + "ab" * 20
MARKET = "0x" + "cd" * 20
T0 = 1_700_000_000


def bh(n: int) -> str:
    return "0x" + hashlib.sha256(f"c{n}".encode()).hexdigest()


def released(n: int, epoch: int) -> Log:
    data = "0x" + encode(["uint256"] * 3, [1, 2, 3]).hex()
    topics = [EPOCH_RELEASED, "0x" + "00" * 12 + MARKET[2:], "0x" + epoch.to_bytes(32, "big").hex()]
    return Log(PS, topics, data, n, bh(n), 0)


def env(redis_url: str) -> dict[str, str]:
    return {
        "PROTOCOL_STATE_CONTRACT": PS,
        "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
        "SEQ_REDIS_URL": redis_url,
    }


async def batched_and_open(redis_url: str) -> tuple[str, str]:
    """A committed state with epoch 40 batched and epoch 41 open -> (stale set, open set)."""
    redis = aioredis.Redis.from_url(redis_url)
    stale, open_ = (
        f"SnapshotCollector.{MARKET}.40.{bh(1)}",
        f"SnapshotCollector.{MARKET}.41.{bh(6)}",
    )
    await redis.sadd(stale, f"{MARKET}.40.p.1")
    await redis.sadd(open_, f"{MARKET}.41.p.1")
    pipeline = Pipeline(
        RedisExecutor(redis, "seqcollector"), CoreConfig(protocol_state=PS, markets=[MARKET])
    )
    await pipeline.open()
    await pipeline.apply([MarketParams(MARKET, 6, 864_000_000, 1000, 10, 1)])
    await pipeline.apply([Block(1, bh(1), bh(0), T0 + 2), released(1, 40)])
    for n in range(2, 6):
        await pipeline.apply([Block(n, bh(n), bh(n - 1), T0 + 2 * n)])
    await pipeline.apply([Block(6, bh(6), bh(5), T0 + 12), released(6, 41)])
    await redis.aclose()
    return stale, open_


async def test_dry_run_then_cleanup(redis_url: str) -> None:
    stale, open_ = await batched_and_open(redis_url)
    dry = cli(env(redis_url), "cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 keys" in dry.stdout and "submission_set" in dry.stdout
    assert "SnapshotCollector." in dry.stdout and "epoch batched" in dry.stdout
    redis = aioredis.Redis.from_url(redis_url)
    assert await redis.exists(stale, open_) == 2  # a dry run deletes nothing
    done = cli(env(redis_url), "cleanup")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 keys" in done.stdout
    assert not await redis.exists(stale) and await redis.exists(open_)
    await redis.aclose()


def test_no_stored_state_refused_in_one_line(redis_url: str) -> None:
    proc = cli(env(redis_url), "cleanup", "--namespace", "empty")
    one_line(proc, 2, "namespace 'empty'", "no stored state", "windows are open")

"""The live path's lines carry the block, market and epoch they are about: a pipeline driven
over a synthetic chain into a real Redis, then its outbox delivered to a loopback relayer,
with every line rendered as JSON (`seqcollector.logs`)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from seqcollector.core.inputs import Block
from seqcollector.logs import configure_logging, reset_logging
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.outbox import OutboxDispatcher
from seqcollector.runtime.pipeline import Pipeline, context_of
from seqcollector.sources.follower import blocks_context
from sim.relayer import Relayer
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

pytestmark = pytest.mark.anyio

NS = "seqcollector:logctx"
SPEC = WorldSpec(seed=3, markets=2, blocks=80)
MARKET = re.compile(r"^0x[0-9a-f]{40}$")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("json", "debug", buf)
    yield buf
    reset_logging()


def parsed(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


async def test_pipeline_and_outbox_lines_name_their_block_market_and_epoch(
    redis_url: str, log_lines: io.StringIO
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    world = SyntheticWorld(SPEC)
    pipeline = Pipeline(RedisExecutor(redis, NS), world.core_config(batch_size=3))
    await pipeline.open()
    collector = Collector(pipeline, SyntheticSource(world, redis), handle_signals=False)
    await collector.run()
    await pipeline.close()
    with Relayer() as relayer:
        async with OutboxDispatcher(
            redis, NS, relayer.url, "token", relayer.url + "/alerts"
        ) as outbox:
            delivered = await outbox.deliver_pending(limit=1000)
        calls = relayer.bodies("/submitBatchSize")
        alerts = relayer.bodies("/alerts")  # the worlds' malformed submissions: skipped
    await redis.aclose()

    lines = parsed(log_lines)
    commits = [line for line in lines if line["event"] == "group_committed"]
    first = SPEC.first_block
    # every group names its blocks: `block`, and `to_block` when it holds several
    assert commits and all("block" in c for c in commits), commits[:3]
    spans = [(c["block"], c.get("to_block", c["block"])) for c in commits]
    covered = [n for low, high in spans for n in range(low, high + 1)]
    assert covered == sorted(covered) and set(range(first, first + SPEC.blocks)) <= set(covered)

    answered = [line for line in lines if line["event"] == "query_answered"]
    assert len(answered) >= 4  # the windows of both markets closed and were read
    for line in answered:  # a window's read: its market and epoch, in the closing block
        assert MARKET.match(line["market"]) and isinstance(line["epoch"], int), line
        assert first <= line["block"] < first + SPEC.blocks, line
    assert {line["market"] for line in answered} == set(world.core_config().markets)

    sent = [line for line in lines if line["event"] == "outbox_delivered"]
    assert delivered == len(sent) == len(calls) + len(alerts) and calls and alerts
    for line in sent:  # `<kind>:<market>:<epoch>`: the entry's market and epoch
        kind = line["id"].split(":")[0]
        assert line["id"] == f"{kind}:{line['market']}:{line['epoch']}", line
    batch_sizes = {(c["dataMarketAddress"].lower(), c["epochID"]) for c in calls}
    sent_sizes = {(x["market"], x["epoch"]) for x in sent if x["url"].endswith("BatchSize")}
    assert sent_sizes == batch_sizes


def test_group_and_range_context() -> None:
    block = Block(number=9, hash="0x" + "11" * 32, parent_hash="0x" + "22" * 32, timestamp=1)
    assert context_of([block]) == {"block": 9}
    later = Block(number=11, hash="0x" + "33" * 32, parent_hash=block.hash, timestamp=2)
    assert context_of([block, later]) == {"block": 9, "to_block": 11}
    assert context_of([]) == {}
    assert blocks_context(5, 5) == {"block": 5}
    assert blocks_context(5, 9) == {"block": 5, "to_block": 9}
    assert blocks_context(None, None) == {}

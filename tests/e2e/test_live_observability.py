"""`seqcollector run` on anvil serves its API beside the collector: /metrics scraped and
parsed with prometheus-client's text parser during the run, values matching what it did;
/ready flips to 503 when Redis stops and back to 200 when it returns; the read API answers
from what the collector wrote. A real process, a real chain, a real redis-server."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import anyio
import pytest
from livekit import MARKETS, CollectorProcess, LiveWorld, deployed_world
from prometheus_client.parser import text_string_to_metric_families

from seqcollector.core.addresses import checksum
from sim.anvil import Anvil
from sim.redis_server import RedisServer, RedisServerMissing
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio
READ_TOKEN = "read-token-for-the-test"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: it is stopped and started again."""
    try:
        (tmp_path / "redis").mkdir()
        server = RedisServer(tmp_path / "redis")
    except RedisServerMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
async def world(anvil: Anvil, own_redis: RedisServer) -> AsyncIterator[LiveWorld]:
    async with deployed_world(anvil, own_redis.url) as w:
        yield w


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, ls), v in found.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def wait_status(
    session: aiohttp.ClientSession, world: LiveWorld, url: str, status: int, what: str
) -> dict[str, object]:
    seen: list[tuple[int, str]] = []

    async def check() -> bool:
        try:
            seen.append(await get(session, url))
        except aiohttp.ClientError as exc:
            seen.append((0, str(exc)))
        return seen[-1][0] == status

    with anyio.fail_after(60):
        while not await check():
            await anyio.sleep(0.2)
    return json.loads(seen[-1][1]) if seen[-1][1].startswith("{") else {}


async def test_metrics_ready_and_read_api_during_a_live_run(
    world: LiveWorld, relayer: Relayer, own_redis: RedisServer, tmp_path: Path
) -> None:
    collector = CollectorProcess(
        world,
        relayer.url,
        tmp_path / "collector.log",
        extra_env={"AUTH_READ_TOKEN": READ_TOKEN, "SEQ_READY_MAX_LAG_BLOCKS": "1000"},
    ).start()
    try:
        api = collector.api_url()
        released = []
        for _ in range(2):
            for market in MARKETS:
                epoch = await world.release(market)
                for slot in range(1, 4):
                    world.submit(market, epoch, f"project{slot}", slot)
                released.append((market, epoch))
            world.advance()
        world.advance()
        world.wait_for("every epoch batched", lambda: all(world.batched(m, e) for m, e in released))
        calls = lambda: len(relayer.bodies("/submitBatchSize"))  # noqa: E731
        world.wait_for("the relayer told every batch count", lambda: calls() >= len(released))
        async with aiohttp.ClientSession() as session:
            assert (await get(session, api + "/health"))[0] == 200
            await wait_status(session, world, api + "/ready", 200, "ready")
            status, text = await get(session, api + "/metrics")
            assert status == 200
            found = samples(text)
            for market in MARKETS:
                batched = total(found, "seqcollector_epochs_batched_total", market=market)
                assert batched == 2, (market, [k for k in found if "epochs_batched" in k[0]])
            committed = total(found, "seqcollector_committed_block")
            assert committed >= world.ready_block + 1
            assert total(found, "seqcollector_chain_head_block") >= committed
            assert total(found, "seqcollector_rpc_requests_total") > 0
            told = total(found, "seqcollector_relayer_calls_total", path="/submitBatchSize")
            assert told == calls() == len(released), (told, calls())
            assert (
                total(found, "seqcollector_processing_duration_seconds_count", operation="commit")
                > 0
            )

            market, epoch = released[0]
            body = {"token": READ_TOKEN, "epochID": epoch, "dataMarketAddress": checksum(market)}
            async with session.post(api + "/batchCount", json=body) as response:
                answer = await response.json()
                assert response.status == 200, answer
            stored = world.redis.get(f"BatchCountKey.{market}.{epoch}")
            assert answer["info"]["response"] == {"totalBatches": int(stored)}
            assert response.headers["X-Request-ID"] == answer["requestID"]

            port = own_redis.port
            own_redis.halt()
            failing = await wait_status(session, world, api + "/ready", 503, "not ready")
            assert "redis" in failing["failing"], failing
            assert (await get(session, api + "/health"))[0] == 200  # alive: it retries
            own_redis.start(port)
            await wait_status(session, world, api + "/ready", 200, "ready again")
    finally:
        if collector.alive():
            collector.stop(within_s=20)

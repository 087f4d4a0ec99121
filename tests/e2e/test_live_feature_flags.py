"""The feature flags of the API side switch what they name, on a live run (eth-tester chain,
real redis-server, real HTTP on loopback): SEQ_API_ENABLED, FEATURE_METRICS_ENABLED,
WORKER_POOL_METRICS_ENABLED, and AUTH_READ_TOKEN deciding whether the read API is served.
(ATTESTOR_QUEUE_PUSH_ENABLED, SEQ_FEATURE_REWARDS and INIT_CLEANUP_ENABLED have theirs:
tests/unit/test_core_logs.py, tests/integration/test_rewards_pipeline.py,
tests/e2e/test_live_cleanup_migration.py.)"""

from __future__ import annotations

import json

import aiohttp
import anyio
import pytest
from rich.console import Console

from seqcollector.config import load_settings
from seqcollector.core.addresses import checksum
from seqcollector.runtime.live import run_live
from seqcollector.runtime.pipeline import Pipeline
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.redis_server import free_port

pytestmark = pytest.mark.anyio
MARKET = "0x" + "e5" * 20
TOKEN = "flag-test-read-token"


async def probe(env: dict[str, str], redis_url: str) -> dict[str, int | str]:
    """Run the collector with `env` over a few blocks; while it runs, GET /health, /metrics
    and POST /batchCount -> {path: status (0: refused)} and the /metrics text."""
    tester = deterministic_tester(seed=5, block_time=2)
    w3 = async_web3(tester)
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    await contract.create_data_market(MARKET)
    ready = tester.get_block_by_number("latest")["number"]
    port = free_port()
    settings = load_settings(
        environ={
            "SEQ_API_HOST": "127.0.0.1",
            "SEQ_API_PORT": str(port),
            "SEQ_JOURNAL_DIR": "off",
            "PROTOCOL_STATE_CONTRACT": address,
            "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
            "SEQ_REDIS_URL": redis_url,
            "BLOCK_TIME": "0.2",
            "SEQ_START_BLOCK": str(ready + 1),
            **env,
        }
    )
    seen: dict[str, int | str] = {}
    done = anyio.Event()

    async def look() -> None:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            body = {"token": TOKEN, "epochID": 1, "dataMarketAddress": checksum(MARKET)}
            for path in ("/health", "/metrics", "/batchCount"):
                try:
                    if path == "/batchCount":
                        response = await session.post(url + path, json=body)
                    else:
                        response = await session.get(url + path)
                    seen[path] = response.status
                    if path == "/metrics":
                        seen["metrics_text"] = await response.text()
                    response.release()
                except aiohttp.ClientConnectionError:
                    seen[path] = 0
        done.set()

    async def chain() -> None:  # until cancelled: `stop_when` is asked after each block
        while True:
            mine(tester, 1)
            await anyio.sleep(0.05)

    def looked(p: Pipeline) -> bool:
        return done.is_set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(chain)

        async def after_start() -> None:
            await anyio.sleep(1.0)  # the API is up before the chain reads; 1 s is plenty
            await look()

        tg.start_soon(after_start)
        with anyio.fail_after(60):
            await run_live(
                settings,
                "ns",
                None,
                Console(stderr=True, quiet=True),
                providers=[w3.provider],
                stop_when=looked,
                handle_signals=False,
            )
        tg.cancel_scope.cancel()
    return seen


async def test_defaults_serve_probes_and_metrics_but_no_read_api_without_a_token(
    redis_url: str,
) -> None:
    seen = await probe({}, redis_url)
    assert (seen["/health"], seen["/metrics"], seen["/batchCount"]) == (200, 200, 404)
    assert "seqcollector_worker_pool_workers" in str(seen["metrics_text"])


async def test_a_read_token_serves_the_read_api(redis_url: str) -> None:
    seen = await probe({"AUTH_READ_TOKEN": TOKEN}, redis_url)
    assert seen["/batchCount"] == 500  # Go's answer for an epoch with no batch count


async def test_metrics_off_serves_no_metrics(redis_url: str) -> None:
    seen = await probe({"FEATURE_METRICS_ENABLED": "false"}, redis_url)
    assert (seen["/health"], seen["/metrics"]) == (200, 404)


async def test_worker_pool_metrics_off_leaves_out_the_pool(redis_url: str) -> None:
    seen = await probe({"WORKER_POOL_METRICS_ENABLED": "false"}, redis_url)
    assert seen["/metrics"] == 200
    text = str(seen["metrics_text"])
    assert "seqcollector_worker_pool" not in text and "seqcollector_commits_total" in text


async def test_api_off_listens_on_nothing(redis_url: str) -> None:
    seen = await probe({"SEQ_API_ENABLED": "false"}, redis_url)
    assert (seen["/health"], seen["/metrics"], seen["/batchCount"]) == (0, 0, 0)

"""Prometheus metrics: recorded by a collector run on a synthetic chain with a real Redis and a
loopback relayer, scraped over real HTTP (/metrics under uvicorn) and parsed with
prometheus_client's text parser; the values must be what the pipeline did. Also: the RPC
pool's metrics against a real node (anvil), masked endpoint labels, the settings that turn
metrics off, and the worker-pool metrics."""

from __future__ import annotations

import json
import os
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from probekit import get, samples, serving, value

from seqcollector.api.probes import probe_routes
from seqcollector.config import load_settings
from seqcollector.runtime.compose import Pace, compose_collector
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.health import Health
from seqcollector.runtime.metrics import Metrics
from seqcollector.runtime.workers import WorkerPool
from seqcollector.sources.follower import ChainFollower
from seqcollector.sources.retrying import Backoff
from seqcollector.sources.rpc import RpcError, RpcPool, TransportError
from sim.anvil import Anvil, AnvilMissing
from sim.redis_server import free_port
from sim.relayer import Relayer
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

pytestmark = pytest.mark.anyio

SPEC = WorldSpec(seed=3, markets=2, blocks=160, reorgs=((1050, 4), (1120, 2)))
NS = "seqcollector:metrics"
PACE = Pace(dispatch_interval_s=0.01, retry_first_s=0.01, retry_max_s=0.05)


def names_in(metrics: Metrics) -> set[str]:
    return {family.name for family in metrics.registry.collect()}


def test_each_metrics_has_its_own_registry_and_the_settings_decide() -> None:
    a, b = Metrics(), Metrics()  # a second one must not collide (no global registry)
    a.commits.inc()
    assert a.commits._value.get() == 1 and b.commits._value.get() == 0
    assert "seqcollector_worker_pool_wait_seconds" in names_in(a)
    assert (
        Metrics.from_settings(load_settings(environ={"FEATURE_METRICS_ENABLED": "false"})) is None
    )
    off = Metrics.from_settings(load_settings(environ={"WORKER_POOL_METRICS_ENABLED": "false"}))
    assert off is not None
    assert not any(n.startswith("seqcollector_worker_pool") for n in names_in(off))
    off.worker_acquired("batch preparation", 0.1, 1, 2)  # records nothing, never raises
    assert b"worker_pool" not in off.exposition()
    on = Metrics.from_settings(load_settings(environ={}))
    assert on is not None and on.worker_pool
    assert on.endpoint_label("AsyncEthereumTesterProvider") == "AsyncEthereumTesterProvider"
    assert "s3cr3t" not in on.endpoint_label("https://u:s3cr3t@node.example/?key=s3cr3t")


async def test_worker_pool_wait_and_utilisation() -> None:
    metrics = Metrics()
    pool = WorkerPool("batch preparation", 2, 5.0)
    pool.attach_metrics(metrics)
    held = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        async with pool.worker("one"):
            held.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await held.wait()
        parsed = samples(metrics.exposition().decode())
        labels = {"pool": "batch preparation"}
        assert value(parsed, "seqcollector_worker_pool_busy_workers", **labels) == 1
        assert value(parsed, "seqcollector_worker_pool_utilisation_ratio", **labels) == 0.5
        release.set()
    parsed = samples(metrics.exposition().decode())
    assert value(parsed, "seqcollector_worker_pool_wait_seconds_count", **labels) == 1
    assert value(parsed, "seqcollector_worker_pool_busy_workers", **labels) == 0


def relayer_calls(relayer: Relayer, path: str) -> list[dict[str, Any]]:
    return [r.body for r in relayer.requests if r.path == path and r.ok]


async def test_scraped_metrics_match_what_the_pipeline_did(redis_url: str, tmp_path: Path) -> None:
    world = SyntheticWorld(SPEC)
    config = world.core_config(batch_size=3, max_reorg_depth=8)
    redis = aioredis.Redis.from_url(redis_url)
    metrics = Metrics()
    health = Health(redis, NS)
    with Relayer() as relayer:
        root = compose_collector(
            RedisExecutor(redis, NS),
            config,
            relayer.delivery(),
            workers=WorkerPool("batch preparation", 4, 5.0),
            pace=PACE,
            handle_signals=False,
            metrics=metrics,
            health=health,
        )
        pipeline = root.pipeline()
        await pipeline.open()
        collector = root.collector(pipeline, SyntheticSource(world, redis))
        await collector.run()  # the synthetic chain is finite: it stops once applied whole
        with anyio.fail_after(60):
            while await redis.zcard(f"{NS}:outbox:pending"):
                await root.dispatcher.deliver_pending()
        metrics.outbox_backlog(root.dispatcher.backlog())
        async with serving(probe_routes(health, metrics)) as url:
            status, content_type, text = await get(url + "/metrics")
        await root.dispatcher.aclose()
        await pipeline.close()
    assert status == 200 and content_type.startswith("text/plain")
    parsed = samples(text)
    state = pipeline.state
    assert state.head is not None
    assert value(parsed, "seqcollector_committed_block") == state.head.number
    assert value(parsed, "seqcollector_committed_block_timestamp_seconds") == state.head.timestamp
    assert value(parsed, "seqcollector_chain_head_block") == SPEC.first_block + SPEC.blocks - 1
    assert value(parsed, "seqcollector_head_lag_blocks") == 0
    assert value(parsed, "seqcollector_inputs_applied_total") == pipeline.seq
    commits = value(parsed, "seqcollector_commits_total")
    assert commits == health.commits > 0
    commit = {"operation": "commit", "market": ""}
    assert value(parsed, "seqcollector_processing_duration_seconds_count", **commit) == commits
    assert value(parsed, "seqcollector_commit_size_bytes_count") == commits
    assert value(parsed, "seqcollector_commit_size_bytes_sum") > commits * 100  # state + effects
    step = {"operation": "step", "market": ""}
    assert value(parsed, "seqcollector_processing_duration_seconds_count", **step) == pipeline.seq
    # reorgs: the world replaced 4 blocks at 1050 and 2 at 1120, both within MAX_REORG_DEPTH
    assert value(parsed, "seqcollector_reorg_depth_blocks_count") == 2
    assert value(parsed, "seqcollector_reorg_depth_blocks_sum") == 6
    assert value(parsed, "seqcollector_reorg_depth_blocks_bucket", le="2.0") == 1
    assert value(parsed, "seqcollector_rewinds_total", outcome="restored") == 2
    assert state.counters["rewinds"] == 2
    # refusals: each reason as the core counted it
    refused = {k[1][0][1]: v for k, v in parsed.items() if k[0] == "seqcollector_refusals_total"}
    assert refused and all(state.counters[reason] == n for reason, n in refused.items())
    assert "foreign_address" in refused  # the world's noise logs
    # epochs batched, batches and submissions per epoch, per market
    calls = relayer_calls(relayer, "/submitBatchSize")
    epochs = Tally(c["dataMarketAddress"].lower() for c in calls)
    queue = [json.loads(item) for item in await redis.lrange("finalizerQueue", 0, -1)]
    submissions = Tally[str]()
    for item in queue:
        submissions[item["DataMarketAddress"].lower()] += sum(
            len(v) for v in item["Batch"].values()
        )
    assert len(epochs) == SPEC.markets
    for market, n in epochs.items():
        m = {"market": market}
        assert value(parsed, "seqcollector_epochs_batched_total", **m) == n
        assert value(parsed, "seqcollector_batches_per_epoch_count", **m) == n
        batches = sum(c["batchSize"] for c in calls if c["dataMarketAddress"].lower() == market)
        assert value(parsed, "seqcollector_batches_per_epoch_sum", **m) == batches
        assert value(parsed, "seqcollector_submissions_per_epoch_sum", **m) == submissions[market]
        windows = len(state.domain.markets[market].windows)
        assert value(parsed, "seqcollector_open_windows", **m) == windows
        reads = value(
            parsed, "seqcollector_processing_duration_seconds_count", operation="window_read", **m
        )
        assert reads >= n  # one read per batched epoch, and again after a rewind
    assert sum(epochs.values()) == sum(1 for r in relayer.requests if r.path == "/submitBatchSize")
    ok = {"path": "/submitBatchSize", "status": "200"}
    assert value(parsed, "seqcollector_relayer_calls_total", **ok) == len(calls)
    assert value(parsed, "seqcollector_outbox_pending_entries", lane="/submitBatchSize") == 0
    pool = {"pool": "batch preparation"}
    reads_all = sum(
        v
        for k, v in parsed.items()
        if k[0] == "seqcollector_processing_duration_seconds_count"
        and ("operation", "window_read") in k[1]
    )
    assert value(parsed, "seqcollector_worker_pool_wait_seconds_count", **pool) == reads_all
    await redis.aclose()


@pytest.fixture
def anvil_url() -> Iterator[str]:
    """A private anvil (CI fails instead of skipping without it)."""
    try:
        node = Anvil()
    except AnvilMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with node:
        yield node.url


async def test_rpc_requests_errors_and_demotions_by_masked_endpoint(anvil_url: str) -> None:
    secret = "abcdef0123456789abcdef0123456789"
    dead = f"http://user:pw-{secret}@127.0.0.1:{free_port()}/v3/{secret}?key={secret}"
    metrics = Metrics()
    async with RpcPool([dead, anvil_url], request_timeout_s=5.0, max_lag_blocks=5) as pool:
        pool.attach_metrics(metrics)
        head = await pool.head()  # the dead one fails and is demoted, anvil answers
        await pool.request("eth_getBlockByNumber", [hex(head), False])
        with pytest.raises(RpcError):
            await pool.request("eth_noSuchMethod", [])
        names = pool.endpoints
        await pool.batch([("eth_blockNumber", []), ("eth_chainId", [])])
    with pytest.raises(TransportError):
        async with RpcPool([dead], request_timeout_s=5.0) as only_dead:
            only_dead.attach_metrics(metrics)
            await only_dead.request("eth_chainId", [])
    text = metrics.exposition().decode()
    assert secret not in text and "pw-" not in text
    parsed = samples(text)
    live, gone = metrics.endpoint_label(names[1]), metrics.endpoint_label(names[0])
    assert (
        value(parsed, "seqcollector_rpc_requests_total", endpoint=live, method="eth_blockNumber")
        == 1
    )
    assert (
        value(
            parsed, "seqcollector_rpc_requests_total", endpoint=live, method="eth_getBlockByNumber"
        )
        == 1
    )
    assert value(parsed, "seqcollector_rpc_requests_total", endpoint=live, method="batch") == 1
    rpc_error = {"endpoint": live, "method": "eth_noSuchMethod", "kind": "rpc"}
    assert value(parsed, "seqcollector_rpc_errors_total", **rpc_error) == 1
    refused = {"endpoint": gone, "method": "eth_blockNumber", "kind": "transport"}
    assert value(parsed, "seqcollector_rpc_errors_total", **refused) == 1
    assert value(parsed, "seqcollector_rpc_endpoint_demotions_total", endpoint=gone) == 2
    rpc = {"operation": "rpc_call", "market": ""}
    requests = sum(v for k, v in parsed.items() if k[0] == "seqcollector_rpc_requests_total")
    assert value(parsed, "seqcollector_processing_duration_seconds_count", **rpc) == requests


async def test_the_follower_counts_failed_chain_reads_and_records_the_head(anvil_url: str) -> None:
    metrics = Metrics()
    dead = f"http://127.0.0.1:{free_port()}"
    for urls in ([dead], [anvil_url]):
        async with RpcPool(urls, request_timeout_s=5.0) as pool:
            pool.attach_metrics(metrics)
            follower = ChainFollower(
                pool, "0x" + "ab" * 20, retry=Backoff(0.01, 0.02), start_block=0, metrics=metrics
            )

            def failures() -> float:
                parsed = samples(metrics.exposition().decode())
                key = (
                    "seqcollector_errors_total",
                    (("kind", "TransportError"), ("operation", "source_head")),
                )
                return parsed.get(key, 0.0)

            async with aclosing(follower.units()) as units:
                if urls == [dead]:
                    with anyio.move_on_after(30):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(anext, units)
                            while failures() < 2:
                                await anyio.sleep(0.01)
                            tg.cancel_scope.cancel()
                    assert failures() >= 2
                else:
                    first = await anext(units)
                    assert first[0].number == 0
    parsed = samples(metrics.exposition().decode())
    assert value(parsed, "seqcollector_chain_head_block") == follower.chain_head

"""Health: /health and /ready over real HTTP (Litestar under uvicorn on loopback) with a real
Redis that is stopped and restarted on the same port; the error-rate alarm received by a
loopback HTTP server standing in for SLACK_REPORTING_URL; each readiness check and the
`ack-reorg` command; liveness of a running collector."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from probekit import get, get_json, samples, serving, value

from seqcollector.api.probes import probe_routes
from seqcollector.cli import main
from seqcollector.core import Input, dump_state, new_state
from seqcollector.core.effects import Effect
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.failures import FailureReporter
from seqcollector.runtime.health import Health, HealthLimits, reorg_ack_key
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.metrics import Metrics
from seqcollector.runtime.pipeline import Pipeline
from sim.redis_server import RedisServer, RedisServerMissing
from sim.relayer import Relayer
from sim.synthetic import SyntheticWorld, WorldSpec

pytestmark = pytest.mark.anyio

NS = "seqcollector:health"


class Clock:
    """A clock the test moves (the checks compare ages; no test waits on wall time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: it is stopped and started again."""
    (tmp_path / "redis").mkdir()
    try:
        server = RedisServer(tmp_path / "redis")
    except RedisServerMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with server:
        yield server


def fed(health: Health, block: int = 100, chain_head: int = 100) -> Health:
    """A health whose collector started, committed `block` and saw `chain_head`."""
    health.started(None, 0)
    health.committed(block, 0)
    health.observe(chain_head, {})
    return health


def failing(checks: dict[str, dict[str, object]]) -> list[str]:
    return sorted(name for name, c in checks.items() if not c["ok"])


async def test_readiness_flips_to_503_while_redis_is_down_and_back(
    own_redis: RedisServer,
) -> None:
    redis = aioredis.Redis.from_url(own_redis.url)
    health = fed(Health(redis, NS, HealthLimits(redis_timeout_s=2.0)))
    async with serving(probe_routes(health, Metrics())) as url:
        status, body = await get_json(url + "/ready")
        assert (status, body["status"]) == (200, "ok"), body
        assert set(body["checks"]) == {
            "redis",
            "commit",
            "head_lag",
            "outbox",
            "error_rate",
            "deep_reorg",
        }
        port = own_redis.port
        own_redis.halt()
        status, body = await get_json(url + "/ready")
        assert status == 503 and body["status"] == "unavailable"
        assert body["failing"] == ["redis"]
        assert "PING" in body["checks"]["redis"]["detail"]
        status, live = await get_json(url + "/health")
        assert status == 200 and live["status"] == "ok"  # liveness does not need Redis
        own_redis.start(port=port)
        status, body = await get_json(url + "/ready")
        assert status == 200, body
    await redis.aclose()


async def test_each_readiness_check_fails_past_its_limit(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    clock = Clock()
    limits = HealthLimits(
        commit_within_s=20.0, max_lag_blocks=50, max_outbox_age_s=300.0, confirmations=2
    )
    health = Health(redis, NS, limits, clock=clock)
    checks = {c.name: c for c in await health.ready()}
    assert not checks["commit"].ok and "not started" in checks["commit"].detail
    assert not checks["head_lag"].ok
    health.started(None, 0)
    health.committed(100, 0)
    health.observe(152, {"/submitBatchSize": (3, 10.0)})
    assert all(c.ok for c in await health.ready())  # lag 152 - 2 - 100 = 50: at the limit
    health.observe(153)
    checks = {c.name: c for c in await health.ready()}
    assert [n for n, c in checks.items() if not c.ok] == ["head_lag"]
    assert "51 blocks behind" in checks["head_lag"].detail
    clock.now += 21  # no commit for 21 s while blocks wait
    checks = {c.name: c for c in await health.ready()}
    assert not checks["commit"].ok and "SEQ_READY_COMMIT_BLOCKS" in checks["commit"].detail
    health.committed(151, 0)
    health.observe(153, {"/submitBatchSize": (3, 301.0), "alerts": (0, 0.0)})
    checks = {c.name: c for c in await health.ready()}
    assert [n for n, c in checks.items() if not c.ok] == ["outbox"]
    assert "lane /submitBatchSize: 3 pending" in checks["outbox"].detail
    health.observe(153, {})
    clock.now += 60  # the chain stalled: nothing to commit is not a failure
    checks = {c.name: c for c in await health.ready()}
    assert checks["commit"].ok and "nothing to commit" in checks["commit"].detail
    await redis.aclose()


async def test_a_deep_reorg_fails_readiness_until_acknowledged(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    world = SyntheticWorld(WorldSpec())
    state = new_state(world.core_config())
    state.counters["reorg_too_deep"] = 1  # what the core counts for a reorg it cannot undo
    await redis.set(StoreLayout(NS).state, dump_state(state))
    health = Health(redis, NS)
    health.started(100, 0)
    health.observe(100)
    health.committed(100, 1)  # a deep reorg landed after the start
    checks = {c.name: c for c in await health.ready()}
    assert not checks["deep_reorg"].ok
    assert f"seqcollector ack-reorg --namespace {NS}" in checks["deep_reorg"].detail
    monkeypatch.setenv("SEQ_REDIS_URL", redis_url)
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(main, ["ack-reorg", "--namespace", NS])
    )
    assert result.exit_code == 0, result.output
    assert "1 deep reorg(s) acknowledged" in result.output
    assert await redis.get(reorg_ack_key(NS)) == b"1"
    assert all(c.ok for c in await health.ready())
    health.committed(101, 2)  # another one after the acknowledgement
    assert not {c.name: c for c in await health.ready()}["deep_reorg"].ok
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(main, ["ack-reorg", "--namespace", "nothing-here"])
    )
    assert result.exit_code == 2 and "holds no stored state" in result.output
    await redis.aclose()


async def test_error_rate_alerts_once_on_crossing_and_once_on_recovery(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    metrics = Metrics()
    with Relayer() as slack:  # a loopback HTTP server standing in for SLACK_REPORTING_URL
        reporter = FailureReporter(slack.url + "/alerts")
        reporter.metrics = metrics
        health = fed(Health(redis, NS, HealthLimits(error_rate_threshold=0.5), reporter, metrics))
        await health.evaluate_error_rate()  # the interval of `fed`: 1 commit, no failure

        async def interval(commits: int, failures: int) -> float:
            for _ in range(commits):
                health.committed(100, 0)
            for _ in range(failures):
                health.failed()
            return await health.evaluate_error_rate()

        assert await interval(10, 0) == 0.0
        assert await interval(1, 5) == 5 / 6  # crosses: one alert
        assert await interval(0, 4) == 1.0  # still above: no new alert
        assert await interval(2, 2) == 0.5  # at the threshold: recovers (not above it)
        assert await interval(3, 3) == 0.5  # stays recovered: nothing
        assert await interval(1, 3) == 0.75  # crosses again: a second episode
        checks = {c.name: c for c in await health.ready()}
        assert not checks["error_rate"].ok and "0.750" in checks["error_rate"].detail
        assert await interval(0, 0) == 0.0  # an idle interval recovers
        alerts = [r.body for r in slack.requests if r.path == "/alerts"]
    assert [a["severity"] for a in alerts] == ["High", "Low", "High", "Low"]
    assert all(a["process_name"] == "SequencerEventCollector: error_rate" for a in alerts)
    assert "above MONITORING_ERROR_RATE_THRESHOLD" in alerts[0]["error_msg"]
    assert "back at or below" in alerts[1]["error_msg"]
    parsed = samples(metrics.exposition().decode())
    assert value(parsed, "seqcollector_error_rate_transitions_total", transition="crossed") == 2
    assert value(parsed, "seqcollector_error_rate_transitions_total", transition="recovered") == 2
    assert value(parsed, "seqcollector_error_rate_degraded") == 0
    assert value(parsed, "seqcollector_error_rate_ratio") == 0
    assert value(parsed, "seqcollector_alerts_sent_total", origin="runtime", severity="High") == 2
    await redis.aclose()


class HeldSource:
    """A few units, then nothing until released: a collector that keeps running."""

    def __init__(self, units: Sequence[Sequence[Input]]) -> None:
        self._units = list(units)
        self.chain_head: int | None = 1002
        self.release = anyio.Event()

    async def units(self) -> AsyncGenerator[Sequence[Input], None]:
        for unit in self._units:
            yield unit
        await self.release.wait()


class FailingExecutor(RedisExecutor):
    """Refuses every commit while `down` (a Redis outage as the pipeline sees it)."""

    down = True

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        if self.down:
            raise ConnectionError("injected: Redis is down")
        return await super().commit(seq, block, effects, state)


async def test_a_running_collector_is_live_feeds_health_and_stops_being_live(
    redis_url: str,
) -> None:
    world = SyntheticWorld(WorldSpec(blocks=3))
    units = [[inp] for inp in world.inputs()][:3]
    redis = aioredis.Redis.from_url(redis_url)
    metrics = Metrics()
    health = Health(redis, NS, metrics=metrics)
    executor = FailingExecutor(redis, NS)
    pipeline = Pipeline(executor, world.core_config(), metrics=metrics)
    await pipeline.open()
    source = HeldSource(units)
    collector = Collector(
        pipeline,
        source,
        handle_signals=False,
        retry_first_s=0.01,
        retry_max_s=0.02,
        metrics=metrics,
        health=health,
        heartbeat_s=0.05,
    )
    async with serving(probe_routes(health, metrics)) as url, anyio.create_task_group() as tg:
        assert (await get_json(url + "/health"))[1]["detail"] == "starting"
        tg.start_soon(collector.run)
        with anyio.fail_after(30):
            while health.failures < 3:
                await anyio.sleep(0.01)
        status, body = await get_json(url + "/health")
        assert (status, body["status"], body["detail"]) == (200, "ok", "running")
        executor.down = False
        with anyio.fail_after(30):
            while health.commits < 1 or health.chain_head != 1002:
                await anyio.sleep(0.01)
        collector.stop()
    status, body = await get_json_after(health)
    assert status == 503 and "stopped" in body
    parsed = samples(metrics.exposition().decode())
    failures = value(parsed, "seqcollector_errors_total", operation="apply", kind="ConnectionError")
    assert failures == health.failures >= 3
    assert value(parsed, "seqcollector_chain_head_block") == 1002
    await pipeline.close()
    await redis.aclose()


async def get_json_after(health: Health) -> tuple[int, str]:
    """/health once the collector has stopped (a new server: the old one closed with it)."""
    async with serving(probe_routes(health, None)) as url:
        status, body = await get_json(url + "/health")
        metrics_status = (await get(url + "/metrics"))[0]
    assert metrics_status == 404  # no /metrics route without metrics
    return status, str(body["detail"])


async def test_a_collector_failing_its_commits_raises_the_alarm_and_clears_it(
    redis_url: str,
) -> None:
    """The real loop: a collector whose commits fail while Redis is 'down', its health
    evaluating every 0.2 s; one High alert once the rate crosses, one Low once it is back."""
    world = SyntheticWorld(WorldSpec(blocks=3))
    units = [[inp] for inp in world.inputs()][:3]
    redis = aioredis.Redis.from_url(redis_url)
    metrics = Metrics()
    with Relayer() as slack:
        reporter = FailureReporter(slack.url + "/alerts")
        limits = HealthLimits(error_rate_threshold=0.1, interval_s=0.2)
        health = Health(redis, NS, limits, reporter, metrics)
        executor = FailingExecutor(redis, NS)
        pipeline = Pipeline(executor, world.core_config(), metrics=metrics)
        await pipeline.open()
        collector = Collector(
            pipeline,
            HeldSource(units),
            reporter=reporter,
            handle_signals=False,
            retry_first_s=0.01,
            retry_max_s=0.02,
            metrics=metrics,
            health=health,
            heartbeat_s=0.05,
        )

        def alarms() -> list[str]:
            return [
                r.body["severity"]
                for r in slack.requests
                if r.body.get("process_name") == "SequencerEventCollector: error_rate"
            ]

        async with anyio.create_task_group() as tg:
            tg.start_soon(collector.run)
            with anyio.fail_after(30):
                while not alarms():
                    await anyio.sleep(0.01)
            executor.down = False  # Redis is back: the commits land, the rate falls to 0
            with anyio.fail_after(30):
                while alarms()[-1] != "Low":
                    await anyio.sleep(0.01)
            assert not health.degraded and health.commits >= 1
            collector.stop()
        await pipeline.close()
        seen = alarms()
    # One High on crossing, one Low on recovery (a loop stalled for a whole interval while
    # Redis was down would add a pair: still never two of the same in a row).
    assert seen[0] == "High" and seen == ["High", "Low"] * (len(seen) // 2)
    parsed = samples(metrics.exposition().decode())
    pairs = len(seen) // 2
    assert value(parsed, "seqcollector_error_rate_transitions_total", transition="crossed") == pairs
    assert (
        value(parsed, "seqcollector_error_rate_transitions_total", transition="recovered") == pairs
    )
    await redis.aclose()


async def test_a_standby_is_live_and_answers_ready_503_standby(redis_url: str) -> None:
    """Active/standby: while `run` waits for the lease it is live, not ready, and says
    who holds the lease; the takeover (`started`) makes it an ordinary collector again."""
    redis = aioredis.Redis.from_url(redis_url)
    health = Health(redis, NS, HealthLimits(redis_timeout_s=2.0))
    health.standby("lease held by box:7:beef, token 3")
    async with serving(probe_routes(health, Metrics())) as url:
        status, body = await get_json(url + "/ready")
        assert (status, body["status"]) == (503, "standby"), body
        assert body["failing"] == ["lease"]
        assert body["checks"]["lease"]["detail"] == "standby: lease held by box:7:beef, token 3"
        assert body["checks"]["redis"]["ok"] is True
        status, live = await get_json(url + "/health")
        assert (status, live["detail"]) == (200, "standby: lease held by box:7:beef, token 3")
        health.started(None, 0)
        status, body = await get_json(url + "/ready")
        assert body["status"] != "standby" and "lease" not in body["checks"], body
        health.stopped()
        health.standby("lease held by other:1:aa, token 4")  # lost it: standing by again
        assert (await get_json(url + "/health"))[0] == 200
    await redis.aclose()

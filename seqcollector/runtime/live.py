"""`seqcollector run`: a live collector assembled from the settings.

RPC pool -> chain follower -> collector (pipeline, executor) + outbox dispatcher, assembled
by `runtime.compose`. The first start begins at SEQ_START_BLOCK (default: the confirmed
chain head); every later start resumes from the checkpoint, with the recent block hashes the
core holds, so reorgs across a restart are seen.

Start-up (`runtime.startup`): Redis (PING, its database), the RPC nodes and the contract are
retried for SEQ_STARTUP_TIMEOUT_S, then one line. The block where processing starts is
computed once (`first_block`) and given to the follower; the market parameters are read as of
the block before it (ARCHIVE_RPC_NODES when configured, else RPC_NODES), so each epoch is
counted into the day the chain had.

Active/standby (`runtime.lease`): after the RPC nodes and the contract check, `run` takes the
namespace's lease `<ns>:lease` (SEQ_HA_LEASE_S) before anything else. While another process
holds it, it stands by: one `standby` log line per holder ("standby: lease held by X, token
N"), /ready 503 "standby", an `eth_blockNumber` per lease period to keep the RPC pool warm,
an acquisition attempt every third of the lease. Once it has the lease it takes over from
the checkpoint, as a restart does (`_active`: load state, migrations, start-up cleanup,
market parameters, follower). On lease loss (`LeaseLost`) it stops its collector and outbox
and stands by again; on SIGINT/SIGTERM it releases the lease, so a standby takes over at
once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog
from redis.exceptions import RedisError
from rich.console import Console
from web3.providers.async_base import AsyncBaseProvider

from seqcollector.api.collector_app import collector_app
from seqcollector.api.server import serve
from seqcollector.config import Settings, mask_url
from seqcollector.core.effects import QueryEligibleOnChain, QuerySubmissionSets
from seqcollector.core.inputs import MarketParams
from seqcollector.errors import DependencyError, SettingsError
from seqcollector.journal_dir import JournalDirSpec, spec_from_settings
from seqcollector.runtime.alive import keep_alive
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.cleanup import cleanup_at_start, periodic_cleanup_for, run_beside
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.compose import CollectorRoot, Delivery, compose_collector, poll_interval_s
from seqcollector.runtime.delivery_ledger import DeliveryLedger, ledger_of
from seqcollector.runtime.executor import (
    Checkpoint,
    RedisDataLost,
    RedisExecutor,
    RedisLostSteps,
    redis_client,
)
from seqcollector.runtime.failures import Failure, FailureReporter
from seqcollector.runtime.health import Health
from seqcollector.runtime.lease import Lease, LeaseHolder, LeaseLost, while_held
from seqcollector.runtime.memory_report import memory_reports
from seqcollector.runtime.metrics import Metrics
from seqcollector.runtime.migration import migrate_at_start
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.progress import CatchUpProgress
from seqcollector.runtime.recovery import recover
from seqcollector.runtime.reward_answers import EligibleOnChainReader
from seqcollector.runtime.startup import (
    StartupRetry,
    check_contract,
    check_markets,
    check_redis,
    describe_failure,
    open_pool,
    read_market_params,
    with_retries,
)
from seqcollector.runtime.stored_days import read_stored_days
from seqcollector.runtime.workers import WorkerPool
from seqcollector.sources.rpc import RpcPool

log = structlog.get_logger(__name__)


def first_block(
    last_known: int | None, start_block: int | None, head: int, confirmations: int
) -> int:
    """Where processing starts: after the core's last block when resuming, else
    SEQ_START_BLOCK, else the confirmed head (the rule of `ChainFollower`)."""
    if last_known is not None:
        return last_known + 1
    if start_block is not None:
        return start_block
    return max(head - confirmations, 0)


def params_block(first: int) -> int:
    """The block whose state the market parameters are read from: the state after block
    first-1, the one before the first processed (block 0 when starting at 0)."""
    return max(first - 1, 0)


def journal_of(
    settings: Settings, namespace: str, record: Path | None
) -> Path | JournalDirSpec | None:
    """`--record FILE`, else SEQ_JOURNAL_DIR/<namespace> (`off`: none, logged loudly)."""
    if record is not None:
        return record
    spec = spec_from_settings(settings, namespace)
    if spec is None:
        log.warning(
            "journal_off",
            setting="SEQ_JOURNAL_DIR",
            hint="no journal is written: an incident cannot be replayed and a Redis that "
            "loses its data cannot be rebuilt; unset SEQ_JOURNAL_DIR to journal again",
        )
    else:
        log.info("journal_dir", path=str(spec.path))
    return spec


def redis_db_setting(settings: Settings) -> str:
    return "SEQ_REDIS_URL" if settings.redis_url_override else "REDIS_DB"


async def wait_for_block(
    head: Callable[[], Awaitable[int]], block: int, first: int, poll_s: float
) -> None:
    """Wait (logged) until the chain has `block`, whose state the parameters are read from."""
    last_log = -1e9
    while (now_head := await head()) < block:
        now = anyio.current_time()
        if now - last_log >= 10:
            last_log = now
            log.warning(
                "start_block_beyond_head",
                start_block=first,
                chain_head=now_head,
                waiting_for=block,
            )
        await anyio.sleep(poll_s)


async def run_live(
    settings: Settings,
    namespace: str,
    record: Path | None,
    console: Console,
    *,
    providers: Sequence[AsyncBaseProvider] = (),
    stop_when: Callable[[Pipeline], bool] | None = None,
    handle_signals: bool = True,
    recover: bool = False,
) -> str | None:
    """Run until SIGINT/SIGTERM (or `stop_when`); returns the journal's effects digest
    (`replay` of the `--record` file, or of the SEQ_JOURNAL_DIR directory, gives the same),
    None when SEQ_JOURNAL_DIR=off. `providers` add in-process nodes (eth-tester) to RPC_NODES.

    The read API, /health, /ready and /metrics (`api.collector_app`) are served from the
    start, beside the collector, on SEQ_API_HOST:SEQ_API_PORT unless SEQ_API_ENABLED=false;
    they stop with it.

    `recover` (`run --recover`): Redis lost the namespace's data; rebuild it from the journal
    `record` first (`runtime.recovery`), alert High with what could not be rebuilt, then
    carry on from the journal's end."""
    settings.core_config()  # a core configuration the core refuses stops here, first
    retry = StartupRetry(settings.startup_timeout_s)
    shown = mask_url(settings.redis_url())
    await check_redis(settings.redis_url(), shown, redis_db_setting(settings), retry)
    redis = redis_client(settings.redis_url())
    reporter = FailureReporter(settings.slack_reporting_url, timeout_s=settings.http_timeout)
    metrics = Metrics.from_settings(settings)
    health = Health.from_settings(settings, redis, namespace, reporter, metrics)
    if recover:
        await _recover(settings, namespace, record, redis, reporter)
    done: list[str | None] = []
    failed: list[BaseException] = []
    try:
        async with anyio.create_task_group() as served:
            if settings.features.api:  # SEQ_API_ENABLED: from the start, so /health answers
                app = collector_app(settings, redis, health, metrics)
                port = await served.start(serve, app, settings.api_host, settings.api_port)
                log.info("api_listening", host=settings.api_host, port=port)
            try:
                digest = await _run_live(
                    settings,
                    namespace,
                    record,
                    console,
                    redis,
                    reporter,
                    metrics,
                    health,
                    providers=providers,
                    stop_when=stop_when,
                    handle_signals=handle_signals,
                )
                done.append(digest)
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # re-raised below as itself, not in a group
                failed.append(exc)
            finally:
                served.cancel_scope.cancel()
    finally:
        await redis.aclose()
    if failed:
        raise failed[0]
    return done[0]


async def _run_live(
    settings: Settings,
    namespace: str,
    record: Path | None,
    console: Console,
    redis: Any,
    reporter: FailureReporter,
    metrics: Metrics | None,
    health: Health,
    *,
    providers: Sequence[AsyncBaseProvider],
    stop_when: Callable[[Pipeline], bool] | None,
    handle_signals: bool,
) -> str | None:
    config = settings.core_config()
    retry = StartupRetry(settings.startup_timeout_s)
    async with AsyncExitStack() as stack:
        pool = await open_pool(stack, "RPC_NODES", settings.rpc_nodes, settings, retry, providers)
        nodes = f"RPC_NODES ({', '.join(pool.endpoints)})"
        fix_nodes = "check that RPC_NODES point at a running node of the chain"
        chain_head = partial(with_retries, nodes, fix_nodes, pool.head, retry)
        head = await chain_head()
        health.observe(head)  # /ready's lag check knows the head before the first commit
        await with_retries(
            nodes, fix_nodes, partial(check_contract, pool.request, config.protocol_state), retry
        )
        lease = Lease(redis, namespace, settings.ha_lease_s)
        stop = _Stop()
        seen: list[Checkpoint] = []  # the checkpoint this process left when it lost the lease
        done: list[str | None] = []

        async def lease_loop() -> None:
            while not stop.requested:
                got = False
                with anyio.CancelScope() as scope:
                    stop.scope = scope
                    got = await _stand_by(lease, pool.head, health)
                if not got:
                    return  # stopped while standing by
                try:
                    with anyio.CancelScope() as scope:
                        stop.scope = scope
                        digest = await _active(
                            settings,
                            namespace,
                            record,
                            console,
                            redis,
                            reporter,
                            metrics,
                            health,
                            lease,
                            pool,
                            chain_head,
                            stop,
                            seen,
                            stop_when=stop_when,
                        )
                        done.append(digest)
                    return
                except LeaseLost as exc:
                    log.warning("lease_lost", error=str(exc), action="standing by again")
                    if metrics is not None:
                        metrics.error("lease", "LeaseLost")
                except RedisLostSteps as exc:  # a Redis failover lost the last steps
                    log.warning(
                        "redis_lost_steps",
                        error=str(exc),
                        action="giving the lease back and taking over again from the stored "
                        "checkpoint: the lost steps are redone from the chain",
                    )
                    if metrics is not None:
                        metrics.error("commit", "RedisLostSteps")
                    # if it cannot be given back, it expires and the standby loop takes it
                    unreachable = (RedisError, TimeoutError, OSError)
                    with anyio.CancelScope(shield=True), suppress(*unreachable):
                        await lease.release()

        try:
            signals = partial(_on_signals, stop) if handle_signals else anyio.sleep_forever
            await run_beside(lease_loop, signals)
            return done[0] if done else None
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await lease.release()
                except (RedisError, TimeoutError, OSError) as exc:
                    log.warning(
                        "lease_not_released",
                        key=lease.key,
                        error=f"{type(exc).__name__}: {exc}",
                        action=f"a standby takes over once it expires ({lease.ttl_s:g} s)",
                    )


class _Stop:
    """SIGINT/SIGTERM for the whole run: a clean stop of the collector while it runs (its
    last step lands whole), else the cancellation of what runs (standby, take-over)."""

    def __init__(self) -> None:
        self.requested = False
        self.collector: Collector | None = None
        self.scope: anyio.CancelScope | None = None

    def __call__(self) -> None:
        self.requested = True
        if self.collector is not None:
            self.collector.stop()
        elif self.scope is not None:
            self.scope.cancel()


async def _on_signals(stop: _Stop) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("stopping", signal=signal.Signals(signum).name)
            stop()


async def _stand_by(lease: Lease, head: Callable[[], Awaitable[int]], health: Health) -> bool:
    """Wait until this process holds `lease` -> True. Meanwhile: one `standby` line per
    holder, /ready 503 "standby", the RPC pool kept warm (one `eth_blockNumber` per lease
    period), an attempt every third of the lease."""
    shown: LeaseHolder | None = None
    warmed = anyio.current_time()
    while True:
        try:
            now = await lease.acquire()
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning(
                "lease_not_acquired",
                key=lease.key,
                error=f"{type(exc).__name__}: {exc}",
                action=f"retried in {lease.renew_every_s:g} s",
            )
        else:
            if lease.value is not None:
                if shown is not None:
                    log.info("lease_acquired", holder=now.holder, token=now.token)
                return True
            if now != shown:
                shown = now
                log.info(
                    "standby",
                    message=f"standby: lease held by {now.holder}, token {now.token}",
                    holder=now.holder,
                    token=now.token,
                    key=lease.key,
                )
            health.standby(f"lease held by {now.holder}, token {now.token}")
        if anyio.current_time() - warmed >= lease.ttl_s:
            warmed = anyio.current_time()
            try:
                health.observe(await head())
            except Exception as exc:  # the next period tries again
                log.warning("standby_rpc_failed", error=f"{type(exc).__name__}: {exc}")
        await anyio.sleep(lease.renew_every_s)


async def _active(
    settings: Settings,
    namespace: str,
    record: Path | None,
    console: Console,
    redis: Any,
    reporter: FailureReporter,
    metrics: Metrics | None,
    health: Health,
    lease: Lease,
    pool: RpcPool,
    chain_head: Callable[[], Awaitable[int]],
    stop: _Stop,
    seen: list[Checkpoint],
    *,
    stop_when: Callable[[Pipeline], bool] | None,
) -> str | None:
    """Hold the lease: take over from the checkpoint and run until stopped (-> the digest)
    or until the lease is lost (`LeaseLost`)."""
    config = settings.core_config()
    retry = StartupRetry(settings.startup_timeout_s)
    shown = mask_url(settings.redis_url())
    poll_s = poll_interval_s(settings)
    nodes = f"RPC_NODES ({', '.join(pool.endpoints)})"
    log.info("active", holder=lease.holder, token=lease.token, key=lease.key)
    journal = journal_of(settings, namespace, record)
    async with AsyncExitStack() as stack:

        async def take_over() -> tuple[
            CollectorRoot, Pipeline, list[tuple[int, str]], int, int, list[MarketParams]
        ]:
            """The start of a run, with the lease renewed meanwhile."""
            head = await chain_head()
            workers = WorkerPool(
                "batch preparation",
                settings.worker_pool.size,
                settings.worker_pool.acquisition_timeout,
            )
            on_chain = EligibleOnChainReader.from_settings(pool.request, settings)
            root = compose_collector(
                RedisExecutor(redis, namespace),
                config,
                Delivery.from_settings(settings),
                timeouts=settings.timeouts,
                journal=journal,
                workers=workers,
                reporter=reporter,
                handle_signals=False,  # `_on_signals` stops it (`_Stop`)
                answerers={
                    QueryEligibleOnChain: on_chain,
                    QuerySubmissionSets: SubmissionSetReader(
                        redis, clock=time.time, sets_ttl_s=settings.submission_sets_ttl_s
                    ),
                },
                metrics=metrics,
                health=health,
                lease=lease,
                ledger=DeliveryLedger(ledger_of(journal)) if journal is not None else None,
            )
            pipeline = root.pipeline()
            try:
                await pipeline.open()
                if not settings.attestor_queue_push_enabled:
                    with anyio.fail_after(settings.timeouts.redis_operation):
                        await redis.delete("attestorQueue")  # the Go collector's start-up rule
            except (RedisError, TimeoutError) as exc:
                budget = settings.timeouts.redis_operation
                raise DependencyError(
                    f"Redis at {shown}: {describe_failure(exc, budget)} (reading the checkpoint, "
                    "TIMEOUT_REDIS_OPERATION); check that Redis is up and answering"
                ) from None
            stack.push_async_callback(pipeline.close)
            if seen and pipeline.seq == 0:  # this process committed here before: not fresh
                raise RedisDataLost(namespace, seen[-1], state_gone=True)
            await migrate_at_start(settings, redis, namespace, reporter)  # before the tables
            await cleanup_at_start(settings, redis, namespace)  # the open windows are known now
            known = [(b.number, b.hash) for b in pipeline.state.blocks]
            first = first_block(
                known[-1][0] if known else None, settings.start_block, head, settings.confirmations
            )
            at = params_block(first)
            await wait_for_block(chain_head, at, first, poll_s)
            if settings.archive_rpc_nodes:
                reader = await open_pool(
                    stack, "ARCHIVE_RPC_NODES", settings.archive_rpc_nodes, settings, retry
                )
                readers = f"ARCHIVE_RPC_NODES ({', '.join(reader.endpoints)})"
                if metrics is not None:
                    reader.attach_metrics(metrics)
            else:
                reader, readers = pool, nodes
            fix_readers = f"check that {readers.split()[0]} point at a running node of the chain"
            await with_retries(
                readers,
                fix_readers,
                partial(check_contract, reader.request, config.protocol_state, at),
                retry,
            )
            params = await with_retries(
                readers,
                fix_readers,
                partial(
                    read_market_params,
                    reader.request,
                    config.protocol_state,
                    config.markets,
                    at,
                    timeout_s=settings.contract_query_timeout,
                ),
                retry,
            )
            await check_markets(
                reader.request,
                config.protocol_state,
                params,
                at,
                timeout_s=settings.contract_query_timeout,
            )
            await lease.verify("starting up (reading the market parameters)")
            await pipeline.apply(params)
            if config.rewards:  # a switch from the Go collector: its day and unfired markers
                with anyio.fail_after(settings.timeouts.redis_operation):
                    stored = await read_stored_days(redis, config.markets)
                await pipeline.apply(stored)
            return root, pipeline, known, first, at, params

        root, pipeline, known, first, at, params = await while_held(lease, take_over)

        follower = root.follower_from_settings(pipeline, pool, settings, first)
        log.info(
            "starting",
            namespace=namespace,
            resume_from=known[-1][0] if known else None,
            first_block=first,
            params_block=at,
            start_block=settings.start_block,
            markets=list(settings.markets_checksummed),
            days={p.market: p.day_counter for p in params},
        )
        with CatchUpProgress(console) as progress:
            collector = root.collector(
                pipeline, follower, on_progress=progress.update, stop_when=stop_when
            )
            stop.collector, stop.scope = collector, None
            if stop.requested:
                collector.stop()
            try:
                cleanup = periodic_cleanup_for(settings, redis, namespace)
                memory = partial(memory_reports, settings.memory_profiling_interval)
                alive = partial(keep_alive, redis, namespace)  # `<ns>:alive`: rewind refuses
                await run_beside(collector.run, partial(_together, cleanup, memory, alive))
            finally:
                stop.collector = None
                head_now = pipeline.committed_head
                if pipeline.seq > 0:
                    seen.append(Checkpoint(pipeline.seq, head_now.number if head_now else None))
                await root.dispatcher.aclose()
    return pipeline.digest.hexdigest() if pipeline.digest is not None else None


async def _recover(
    settings: Settings,
    namespace: str,
    record: Path | None,
    redis: Any,
    reporter: FailureReporter,
) -> None:
    journal = journal_of(settings, namespace, record)
    if journal is None:
        raise SettingsError(
            "--recover rebuilds Redis from the journal the collector recorded, and "
            "SEQ_JOURNAL_DIR=off: give the journal with --record FILE, or SEQ_JOURNAL_DIR"
        )
    path = journal if isinstance(journal, Path) else journal.path
    report = await recover(
        path, ledger_of(journal), redis, namespace, settings.timeouts.redis_operation
    )
    failure = Failure(
        "redis_recovery",
        report.message(),
        block=report.block,
        action="rebuilt from the journal; collecting from its end",
    )
    await reporter.report(failure, severity="High", always=True)


async def _together(*tasks: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The background tasks of a run (periodic cleanup, memory reports, the liveness mark),
    side by side."""
    async with anyio.create_task_group() as tg:
        for task in tasks:
            tg.start_soon(task)

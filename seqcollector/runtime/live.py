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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
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
from seqcollector.core.effects import QueryEligibleOnChain
from seqcollector.errors import DependencyError
from seqcollector.journal_dir import JournalDirSpec, spec_from_settings
from seqcollector.runtime.alive import keep_alive
from seqcollector.runtime.cleanup import cleanup_at_start, periodic_cleanup_for, run_beside
from seqcollector.runtime.compose import Delivery, compose_collector
from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.failures import FailureReporter
from seqcollector.runtime.health import Health
from seqcollector.runtime.memory_report import memory_reports
from seqcollector.runtime.metrics import Metrics
from seqcollector.runtime.migration import migrate_at_start
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.progress import CatchUpProgress
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
from seqcollector.sources.retrying import Backoff

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
) -> str | None:
    """Run until SIGINT/SIGTERM (or `stop_when`); returns the journal's effects digest
    (`replay` of the `--record` file, or of the SEQ_JOURNAL_DIR directory, gives the same),
    None when SEQ_JOURNAL_DIR=off. `providers` add in-process nodes (eth-tester) to RPC_NODES.

    The read API, /health, /ready and /metrics (`api.collector_app`) are served from the
    start, beside the collector, on SEQ_API_HOST:SEQ_API_PORT unless SEQ_API_ENABLED=false;
    they stop with it."""
    settings.core_config()  # a core configuration the core refuses stops here, first
    retry = StartupRetry(settings.startup_timeout_s)
    shown = mask_url(settings.redis_url())
    await check_redis(settings.redis_url(), shown, redis_db_setting(settings), retry)
    redis = redis_client(settings.redis_url())
    reporter = FailureReporter(settings.slack_reporting_url, timeout_s=settings.http_timeout)
    metrics = Metrics.from_settings(settings)
    health = Health.from_settings(settings, redis, namespace, reporter, metrics)
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
    shown = mask_url(settings.redis_url())
    poll_s = min(1.0, max(settings.block_time / 4, 0.05))
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
        workers = WorkerPool(
            "batch preparation", settings.worker_pool.size, settings.worker_pool.acquisition_timeout
        )
        on_chain = EligibleOnChainReader.from_settings(pool.request, settings)
        root = compose_collector(
            RedisExecutor(redis, namespace),
            config,
            Delivery.from_settings(settings),
            timeouts=settings.timeouts,
            journal=journal_of(settings, namespace, record),
            workers=workers,
            reporter=reporter,
            handle_signals=handle_signals,
            answerers={QueryEligibleOnChain: on_chain},
            metrics=metrics,
            health=health,
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
        await pipeline.apply(params)
        if config.rewards:  # a switch from the Go collector: its day and unfired markers
            with anyio.fail_after(settings.timeouts.redis_operation):
                stored = await read_stored_days(redis, config.markets)
            await pipeline.apply(stored)
        follower = root.follower(
            pipeline,
            pool,
            start_block=first,
            poll_interval_s=poll_s,
            retry=Backoff.from_settings(settings),
            confirmations=settings.confirmations,
            attempt_timeout_s=settings.timeouts.block_fetch,
        )
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
            try:
                cleanup = periodic_cleanup_for(settings, redis, namespace)
                memory = partial(memory_reports, settings.memory_profiling_interval)
                alive = partial(keep_alive, redis, namespace)  # `<ns>:alive`: rewind refuses
                await run_beside(collector.run, partial(_together, cleanup, memory, alive))
            finally:
                await root.dispatcher.aclose()
    return pipeline.digest.hexdigest() if pipeline.digest is not None else None


async def _together(*tasks: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The background tasks of a run (periodic cleanup, memory reports, the liveness mark),
    side by side."""
    async with anyio.create_task_group() as tg:
        for task in tasks:
            tg.start_soon(task)

"""`seqcollector run`: a live collector assembled from the settings.

RPC pool -> chain follower -> collector (pipeline, executor) + outbox dispatcher. The first
start begins at SEQ_START_BLOCK (default: the chain head); every later start resumes from the
checkpoint, with the recent block hashes the core holds, so reorgs across a restart are seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import structlog
from rich.console import Console
from web3.providers.async_base import AsyncBaseProvider

from seqcollector.config import Settings
from seqcollector.core.history import anchor_refs
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.failures import FailureReporter
from seqcollector.runtime.outbox import OutboxDispatcher
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.progress import CatchUpProgress
from seqcollector.runtime.startup import check_contract, read_market_params
from seqcollector.runtime.workers import WorkerPool
from seqcollector.sources.follower import ChainFollower
from seqcollector.sources.rpc import RpcPool

log = structlog.get_logger(__name__)


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
    """Run until SIGINT/SIGTERM (or `stop_when`); returns the recorded journal's effects
    digest, if recording. `providers` add in-process nodes (eth-tester) to RPC_NODES."""
    config = settings.core_config()
    redis = redis_client(settings.redis_url())
    reporter = FailureReporter(settings.slack_reporting_url)
    async with RpcPool(
        settings.rpc_nodes, request_timeout_s=settings.timeouts.block_fetch, providers=providers
    ) as pool:
        await check_contract(pool.request, config.protocol_state)
        workers = WorkerPool(
            "batch preparation", settings.worker_pool.size, settings.worker_pool.acquisition_timeout
        )
        pipeline = Pipeline(
            RedisExecutor(redis, namespace), config, settings.timeouts, record, workers=workers
        )
        await pipeline.open()
        if not settings.attestor_queue_push_enabled:
            with anyio.fail_after(settings.timeouts.redis_operation):
                await redis.delete("attestorQueue")  # the Go collector's start-up rule
        params = await read_market_params(pool.request, config.protocol_state, config.markets)
        await pipeline.apply(params)
        known = [(b.number, b.hash) for b in pipeline.state.blocks]
        follower = ChainFollower(
            pool,
            config.protocol_state,
            confirmations=settings.confirmations,
            max_reorg_depth=config.max_reorg_depth,
            known=known,
            anchors=[(a.number, a.hash) for a in anchor_refs(pipeline.state)],
            start_block=settings.start_block,
            poll_interval_s=min(1.0, max(settings.block_time / 4, 0.05)),
        )
        log.info(
            "starting",
            namespace=namespace,
            resume_from=known[-1][0] if known else None,
            start_block=settings.start_block,
            markets=list(settings.markets_checksummed),
        )
        dispatcher = OutboxDispatcher(
            redis,
            namespace,
            settings.tx_relayer_url,
            settings.tx_relayer_auth_write_token,
            settings.slack_reporting_url,
            http_timeout_s=settings.http_timeout,
            redis_timeout_s=settings.timeouts.redis_operation,
        )
        with CatchUpProgress(console) as progress:
            collector = Collector(
                pipeline,
                follower,
                dispatcher,
                reporter,
                on_progress=progress.update,
                stop_when=stop_when,
                handle_signals=handle_signals,
            )
            try:
                await collector.run()
            finally:
                await pipeline.close()
                await dispatcher.aclose()
                await redis.aclose()
    return pipeline.digest.hexdigest() if pipeline.digest is not None else None

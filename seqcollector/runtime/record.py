"""`seqcollector record --from-block A --to-block B`: a block range from a node into a
journal, writing no collector key.

The state before A is the empty one, as a fresh collector starting at A would have it
(`live.first_block` with SEQ_START_BLOCK=A): the market parameters are read as of block A-1
(`live.params_block`, ARCHIVE_RPC_NODES when set). Unlike `run`, the day markers stored in
Redis (`read_stored_days`, a switch from the Go collector) are not adopted: they are
Redis's present, written by whatever ran after A, not the state at A. Then the blocks A..B
and their logs come from RPC_NODES one by one, and each query the core makes is answered
as `run` answers it (the submission sets and eligibility keys from Redis as they are now,
the contract view from the node). The pipeline's executor only reads: its `commit` writes
nothing, its `load` says the namespace is empty, so Redis is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
import structlog
from web3.providers.async_base import AsyncBaseProvider

from seqcollector.config import Settings, mask_url
from seqcollector.core import Block
from seqcollector.core.effects import Effect, QueryEligibleOnChain
from seqcollector.runtime.compose import Delivery, compose_collector, poll_interval_s
from seqcollector.runtime.executor import Checkpoint, RedisExecutor, redis_client
from seqcollector.runtime.live import params_block, redis_db_setting, wait_for_block
from seqcollector.runtime.reward_answers import EligibleOnChainReader
from seqcollector.runtime.startup import (
    StartupRetry,
    check_contract,
    check_markets,
    check_redis,
    open_pool,
    read_market_params,
    with_retries,
)
from seqcollector.runtime.workers import WorkerPool

log = structlog.get_logger(__name__)

RECORD_NAMESPACE = "seqcollector:record"  # never written: only named in messages


class ReadOnlyExecutor(RedisExecutor):
    """The executor of a recording: the readers use its Redis, and nothing is written (no
    state, checkpoint, effect or outbox entry); `commits` counts what would have been."""

    def __init__(self, redis: aioredis.Redis, namespace: str = RECORD_NAMESPACE) -> None:
        super().__init__(redis, namespace)
        self.commits = 0
        self.effects = 0

    async def load(self) -> tuple[bytes | None, Checkpoint | None]:
        return None, None  # a fresh collector: the empty state at the first block

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        self.commits += 1
        self.effects += len(effects)
        return True


class RecordResult(msgspec.Struct):
    journal: str
    inputs: int
    blocks: int
    effects: int
    digest: str


async def record_range(
    settings: Settings,
    from_block: int,
    to_block: int,
    out: Path,
    *,
    providers: Sequence[AsyncBaseProvider] = (),
) -> RecordResult:
    """Record blocks from_block..to_block (waiting for the chain to reach to_block) into
    the journal `out` (overwritten); returns its figures and effects digest (`replay OUT`
    gives the same)."""
    config = settings.core_config()
    retry = StartupRetry(settings.startup_timeout_s)
    shown = mask_url(settings.redis_url())
    await check_redis(settings.redis_url(), shown, redis_db_setting(settings), retry)
    redis = redis_client(settings.redis_url())
    poll_s = poll_interval_s(settings)
    try:
        async with AsyncExitStack() as stack:
            pool = await open_pool(
                stack, "RPC_NODES", settings.rpc_nodes, settings, retry, providers
            )
            nodes = f"RPC_NODES ({', '.join(pool.endpoints)})"
            fix = "check that RPC_NODES point at a running node of the chain"
            chain_head = partial(with_retries, nodes, fix, pool.head, retry)
            at = params_block(from_block)
            await wait_for_block(chain_head, at, from_block, poll_s)
            if settings.archive_rpc_nodes:
                reader = await open_pool(
                    stack, "ARCHIVE_RPC_NODES", settings.archive_rpc_nodes, settings, retry
                )
            else:
                reader = pool
            check = partial(check_contract, reader.request, config.protocol_state, at)
            await with_retries(nodes, fix, check, retry)
            read = partial(
                read_market_params,
                reader.request,
                config.protocol_state,
                config.markets,
                at,
                timeout_s=settings.contract_query_timeout,
            )
            params = await with_retries(nodes, fix, read, retry)
            await check_markets(
                reader.request,
                config.protocol_state,
                params,
                at,
                timeout_s=settings.contract_query_timeout,
            )
            executor = ReadOnlyExecutor(redis)
            root = compose_collector(  # the one composition root; its outbox is never run
                executor,
                config,
                Delivery("", "", ""),
                timeouts=settings.timeouts,
                journal=out,
                workers=WorkerPool(
                    "batch preparation",
                    settings.worker_pool.size,
                    settings.worker_pool.acquisition_timeout,
                ),
                answerers={
                    QueryEligibleOnChain: EligibleOnChainReader.from_settings(
                        pool.request, settings
                    )
                },
                handle_signals=False,
            )
            stack.push_async_callback(root.dispatcher.aclose)
            pipeline = root.pipeline()
            if out.exists():
                out.unlink()  # a new recording (the pipeline resumes an existing journal)
            await pipeline.open()
            stack.push_async_callback(pipeline.close)
            await pipeline.apply(params)  # no stored day markers adopted: see the module's doc
            follower = root.follower_from_settings(pipeline, pool, settings, from_block)
            blocks = 0
            units = follower.units()
            try:
                async for unit in units:
                    await pipeline.apply(unit)
                    blocks += sum(isinstance(i, Block) for i in unit)
                    head = pipeline.state.head
                    if head is not None and head.number >= to_block:
                        break
            finally:
                await units.aclose()
            assert pipeline.digest is not None
            log.info(
                "recorded",
                journal=str(out),
                from_block=from_block,
                to_block=to_block,
                inputs=pipeline.seq,
                commits_not_written=executor.commits,
            )
            return RecordResult(
                str(out), pipeline.seq, blocks, executor.effects, pipeline.digest.hexdigest()
            )
    finally:
        await redis.aclose()

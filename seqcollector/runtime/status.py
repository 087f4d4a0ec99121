"""`seqcollector status`: what a namespace holds, read from Redis (and the chain's head when
an RPC node answers): the checkpoint, the committed head, the open windows per market, the
pending queries, the day records, the outbox depth by lane and its oldest entry, the size
of the stored state, and who holds the lease (active/standby: holder, fencing token, TTL
left). Reads only; safe beside a running collector.

The outbox's lanes are learnt from the entries' bodies (`runtime.outbox.lane_of`), read in
pages of `PAGE` ids; the oldest pending entry is the lowest score (emission order)."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from seqcollector.config import Settings, mask_url
from seqcollector.core import load_state, queries
from seqcollector.core.addresses import checksum
from seqcollector.core.state import Phase, StateFormatError
from seqcollector.errors import DependencyError
from seqcollector.runtime.cleanup import NoStoredState
from seqcollector.runtime.executor import redis_client
from seqcollector.runtime.layout import StoreLayout, decode_entry, decode_record
from seqcollector.runtime.lease import read_lease
from seqcollector.runtime.outbox import lane_of
from seqcollector.runtime.startup import describe_failure
from seqcollector.sources.rpc import RpcPool

log = structlog.get_logger(__name__)

PAGE = 500


class MarketStatus(msgspec.Struct):
    market: str  # EIP-55
    day: int | None
    open_windows: list[int]  # epochs, ascending
    queried_windows: list[int]
    last_known_day: int | None
    pending_markers: list[int]  # days whose final update is still to come
    emitted_epochs: int  # batched epochs remembered


class Status(msgspec.Struct):
    namespace: str
    seq: int
    committed_block: int | None
    committed_hash: str | None
    chain_head: int | None
    lag_blocks: int | None
    state_bytes: int
    state_format: int
    markets: list[MarketStatus]
    pending_queries: dict[str, int]  # by kind
    outbox_pending: dict[str, int]  # by lane
    outbox_oldest_id: str | None
    counters: dict[str, int]
    lease_holder: str | None = None  # `<ns>:lease`: host:pid:random of the active collector
    lease_token: int | None = None  # its fencing token
    lease_ttl_ms: int | None = None  # left before it expires


async def read_status(
    redis: aioredis.Redis, namespace: str, chain_head: int | None = None
) -> Status:
    """The namespace's status; `NoStoredState` if nothing ran there, `StateFormatError` for
    a state another version wrote."""
    layout = StoreLayout(namespace)
    raw_state, raw_record = (_bytes(v) for v in await redis.mget([layout.state, layout.checkpoint]))
    record = decode_record(raw_record)
    if record is None or raw_state is None:
        raise NoStoredState(
            f"namespace {namespace!r} holds no stored state: no collector committed there "
            "(check --namespace, and that this is the collector's Redis)"
        )
    try:
        state = load_state(raw_state)
    except StateFormatError as exc:
        raise NoStoredState(f"namespace {namespace!r}: {exc}") from None
    head = state.head
    markets = []
    for lc, ms in state.domain.markets.items():
        md = state.days.get(lc)
        emitted = state.emitted.get(lc)
        markets.append(
            MarketStatus(
                checksum(lc),
                ms.day,
                sorted(e for e, w in ms.windows.items() if w.phase is Phase.OPEN),
                sorted(e for e, w in ms.windows.items() if w.phase is Phase.QUERIED),
                md.last_known_day if md else None,
                [m.day for m in md.markers] if md else [],
                len(emitted.epochs) if emitted else 0,
            )
        )
    kinds: dict[str, int] = {}
    for q in queries.pending(state):
        kinds[type(q).__name__] = kinds.get(type(q).__name__, 0) + 1
    lanes, oldest = await _outbox(redis, layout)
    held, ttl_ms = await read_lease(redis, namespace)
    committed = record.block
    return Status(
        namespace,
        record.seq,
        committed,
        head.hash if head else None,
        chain_head,
        chain_head - committed if chain_head is not None and committed is not None else None,
        len(raw_state),
        state.format,
        markets,
        kinds,
        lanes,
        oldest,
        dict(sorted(state.counters.items())),
        lease_holder=held.holder if held else None,
        lease_token=held.token if held else None,
        lease_ttl_ms=ttl_ms if held else None,
    )


async def _outbox(redis: aioredis.Redis, layout: StoreLayout) -> tuple[dict[str, int], str | None]:
    lanes: dict[str, int] = {}
    oldest: str | None = None
    start = 0
    while True:
        found = await redis.zrange(layout.outbox_pending, start, start + PAGE - 1)
        ids = [_text(i) for i in found]
        if not ids:
            break
        if oldest is None:
            oldest = ids[0]
        bodies = await redis.hmget(layout.outbox, ids)
        for body in bodies:
            lane = "missing body" if body is None else "undecodable"
            if body is not None:
                with contextlib.suppress(msgspec.DecodeError):
                    lane = lane_of(decode_entry(body if isinstance(body, bytes) else body.encode()))
            lanes[lane] = lanes.get(lane, 0) + 1
        start += PAGE
    return dict(sorted(lanes.items())), oldest


def _bytes(value: Any) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def status_command(settings: Settings, namespace: str) -> Status:
    """`seqcollector status`: Redis (TIMEOUT_REDIS_OPERATION per round trip), and the chain
    head from RPC_NODES when set and answering within it (else left out, logged)."""
    head: int | None = None
    if settings.rpc_nodes:
        try:
            with anyio.fail_after(settings.timeouts.redis_operation):
                async with RpcPool.from_settings(settings.rpc_nodes, settings) as pool:
                    head = await pool.head()
        except Exception as exc:  # the chain is optional here
            log.warning("status_chain_head_unavailable", error=f"{type(exc).__name__}: {exc}")
    redis = redis_client(settings.redis_url())
    budget = settings.timeouts.redis_operation
    try:
        with anyio.fail_after(budget * 4):
            return await read_status(redis, namespace, head)
    except (RedisError, TimeoutError, OSError) as exc:
        raise DependencyError(
            f"Redis at {mask_url(settings.redis_url())}: {describe_failure(exc, budget)} "
            "(status); check that Redis is up and answering"
        ) from None
    finally:
        await redis.aclose()

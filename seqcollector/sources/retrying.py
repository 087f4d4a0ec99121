"""Retry a chain-source operation forever, with jittered exponential backoff, logging each
failure as a structured error (operation, block range, endpoint, method, code).

Only `SourceError`s (RPC failures, unusable or inconsistent answers) are retried; anything
else is a bug and propagates. A failure that is a node's own error answer demotes that
endpoint, so that the next attempt goes elsewhere when there is an elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from seqcollector.sources.rpc import RpcError, RpcPool, SourceError, TransportError

if TYPE_CHECKING:
    from seqcollector.config import Settings

log = structlog.get_logger(__name__)

MIN_WAIT_S = 0.01  # RPC_RETRY_DELAY_MS=0 still yields to the loop between attempts

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: `first_s * 2**n` plus up to `first_s` of jitter, capped at
    `max_s` (RPC_RETRY_DELAY_MS and RPC_MAX_RETRY_DELAY_S in the Go collector's terms)."""

    first_s: float = 0.5
    max_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        """RPC_RETRY_DELAY_MS (at least 10 ms) and RPC_MAX_RETRY_DELAY_S."""
        first = max(settings.rpc_retry_delay_ms / 1000, MIN_WAIT_S)
        return cls(first_s=first, max_s=max(settings.rpc_max_retry_delay_s, first))


async def retry_forever(
    operation: str,
    fn: Callable[[], Awaitable[T]],
    backoff: Backoff,
    pool: RpcPool,
    first_block: int | None = None,
    last_block: int | None = None,
) -> T:
    """Await `fn()` until it succeeds; never gives up on a `SourceError`."""

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        rpc = exc if isinstance(exc, RpcError) else None
        if rpc is not None and not isinstance(rpc, TransportError):
            pool.demote(rpc.endpoint, f"{rpc.method}: {rpc.message}")
        log.error(
            "chain_source_failure",
            operation=operation,
            first_block=first_block,
            last_block=last_block,
            endpoint=rpc.endpoint if rpc else None,
            method=rpc.method if rpc else None,
            code=rpc.code if rpc else None,
            error=str(exc)[:500],
            error_type=type(exc).__name__,
            attempt=state.attempt_number,
            retry_in_s=round(state.next_action.sleep, 3) if state.next_action else None,
        )

    retrying = AsyncRetrying(
        sleep=anyio.sleep,
        wait=wait_exponential_jitter(
            multiplier=backoff.first_s, max=backoff.max_s, jitter=backoff.first_s
        ),
        retry=retry_if_exception_type(SourceError),
        before_sleep=failed,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await fn()
    raise AssertionError("unreachable: retrying never stops")

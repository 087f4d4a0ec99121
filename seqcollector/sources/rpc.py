"""A pool of JSON-RPC endpoints with failover, lag tracking, batching and request counts.

`RpcPool(urls)` holds one `AsyncWeb3` per endpoint (see `endpoints.py`) and sends raw
JSON-RPC requests to the healthiest one:

- an endpoint whose request fails without a JSON-RPC answer (connection error, HTTP error
  status, timeout after `request_timeout_s`, malformed reply, a result the caller's `decode`
  rejects) is demoted for `demote_s` and the request goes to the next endpoint;
- an endpoint whose head lags the best head seen by `head()` by more than `max_lag_blocks`
  is demoted the same way;
- healthy endpoints are tried in the configured order (those known to have `min_block`
  first), then the demoted ones, least bad first; so a request always has somewhere to go.

When every endpoint failed a request that way, the whole round is tried again up to
`max_retries` times (RPC_MAX_RETRIES), waiting `retry_delay_s * 2**n` plus jitter, at most
`max_retry_delay_s` (RPC_RETRY_DELAY_MS, RPC_MAX_RETRY_DELAY_S), before `TransportError`
reaches the caller; each request on the wire is bounded by `request_timeout_s`
(RPC_REQUEST_TIMEOUT_S). `max_retries=0`: one round, so a failing node fails over or fails
at once. `from_settings` builds a pool with those four settings.

A JSON-RPC error answer (`{"error": ...}`) is raised as `RpcError` with its code and is not
a reason to try elsewhere: the node answered, and the answer is about the request (a too-wide
`eth_getLogs` range, say). Callers that retry may `demote()` the endpoint themselves.

Counts (`stats`): wire requests per endpoint (a batch is one request, as on the wire), calls
per JSON-RPC method (each call of a batch counts), batches, errors and demotions per endpoint.
With `attach_metrics`, the same go to Prometheus (`runtime.metrics`): requests and errors by
endpoint and method (a batch as method `batch`), their durations, demotions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aiohttp import ClientSession, ClientTimeout
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider
from web3.providers.async_base import AsyncBaseProvider

from seqcollector.sources.endpoints import (
    Endpoint,
    endpoint_name,
    make_endpoint,
    make_provider,
    unique_names,
)
from seqcollector.sources.errors import RpcError, SourceError, TransportError, quantity
from seqcollector.sources.gather import gather

if TYPE_CHECKING:
    from seqcollector.config import Settings
    from seqcollector.runtime.metrics import Metrics

__all__ = ["RpcError", "RpcPool", "Socket", "SourceError", "TransportError", "quantity"]

log = structlog.get_logger(__name__)

Decode = Callable[[Any], Any]
DECODE_ERRORS = (ValueError, KeyError, TypeError, IndexError)


@dataclass(frozen=True)
class Socket:
    """A persistent connection of the pool, as of one (re)connection (`generation`)."""

    endpoint: str
    generation: int
    w3: AsyncWeb3[Any]


class RpcPool:
    """Endpoints by URL (and/or given providers) -> `request`, `batch`, `head` with failover.

    Use as `async with RpcPool([...]) as pool:` so that WebSocket connections are opened and
    HTTP sessions (kept alive between requests) are closed. Needs the asyncio backend (web3's
    providers are asyncio-only).
    """

    def __init__(
        self,
        urls: Sequence[str],
        request_timeout_s: float = 30.0,
        max_lag_blocks: int = 5,
        demote_s: float = 30.0,
        providers: Sequence[AsyncBaseProvider] | None = None,
        batch_concurrency: int = 8,
        max_retries: int = 0,
        retry_delay_s: float = 0.5,
        max_retry_delay_s: float = 30.0,
    ) -> None:
        given = list(providers or ())
        all_providers = [make_provider(u, request_timeout_s) for u in urls] + given
        if not all_providers:
            raise ValueError("RpcPool needs at least one RPC URL or provider")
        names = unique_names([endpoint_name(u) for u in urls] + [_provider_name(p) for p in given])
        self._endpoints = [make_endpoint(n, p) for n, p in zip(names, all_providers, strict=True)]
        self.request_timeout_s = request_timeout_s
        self.max_lag_blocks = max_lag_blocks
        self.demote_s = demote_s
        self.batch_concurrency = batch_concurrency
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.retry_delay_s = retry_delay_s
        self.max_retry_delay_s = max_retry_delay_s
        self.rounds_retried = 0
        self.best_head: int | None = None
        self.stats: dict[str, dict[str, int]] = {
            key: {} for key in ("requests", "calls", "batches", "errors", "demotions")
        }
        self.metrics: Metrics | None = None

    def attach_metrics(self, metrics: Metrics | None) -> None:
        """Record requests, errors and demotions in `metrics` from now on (None: stop)."""
        self.metrics = metrics

    @classmethod
    def from_settings(
        cls,
        urls: Sequence[str],
        settings: Settings,
        providers: Sequence[AsyncBaseProvider] | None = None,
    ) -> RpcPool:
        """A pool over `urls` with RPC_REQUEST_TIMEOUT_S, RPC_MAX_RETRIES, RPC_RETRY_DELAY_MS
        and RPC_MAX_RETRY_DELAY_S."""
        return cls(
            urls,
            request_timeout_s=settings.rpc_request_timeout_s,
            providers=providers,
            max_retries=settings.rpc_max_retries,
            retry_delay_s=settings.rpc_retry_delay_ms / 1000,
            max_retry_delay_s=settings.rpc_max_retry_delay_s,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> RpcPool:
        for ep in self._endpoints:
            if isinstance(ep.provider, AsyncHTTPProvider):
                # web3's own session opens a new connection per request (force_close).
                timeout = ClientTimeout(total=self.request_timeout_s)
                session = ClientSession(raise_for_status=True, timeout=timeout)
                await ep.provider.cache_async_session(session)
            elif ep.persistent:
                try:
                    await self._ensure_connected(ep)
                except TransportError as exc:
                    self.demote(ep.name, exc.message)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close sockets and sessions (shielded, a few seconds at most per endpoint)."""
        for ep in self._endpoints:
            if not ep.closable:
                continue
            with anyio.move_on_after(5, shield=True):
                await _disconnect(ep)
            ep.connected = False

    # -- introspection ---------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [ep.name for ep in self._endpoints]

    def health(self) -> list[dict[str, Any]]:
        """Per endpoint: name, demoted (bool), seconds left, consecutive failures, last head."""
        now = anyio.current_time()
        return [
            {
                "endpoint": ep.name,
                "demoted": ep.demoted_until > now,
                "demoted_for_s": max(0.0, ep.demoted_until - now),
                "failures": ep.failures,
                "head": ep.head,
                "batching": ep.can_batch,
            }
            for ep in self._endpoints
        ]

    @property
    def total_requests(self) -> int:
        """Wire requests sent so far (a batch counts once)."""
        return sum(self.stats["requests"].values())

    # -- requests --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: list[Any],
        *,
        min_block: int | None = None,
        decode: Decode | None = None,
    ) -> Any:
        """Send one call -> its `result` (passed through `decode` if given).

        `min_block`: prefer endpoints whose known head is at least this block. `decode` may
        raise ValueError/KeyError/TypeError/IndexError to reject a result as unusable (e.g. a
        block the endpoint does not have yet): that endpoint is demoted and the next tried.
        Raises `RpcError` (the node's error answer) or `TransportError` (every endpoint tried
        failed in each of the 1 + `max_retries` rounds; the last failure).
        """

        async def round_() -> Any:
            failure: RpcError | None = None
            for ep in self._order(min_block):
                try:
                    result = await self._send(ep, method, params)
                    return result if decode is None else self._decoded(ep, method, result, decode)
                except TransportError as exc:
                    self.demote(ep.name, exc.message)
                    failure = exc
            assert failure is not None
            raise failure

        return await self._rounds(method, round_)

    async def batch(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        *,
        min_block: int | None = None,
        decode: Decode | None = None,
    ) -> Any:
        """Send calls as one JSON-RPC batch -> their results in order (through `decode`).

        An endpoint that cannot batch (the provider does not implement it, or the node
        refuses batches) is remembered and gets concurrent single requests instead. A call
        answered with an error raises `RpcError` for the whole batch. Failover and
        `min_block`/`decode` as for `request`.
        """
        if not calls:
            return [] if decode is None else decode([])

        async def round_() -> Any:
            failure: RpcError | None = None
            for ep in self._order(min_block):
                try:
                    results = await self._send_batch(ep, calls)
                    return (
                        results if decode is None else self._decoded(ep, "batch", results, decode)
                    )
                except TransportError as exc:
                    self.demote(ep.name, exc.message)
                    failure = exc
            assert failure is not None
            raise failure

        return await self._rounds("batch", round_)

    async def _rounds(self, method: str, round_: Callable[[], Awaitable[Any]]) -> Any:
        """`round_()` (one try of every endpoint), again on TransportError up to
        `max_retries` times with jittered exponential backoff."""
        if self.max_retries == 0:
            return await round_()

        def retried(state: RetryCallState) -> None:
            self.rounds_retried += 1
            exc = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "rpc_request_retry",
                method=method,
                attempt=state.attempt_number,
                of=self.max_retries + 1,
                retry_in_s=round(state.next_action.sleep, 3) if state.next_action else None,
                error=str(exc)[:300],
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential_jitter(
                multiplier=self.retry_delay_s,
                max=self.max_retry_delay_s,
                jitter=self.retry_delay_s,
            ),
            retry=retry_if_exception_type(TransportError),
            before_sleep=retried,
            sleep=anyio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await round_()
        raise AssertionError("unreachable: the last attempt re-raises")

    async def head(self) -> int:
        """`eth_blockNumber` on every healthy endpoint at once -> the highest head.

        Records each endpoint's head and demotes those more than `max_lag_blocks` behind.
        When every endpoint is demoted, asks the least bad one. Raises the last failure if
        no endpoint answered.
        """
        now = anyio.current_time()
        targets = [ep for ep in self._endpoints if ep.demoted_until <= now]
        targets = targets or self._order(None)[:1]
        heads: dict[str, int] = {}
        failures: list[RpcError] = []

        async def ask(ep: Endpoint) -> None:
            try:
                heads[ep.name] = quantity(await self._send(ep, "eth_blockNumber", []))
            except RpcError as exc:
                self.demote(ep.name, exc.message)
                failures.append(exc)

        await gather([partial(ask, ep) for ep in targets], limit=len(targets))
        if not heads:
            raise failures[-1]
        best = max(heads.values())
        self.best_head = best
        for ep in targets:
            if ep.name in heads and best - heads[ep.name] > self.max_lag_blocks:
                self.demote(
                    ep.name,
                    f"head {heads[ep.name]} lags {best} by more than {self.max_lag_blocks} blocks",
                )
        return best

    def demote(self, endpoint: str, reason: str) -> None:
        """Skip `endpoint` for `demote_s` seconds (unless every endpoint is demoted)."""
        ep = self._endpoint(endpoint)
        ep.failures += 1
        ep.demoted_until = anyio.current_time() + self.demote_s
        _bump(self.stats["demotions"], ep.name)
        if self.metrics is not None:
            self.metrics.demoted(ep.name)
        log.warning(
            "rpc_endpoint_demoted",
            endpoint=ep.name,
            reason=reason[:300],
            for_s=self.demote_s,
            consecutive_failures=ep.failures,
        )

    # -- persistent connections, for subscriptions -----------------------------------------

    async def socket(self) -> Socket | None:
        """A connected WebSocket endpoint (the first healthy one) to subscribe on, or None."""
        now = anyio.current_time()
        for ep in self._endpoints:
            if not ep.persistent or ep.demoted_until > now:
                continue
            try:
                await self._ensure_connected(ep)
            except TransportError as exc:
                self.demote(ep.name, exc.message)
                continue
            return Socket(ep.name, ep.generation, ep.w3)
        return None

    def is_current(self, socket: Socket) -> bool:
        """Is the connection `socket` was taken from still open (subscriptions alive)?"""
        ep = self._endpoint(socket.endpoint)
        return ep.connected and ep.generation == socket.generation

    def lost(self, socket: Socket, reason: str) -> None:
        """The connection behind `socket` failed: reconnect before next use, demote."""
        ep = self._endpoint(socket.endpoint)
        if ep.generation == socket.generation:
            ep.connected = False
        self.demote(ep.name, reason)

    def count(self, endpoint: str, method: str) -> None:
        """Count a request made outside `request`/`batch` (e.g. `eth_subscribe`)."""
        _bump(self.stats["requests"], endpoint)
        _bump(self.stats["calls"], method)

    # -- internals -------------------------------------------------------------------------

    def _endpoint(self, name: str) -> Endpoint:
        return next(ep for ep in self._endpoints if ep.name == name)

    def _order(self, min_block: int | None) -> list[Endpoint]:
        now = anyio.current_time()
        healthy = [ep for ep in self._endpoints if ep.demoted_until <= now]
        if min_block is not None:  # stable: configured order within each group
            healthy.sort(key=lambda ep: ep.head is not None and ep.head < min_block)
        demoted = sorted(
            (ep for ep in self._endpoints if ep.demoted_until > now),
            key=lambda ep: (ep.failures, ep.demoted_until),
        )
        return healthy + demoted

    def _decoded(self, ep: Endpoint, method: str, result: Any, decode: Decode) -> Any:
        try:
            return decode(result)
        except DECODE_ERRORS as exc:
            self._error(ep, method, "unusable")
            raise TransportError(ep.name, method, f"unusable result: {exc}") from exc

    def _succeeded(self, ep: Endpoint) -> None:
        ep.failures = 0
        ep.demoted_until = -math.inf

    async def _ensure_connected(self, ep: Endpoint) -> None:
        if not ep.persistent or ep.connected:
            return
        async with ep.lock:
            if ep.connected:
                return
            try:
                with anyio.fail_after(self.request_timeout_s):
                    await _disconnect(ep)  # drops a dead listener and stale replies
                    await ep.provider.connect()
            except Exception as exc:
                self._error(ep, "connect", "connect")
                raise TransportError(ep.name, "connect", _describe(exc)) from exc
            ep.connected = True
            ep.generation += 1

    async def _send(self, ep: Endpoint, method: str, params: list[Any]) -> Any:
        await self._ensure_connected(ep)
        request_fn, _ = await ep.functions()
        _bump(self.stats["requests"], ep.name)
        _bump(self.stats["calls"], method)
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.request_timeout_s):
                reply = await request_fn(method, params)
        except Exception as exc:
            raise self._transport_failure(ep, method, exc) from exc
        finally:
            if self.metrics is not None:
                self.metrics.rpc_request(ep.name, method, time.perf_counter() - started)
        result = self._unwrap(ep, method, reply)
        self._succeeded(ep)
        if method == "eth_blockNumber":
            try:
                ep.head = quantity(result)
            except ValueError as exc:
                raise self._transport_failure(ep, method, exc) from exc
        return result

    async def _send_batch(self, ep: Endpoint, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if not ep.can_batch:
            return await self._send_each(ep, calls)
        await self._ensure_connected(ep)
        _, batch_fn = await ep.functions()
        # web3 keeps one batch reply slot per persistent connection: one batch at a time.
        guard: AbstractAsyncContextManager[Any] = ep.lock if ep.persistent else nullcontext()
        started = time.perf_counter()
        try:
            async with guard:
                with anyio.fail_after(self.request_timeout_s):
                    replies = await batch_fn([(m, p) for m, p in calls])
        except NotImplementedError:  # e.g. AsyncEthereumTesterProvider
            return await self._no_batching(ep, calls, "the provider does not implement batches")
        except Exception as exc:
            self._count_batch(ep, calls, time.perf_counter() - started)
            raise self._transport_failure(ep, "batch", exc) from exc
        self._count_batch(ep, calls, time.perf_counter() - started)
        if isinstance(replies, dict):  # the whole batch was refused with one error object
            error = replies.get("error")
            message = str(error.get("message", error) if isinstance(error, dict) else error)
            if "batch" in message.lower():
                return await self._no_batching(ep, calls, message)
            self._error(ep, "batch", "rpc")
            raise TransportError(ep.name, "batch", f"batch refused: {message[:300]}")
        if not isinstance(replies, list) or len(replies) != len(calls):
            raise self._transport_failure(
                ep, "batch", ValueError(f"{len(replies)} replies for {len(calls)} calls")
            )
        results = [self._unwrap(ep, m, r) for (m, _), r in zip(calls, replies, strict=True)]
        self._succeeded(ep)
        return results

    async def _no_batching(
        self, ep: Endpoint, calls: Sequence[tuple[str, list[Any]]], why: str
    ) -> list[Any]:
        ep.can_batch = False
        log.info("rpc_batching_off", endpoint=ep.name, reason=why[:200])
        return await self._send_each(ep, calls)

    async def _send_each(self, ep: Endpoint, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return await gather(
            [partial(self._send, ep, m, p) for m, p in calls],
            limit=self.batch_concurrency,
        )

    def _count_batch(
        self, ep: Endpoint, calls: Sequence[tuple[str, list[Any]]], seconds: float
    ) -> None:
        _bump(self.stats["requests"], ep.name)
        _bump(self.stats["batches"], ep.name)
        for method, _ in calls:
            _bump(self.stats["calls"], method)
        if self.metrics is not None:
            self.metrics.rpc_request(ep.name, "batch", seconds)

    def _error(self, ep: Endpoint, method: str, kind: str) -> None:
        _bump(self.stats["errors"], ep.name)
        if self.metrics is not None:
            self.metrics.rpc_error(ep.name, method, kind)

    def _transport_failure(self, ep: Endpoint, method: str, exc: BaseException) -> TransportError:
        self._error(ep, method, "transport")
        if ep.persistent:
            ep.connected = False  # reconnect before the next use: replies may be out of step
        return TransportError(ep.name, method, _describe(exc))

    def _unwrap(self, ep: Endpoint, method: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise self._transport_failure(ep, method, ValueError(f"reply is {reply!r:.100}"))
        error = reply.get("error")
        if error is not None:
            self._error(ep, method, "rpc")
            if isinstance(error, dict):
                code = error.get("code")
                raise RpcError(
                    ep.name,
                    method,
                    str(error.get("message", "")),
                    code if isinstance(code, int) else None,
                    error.get("data"),
                )
            raise RpcError(ep.name, method, str(error))
        if "result" not in reply:
            raise self._transport_failure(ep, method, ValueError(f"reply is {reply!r:.100}"))
        return reply["result"]


async def _disconnect(ep: Endpoint) -> None:
    """`provider.disconnect()`, which is idempotent but re-raises what ended web3's listener
    task before closing the socket: then once more, to close it."""
    for _ in range(2):
        try:
            await ep.provider.disconnect()
            return
        except Exception as exc:
            log.debug("rpc_disconnect_failed", endpoint=ep.name, error=repr(exc))


def _provider_name(provider: AsyncBaseProvider) -> str:
    uri = getattr(provider, "endpoint_uri", None)
    return endpoint_name(str(uri)) if uri else type(provider).__name__


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1

"""One JSON-RPC endpoint of the pool: its provider, its health, and a log-safe name.

Providers come from web3.py 8: `AsyncHTTPProvider` for http(s)://, `WebSocketProvider` for
ws(s)://, or any given `AsyncBaseProvider` (e.g. the in-process `AsyncEthereumTesterProvider`).
Every request goes through `provider.request_func(w3, w3.middleware_onion)` on an `AsyncWeb3`
built with no middleware: the raw JSON-RPC reply for HTTP and WebSocket, and for eth-tester
the reply after its own request/response translation (which the raw provider lacks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
from web3 import AsyncWeb3
from web3.exceptions import BadResponseFormat, Web3RPCError
from web3.providers import AsyncHTTPProvider, WebSocketProvider
from web3.providers.async_base import AsyncBaseProvider
from web3.providers.persistent import PersistentConnectionProvider

RequestFn = Callable[[Any, Any], Awaitable[Any]]
BatchFn = Callable[[Any], Awaitable[Any]]

_web3_log = logging.getLogger("seqcollector.sources.websocket")


class PoolWebSocketProvider(WebSocketProvider):
    """A WebSocketProvider for raw requests whose listener survives error replies.

    The pool sends raw requests, which web3 does not register in its request-information
    cache; web3's listener then treats every JSON-RPC error reply as a "stray" error and
    raises it, which ends the listener task. With `silence_listener_task_exceptions=True` it
    calls this documented hook instead: error replies are logged at debug level (the waiting
    caller still receives them); anything else (the connection failed) ends the listener, so
    that waiting requests fail fast and the pool reconnects.
    """

    def _error_log_listener_task_exception(self, e: Exception) -> None:
        if isinstance(e, Web3RPCError | BadResponseFormat):
            _web3_log.debug("error reply on %s: %s", self.endpoint_uri, e)
            return
        raise e


def endpoint_name(url: str) -> str:
    """`scheme://host:port`, plus `/***` when the URL has a path, query or user part.

    RPC URLs often carry an API key in the path or query; names are logged and counted.
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    name = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    if parts.path.strip("/") or parts.query or parts.username:
        name += "/***"
    return name


def make_provider(url: str, request_timeout_s: float) -> AsyncBaseProvider:
    """The web3 provider for an http(s):// or ws(s):// URL (ValueError for anything else)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        # No retries inside web3: failing over to another endpoint is the pool's job.
        return AsyncHTTPProvider(url, exception_retry_configuration=None)
    if scheme in ("ws", "wss"):
        return PoolWebSocketProvider(
            url,
            request_timeout=request_timeout_s,
            silence_listener_task_exceptions=True,
            max_connection_retries=1,
        )
    raise ValueError(f"unsupported RPC URL scheme {scheme!r} in {endpoint_name(url)}")


@dataclass
class Endpoint:
    """An endpoint and what the pool knows about it.

    `demoted_until` is on the anyio clock; `failures` counts consecutive failures (the order
    among demoted endpoints); `generation` grows at every (re)connection of a persistent
    provider, so that a subscription made on an older connection is known to be gone.
    """

    name: str
    provider: AsyncBaseProvider
    w3: AsyncWeb3[Any]
    request_fn: RequestFn | None = None
    batch_fn: BatchFn | None = None
    can_batch: bool = True
    connected: bool = False
    generation: int = 0
    head: int | None = None
    demoted_until: float = -math.inf
    failures: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def persistent(self) -> bool:
        return isinstance(self.provider, PersistentConnectionProvider)

    @property
    def closable(self) -> bool:
        """Holds sockets or sessions that `disconnect()` releases."""
        return self.persistent or isinstance(self.provider, AsyncHTTPProvider)

    async def functions(self) -> tuple[RequestFn, BatchFn]:
        """(single request, batch request) functions through the provider's middleware."""
        if self.request_fn is None or self.batch_fn is None:
            self.request_fn = await self.provider.request_func(self.w3, self.w3.middleware_onion)
            self.batch_fn = await self.provider.batch_request_func(
                self.w3, self.w3.middleware_onion
            )
        return self.request_fn, self.batch_fn


def make_endpoint(name: str, provider: AsyncBaseProvider) -> Endpoint:
    return Endpoint(name=name, provider=provider, w3=AsyncWeb3(provider, middleware=[]))


def unique_names(names: list[str]) -> list[str]:
    """Suffix `#2`, `#3`, ... to repeated names (same host with different keys)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out

"""Waiting for the chain head to move: `eth_subscribe newHeads` or polling `eth_blockNumber`.

With a WebSocket endpoint in the pool, `HeadWatcher` subscribes to newHeads there (web3 8:
`w3.eth.subscribe("newHeads")`, notifications read from `w3.socket.process_subscriptions()`)
and uses each notification only as a wake-up: the head it returns always comes from
`pool.head()`, which also keeps the endpoints' lag up to date. Without one, or while the
subscription is broken, it polls every `poll_interval_s`. Even when subscribed it looks at the
head every `heartbeat_s`, so a subscription that silently stopped costs latency, not blocks.

The subscription is only held while following the head: `pause()` (during catch-up) drops it,
so that notifications do not pile up in web3's bounded queue while nobody reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from eth_typing import HexStr
from web3.exceptions import Web3RPCError

from seqcollector.sources.rpc import RpcPool, Socket, quantity

log = structlog.get_logger(__name__)


@dataclass
class _Subscription:
    socket: Socket
    sub_id: str
    stream: AsyncIterator[Any]
    fresh: bool = True  # blocks may have come before it: look at the head once first


def _head_number(message: Any) -> int | None:
    try:
        return quantity(message["result"]["number"])
    except (KeyError, TypeError, ValueError):
        return None


class HeadWatcher:
    """`await watcher.wait(current)` -> a head different from `current` (None: any head)."""

    def __init__(
        self,
        pool: RpcPool,
        poll_interval_s: float = 1.0,
        subscribe: bool = True,
        heartbeat_s: float | None = None,
        resubscribe_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self.poll_interval_s = poll_interval_s
        self.subscribe = subscribe
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(10 * poll_interval_s, 2)
        self.resubscribe_s = resubscribe_s
        self.notifications = 0
        self._sub: _Subscription | None = None
        self._retry_at = -float("inf")

    @property
    def subscribed(self) -> bool:
        return self._sub is not None

    async def wait(self, current: int | None) -> int:
        """Block until `pool.head()` differs from `current` -> that head. RPC failures of
        `pool.head()` propagate (the caller retries)."""
        while True:
            await self._signal(current)
            head = await self._pool.head()
            if head != current:
                return head

    async def pause(self) -> None:
        """Drop the subscription (best effort) until the next `wait`."""
        sub, self._sub = self._sub, None
        if sub is None or not self._pool.is_current(sub.socket):
            return
        try:
            with anyio.fail_after(min(5.0, self._pool.request_timeout_s)):
                await sub.socket.w3.eth.unsubscribe(HexStr(sub.sub_id))
            self._pool.count(sub.socket.endpoint, "eth_unsubscribe")
        except Exception as exc:
            log.debug("new_heads_unsubscribe_failed", endpoint=sub.socket.endpoint, error=repr(exc))

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.pause()

    async def _signal(self, current: int | None) -> None:
        sub = await self._subscription()
        if sub is None:
            await anyio.sleep(self.poll_interval_s)
            return
        if sub.fresh:
            sub.fresh = False
            return
        with anyio.move_on_after(self.heartbeat_s):
            while True:
                try:
                    message = await sub.stream.__anext__()
                except Exception as exc:  # StopAsyncIteration: web3's listener ended
                    self._sub = None
                    self._pool.lost(sub.socket, f"newHeads stream ended: {exc!r}")
                    return
                self.notifications += 1
                number = _head_number(message)
                if number is None or number != current:
                    return

    async def _subscription(self) -> _Subscription | None:
        if self._sub is not None and not self._pool.is_current(self._sub.socket):
            self._sub = None  # the connection was replaced: its subscription is gone
        if self._sub is not None or not self.subscribe:
            return self._sub
        if anyio.current_time() < self._retry_at:
            return None
        socket = await self._pool.socket()
        if socket is None:
            self._retry_at = anyio.current_time() + self.resubscribe_s
            return None
        try:
            with anyio.fail_after(self._pool.request_timeout_s):
                sub_id = await socket.w3.eth.subscribe("newHeads")
        except Exception as exc:
            log.warning("new_heads_subscribe_failed", endpoint=socket.endpoint, error=repr(exc))
            if not isinstance(exc, Web3RPCError):
                self._pool.lost(socket, f"eth_subscribe failed: {exc!r}")
            self._retry_at = anyio.current_time() + self.resubscribe_s
            return None
        self._pool.count(socket.endpoint, "eth_subscribe")
        stream: AsyncIterator[Any] = socket.w3.socket.process_subscriptions()
        self._sub = _Subscription(socket, str(sub_id), stream)
        log.info("new_heads_subscribed", endpoint=socket.endpoint)
        return self._sub

"""Deliver the outbox: relayer calls and alerts that the executor committed with their step.

Entries are read in emission order from `<ns>:outbox:pending`, POSTed with jittered
exponential backoff (tenacity), and removed only after an HTTP 200. A crash between the POST
and the removal repeats that one call on the next pass; no call is ever lost. Order is kept
per destination: once a relayer call fails in a pass, the later relayer calls wait for the
next pass, while alerts (another endpoint) still go out, and the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import cast

import aiohttp
import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from seqcollector.core.effects import Alert, RelayerCall
from seqcollector.runtime.layout import OutboxEntry, StoreLayout, decode_entry

log = structlog.get_logger(__name__)

ALERT_PROCESS_PREFIX = "SequencerEventCollector: "


class DeliveryRejected(Exception):
    """The endpoint answered, but not with HTTP 200."""

    def __init__(self, url: str, status: int, body: str):
        self.url = url
        self.status = status
        super().__init__(f"POST {url} answered HTTP {status}: {body[:200]}")


_RETRYABLE = (aiohttp.ClientError, DeliveryRejected, TimeoutError)


class OutboxDispatcher:
    """Delivers pending outbox entries of one namespace.

    `relayer_url` / `relayer_token`: TX_RELAYER_URL and TX_RELAYER_AUTH_WRITE_TOKEN.
    `alert_url`: SLACK_REPORTING_URL; empty means alerts are logged and dropped.
    `http_timeout_s` bounds each attempt (connect to last byte), `redis_timeout_s` each
    Redis operation. HTTP is aiohttp's, as in the RPC pool (keep-alive; about a quarter of
    httpx's CPU per call, which a relayer call per epoch makes count). Each entry gets up to
    `max_attempts` attempts per pass; before retry n (1, 2, ...) it waits
    `min(backoff_max_s, backoff_initial_s * backoff_exp_base**(n-1) + U(0, backoff_initial_s))`.
    The defaults follow the Go collector (1 s, x1.5, at most 4 s).

    Counters: `delivered` (entries sent and removed), `failed_attempts` (POSTs that failed),
    `alerts_dropped` (alerts removed unsent because no alert URL is configured).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        relayer_url: str,
        relayer_token: str,
        alert_url: str,
        http_timeout_s: float = 5.0,
        client: aiohttp.ClientSession | None = None,
        *,
        max_attempts: int = 4,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 4.0,
        backoff_exp_base: float = 1.5,
        redis_timeout_s: float = 5.0,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("OutboxDispatcher needs a client with decode_responses=False")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._redis = redis
        self._keys = StoreLayout(namespace)
        self._relayer_url = relayer_url.rstrip("/")
        self._relayer_token = relayer_token
        self._alert_url = alert_url
        self._http_timeout_s = http_timeout_s
        self._redis_timeout_s = redis_timeout_s
        self._owns_client = client is None
        self._client = client  # created on first use when None (it needs a running loop)
        self._max_attempts = max_attempts
        self._wait = wait_exponential_jitter(
            multiplier=backoff_initial_s,
            max=backoff_max_s,
            exp_base=backoff_exp_base,
            jitter=backoff_initial_s,
        )
        self._log = log.bind(namespace=namespace)
        self.delivered = 0
        self.failed_attempts = 0
        self.alerts_dropped = 0

    async def __aenter__(self) -> OutboxDispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this dispatcher created it."""
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None

    async def run(self, poll_interval_s: float) -> None:
        """Deliver pending entries until cancelled; sleep `poll_interval_s` when idle.

        A Redis error or timeout ends the pass (logged); the next pass starts after the interval.
        """
        limit = 100
        while True:
            try:
                sent = await self.deliver_pending(limit)
            except (RedisError, TimeoutError) as exc:
                self._log.error("outbox_pass_failed", error=repr(exc))
                sent = 0
            if sent < limit:
                await anyio.sleep(poll_interval_s)

    async def deliver_pending(self, limit: int = 100) -> int:
        """Deliver up to `limit` of the oldest pending entries -> how many were delivered.

        Two round trips to read them (ids, then one HMGET), then one MULTI per delivered
        entry to remove it. Undelivered entries stay pending for the next pass.
        """
        # The client returns bytes (checked in __init__).
        with anyio.fail_after(self._redis_timeout_s):
            ids = cast(
                list[bytes], await self._redis.zrange(self._keys.outbox_pending, 0, limit - 1)
            )
            if not ids:
                return 0
            raws = cast(list[bytes | None], await self._redis.hmget(self._keys.outbox, ids))
        sent = 0
        blocked: set[type] = set()  # destinations that failed in this pass keep their order
        for entry_id, entry in self._decode(zip(ids, raws, strict=True)):
            if entry is None:
                await self._remove(entry_id)
                continue
            if type(entry) in blocked:
                continue
            if await self._deliver(entry):
                await self._remove(entry_id)
                sent += 1
                self.delivered += 1
            else:
                blocked.add(type(entry))
        return sent

    def _decode(
        self, rows: Iterable[tuple[bytes, bytes | None]]
    ) -> Iterable[tuple[bytes, OutboxEntry | None]]:
        """Yield (id, entry); None for an id without body (nothing to send, drop the id).
        An entry that does not decode is logged and left pending."""
        for entry_id, raw in rows:
            if raw is None:
                self._log.error("outbox_entry_without_body", id=entry_id.decode())
                yield entry_id, None
                continue
            try:
                yield entry_id, decode_entry(raw)
            except msgspec.DecodeError as exc:
                self._log.error("outbox_entry_undecodable", id=entry_id.decode(), error=str(exc))

    async def _deliver(self, entry: OutboxEntry) -> bool:
        """POST one entry with retries -> True once answered with HTTP 200."""
        if isinstance(entry, Alert) and not self._alert_url:
            self._log.warning(
                "alert_not_sent_no_url",
                id=entry.id,
                step=entry.step,
                severity=entry.severity,
                message=entry.message,
            )
            self.alerts_dropped += 1
            return True
        if isinstance(entry, RelayerCall) and not self._relayer_url:
            self._log.error("relayer_call_waiting_no_url", id=entry.id, path=entry.path)
            return False
        url, body = self._request(entry)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_RETRYABLE),
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post_once(url, body, entry.id)
        except _RETRYABLE as exc:
            self._log.warning(
                "outbox_delivery_failed",
                id=entry.id,
                url=url,
                attempts=self._max_attempts,
                error=str(exc) or repr(exc),
            )
            return False
        self._log.info("outbox_delivered", id=entry.id, url=url)
        return True

    def _request(self, entry: OutboxEntry) -> tuple[str, bytes]:
        """The URL and JSON body for an entry."""
        if isinstance(entry, RelayerCall):
            payload: dict[str, object] = {**entry.body, "authToken": self._relayer_token}
            return self._relayer_url + entry.path, msgspec.json.encode(payload)
        alert = {
            "process_name": ALERT_PROCESS_PREFIX + entry.step,
            "error_msg": entry.message,
            "timestamp": datetime.now(UTC).isoformat(),
            "severity": entry.severity,
        }
        return self._alert_url, msgspec.json.encode(alert)

    async def _post_once(self, url: str, body: bytes, entry_id: str) -> None:
        """One attempt; raises one of `_RETRYABLE` unless the answer is HTTP 200."""
        if self._client is None:
            self._client = aiohttp.ClientSession()
        try:
            with anyio.fail_after(self._http_timeout_s):
                async with self._client.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    status, text = response.status, await response.text(errors="replace")
        except _RETRYABLE as exc:
            self.failed_attempts += 1
            self._log.info(
                "outbox_attempt_failed", id=entry_id, url=url, error=str(exc) or repr(exc)
            )
            raise
        if status != 200:
            self.failed_attempts += 1
            self._log.info("outbox_attempt_failed", id=entry_id, url=url, status=status)
            raise DeliveryRejected(url, status, text)

    async def _remove(self, entry_id: bytes) -> None:
        """Mark an entry done: drop it from the pending set and its body, atomically."""
        with anyio.fail_after(self._redis_timeout_s):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys.outbox_pending, entry_id)
                pipe.hdel(self._keys.outbox, entry_id.decode())
                await pipe.execute()

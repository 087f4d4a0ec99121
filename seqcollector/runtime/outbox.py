"""Deliver the outbox: relayer calls and alerts that the executor committed with their step.

Entries wait in `<ns>:outbox:pending` (scored in emission order) and are removed only after
an HTTP 200, so a crash between the POST and the removal repeats that one call on the next
pass: at least once, never lost. Each entry keeps the deterministic id the core gave it.

Delivery is by lane, one per relayer path plus one for alerts (`lane_of`), and the lanes run
independently: a failing `/submitUpdateRewards` never holds back a `/submitBatchSize`, nor an
alert. Each lane scans the pending set on its own (ids only; a body is read once, to learn
its lane, then again when it is delivered):

- `/submitBatchSize` and alerts are ordered: one POST at a time, in emission order; once an
  entry fails its attempts, the rest of that lane waits for the next pass.
- `/submitUpdateRewards` goes out concurrently, at most `reward_concurrency`
  (CONCURRENT_SUBMISSION_COUNT_UPDATES) in flight; a failed chunk stays pending while the
  others go out, and is retried at the next pass until delivered.

Within a pass an entry gets `max_attempts` (RETRY_LIMITS) POSTs with jittered exponential
backoff, each bounded by `http_timeout_s` (HTTP_TIMEOUT); a relayer call's attempts and the
waits between them are bounded by `pass_timeout_s` (BATCH_PROCESSING_TIMEOUT, what the Go
collector gives one batch's relayer work). An attempt in flight when the dispatcher is
cancelled is finished (shielded, at most `http_timeout_s`) and its entry removed on a 200,
so a stop does not send a call twice.

With a `lease` (active/standby, `runtime.lease`), every POST is preceded by a check that the
lease is still this process's: a collector paused past its lease that wakes up sends
nothing; `LeaseLost` ends the dispatcher (and the collector's group).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, cast

import aiohttp
import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from seqcollector.core.effects import Alert, RelayerCall
from seqcollector.runtime.alerts import alert_body
from seqcollector.runtime.delivery_ledger import DeliveryLedger
from seqcollector.runtime.http import client_session, post_json
from seqcollector.runtime.layout import OutboxEntry, StoreLayout, decode_entry
from seqcollector.runtime.lease import Lease

if TYPE_CHECKING:
    from seqcollector.runtime.metrics import Metrics

log = structlog.get_logger(__name__)

BATCH_SIZE_LANE: Final = "/submitBatchSize"
REWARDS_LANE: Final = "/submitUpdateRewards"
ALERTS_LANE: Final = "alerts"
OTHER_RELAYER_LANE: Final = "relayer"  # any other relayer path: ordered, like batch sizes
_UNDECODABLE: Final = ""  # not a lane: logged once, left pending
_PAGE: Final = 500  # ids read per ZRANGE while a lane scans


class DeliveryRejected(Exception):
    """The endpoint answered, but not with HTTP 200."""

    def __init__(self, url: str, status: int, body: str):
        self.url = url
        self.status = status
        super().__init__(f"POST {url} answered HTTP {status}: {body[:200]}")


class ReplicasBehind(RedisError):
    """Fewer replicas than SEQ_REDIS_MIN_REPLICAS acknowledged the outbox's writes: nothing
    is delivered until they catch up (a failover now could lose the steps read)."""

    def __init__(self, namespace: str, wanted: int, acked: int, wait_ms: int):
        super().__init__(
            f"namespace {namespace!r}: {acked} replica(s) acknowledged within {wait_ms} ms, "
            f"SEQ_REDIS_MIN_REPLICAS={wanted}: the outbox delivers nothing until enough "
            "replicas have the committed steps; check the replicas (INFO replication on the "
            "master) or lower SEQ_REDIS_MIN_REPLICAS"
        )


_RETRYABLE = (aiohttp.ClientError, DeliveryRejected, TimeoutError)


_MARKET_EPOCH = re.compile(r":(0x[0-9a-f]{40}):(\d+)(?::|$)")


def entry_context(entry: OutboxEntry) -> dict[str, object]:
    """What an entry is about, bound to the lines logged while it is delivered: the market
    and epoch of its id (`kind:market:epoch`, `core.reporting.outbox_id`) and a reward
    call's day."""
    found: dict[str, object] = {}
    match = _MARKET_EPOCH.search(entry.id)
    if match is not None:
        found["market"], found["epoch"] = match.group(1), int(match.group(2))
    if isinstance(entry, RelayerCall) and isinstance(entry.body.get("day"), int):
        found["day"] = entry.body["day"]
    return found


def lane_of(entry: OutboxEntry) -> str:
    """The lane an entry is delivered in: its relayer path, or `alerts`."""
    if isinstance(entry, Alert):
        return ALERTS_LANE
    return entry.path if entry.path in (BATCH_SIZE_LANE, REWARDS_LANE) else OTHER_RELAYER_LANE


@dataclass(frozen=True)
class Lane:
    """A lane: its name and how many POSTs it has in flight (1: in emission order)."""

    name: str
    concurrency: int = 1

    @property
    def ordered(self) -> bool:
        return self.concurrency == 1


@dataclass
class _Pass:
    """One lane's pass: what it delivered, and the lowest score it left pending."""

    delivered: int = 0
    failed: bool = False
    lowest_left: float = math.inf
    last_seen: float | None = None

    def leave(self, score: float) -> None:
        self.lowest_left = min(self.lowest_left, score)


@dataclass
class LaneStats:
    """Per lane: entries delivered, POSTs that failed, the most POSTs seen in flight."""

    delivered: int = 0
    failed_attempts: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    passes: int = 0


class OutboxDispatcher:
    """Delivers pending outbox entries of one namespace, lane by lane.

    `relayer_url` / `relayer_token`: TX_RELAYER_URL and TX_RELAYER_AUTH_WRITE_TOKEN.
    `alert_url`: SLACK_REPORTING_URL; empty means alerts are logged and dropped.
    `http_timeout_s` bounds each attempt (connect to last byte), `redis_timeout_s` each
    Redis operation. HTTP is `runtime.http`'s (aiohttp, as the RPC pool). Each entry gets up to
    `max_attempts` attempts per pass; before retry n (1, 2, ...) it waits
    `min(backoff_max_s, backoff_initial_s * backoff_exp_base**(n-1) + U(0, backoff_initial_s))`.
    The defaults follow the Go collector (3 attempts, 1 s, x1.5, at most 4 s).
    `reward_concurrency` bounds the reward updates in flight; `pass_timeout_s` one relayer
    call's attempts in a pass.

    Counters: `delivered` (entries sent and removed), `failed_attempts` (POSTs that failed),
    `alerts_dropped` (alerts removed unsent because no alert URL is configured), and
    `lanes[name]` (`LaneStats`).
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
        max_attempts: int = 3,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 4.0,
        backoff_exp_base: float = 1.5,
        redis_timeout_s: float = 5.0,
        reward_concurrency: int = 10,
        pass_timeout_s: float = 120.0,
        min_replicas: int = 0,
        ledger: DeliveryLedger | None = None,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("OutboxDispatcher needs a client with decode_responses=False")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if reward_concurrency < 1:
            raise ValueError(f"reward_concurrency must be >= 1, got {reward_concurrency}")
        if min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {min_replicas}")
        self._min_replicas = min_replicas
        self._ledger = ledger  # delivered ids, kept on disk for `run --recover`
        self._redis = redis
        self._keys = StoreLayout(namespace)
        self._relayer_url = relayer_url.rstrip("/")
        self._relayer_token = relayer_token
        self._alert_url = alert_url
        self._http_timeout_s = http_timeout_s
        self._redis_timeout_s = redis_timeout_s
        self._pass_timeout_s = pass_timeout_s
        self._owns_client = client is None
        self._client = client  # created on first use when None (it needs a running loop)
        self._max_attempts = max_attempts
        self._wait = wait_exponential_jitter(
            multiplier=backoff_initial_s,
            max=backoff_max_s,
            exp_base=backoff_exp_base,
            jitter=backoff_initial_s,
        )
        self.lane_table: tuple[Lane, ...] = (
            Lane(BATCH_SIZE_LANE),
            Lane(REWARDS_LANE, reward_concurrency),
            Lane(ALERTS_LANE),
            Lane(OTHER_RELAYER_LANE),
        )
        self.lanes = {lane.name: LaneStats() for lane in self.lane_table}
        # id -> lane, learnt from the body; forgotten when the entry is removed
        self._lane_of_id: dict[bytes, str] = {}
        # lane -> (score, inclusive) where its next pass starts: every entry of the lane
        # below it has been delivered by this process
        self._cursor: dict[str, tuple[float, bool]] = {}
        self._undecodable: set[bytes] = set()
        self._log = log.bind(namespace=namespace)
        self.delivered = 0
        self.failed_attempts = 0
        self.alerts_dropped = 0
        self.metrics: Metrics | None = None  # relayer calls, alerts sent (`runtime.metrics`)
        self.lease: Lease | None = None  # checked before every POST (active/standby)
        self._seen_at: dict[bytes, float] = {}  # id -> when this process first saw it pending

    def backlog(self) -> dict[str, tuple[int, float]]:
        """Per lane: (entries pending, seconds since this process first saw the oldest of
        them; 0 when none). Known from the lanes' scans: an entry counts once a pass has
        read it (within a poll interval of its commit)."""
        now = time.monotonic()
        out = {lane.name: (0, 0.0) for lane in self.lane_table}
        for entry_id, lane in self._lane_of_id.items():
            if lane in out:
                depth, age = out[lane]
                out[lane] = (depth + 1, max(age, now - self._seen_at.get(entry_id, now)))
        return out

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
        """Deliver pending entries until cancelled, each lane in a loop of its own; a lane
        sleeps `poll_interval_s` when it is idle or a pass left an entry pending.

        A Redis error or timeout ends that lane's pass (logged); its next pass starts after
        the interval."""
        async with anyio.create_task_group() as tg:
            for lane in self.lane_table:
                tg.start_soon(self._run_lane, lane, poll_interval_s)

    async def _run_lane(self, lane: Lane, poll_interval_s: float) -> None:
        limit = 100
        while True:
            try:
                done = await self._lane_pass(lane, limit)
            except (RedisError, TimeoutError) as exc:
                self._log.error("outbox_pass_failed", lane=lane.name, error=repr(exc))
                if self.metrics is not None:
                    self.metrics.error("outbox_pass", type(exc).__name__)
                done = _Pass(failed=True)
            if done.delivered < limit or done.failed:
                await anyio.sleep(poll_interval_s)

    async def deliver_pending(self, limit: int = 100) -> int:
        """One pass of every lane at once, each delivering up to `limit` of its oldest
        pending entries -> how many were delivered in all. Undelivered entries stay pending
        for the next pass. A Redis failure propagates (after the other lanes' passes)."""
        results: dict[str, _Pass] = {}

        async def one(lane: Lane) -> None:
            results[lane.name] = await self._lane_pass(lane, limit)

        try:
            async with anyio.create_task_group() as tg:
                for lane in self.lane_table:
                    tg.start_soon(one, lane)
        except BaseExceptionGroup as group:  # report the cause, not the task group
            raise _first_leaf(group) from group
        return sum(r.delivered for r in results.values())

    # -- a lane's pass -----------------------------------------------------------------------

    async def _lane_pass(self, lane: Lane, limit: int) -> _Pass:
        """Deliver up to `limit` entries of `lane`, oldest first, `lane.concurrency` at a time."""
        result = _Pass()
        stats = self.lanes[lane.name]
        stats.passes += 1
        send, receive = anyio.create_memory_object_stream[tuple[bytes, float, OutboxEntry]](0)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(lane.concurrency):
                    tg.start_soon(self._lane_worker, lane, receive.clone(), result)
                receive.close()
                async with send, aclosing(self._scan(lane.name)) as entries:
                    dispatched = 0
                    async for entry_id, score, entry in entries:
                        result.last_seen = score
                        if dispatched >= limit or (lane.ordered and result.failed):
                            result.leave(score)
                            break
                        await send.send((entry_id, score, entry))
                        dispatched += 1
        except BaseExceptionGroup as group:  # report the cause, not the task group
            raise _first_leaf(group) from group
        if result.lowest_left < math.inf:
            self._cursor[lane.name] = (result.lowest_left, True)
        elif result.last_seen is not None:
            self._cursor[lane.name] = (result.last_seen, False)
        return result

    async def _lane_worker(
        self,
        lane: Lane,
        receive: MemoryObjectReceiveStream[tuple[bytes, float, OutboxEntry]],
        result: _Pass,
    ) -> None:
        async with receive:
            async for entry_id, score, entry in receive:
                if lane.ordered and result.failed:  # handed over just as the one before failed
                    result.leave(score)
                    continue
                with structlog.contextvars.bound_contextvars(**entry_context(entry)):
                    delivered = await self._deliver(entry, lane.name)
                if delivered:
                    if self._ledger is not None:
                        self._ledger.add(entry_id.decode())
                    await self._remove(entry_id)
                    result.delivered += 1
                    self.lanes[lane.name].delivered += 1
                    self.delivered += 1
                else:
                    result.failed = True
                    result.leave(score)

    async def _scan(self, lane: str) -> AsyncGenerator[tuple[bytes, float, OutboxEntry], None]:
        """The pending entries of `lane` in emission order, from its cursor: pages of ids
        (one ZRANGE each), the bodies of ids whose lane is not known yet and of the lane's
        own ids (one HMGET each)."""
        score, inclusive = self._cursor.get(lane, (-math.inf, True))
        low = _bound(score, inclusive)
        while True:
            with anyio.fail_after(self._redis_timeout_s):
                rows = cast(
                    list[tuple[bytes, float]],
                    await self._redis.zrangebyscore(
                        self._keys.outbox_pending, low, "+inf", start=0, num=_PAGE, withscores=True
                    ),
                )
            if not rows:
                return
            await self._replicated()
            entries = await self._learn([i for i, _ in rows if i not in self._lane_of_id])
            wanted = [i for i, _ in rows if self._lane_of_id.get(i) == lane and i not in entries]
            if wanted:
                entries.update(await self._read(wanted))
            for entry_id, entry_score in rows:
                entry = entries.get(entry_id)
                if self._lane_of_id.get(entry_id) == lane and entry is not None:
                    yield entry_id, entry_score, entry
            if len(rows) < _PAGE:
                return
            low = _bound(rows[-1][1], inclusive=False)

    async def _replicated(self) -> None:
        """With `min_replicas` (SEQ_REDIS_MIN_REPLICAS): return once that many replicas have
        everything this dispatcher has read so far, else raise `ReplicasBehind` (nothing is
        delivered; the lane tries again at its next pass).

        WAIT counts the replicas that acknowledged the last write of the connection it runs
        on, and a commit is written on another connection; so a probe write goes first, on
        the same connection as the WAIT (one pipeline, one round trip). Redis replicates in
        order: a replica that acknowledged the probe holds every commit written before it,
        among them those of the entries just read. A failover then cannot lose a step whose
        relayer call went out."""
        if self._min_replicas == 0:
            return
        wait_ms = max(1, int(self._redis_timeout_s * 1000 / 2))
        with anyio.fail_after(self._redis_timeout_s):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(self._keys.replication_probe)
                pipe.wait(self._min_replicas, wait_ms)
                _, acked = await pipe.execute()
        if int(acked) < self._min_replicas:
            if self.metrics is not None:
                self.metrics.error("outbox_replicas", "ReplicasBehind")
            raise ReplicasBehind(self._keys.namespace, self._min_replicas, int(acked), wait_ms)

    async def _learn(self, ids: list[bytes]) -> dict[bytes, OutboxEntry]:
        """Read the bodies of `ids` and note each one's lane -> the decoded entries."""
        entries = await self._read(ids)
        for entry_id in ids:
            entry = entries.get(entry_id)
            if entry is not None:
                self._lane_of_id[entry_id] = lane_of(entry)
                self._seen_at.setdefault(entry_id, time.monotonic())
            elif entry_id in self._undecodable:
                self._lane_of_id[entry_id] = _UNDECODABLE
        return entries

    async def _read(self, ids: list[bytes]) -> dict[bytes, OutboxEntry]:
        """The decoded bodies of `ids`. An id without a body (nothing to send) is removed;
        a body that does not decode is logged and left pending."""
        if not ids:
            return {}
        with anyio.fail_after(self._redis_timeout_s):
            raws = cast(list[bytes | None], await self._redis.hmget(self._keys.outbox, ids))
        out: dict[bytes, OutboxEntry] = {}
        for entry_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                self._log.error("outbox_entry_without_body", id=entry_id.decode())
                await self._remove(entry_id)
                continue
            try:
                out[entry_id] = decode_entry(raw)
            except msgspec.DecodeError as exc:
                self._undecodable.add(entry_id)
                self._log.error("outbox_entry_undecodable", id=entry_id.decode(), error=str(exc))
        return out

    # -- one entry -------------------------------------------------------------------------

    async def _deliver(self, entry: OutboxEntry, lane: str) -> bool:
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
        budget = self._pass_timeout_s if isinstance(entry, RelayerCall) else math.inf
        deadline = anyio.current_time() + budget
        error = f"BATCH_PROCESSING_TIMEOUT ({budget:g} s) reached"
        try:
            async for attempt in retrying:
                with attempt:
                    if anyio.current_time() >= deadline:
                        break
                    await self._post_once(url, body, entry.id, lane, deadline)
            else:
                self._log.info("outbox_delivered", id=entry.id, url=url)
                if self.metrics is not None and isinstance(entry, Alert):
                    self.metrics.alert_sent("core", entry.severity)
                return True
        except _RETRYABLE as exc:
            error = str(exc) or repr(exc)
        self._log.warning(
            "outbox_delivery_failed",
            id=entry.id,
            url=url,
            lane=lane,
            attempts=self._max_attempts,
            error=error,
        )
        return False

    def _request(self, entry: OutboxEntry) -> tuple[str, bytes]:
        """The URL and JSON body for an entry."""
        if isinstance(entry, RelayerCall):
            payload: dict[str, object] = {**entry.body, "authToken": self._relayer_token}
            return self._relayer_url + entry.path, msgspec.json.encode(payload)
        return self._alert_url, alert_body(entry.step, entry.message, entry.severity)

    async def _post_once(
        self, url: str, body: bytes, entry_id: str, lane: str, deadline: float
    ) -> None:
        """One attempt, until `http_timeout_s` or `deadline` (the pass's), whichever is first;
        raises one of `_RETRYABLE` unless the answer is HTTP 200. Shielded: a cancellation
        waits for the answer (within that same bound)."""
        if self.lease is not None:
            with anyio.fail_after(self._redis_timeout_s):
                await self.lease.verify(f"delivering outbox entry {entry_id} ({lane})")
        if self._client is None:
            self._client = client_session()
        stats = self.lanes[lane]
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            budget = min(self._http_timeout_s, deadline - anyio.current_time())
            with anyio.CancelScope(shield=True):
                status, text = await post_json(self._client, url, body, budget)
        except _RETRYABLE as exc:
            self._failed(stats)
            self._called(lane, "timeout" if isinstance(exc, TimeoutError) else "error")
            self._log.info(
                "outbox_attempt_failed", id=entry_id, url=url, error=str(exc) or repr(exc)
            )
            raise
        finally:
            stats.in_flight -= 1
        self._called(lane, str(status))
        if status != 200:
            self._failed(stats)
            self._log.info("outbox_attempt_failed", id=entry_id, url=url, status=status)
            raise DeliveryRejected(url, status, text)

    def _called(self, lane: str, status: str) -> None:
        if self.metrics is not None and lane != ALERTS_LANE:
            self.metrics.relayer_call(lane, status)

    def _failed(self, stats: LaneStats) -> None:
        self.failed_attempts += 1
        stats.failed_attempts += 1

    async def _remove(self, entry_id: bytes) -> None:
        """Mark an entry done: drop it from the pending set and its body, atomically
        (shielded: an entry answered with 200 is marked done even during a stop)."""
        with anyio.CancelScope(shield=True), anyio.fail_after(self._redis_timeout_s):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys.outbox_pending, entry_id)
                pipe.hdel(self._keys.outbox, entry_id.decode())
                await pipe.execute()
        self._lane_of_id.pop(entry_id, None)
        self._seen_at.pop(entry_id, None)


def _bound(score: float, inclusive: bool) -> str:
    """A ZRANGEBYSCORE bound: `-inf`, `12` or `(12` (scores are emission counters)."""
    if score == -math.inf:
        return "-inf"
    text = str(int(score)) if float(score).is_integer() else repr(score)
    return text if inclusive else f"({text}"


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The cause: the first leaf that is not the scan's `BrokenResourceError` (the
    workers it hands entries to stopped, on the error that is the cause)."""
    causes, _ = group.split(
        lambda e: not isinstance(e, BaseExceptionGroup | anyio.BrokenResourceError)
    )
    first = (causes or group).exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first

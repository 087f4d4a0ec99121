"""Apply one core step to Redis exactly once: its effects, its outbox entries, the new core
state and the checkpoint, all in one MULTI/EXEC (the `Tracking` idea of `eventsourcing`).

A commit normally costs two round trips whatever the number of effects: WATCH on the
checkpoint key, then one packed MULTI ... EXEC. The checkpoint is cached in memory after
`load()` and after every commit this executor saw complete; when the cache is not trusted
(first commit without `load()`, or after an error) the checkpoint is read after the WATCH,
which adds one round trip.

Concurrent writers on one namespace: WATCH catches a write between our WATCH and our EXEC.
A write that lands before our WATCH (our cache is stale) is caught one step late: the
transaction swaps the checkpoint with `SET ... GET` and compares the old value with the
cache. Both raise `ConcurrentWriterError`; the second one after this step was written on
top of the other writer's, so stop both collectors and restart one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import fakeredis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    Effect,
    HashSet,
    IncrementBy,
    ListPush,
    RelayerCall,
    SetValue,
)
from seqcollector.runtime.layout import (
    DEFAULT_NAMESPACE,
    Checkpoint,
    CheckpointRecord,
    StoreLayout,
    decode_record,
    encode_entry,
    encode_record,
)

__all__ = [
    "Checkpoint",
    "CommitPartlyRejected",
    "ConcurrentWriterError",
    "RedisExecutor",
    "embedded_redis",
    "redis_client",
]

log = structlog.get_logger(__name__)

# A WatchError whose re-read shows the checkpoint unchanged means our EXEC did not run (the
# connection dropped while watching): try again, a few times, then give up loudly.
_MAX_WATCH_RETRIES = 3


class ConcurrentWriterError(RuntimeError):
    """Another writer advanced the checkpoint of this namespace."""

    def __init__(
        self,
        namespace: str,
        expected: Checkpoint | None,
        found: Checkpoint | None,
        written_over_by: int | None = None,
    ):
        self.namespace = namespace
        self.expected = expected
        self.found = found
        self.written_over_by = written_over_by
        over = (
            ""
            if written_over_by is None
            else f" This executor's step seq={written_over_by} was already written on top of it."
        )
        super().__init__(
            f"namespace {namespace!r}: another writer moved the checkpoint to {found} while "
            f"this executor expected {expected}.{over} Two collectors are writing the same "
            "namespace: stop all but one, then restart it so that it reloads state and checkpoint."
        )


class CommitPartlyRejected(RuntimeError):
    """The step is committed (checkpoint advanced) but Redis refused some effect commands."""

    def __init__(self, namespace: str, seq: int, block: int | None, errors: list[str]):
        self.namespace = namespace
        self.seq = seq
        self.block = block
        self.errors = errors
        super().__init__(
            f"namespace {namespace!r}: step seq={seq} block={block} is committed, but Redis "
            f"rejected {len(errors)} effect command(s), first: {errors[0]}. A key has an "
            "unexpected type; fix or delete it. The step will not be applied again."
        )


@dataclass
class _CachedCheckpoint:
    """What this executor believes is stored under `<ns>:checkpoint` (raw bytes and decoded)."""

    raw: bytes | None
    record: CheckpointRecord | None

    @classmethod
    def from_raw(cls, raw: bytes | None) -> _CachedCheckpoint:
        return cls(raw=raw, record=decode_record(raw))

    @property
    def seq(self) -> int:
        return -1 if self.record is None else self.record.seq

    @property
    def outbox_next(self) -> int:
        return 0 if self.record is None else self.record.outbox_next

    @property
    def checkpoint(self) -> Checkpoint | None:
        return None if self.record is None else self.record.checkpoint


class RedisExecutor:
    """Applies core steps to a `redis.asyncio.Redis` (real or `embedded_redis()`).

    The client must return bytes (`decode_responses=False`, the default).
    """

    def __init__(self, redis: aioredis.Redis, namespace: str = DEFAULT_NAMESPACE) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisExecutor needs a client with decode_responses=False")
        self._redis = redis
        self._keys = StoreLayout(namespace)
        self._cached: _CachedCheckpoint | None = None  # None: not trusted, read it first

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    @property
    def redis(self) -> aioredis.Redis:
        """The client this executor commits through (queries are answered on it too)."""
        return self._redis

    async def load(self) -> tuple[bytes | None, Checkpoint | None]:
        """Read the stored core state and checkpoint (None, None on a fresh namespace).

        One round trip; the checkpoint is cached for the next commit.
        """
        state, raw = await self._redis.mget([self._keys.state, self._keys.checkpoint])
        self._cached = _CachedCheckpoint.from_raw(_as_bytes(raw))
        return _as_bytes(state), self._cached.checkpoint

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        """Apply the step numbered `seq` atomically: Redis effects in order, outbox entries,
        `state` and the checkpoint `(seq, block)`.

        Returns False and changes nothing if a step with this or a later seq is already
        committed. Raises `ConcurrentWriterError` if another writer advanced the checkpoint,
        `CommitPartlyRejected` if the step committed but Redis refused some effect commands.
        """
        if self._cached is not None and seq <= self._cached.seq:
            return False
        try:
            applied, rejected = await self._commit_with_retries(seq, block, effects, state)
        except BaseException:
            self._cached = None  # outcome unknown: read the checkpoint next time
            raise
        if rejected:
            log.error(
                "commit_partly_rejected",
                namespace=self.namespace,
                seq=seq,
                block=block,
                errors=rejected[:10],
                error_count=len(rejected),
            )
            raise CommitPartlyRejected(self.namespace, seq, block, rejected)
        return applied

    async def read_submission_sets(self, keys: Sequence[str]) -> list[str]:
        """The union of the sets at `keys` (one SUNION, one round trip) -> sorted, as str."""
        if not keys:
            return []
        members: set[bytes | str] = await self._redis.sunion(list(keys))
        return sorted(_as_str(m) for m in members)

    async def _commit_with_retries(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> tuple[bool, list[str]]:
        """`_commit_once`, again after a WatchError that turns out to have changed nothing."""
        for _ in range(_MAX_WATCH_RETRIES):
            try:
                return await self._commit_once(seq, block, effects, state)
            except WatchError:
                # Did our EXEC land with its reply lost, did someone else write, or neither?
                if await self._landed_after_watch_error(seq, block, state):
                    return True, []  # (the lost reply also held any rejected commands)
        raise WatchError(
            f"namespace {self.namespace!r}: commit of seq={seq} block={block} kept losing its "
            f"WATCH on {self._keys.checkpoint} ({_MAX_WATCH_RETRIES} attempts)"
        )

    async def _commit_once(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> tuple[bool, list[str]]:
        """One WATCH + MULTI/EXEC attempt -> (applied, errors Redis returned for commands)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            # Always WATCH: it also stops redis-py from resending MULTI/EXEC after a dropped
            # connection (it raises WatchError instead), which could apply a step twice.
            await pipe.watch(self._keys.checkpoint)
            if self._cached is None:
                raw = await pipe.get(self._keys.checkpoint)  # immediate while watching
                self._cached = _CachedCheckpoint.from_raw(_as_bytes(raw))
            cached = self._cached
            if seq <= cached.seq:
                return False, []
            bodies, scores = _outbox_rows(effects, first_score=cached.outbox_next)
            record = CheckpointRecord(seq, block, outbox_next=cached.outbox_next + len(scores))
            pipe.multi()  # type: ignore[no-untyped-call]
            # First command: swap the checkpoint and get the old one back (see module doc).
            pipe.set(self._keys.checkpoint, encode_record(record), get=True)
            pipe.set(self._keys.state, state)
            _queue_redis_effects(pipe, effects)
            if bodies:
                pipe.hset(self._keys.outbox, mapping=bodies)  # type: ignore[arg-type]
                pipe.zadd(self._keys.outbox_pending, scores, nx=True)
            replies = await pipe.execute(raise_on_error=False)
        previous = _as_bytes(replies[0])
        if previous != cached.raw:
            found = _CachedCheckpoint.from_raw(previous).checkpoint
            raise ConcurrentWriterError(self.namespace, cached.checkpoint, found, seq)
        self._cached = _CachedCheckpoint(raw=encode_record(record), record=record)
        # Only the increment scripts answer with a list: the messages of the keys they refused.
        errors = [str(r) for r in replies if isinstance(r, Exception)]
        errors += [_as_str(e) for r in replies if isinstance(r, list) for e in r]
        return True, errors

    async def _landed_after_watch_error(self, seq: int, block: int | None, state: bytes) -> bool:
        """After a WatchError: True if the stored step is ours (the EXEC ran, its reply was
        lost); False if nothing changed (retry). Raises if another writer moved on."""
        expected = self._cached
        if expected is None:  # the read after WATCH failed: no EXEC was sent
            return False
        stored_state, raw = await self._redis.mget([self._keys.state, self._keys.checkpoint])
        found = _CachedCheckpoint.from_raw(_as_bytes(raw))
        if raw == expected.raw:
            return False
        # Same seq, block and state: this step is applied exactly once, whoever wrote it
        # (WATCH lets only one of two writers starting from the same checkpoint through).
        ours = found.record is not None and (found.seq, found.record.block) == (seq, block)
        if ours and stored_state == state:
            self._cached = found
            return True
        raise ConcurrentWriterError(self.namespace, expected.checkpoint, found.checkpoint)


def _outbox_rows(
    effects: Sequence[Effect], first_score: int
) -> tuple[dict[str, bytes], dict[str, int]]:
    """The step's outbox entries -> (id -> JSON body, id -> pending score in emission order).

    A repeated id keeps its first place."""
    bodies: dict[str, bytes] = {}
    scores: dict[str, int] = {}
    for effect in effects:
        if isinstance(effect, RelayerCall | Alert):
            scores.setdefault(effect.id, first_score + len(scores))
            bodies[effect.id] = encode_entry(effect)
    return bodies, scores


# Counter increments in one command: INCRBY (and EXPIRE when a TTL is given) per key. redis-py
# spends ~10 us of CPU per queued command, and an epoch batched counts a hundred slots. Errors
# (a key of another type) do not stop the others; they come back as a list of messages.
_INCREMENTS = """
local errors = {}
for i, key in ipairs(KEYS) do
  local reply = redis.pcall('INCRBY', key, ARGV[2 * i - 1])
  if type(reply) == 'table' and reply.err then
    errors[#errors + 1] = 'INCRBY ' .. key .. ': ' .. tostring(reply.err)
  elseif ARGV[2 * i] ~= '0' then
    redis.call('EXPIRE', key, ARGV[2 * i])
  end
end
return errors
"""


def _queue_redis_effects(pipe: Pipeline, effects: Sequence[Effect]) -> None:
    """Queue the commands of `effects` in order. A run of consecutive `IncrementBy` becomes
    one EVAL of `_INCREMENTS` (amounts to one key added up, the last TTL given kept): the
    same end state, as the transaction is atomic."""
    run: dict[str, tuple[int, int]] = {}  # key -> (amount, ttl or 0)
    for effect in [*effects, None]:
        if isinstance(effect, IncrementBy):
            amount, ttl = run.get(effect.key, (0, 0))
            run[effect.key] = (amount + effect.amount, effect.ttl_s or ttl)
            continue
        if run:
            args = [str(v) for pair in run.values() for v in pair]
            pipe.eval(_INCREMENTS, len(run), *run, *args)
            run = {}
        if effect is not None:
            _queue_redis_effect(pipe, effect)


def _queue_redis_effect(pipe: Pipeline, effect: Effect) -> None:
    """Queue the Redis command for one effect other than `IncrementBy`; outbox, query and
    report effects queue none."""
    if isinstance(effect, SetValue):
        pipe.set(effect.key, effect.value, ex=effect.ttl_s or None)
    elif isinstance(effect, DeleteKeys):
        if effect.keys:  # DEL with no key is a syntax error that would abort the whole EXEC
            pipe.delete(*effect.keys)
    elif isinstance(effect, ListPush):
        pipe.lpush(effect.key, effect.value)
    elif isinstance(effect, HashSet):
        pipe.hset(effect.key, effect.field, effect.value)


def _as_bytes(value: bytes | str | None) -> bytes | None:
    assert not isinstance(value, str), "the executor's client must not decode responses"
    return value


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redis_client(url: str, connect_timeout_s: float = 5.0) -> aioredis.Redis:
    """A client for the Redis server at `url`, for the collector's own use.

    No socket read timeout: redis-py 8 arms one (5 s by default) around every reply it reads,
    which is half the client's CPU on a commit of a hundred commands. Every Redis operation
    of the collector runs under its own deadline instead (`Timeouts.redis_operation` for
    commits and start-up reads, the outbox's `redis_timeout_s`); a dead peer is noticed by
    that deadline or by TCP keepalive.
    """
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
    )
    return client


def embedded_redis(server: fakeredis.FakeServer | None = None) -> aioredis.Redis:
    """An in-process Redis (fakeredis) for replay without a server.

    Pass the same `fakeredis.FakeServer` to several calls to share one store (e.g. to
    simulate a restart); by default each call gets a fresh, empty store.
    """
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server)
    return client

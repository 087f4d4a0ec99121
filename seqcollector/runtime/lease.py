"""Active/standby: the fenced lease of one namespace (issue 11).

The lease is the key `<ns>:lease` (`StoreLayout.lease`) holding `<holder-id>:<token>`, with
a TTL of SEQ_HA_LEASE_S. The holder id is `host:pid:random` (`holder_id`); the token comes
from `<ns>:lease:token` (`StoreLayout.lease_token`), incremented on every acquisition, so a
holder's value is never seen again once it lost the lease. Three scripts, atomic in Redis:

- acquire: SET NX PX + INCR of the token key, only when the lease is free;
- renew: PEXPIRE only while the value is still ours; or, when the lease is free and nobody
  acquired it since (the token counter still holds our token, or vanished with the rest
  of Redis), SET it back to our value: nobody else can have committed meanwhile, since
  committing needs the lease and taking it moves the counter;
- release: DEL only while the value is still ours.

Every commit is fenced with the value (`executor._COMMIT` compares it before writing
anything) and the outbox checks it before every POST, so a collector that was paused past
its lease and wakes up writes nothing and sends nothing: it gets `LeaseLost`.

The scripts have no shebang, so that fakeredis (the embedded store; `lupa` runs them) takes
them as Redis does.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import anyio
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from seqcollector.errors import OperatorError
from seqcollector.runtime.layout import StoreLayout

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_LEASE_S: Final = 10.0
OP_TIMEOUT_S: Final = 2.0

# KEYS: lease, token. ARGV: holder id, ttl ms. -> {1, value} | {0, value held by another}
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then return {0, held} end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. token
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2])
return {1, value}
"""
# KEYS: lease, token. ARGV: our value, ttl ms, our token.
# -> 1 renewed | 2 reclaimed (it was free and nobody took it since) | 0 not ours any more
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  local token = redis.call('GET', KEYS[2])
  if (not token) or token == ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    if not token then redis.call('SET', KEYS[2], ARGV[3]) end
    return 2
  end
end
return 0
"""
# KEYS: lease. ARGV: our value. -> 1 deleted | 0 not ours
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def holder_id() -> str:
    """This process: `host:pid:random` (8 hex digits, so two starts of one pid differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: the holder id and the fencing token of that acquisition."""

    holder: str
    token: int | None  # None: a value this collector did not write

    @classmethod
    def parse(cls, value: bytes | str) -> LeaseHolder:
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        holder, _, token = text.rpartition(":")
        if holder and token.isdigit():
            return cls(holder, int(token))
        return cls(text[:200], None)

    @property
    def value(self) -> str:
        return self.holder if self.token is None else f"{self.holder}:{self.token}"

    def __str__(self) -> str:
        return f"{self.holder}, token {self.token}"


class LeaseLost(OperatorError):
    """This collector does not hold the namespace's lease (any more): nothing was written or
    sent. It goes back to standby; whoever holds the lease now commits."""

    def __init__(self, namespace: str, ours: str | None, now: LeaseHolder | None, doing: str):
        self.namespace = namespace
        self.ours = ours
        self.now = now
        who = f"held by {now}" if now is not None else "free (expired)"
        mine = f" ({ours})" if ours else ""
        super().__init__(
            f"namespace {namespace!r}: lease lost{mine} while {doing}; the lease is now {who}. "
            "Nothing was written or sent: this collector goes back to standby and takes over "
            "again from the checkpoint if the lease becomes free (SEQ_HA_LEASE_S)"
        )


class Lease:
    """One process's side of the lease of `namespace` (see the module docstring).

    `value` is what this process holds (`<holder>:<token>`), None when it holds nothing;
    the executor fences every commit with it and the outbox checks it before every POST."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        ttl_s: float = DEFAULT_LEASE_S,
        holder: str | None = None,
        op_timeout_s: float = OP_TIMEOUT_S,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease ttl must be > 0 s, got {ttl_s}")
        self.redis = redis
        self.namespace = namespace
        self.layout = StoreLayout(namespace)
        self.ttl_s = ttl_s
        self.holder = holder or holder_id()
        self.op_timeout_s = op_timeout_s
        self.value: str | None = None
        self.acquired_at: float | None = None  # anyio clock of the last acquire or renew
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def key(self) -> str:
        return self.layout.lease

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    @property
    def token(self) -> int | None:
        return None if self.value is None else LeaseHolder.parse(self.value).token

    @property
    def _ttl_ms(self) -> str:
        return str(max(1, int(self.ttl_s * 1000)))

    async def acquire(self) -> LeaseHolder:
        """Take the lease if it is free -> the holder afterwards (this process if
        `self.value` is set). A lease held by another is left alone."""
        with anyio.fail_after(self.op_timeout_s):
            got, value = await self._acquire(
                keys=[self.key, self.layout.lease_token], args=[self.holder, self._ttl_ms]
            )
        found = LeaseHolder.parse(value)
        if int(got) == 1:
            self.value = found.value
            self.acquired_at = anyio.current_time()
        else:
            self.value = None
        return found

    async def renew(self) -> bool:
        """Extend the lease by its TTL (or take it back, see the module docstring) -> False
        (and `value` forgotten) if it is not ours."""
        ours = self.value
        if ours is None:
            return False
        keys, args = (
            [self.key, self.layout.lease_token],
            [ours, self._ttl_ms, str(self.token)],
        )
        with anyio.fail_after(self.op_timeout_s):
            ok = int(await self._renew(keys=keys, args=args))
        if ok == 2:
            log.warning(
                "lease_reclaimed",
                key=self.key,
                value=self.value,
                reason="the lease had expired (this process was paused or Redis lost it) and "
                "nobody took it meanwhile",
            )
        if ok:
            self.acquired_at = anyio.current_time()
            return True
        self._forget(ours)
        return False

    async def release(self) -> None:
        """Give the lease up (if still ours), so a standby takes over without waiting."""
        value, self.value = self.value, None
        if value is not None:
            with anyio.CancelScope(shield=True), anyio.fail_after(self.op_timeout_s):
                await self._release(keys=[self.key], args=[value])

    async def current(self) -> LeaseHolder | None:
        """Who holds the lease now (None: nobody)."""
        with anyio.fail_after(self.op_timeout_s):
            raw = await self.redis.get(self.key)
        return None if raw is None else LeaseHolder.parse(raw)

    async def verify(self, doing: str) -> None:
        """Raise `LeaseLost` unless the stored lease is still ours (one GET)."""
        ours = self.value
        now = await self.current()
        if ours is None or now is None or now.value != ours:
            self._forget(ours)
            raise LeaseLost(self.namespace, ours, now, doing)

    def lost(self, now: LeaseHolder | None, doing: str, ours: str | None = None) -> LeaseLost:
        """The error for a fenced operation Redis refused, fenced with `ours` (default: the
        value now); forgets that value."""
        ours = self.value if ours is None else ours
        self._forget(ours)
        return LeaseLost(self.namespace, ours, now, doing)

    def _forget(self, ours: str | None) -> None:
        """Forget `ours`, the value a check found gone, unless this lease has meanwhile been
        acquired again (a new value, a new token): a check that started before the new
        acquisition says nothing about it. (Found by the soak: in the simulation the standby
        takes over the active's `Lease`, and the paused active's outbox check, answered just
        after the standby's acquisition, wiped the standby's value; it then could not commit.)"""
        if self.value == ours:
            self.value = None


async def keep_renewed(lease: Lease) -> None:
    """Renew `lease` every third of its TTL until cancelled; raise `LeaseLost` when it is
    another's or free, or when Redis did not answer for a whole TTL."""
    while True:
        await anyio.sleep(lease.renew_every_s)
        ours = lease.value
        try:
            renewed = await lease.renew()
        except (RedisError, TimeoutError, OSError) as exc:
            since = anyio.current_time() - (lease.acquired_at or 0.0)
            log.warning(
                "lease_not_renewed",
                key=lease.key,
                error=f"{type(exc).__name__}: {exc}",
                action=f"retried in {lease.renew_every_s:g} s; lost after {lease.ttl_s:g} s",
            )
            if since < lease.ttl_s:
                continue
            raise lease.lost(None, "renewing the lease (Redis unreachable for its TTL)") from exc
        if not renewed:
            try:
                now = await lease.current()
            except (RedisError, TimeoutError, OSError):
                now = None
            raise LeaseLost(lease.namespace, ours, now, "renewing the lease")


async def while_held(lease: Lease, fn: Callable[[], Awaitable[T]]) -> T:
    """`await fn()` while `keep_renewed(lease)` runs beside it -> its result. A lost
    lease cancels `fn` and raises `LeaseLost`; an exception of `fn` propagates as itself."""
    done: list[T] = []
    failed: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def renew() -> None:
            try:
                await keep_renewed(lease)
            except LeaseLost as exc:
                failed.append(exc)
                tg.cancel_scope.cancel()

        tg.start_soon(renew)
        try:
            done.append(await fn())
        except anyio.get_cancelled_exc_class():
            if not failed:
                raise
        except BaseException as exc:  # re-raised below, outside the task group
            failed.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return done[0]


async def read_lease(redis: aioredis.Redis, namespace: str) -> tuple[LeaseHolder | None, int]:
    """(the holder of `namespace`'s lease or None, its TTL left in ms; -2 if none)."""
    layout = StoreLayout(namespace)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(layout.lease)
        pipe.pttl(layout.lease)
        raw, ttl = await pipe.execute()
    return (None if raw is None else LeaseHolder.parse(raw)), int(ttl)

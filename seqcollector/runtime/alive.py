"""A running collector's liveness mark: `<ns>:alive` = JSON {host, pid, started}, with a TTL
of `TTL_S`, renewed every `RENEW_S` while `seqcollector run` runs and deleted on a clean exit
(a killed process leaves it to expire). `seqcollector rewind` refuses while it exists.

Not the lease: the fenced lease `<ns>:lease` (`runtime.lease`) decides who commits. The
mark follows it: `run` keeps the mark only while it is active (holds the lease; a standby
keeps none), so the mark names the lease holder's process, with its start time, for
older tools that read it. `seqcollector rewind` checks both, and takes the lease for its
own commit.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

TTL_S: Final = 15
RENEW_S: Final = 5.0
OP_TIMEOUT_S: Final = 2.0  # each SET or DEL of the mark

# Delete the mark only if it is still this process's (another start may have written its own).
_DELETE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def alive_key(namespace: str) -> str:
    return f"{namespace}:alive"


def mark_of_this_process() -> bytes:
    """The mark's value: this host, this pid, the start time (UTC, ISO 8601)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return msgspec.json.encode(
        {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
    )


async def keep_alive(
    redis: aioredis.Redis,
    namespace: str,
    *,
    ttl_s: int = TTL_S,
    renew_s: float = RENEW_S,
    op_timeout_s: float = OP_TIMEOUT_S,
) -> None:
    """Hold `<namespace>:alive` until cancelled: SET with a TTL of `ttl_s`, again every
    `renew_s`; on cancellation delete it if it is still ours. A Redis failure is logged and
    the next renewal tries again (the collector's own commits report Redis being down)."""
    key, mark = alive_key(namespace), mark_of_this_process()
    try:
        while True:
            try:
                with anyio.fail_after(op_timeout_s):
                    await redis.set(key, mark, ex=ttl_s)
            except (RedisError, TimeoutError, OSError) as exc:
                log.warning(
                    "alive_mark_not_renewed",
                    key=key,
                    error=f"{type(exc).__name__}: {exc}",
                    action=f"retried in {renew_s:g} s",
                )
            await anyio.sleep(renew_s)
    finally:
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(op_timeout_s):
                    await redis.eval(_DELETE_IF_OURS, 1, key, mark)
            except (RedisError, TimeoutError, OSError) as exc:
                log.warning(
                    "alive_mark_not_deleted",
                    key=key,
                    error=f"{type(exc).__name__}: {exc}",
                    action=f"it expires within {ttl_s} s",
                )


async def holder(redis: aioredis.Redis, namespace: str) -> dict[str, Any] | None:
    """The mark of the collector holding `namespace` ({host, pid, started}), or None. A
    value that is not such JSON is still a holder: returned as {"value": <text>}."""
    raw = await redis.get(alive_key(namespace))
    if raw is None:
        return None
    try:
        found = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        found = None
    if isinstance(found, dict):
        return found
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return {"value": text[:200]}

"""`seqcollector api`: the read API alone, from Redis alone (no chain, no core), until
SIGINT or SIGTERM.

It needs DATA_MARKET_ADDRESSES and AUTH_READ_TOKEN: without a token it refuses to start
(Go serves with an empty token, which an absent `token` field matches: an open API).
Redis is checked once at start (PING within TIMEOUT_REDIS_OPERATION), as `status` does;
unreachable, the command ends with one line.
"""

from __future__ import annotations

import signal

import anyio
from redis.exceptions import RedisError

from seqcollector.api.app import build_app
from seqcollector.api.server import serve
from seqcollector.config import ConfigError, Settings, mask_url
from seqcollector.errors import DependencyError
from seqcollector.runtime.executor import redis_client
from seqcollector.runtime.startup import describe_failure


def require_api_settings(settings: Settings) -> Settings:
    """Raise ConfigError unless the read API can answer with `settings`; return them."""
    if not settings.data_market_addresses:
        raise ConfigError("DATA_MARKET_ADDRESSES", "must list at least one data market")
    if not settings.auth_read_token:
        raise ConfigError(
            "AUTH_READ_TOKEN",
            "must be set: the read API checks every request's token against it (an empty "
            "token would let any request in)",
        )
    return settings


async def api_command(settings: Settings, host: str, port: int) -> None:
    """Serve the read API on host:port until SIGINT/SIGTERM."""
    require_api_settings(settings)
    redis = redis_client(settings.redis_url())
    budget = settings.timeouts.redis_operation
    try:
        try:
            with anyio.fail_after(budget):
                await redis.ping()
        except (RedisError, TimeoutError, OSError) as exc:
            raise DependencyError(
                f"Redis at {mask_url(settings.redis_url())}: {describe_failure(exc, budget)} "
                "(api); check that Redis is up and answering"
            ) from None
        app = build_app(settings, redis)
        async with anyio.create_task_group() as tg:
            await tg.start(serve, app, host, port)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break
    finally:
        await redis.aclose()

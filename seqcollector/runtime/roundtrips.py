"""Count Redis round trips: every `send_packed_command` on a connection is one write that
the caller then waits on (a command, a pipeline, or a whole MULTI/EXEC).

Used by tests and benchmarks to prove costs like "one commit = two round trips":

    redis, trips = counting_redis("redis://127.0.0.1:6379/0")
    await redis.ping(); trips.reset()     # leave connection set-up out
    ...; assert trips.count <= 3

The counter belongs to the pool (passed as the `round_trips` connection argument), so
clients counted in parallel do not mix their figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import fakeredis
import redis.asyncio as aioredis
from fakeredis.aioredis import FakeAsyncRedisConnection
from redis.asyncio.connection import Connection


class RoundTripCounter:
    """How many packed writes the connections of one pool have sent."""

    def __init__(self) -> None:
        self.count = 0

    def reset(self) -> None:
        self.count = 0


class _CountingMixin:
    """Adds the `round_trips` constructor argument and counts `send_packed_command`."""

    round_trips: RoundTripCounter

    def __init__(self, *args: Any, round_trips: RoundTripCounter | None = None, **kwargs: Any):
        self.round_trips = round_trips if round_trips is not None else RoundTripCounter()
        super().__init__(*args, **kwargs)

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        self.round_trips.count += 1
        await super().send_packed_command(command, check_health)  # type: ignore[misc]


class CountingConnection(_CountingMixin, Connection):
    """A TCP redis-py connection that counts its round trips."""


# fakeredis overrides some redis-py members with other signatures; nothing to fix here.
class CountingEmbeddedConnection(_CountingMixin, FakeAsyncRedisConnection):  # type: ignore[misc]
    """A fakeredis connection that counts its round trips."""


def counting_redis(url: str) -> tuple[aioredis.Redis, RoundTripCounter]:
    """A client for the Redis at `url` -> (client, the counter of its round trips)."""
    counter = RoundTripCounter()
    pool = aioredis.ConnectionPool.from_url(
        url, connection_class=CountingConnection, round_trips=counter
    )
    return aioredis.Redis(connection_pool=pool), counter


def counting_embedded_redis(
    server: fakeredis.FakeServer | None = None,
) -> tuple[aioredis.Redis, RoundTripCounter]:
    """Like `executor.embedded_redis(server)`, with a round-trip counter."""
    counter = RoundTripCounter()
    pool = aioredis.ConnectionPool(
        connection_class=CountingEmbeddedConnection,
        server=server if server is not None else fakeredis.FakeServer(),
        client_class=aioredis.Redis,
        round_trips=counter,
    )
    return aioredis.Redis(connection_pool=pool), counter

"""Shared fixtures: a private redis-server per test session (per xdist worker), the anyio
backend, and `redis_backend` to run a test on a real Redis and on fakeredis.

`redis_server` starts `redis-server` on a free loopback port with persistence off and its
working directory in a temporary folder, and stops it at the end of the session. Without the
binary the tests that need it are skipped, except under CI=true where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.roundtrips import (
    RoundTripCounter,
    counting_embedded_redis,
    counting_redis,
)
from sim.redis_server import RedisServer, RedisServerMissing
from sim.sentinel_group import SentinelGroup, SentinelMissing


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL `redis://127.0.0.1:<port>/0` of a redis-server private to this session."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RedisServerMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis URL, emptied (FLUSHALL) before the test."""
    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server


class RedisBackend:
    """One store that tests can open several clients on: a real server or fakeredis.

    `client()` opens a new client (a new executor on it simulates a restart);
    `counting_client()` does the same with a round-trip counter. All are closed at teardown.
    """

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind = kind
        self._url = url
        self._server = fakeredis.FakeServer() if url is None else None
        self._clients: list[aioredis.Redis] = []

    def client(self) -> aioredis.Redis:
        client = aioredis.Redis.from_url(self._url) if self._url else embedded_redis(self._server)
        self._clients.append(client)
        return client

    def counting_client(self) -> tuple[aioredis.Redis, RoundTripCounter]:
        if self._url:
            client, counter = counting_redis(self._url)
        else:
            client, counter = counting_embedded_redis(self._server)
        self._clients.append(client)
        return client, counter

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("embedded")])
async def redis_backend(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[RedisBackend]:
    """Each test using it runs twice: on the session's redis-server (emptied) and on a
    fresh fakeredis store."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    backend = RedisBackend(request.param, url)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    """A master, two replicas and three `redis-sentinel`s on loopback (`sim.sentinel_group`);
    without the binaries skipped, except under CI=true where that is a failure."""
    try:
        group = SentinelGroup(replicas=2, sentinels=3)
    except SentinelMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with group:
        yield group

"""The read API served for a test: `build_app` under `server.serve` on 127.0.0.1, port 0,
against the test's redis-server, and an aiohttp client speaking to it over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import msgspec
import redis.asyncio as aioredis

from seqcollector.api.app import build_app
from seqcollector.api.server import serve
from seqcollector.config import Settings
from seqcollector.runtime.executor import redis_client

MARKET = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c"  # the Go tests' market
OTHER_MARKET = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200d"  # not configured
LC = MARKET.lower()
TOKEN = "valid-token"


class Answer(msgspec.Struct):
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def response(self) -> Any:
        """The `info.response` of a 200, after checking the envelope and the request id."""
        assert self.status == 200, (self.status, self.text)
        body = self.json()
        assert body["info"]["success"] is True, body
        assert body["requestID"] == self.headers["X-Request-ID"], (body, self.headers)
        return body["info"]["response"]

    @property
    def error(self) -> str:
        """The `error` of a JSON error answer, after checking its request id."""
        assert self.status != 200, self.text
        assert self.headers["Content-Type"].startswith("application/json"), self.headers
        body = self.json()
        assert body["requestID"] == self.headers["X-Request-ID"], (body, self.headers)
        return str(body["error"])


class Api:
    def __init__(self, url: str, session: aiohttp.ClientSession, redis: aioredis.Redis) -> None:
        self.url = url
        self.session = session
        self.redis = redis

    async def call(
        self,
        path: str,
        body: Any = None,
        *,
        method: str = "POST",
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.request(method, self.url + path, data=data, headers=hdrs) as r:
            return Answer(r.status, dict(r.headers), await r.text())


def settings_for(
    redis_url: str, token: str = TOKEN, markets: tuple[str, ...] = (MARKET,)
) -> Settings:
    return Settings(
        data_market_addresses=markets, auth_read_token=token, redis_url_override=redis_url
    )


@asynccontextmanager
async def served(redis_url: str, settings: Settings | None = None) -> AsyncIterator[Api]:
    """The app served on a free loopback port for the duration of the block."""
    redis = redis_client(redis_url)
    app = build_app(settings or settings_for(redis_url), redis)
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, app, "127.0.0.1", 0)
            async with aiohttp.ClientSession() as session:
                yield Api(f"http://127.0.0.1:{port}", session, redis)
            tg.cancel_scope.cancel()
    finally:
        await redis.aclose()


def go_rfc3339(ts: int) -> str:
    """Go's time.Unix(ts, 0).Format(time.RFC3339) in this process's zone (from libc)."""
    local = time.localtime(ts)
    offset = local.tm_gmtoff
    zone = (
        "Z"
        if offset == 0
        else f"{'+' if offset > 0 else '-'}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"
    )
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + zone


def multiset(items: list[Any]) -> list[str]:
    """A list compared without its order (where Go's answer depends on map order)."""
    return sorted(json.dumps(i, sort_keys=True) for i in items)

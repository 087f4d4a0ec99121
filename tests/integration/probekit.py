"""Serve route handlers on loopback for a test: a minimal Litestar app under uvicorn on
127.0.0.1, port 0 (the port the OS chose is read back), inside the caller's task group;
and a small aiohttp GET."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import uvicorn
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from prometheus_client.parser import text_string_to_metric_families

START_TIMEOUT_S = 30.0


@asynccontextmanager
async def serving(routes: Sequence[HTTPRouteHandler]) -> AsyncIterator[str]:
    """`async with serving(probe_routes(...)) as url:` -> `http://127.0.0.1:<port>`."""
    app = Litestar(route_handlers=list(routes))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(START_TIMEOUT_S):
            while not server.started:
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def get(url: str) -> tuple[int, str, str]:
    """GET `url` -> (status, content type, body text)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_json(url: str) -> tuple[int, Any]:
    status, _, text = await get(url)
    return status, json.loads(text)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition (prometheus_client's parser) -> {(sample name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value (KeyError naming what is there when it is missing)."""
    key = (name, tuple(sorted(labels.items())))
    if key not in parsed:
        there = sorted(k for k in parsed if k[0] == name)
        raise KeyError(f"no sample {name}{labels}; samples of that name: {there[:20]}")
    return parsed[key]

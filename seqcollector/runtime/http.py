"""The collector's HTTP client for its POSTs (relayer calls, alerts): aiohttp, one way.

aiohttp, as the RPC pool uses: keep-alive, and about a quarter of httpx's CPU per call,
which a relayer call per epoch makes count. A session has no timeout of its own: each POST
is bounded by the caller's `timeout_s` (HTTP_TIMEOUT), connect to last byte, and raises
`TimeoutError` past it. Failures to reach the peer are `aiohttp.ClientError`s; an answer of
any status is returned, for the caller to judge.
"""

from __future__ import annotations

from typing import Final

import aiohttp
import anyio

JSON_HEADERS: Final = {"Content-Type": "application/json"}
POST_ERRORS: Final = (aiohttp.ClientError, TimeoutError)


def client_session() -> aiohttp.ClientSession:
    """A session for the collector's POSTs (create it inside a running event loop, close it
    with `await session.close()` or `async with`)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))


async def post_json(
    session: aiohttp.ClientSession, url: str, body: bytes, timeout_s: float
) -> tuple[int, str]:
    """POST the JSON `body` to `url` within `timeout_s` -> (HTTP status, body text).

    Raises one of `POST_ERRORS` when no answer came (refused, reset, timed out)."""
    with anyio.fail_after(timeout_s):
        async with session.post(url, data=body, headers=JSON_HEADERS) as response:
            return response.status, await response.text(errors="replace")

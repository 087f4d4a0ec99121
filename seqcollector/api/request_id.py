"""X-Request-ID as the Go collector's RequestMiddleware sets it: a new UUID v4 for every
response, errors and CORS preflights included, equal to the body's `requestID`; an incoming
X-Request-ID is ignored (as in Go)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.types import ASGIApp

HEADER = b"x-request-id"
_STATE_KEY = "seqcollector_request_id"


def request_id_of(scope: Any) -> str:
    """The request id of `scope` (set by `RequestIdMiddleware`; a new one if absent)."""
    state = scope.setdefault("state", {})
    rid = state.get(_STATE_KEY)
    if rid is None:
        rid = state[_STATE_KEY] = str(uuid.uuid4())
    return str(rid)


class RequestIdMiddleware:
    """Pure ASGI: gives each HTTP request an id and puts it in the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope).encode()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                headers.append((HEADER, rid))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)

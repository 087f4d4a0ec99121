"""CORS as the Go collector configures gorilla/handlers: origins `*`, methods GET POST PUT
DELETE OPTIONS, headers Content-Type, Authorization, X-Request-ID (besides gorilla's
defaults Accept, Accept-Language, Content-Language, Origin); no exposed headers.

- A request with an Origin gets `Access-Control-Allow-Origin: *`, then runs.
- OPTIONS never reaches a handler: with an Origin and `Access-Control-Request-Method` it is
  a preflight, answered 200 (`Access-Control-Allow-Headers` lists the requested headers
  allowed, as gorilla writes them; `Access-Control-Allow-Methods` only for a method beyond
  GET, HEAD, POST); a preflight without that header is 400, a method not allowed 405, a
  header not allowed 403 (gorilla's statuses; the body here is a JSON error). OPTIONS
  without an Origin is an empty 200, as in Go.
"""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp

from seqcollector.api.errors import JSON, error_body

ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
_SIMPLE_METHODS = ("GET", "HEAD", "POST")
_DEFAULT_HEADERS = ("Accept", "Accept-Language", "Content-Language", "Origin")
ALLOWED_HEADERS = (*_DEFAULT_HEADERS, "Content-Type", "Authorization", "X-Request-Id")


def canonical_header(name: str) -> str:
    """Go's http.CanonicalHeaderKey: `x-request-id` -> `X-Request-Id`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.strip().split("-"))


class CorsMiddleware:
    """Pure ASGI, outside the router, so preflights never run a handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        origin = headers.get(b"origin", b"")
        if scope["method"] == "OPTIONS":
            await self._options(scope, headers, origin, receive, send)
            return
        if not origin:
            await self.app(scope, receive, send)
            return

        async def send_with_origin(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", b"*"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_origin)

    async def _options(
        self, scope: Any, headers: dict[bytes, bytes], origin: bytes, receive: Any, send: Any
    ) -> None:
        if not origin:
            await _plain(send, 200, [])
            return
        requested = headers.get(b"access-control-request-method")
        if requested is None:
            await _error(scope, send, 400, "CORS preflight without Access-Control-Request-Method")
            return
        method = requested.decode("latin-1")
        if method not in ALLOWED_METHODS:
            await _error(scope, send, 405, f"CORS preflight: method {method} is not allowed")
            return
        allowed: list[str] = []
        raw = headers.get(b"access-control-request-headers", b"").decode("latin-1")
        for part in raw.split(","):
            name = canonical_header(part)
            if not name or name in _DEFAULT_HEADERS:
                continue
            if name not in ALLOWED_HEADERS:
                await _error(scope, send, 403, f"CORS preflight: header {name} is not allowed")
                return
            allowed.append(name)
        extra: list[tuple[bytes, bytes]] = []
        if allowed:
            extra.append((b"access-control-allow-headers", ",".join(allowed).encode()))
        if method not in _SIMPLE_METHODS:
            extra.append((b"access-control-allow-methods", method.encode()))
        extra.append((b"access-control-allow-origin", b"*"))
        await _plain(send, 200, extra)


async def _plain(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


async def _error(scope: Any, send: Any, status: int, message: str) -> None:
    body = error_body(scope, message)
    await _plain(send, status, [(b"content-type", JSON.encode())], body)

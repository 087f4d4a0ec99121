"""`build_app`: the Litestar application of the read API (the Go collector's 12 paths),
its Swagger UI and OpenAPI document, and the route handlers other parts add (/metrics,
/health, /ready), which get neither the body cap nor the token.

Outermost, around Litestar's router (as Go's RequestMiddleware and gorilla CORS are around
its mux): X-Request-ID, then CORS. The 12 paths answer any method, as Go's mux does; the
document lists POST, the clients' use. Bodies over `MAX_BODY_BYTES` get a 413.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from litestar import Litestar, Request, Response, Router, post, route
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ControllerRouterHandler

from seqcollector.api import errors
from seqcollector.api.bodies import BodyError, decode_body
from seqcollector.api.cors import CorsMiddleware
from seqcollector.api.endpoints import ENDPOINTS, ApiContext, Endpoint
from seqcollector.api.models import Envelope, Info
from seqcollector.api.openapi import operation_class
from seqcollector.api.reads import Reader
from seqcollector.api.request_id import RequestIdMiddleware, request_id_of
from seqcollector.api.swagger import render_plugins, swagger_asset
from seqcollector.config import Settings

MAX_BODY_BYTES = 64 * 1024
OTHER_METHODS: list[HttpMethod] = [
    HttpMethod.GET,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
]
TITLE = "Sequencer API Documentation"
DESCRIPTION = (
    "The read API of the submission sequencer's event collector (seqcollector), with the Go "
    "collector's paths, bodies and answers. Every body carries `token` (AUTH_READ_TOKEN) and "
    '`dataMarketAddress`. Errors are JSON `{"error", "requestID"}` with Go\'s status.'
)
_encoder = msgspec.json.Encoder()
# Go's encoder escapes these inside strings; they occur nowhere else in a JSON text.
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def go_json(value: Any) -> bytes:
    """`value` encoded as Go's json.Encoder writes it: compact, HTML-escaped, a newline."""
    out = _encoder.encode(value)
    for raw, escaped in _GO_ESCAPES:
        if raw in out:
            out = out.replace(raw, escaped)
    return out + b"\n"


def _route_handlers(ctx: ApiContext, ep: Endpoint) -> list[ControllerRouterHandler]:
    async def answer(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            body = decode_body(await request.body(), ep.request)
        except BodyError as exc:
            raise errors.bad_request(str(exc)) from None
        result = await ep.handler(ctx, body, request.query_params)
        envelope = Envelope(
            info=Info(success=True, response=result), requestID=request_id_of(request.scope)
        )
        return Response(go_json(envelope), media_type=errors.JSON)

    name = ep.path.strip("/")
    documented = post(
        ep.path,
        name=name,
        operation_id=name,
        summary=ep.summary,
        tags=[ep.tag],
        operation_class=operation_class(ep),
        status_code=200,
    )(answer)
    others = route(ep.path, http_method=OTHER_METHODS, include_in_schema=False, status_code=200)(
        answer
    )
    return [documented, others]


def build_app(
    settings: Settings,
    redis: aioredis.Redis,
    *,
    route_handlers: Sequence[ControllerRouterHandler] = (),
    logger: Any = None,
) -> Litestar:
    """The app answering the read API from `redis` (DATA_MARKET_ADDRESSES, AUTH_READ_TOKEN,
    TIMEOUT_REDIS_OPERATION from `settings`), plus `route_handlers` as they are."""
    log = logger or structlog.get_logger("seqcollector.api")
    ctx = ApiContext(
        Reader(redis, settings.timeouts.redis_operation),
        settings.data_market_addresses,
        settings.auth_read_token,
    )
    api_handlers: list[ControllerRouterHandler] = []
    for ep in ENDPOINTS:
        api_handlers += _route_handlers(ctx, ep)
    api = Router("/", route_handlers=api_handlers, request_max_body_size=MAX_BODY_BYTES)

    def api_error(request: Request[Any, Any, Any], exc: errors.ApiError) -> Response[bytes]:
        if exc.status >= 503 or isinstance(exc, errors.StoredValueError):
            log.warning("api_error", path=request.url.path, status=exc.status, error=exc.message)
        return errors.api_error_handler(request, exc)

    def internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        log.error("api_internal_error", path=request.url.path, exc_info=exc)
        return errors.error_response(
            request.scope, 500, f"Internal Server Error: {type(exc).__name__}; the log has details"
        )

    app = Litestar(
        route_handlers=[api, swagger_asset, *route_handlers],
        openapi_config=OpenAPIConfig(
            title=TITLE,
            version="1.0",
            description=DESCRIPTION,
            path="/swagger",
            render_plugins=render_plugins(),
        ),
        exception_handlers={
            errors.ApiError: api_error,
            HTTPException: lambda request, exc: errors.http_exception_handler(
                request, exc, MAX_BODY_BYTES
            ),
            Exception: internal,
        },
        logging_config=None,
        debug=False,
    )
    app.asgi_handler = RequestIdMiddleware(CorsMiddleware(app.asgi_handler))
    return app

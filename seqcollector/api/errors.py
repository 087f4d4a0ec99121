"""The read API's error answers: `{"error": "<message>", "requestID": "<uuid>"}` with the Go
collector's status and, for each of Go's checks, Go's message (Go answers text/plain
`<message>\\n`; a client that shows the text still shows the same words).

Failures Go has no answer for get one here: a body Go would refuse (400, the field named),
a body over the cap (413), a Redis value that is not what the collector or finalizer writes
(500, the key named), Redis not answering (503). Nothing becomes a traceback or a dropped
connection.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from seqcollector.api.models import ErrorBody
from seqcollector.api.request_id import request_id_of

_encoder = msgspec.json.Encoder()
JSON = "application/json"


class ApiError(Exception):
    """An answer other than 200: `status` and the one-line `message` of the JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


class StoredValueError(ApiError):
    """A Redis value of the wrong shape (Go: a crash, a 0, or an empty 200): a 500 naming
    the key, for this request only."""

    def __init__(self, key: str, value: bytes | str, expected: str) -> None:
        shown = value if isinstance(value, str) else value.decode("utf-8", "replace")
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            500,
            f"Internal Server Error: Redis key {key} holds {shown!r}, not {expected}; "
            "fix or delete that key",
        )


def error_body(scope: Any, message: str) -> bytes:
    """The JSON error body for the request of `scope` (its X-Request-ID as `requestID`)."""
    return _encoder.encode(ErrorBody(error=message, requestID=request_id_of(scope))) + b"\n"


def error_response(scope: Any, status: int, message: str) -> Response[bytes]:
    """The JSON error answer for the request of `scope`."""
    return Response(error_body(scope, message), status_code=status, media_type=JSON)


def api_error_handler(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return error_response(request.scope, exc.status, exc.message)


def http_exception_handler(
    request: Request[Any, Any, Any], exc: HTTPException, max_body: int
) -> Response[bytes]:
    """Litestar's own refusals (unknown path, method, body over the cap) as JSON errors."""
    status = exc.status_code
    if status == 413:
        message = f"Request body too large: at most {max_body} bytes are accepted"
    else:
        message = str(exc.detail)
    return error_response(request.scope, status, message)

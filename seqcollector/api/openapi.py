"""The OpenAPI operations of the 12 paths: Litestar lists the routes (path, POST, tags,
summary, operationId); the request and answer schemas come from the msgspec structs of
`models` (the bodies are decoded by hand, with Go's rules, so Litestar cannot see them),
inlined so the document has no dangling references."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    RequestBody,
)

from seqcollector.api.endpoints import ENDPOINTS, Endpoint
from seqcollector.api.models import ErrorBody

_ERROR_TEXT = {
    400: "Bad Request: invalid body or parameters (Go's message in `error`)",
    401: "Unauthorized: Incorrect Token!",
    404: "Not Found: no discarded submissions for the slot",
    413: "Request body over the API's cap",
    500: "Not found in Redis (Go's status), or a Redis value of the wrong shape",
    503: "Redis unavailable",
}


def _inline(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    return node


@cache
def _schemas() -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for ep in ENDPOINTS:
        types += [ep.request, ep.response]
    found, components = msgspec.json.schema_components(types, ref_template="#/{name}")
    named = {f"{ep.path}:request": found[2 * i + 1] for i, ep in enumerate(ENDPOINTS)}
    named |= {f"{ep.path}:response": found[2 * i + 2] for i, ep in enumerate(ENDPOINTS)}
    named["error"] = found[0]
    return {k: _inline(v, components) for k, v in named.items()}


def _envelope(response: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["info", "requestID"],
        "properties": {
            "info": {
                "type": "object",
                "required": ["success", "response"],
                "properties": {"success": {"type": "boolean"}, "response": response},
            },
            "requestID": {"type": "string", "format": "uuid"},
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=schema)}  # type: ignore[arg-type]


def operation_class(ep: Endpoint) -> type[Operation]:
    """An Operation type that fills in `ep`'s body, answers and query flag."""
    schemas = _schemas()
    body = RequestBody(content=_json(schemas[f"{ep.path}:request"]), required=True)
    responses = {
        "200": OpenAPIResponse(
            description="OK", content=_json(_envelope(schemas[f"{ep.path}:response"]))
        )
    }
    for status in (*ep.errors, 413):
        responses[str(status)] = OpenAPIResponse(
            description=_ERROR_TEXT[status], content=_json(schemas["error"])
        )
    parameters = (
        [
            Parameter(
                name="includeSlotDetails",
                param_in=ParamType.QUERY,
                required=False,
                description="`true` to include the slot IDs",
                schema={"type": "string", "enum": ["true", "false"]},  # type: ignore[arg-type]
            )
        ]
        if ep.slot_details_flag
        else None
    )

    @dataclass
    class EndpointOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body
            self.responses = responses  # type: ignore[assignment]
            self.parameters = parameters  # type: ignore[assignment]

    return EndpointOperation

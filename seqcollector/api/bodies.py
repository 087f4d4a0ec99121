"""JSON decoded as Go's encoding/json decodes into a struct: request bodies, and the
finalizer's discarded-submission entries in Redis (which Go reads the same way).

Go's rules kept: object keys match field names in any case (`SlotID`, `slotid`), unknown
keys are ignored, an absent key or `null` leaves the zero value (0, "", empty), a body of
`null` is all zeros; an integer must be a JSON integer literal within int64 (no fraction,
no exponent, no string), a string must be a JSON string. Where Go fails, these fail too,
as a `BodyError` naming the field: the API answers 400 (Go: 400 with Go's own message, or
a 500 / dropped connection for an empty or cut body on some paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, TypeVar

import msgspec

Kind = Literal["str", "int", "list[str]", "dict[str,list[str]]"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
T = TypeVar("T", bound=msgspec.Struct)


class BodyError(ValueError):
    """A JSON text or value Go's encoding/json would refuse; the message names the field."""


def json_kind(value: Any) -> str:
    """The JSON type of a decoded value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_json(text: bytes, what: str) -> Any:
    """The JSON value of `text`; `BodyError` for an empty or malformed text."""
    if not text.strip():
        raise BodyError(f"{what} is empty: send a JSON object")
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise BodyError(f"{what} is not valid JSON: {exc}") from None


def decode_fields(value: Any, fields: Mapping[str, Kind], what: str) -> dict[str, Any]:
    """The fields of the JSON object `value` that `fields` names, matched as Go matches
    them (exact name, else any case); `null` gives {}. `BodyError` on a wrong type."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError(f"{what} must be a JSON object, not {json_kind(value)}")
    folded = _folded(tuple(fields))
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in fields else folded.get(key.lower())
        if name is None or item is None:
            continue
        out[name] = _convert(item, fields[name], f"{name}")
    return out


def _convert(value: Any, kind: Kind, where: str) -> Any:
    if kind == "int":
        if type(value) is not int:
            raise BodyError(f"{where} must be an integer, not {json_kind(value)}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise BodyError(f"{where} is out of range: {value} does not fit in 64 bits")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise BodyError(f"{where} must be a string, not {json_kind(value)}")
        return value
    if kind == "list[str]":
        if not isinstance(value, list):
            raise BodyError(f"{where} must be an array of strings, not {json_kind(value)}")
        return [
            _convert(v, "str", f"{where}[{i}]") if v is not None else ""
            for i, v in enumerate(value)
        ]
    if not isinstance(value, dict):
        raise BodyError(f"{where} must be an object of string arrays, not {json_kind(value)}")
    return {
        k: _convert(v, "list[str]", f"{where}.{k}") if v is not None else []
        for k, v in value.items()
    }


@cache
def _folded(names: tuple[str, ...]) -> dict[str, str]:
    return {name.lower(): name for name in names}


@cache
def struct_kinds(cls: type[msgspec.Struct]) -> dict[str, Kind]:
    """The kind of each field of a request struct (strings and int64s only)."""
    kinds: dict[str, Kind] = {}
    for field in msgspec.structs.fields(cls):
        kinds[field.name] = "str" if field.type is str else "int"
    return kinds


def decode_body(body: bytes, cls: type[T]) -> T:
    """The request struct `cls` from a request body, with Go's rules (module docstring)."""
    fields = decode_fields(parse_json(body, "the request body"), struct_kinds(cls), "the body")
    return cls(**fields)

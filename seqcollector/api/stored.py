"""Values the API reads from Redis, decoded as the Go collector decodes them, except where
Go crashes or hides the problem.

- Integers (counts, days, timestamps): a decimal int64, optionally signed (Go's Atoi /
  big.Int / ParseInt). Anything else is a `StoredValueError` naming the key: a 500 for that
  request. Go answers 0 or a wrong day, or (A2) dies on a nil pointer in a goroutine.
- Epoch submissions (`EpochSubmissionsKey`): protobuf JSON of a SnapshotSubmission, as
  protojson reads it: the field names only (case matters), uint64 as a number or a decimal
  string, `null` as unset; an entry with an unknown field or a wrong type is skipped (as
  Go). An entry without `request` is kept with an empty one (Go: nil dereference, the
  connection dropped).
- Discarded submissions: encoding/json into Go's structs (`bodies.decode_fields`: keys in
  any case). By epoch, a bad entry is skipped (as Go); by day, a bad slot entry is a
  `StoredValueError` (Go: a 200 with an empty body). Absent lists and maps are `[]` and
  `{}` (Go: `null`); map keys sorted, as Go's encoder sorts them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from seqcollector.api.bodies import BodyError, Kind, decode_fields, parse_json
from seqcollector.api.errors import StoredValueError
from seqcollector.api.models import (
    DiscardedSubmissionByDayResponse,
    DiscardedSubmissionByProjectDetails,
    DiscardedSubmissionDetails,
    RequestFields,
    SubmissionData,
)

_INT = re.compile(rb"[+-]?[0-9]+")
_UINT_TEXT = re.compile(r"[0-9]+")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


def stored_int(key: str, raw: bytes | None) -> int | None:
    """The int64 stored at `key` (None when absent); `StoredValueError` otherwise."""
    if raw is None:
        return None
    if _INT.fullmatch(raw):
        value = int(raw)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    raise StoredValueError(key, raw, "a 64-bit integer")


# ------------------------------------------------------------------ epoch submissions

_REQUEST_NAMES = {
    "slotId": "slotID",
    "deadline": "deadline",
    "snapshotCid": "snapshotCID",
    "epochId": "epochID",
    "projectId": "projectID",
}  # the proto's field names are its JSON names: protojson takes these alone
_UINT_FIELDS = frozenset({"slotID", "deadline", "epochID"})
_TOP_NAMES = {
    "request": "request",
    "signature": "signature",
    "header": "header",
    "dataMarket": "dataMarket",
    "nodeVersion": "nodeVersion",
}


class _Invalid(Exception):
    pass


def epoch_submission(raw: bytes) -> SubmissionData | None:
    """One `EpochSubmissionsKey` value as the answer shows it; None if protojson would
    refuse it (skipped, as Go skips it)."""
    try:
        top = msgspec.json.decode(raw)
        if not isinstance(top, dict):
            return None
        out: dict[str, Any] = {}
        request = RequestFields()
        for key, value in top.items():
            name = _TOP_NAMES.get(key)
            if name is None:
                return None  # protojson refuses unknown fields
            if value is None:
                continue
            if name == "request":
                request = _request(value)
            elif not isinstance(value, str):
                return None
            elif name in ("signature", "header"):
                out[name] = value
        return SubmissionData(request=request, **out)
    except (msgspec.DecodeError, _Invalid):
        return None


def _request(value: Any) -> RequestFields:
    if not isinstance(value, dict):
        raise _Invalid
    fields: dict[str, Any] = {}
    for key, item in value.items():
        name = _REQUEST_NAMES.get(key)
        if name is None:
            raise _Invalid
        if item is None:
            continue
        fields[name] = _uint64(item) if name in _UINT_FIELDS else _text(item)
    return RequestFields(**fields)


def _uint64(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid
    if (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _UINT_TEXT.fullmatch(value)
    ):
        value = int(value)
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise _Invalid
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid
    return value


# --------------------------------------------------------------- discarded submissions

_BY_EPOCH: dict[str, Kind] = {
    "mostFrequentSnapshotCID": "str",
    "discardedSubmissionCount": "int",
    "discardedSubmissions": "dict[str,list[str]]",
}
_BY_DAY: dict[str, Kind] = {
    "finalizedCID": "str",
    "discardedSubmissionCount": "int",
    "discardedSubmissions": "list[str]",
}


def discarded_by_epoch(raw: bytes) -> DiscardedSubmissionDetails | None:
    """One `DiscardedSubmissionKey.<lc>.<day>.<epoch>` entry; None if Go would skip it."""
    try:
        fields = decode_fields(parse_json(raw, "the entry"), _BY_EPOCH, "the entry")
    except BodyError:
        return None
    slots = fields.get("discardedSubmissions", {})
    return DiscardedSubmissionDetails(
        mostFrequentSnapshotCID=fields.get("mostFrequentSnapshotCID", ""),
        discardedSubmissionCount=fields.get("discardedSubmissionCount", 0),
        discardedSubmissions={k: slots[k] for k in sorted(slots)},
    )


def discarded_by_day(key: str, field: str, raw: bytes) -> list[DiscardedSubmissionByDayResponse]:
    """One slot's entry of `DiscardedSubmissionKey.<lc>.<day>`: its projects, sorted by
    project ID; `StoredValueError` if it is not Go's `{project: details}` JSON."""
    try:
        top = parse_json(raw, "the entry")
        if top is None:
            top = {}
        if not isinstance(top, dict):
            raise BodyError(f"not a JSON object but {type(top).__name__}")
        projects = []
        for project in sorted(top):
            fields = decode_fields(top[project], _BY_DAY, project)
            details = DiscardedSubmissionByProjectDetails(
                finalizedCID=fields.get("finalizedCID", ""),
                discardedSubmissionCount=fields.get("discardedSubmissionCount", 0),
                discardedSubmissions=fields.get("discardedSubmissions", []),
            )
            projects.append(DiscardedSubmissionByDayResponse(projectID=project, details=details))
        return projects
    except BodyError as exc:
        raise StoredValueError(
            f"{key} field {field}", raw, f"a JSON object of project details ({exc})"
        ) from None

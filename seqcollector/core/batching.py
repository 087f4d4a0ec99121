"""Cutting one epoch's submission keys into finalizer batches, reproducibly.

A submission key is `<lc>.<epochId>.<projectId>.<slotId>`. Keys are grouped by project,
projects sorted, keys sorted within a project, and the projects cut into batches of
`batch_size` in that order: unlike the Go collector, the same keys always give the same
batches, byte for byte.

Anything else in a submission set is skipped with a reason (`classify_member`), never raised
on: a member upstream wrote must not stop the collector. The shell uses the same function to
find the sets that hold a skipped member, so the alert can name them.
"""

from __future__ import annotations

import msgspec

_encoder = msgspec.json.Encoder()

SLOT_MAX = 2**64 - 1  # slot ids are uint64 downstream (the finalizer, the relayer's uint256[])
_SLOT_DIGITS = len(str(SLOT_MAX))  # longer digit strings are refused before int(): Python
# refuses to convert more than 4,300 digits (ValueError), and nothing that long is a slot

# Reasons a member or a set is skipped (counted under these names in the state's counters).
MALFORMED = "malformed_submission"  # not <market>.<epoch>.<project>.<slot>
SLOT_OUT_OF_RANGE = "slot_out_of_range"  # slot above 2^64-1
NOT_UTF8 = "not_utf8"  # bytes that are not UTF-8 text
WRONG_TYPE_KEY = "wrong_type_key"  # a SnapshotCollector key that is not a set
SKIP_REASONS = (MALFORMED, SLOT_OUT_OF_RANGE, NOT_UTF8, WRONG_TYPE_KEY)


class BatchPlan(msgspec.Struct, frozen=True):
    """The batches of one epoch plus what the day counters need."""

    batches: list[dict[str, list[str]]]
    slot_counts: list[tuple[int, int]]  # (slot, keys in batches), by slot
    skipped: list[tuple[str, str]]  # (reason, member), sorted


def classify_member(member: str) -> tuple[str, int] | str:
    """(project, slot) of a well-formed submission key, else the reason it is skipped."""
    if not member.isascii():
        try:
            member.encode()
        except UnicodeEncodeError:  # a lone surrogate: cannot be written as JSON or to Redis
            return NOT_UTF8
    parts = member.split(".")
    if len(parts) != 4 or not parts[2]:
        return MALFORMED
    slot = parts[3]
    if not slot.isascii() or not slot.isdigit():
        return MALFORMED
    if len(slot) > _SLOT_DIGITS or int(slot) > SLOT_MAX:
        return SLOT_OUT_OF_RANGE
    return parts[2], int(slot)


def parse_member(member: str) -> tuple[str, int] | None:
    """(project, slot) of a well-formed submission key, else None."""
    parsed = classify_member(member)
    return None if isinstance(parsed, str) else parsed


def plan_batches(members: list[str], batch_size: int) -> BatchPlan:
    """Group `members` (any order, duplicates allowed) into batches of `batch_size` projects."""
    by_project: dict[str, set[str]] = {}
    slot_counts: dict[int, int] = {}
    skipped: list[tuple[str, str]] = []
    for member in set(members):
        parsed = classify_member(member)
        if isinstance(parsed, str):
            skipped.append((parsed, member))
            continue
        project, slot = parsed
        by_project.setdefault(project, set()).add(member)
        slot_counts[slot] = slot_counts.get(slot, 0) + 1
    projects = sorted(by_project)
    batches = [
        {p: sorted(by_project[p]) for p in projects[i : i + batch_size]}
        for i in range(0, len(projects), batch_size)
    ]
    return BatchPlan(batches, sorted(slot_counts.items()), sorted(skipped))


def go_json(value: object) -> str:
    """JSON as Go's encoding/json writes it: compact, map keys sorted, HTML-escaped.

    Go escapes <, >, & and U+2028/U+2029 inside strings; these characters can only occur
    inside strings in JSON text, so replacing them after encoding is exact.
    """
    text = _encoder.encode(value).decode()
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def finalizer_item(
    market_eip55: str, epoch: int, batch_id: int, batch: dict[str, list[str]]
) -> str:
    """The `finalizerQueue` payload: fields in the Go struct's order, no lowercase tags."""
    return go_json(
        {"DataMarketAddress": market_eip55, "EpochID": epoch, "BatchID": batch_id, "Batch": batch}
    )

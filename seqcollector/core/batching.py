"""Cutting one epoch's submission keys into finalizer batches, reproducibly.

A submission key is `<lc>.<epochId>.<projectId>.<slotId>`. Keys are grouped by project,
projects sorted, keys sorted within a project, and the projects cut into batches of
`batch_size` in that order: unlike the Go collector, the same keys always give the same
batches, byte for byte.
"""

from __future__ import annotations

import msgspec

_encoder = msgspec.json.Encoder()


class BatchPlan(msgspec.Struct, frozen=True):
    """The batches of one epoch plus what the day counters need."""

    batches: list[dict[str, list[str]]]
    slot_counts: list[tuple[int, int]]  # (slot, keys in batches), by slot
    malformed: list[str]


def parse_member(member: str) -> tuple[str, int] | None:
    """(project, slot) of a well-formed submission key, else None."""
    parts = member.split(".")
    if len(parts) != 4 or not parts[2] or not parts[3].isascii() or not parts[3].isdigit():
        return None
    return parts[2], int(parts[3])


def plan_batches(members: list[str], batch_size: int) -> BatchPlan:
    """Group `members` (any order, duplicates allowed) into batches of `batch_size` projects."""
    by_project: dict[str, set[str]] = {}
    slot_counts: dict[int, int] = {}
    malformed: list[str] = []
    for member in set(members):
        parsed = parse_member(member)
        if parsed is None:
            malformed.append(member)
            continue
        project, slot = parsed
        by_project.setdefault(project, set()).add(member)
        slot_counts[slot] = slot_counts.get(slot, 0) + 1
    projects = sorted(by_project)
    batches = [
        {p: sorted(by_project[p]) for p in projects[i : i + batch_size]}
        for i in range(0, len(projects), batch_size)
    ]
    return BatchPlan(batches, sorted(slot_counts.items()), sorted(malformed))


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

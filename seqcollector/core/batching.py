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

from seqcollector.core import keys
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import Alert, Effect, ListPush, RelayerCall, SetValue
from seqcollector.core.reporting import clip, count, outbox_id
from seqcollector.core.state import State

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


def emit_batches(
    state: State, lc: str, epoch: int, batches: list[dict[str, list[str]]], out: list[Effect]
) -> None:
    """An epoch's batches: the finalizer items and batch keys, the batch count and the
    relayer's `submitBatchSize` (through the outbox)."""
    eip55, cfg = checksum(lc), state.config
    for batch_id, batch in enumerate(batches, start=1):
        out.append(ListPush(keys.FINALIZER_QUEUE, finalizer_item(eip55, epoch, batch_id, batch)))
        out.append(
            SetValue(keys.batch_submissions(lc, epoch, batch_id), go_json(batch), cfg.batch_ttl_s)
        )
    n = len(batches)
    out.append(SetValue(keys.batch_count(lc, epoch), str(n), cfg.batch_ttl_s))
    body: dict[str, object] = {"dataMarketAddress": eip55, "epochID": epoch, "batchSize": n}
    out.append(
        RelayerCall(outbox_id("submitBatchSize", state, lc, epoch), "/submitBatchSize", body)
    )


_SKIP_EXAMPLES = 3


def report_skipped(
    state: State,
    out: list[Effect],
    lc: str,
    epoch: int,
    sets: int,
    skipped: list[tuple[str, str, str]],
) -> None:
    """Count what a window's sets held that could not be batched, by reason, and alert once
    for the window, naming the market, epoch, keys and (shortened) members. The window is
    batched with the rest: one bad submission never stops a market, let alone the others.

    `skipped`: (reason, key or "", detail: the shortened member or the key's type)."""
    by_reason: dict[str, int] = {}
    named = sorted((_reason(reason), key, detail) for reason, key, detail in skipped)
    for reason, _, _ in named:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    for name, n in sorted(by_reason.items()):
        count(state, name, n)
    counts = ", ".join(f"{name} {n}" for name, n in sorted(by_reason.items()))
    examples = "; ".join(
        f"{reason} {clip(detail)} in "
        + (clip(key, 160) if key else f"one of the window's {sets} sets")
        for reason, key, detail in named[:_SKIP_EXAMPLES]
    )
    message = (
        f"market {checksum(lc)} epoch {epoch}: skipped {len(skipped)}"
        f" entr{'y' if len(skipped) == 1 else 'ies'} of the window's"
        f" submission sets ({counts}), batched the rest; {examples}. Upstream (the dequeuer)"
        " wrote them: a member must be <market>.<epoch>.<project>.<slot> in a set"
    )
    out.append(Alert(outbox_id("skipped", state, lc, epoch), "BatchPreparation", message, "Medium"))


def _reason(reason: str) -> str:
    return reason if reason in SKIP_REASONS else "other_skipped"

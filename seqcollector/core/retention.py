"""Which Redis keys are stale: the cleanup's retention rule (pure, no I/O, never raising).

`verdict(key, knowledge)` names the key's family and says whether it may be deleted. The
knowledge is plain data, independent of the core's `State` layout: per lowercase market,
what the collector holds (`Retained`: epochs with an open window, epochs already batched and
the floor below which every epoch counts as batched) and what the cleanup pass read from
Redis before deciding (`Observed`: the day-rollover marker set's members, the Go epoch
markers' limit blocks), plus the last block the collector processed.

The rule, per family (anything else, and any key of a market not configured: kept):

- `SnapshotCollector.<lc>.<epoch>.<header>`: its epoch is not open AND (it is batched, or
  more than `FAR_BELOW_EPOCHS` below the horizon);
- `DayRolloverEpochMarkerDetailsKey.<lc>.<epoch>`: the marker set was read and `epoch` is not
  a member (the marker fired);
- `EpochMarkerDetailsKey.<lc>.<epoch>` (Go, dead): its `SubmissionLimitBlockNumber` is below
  the last block processed;
- `EpochMarkerSetKey.<lc>` (Go, dead): every member's details are stale or absent.

A submission set of an open window is never stale, whatever else is true (even when its
epoch is also listed as batched). The horizon is the lowest open epoch, or, with none open,
the epoch after the newest batched one; with neither there is no horizon and only batched
epochs go. It is not `<lc>.CurrentEpochID`: a collector catching up from SEQ_START_BLOCK is
behind the current epoch, and the sets between its position and the current epoch are the
ones it is about to batch. Epochs above the horizon are kept: they are the windows about to
open. The `FAR_BELOW_EPOCHS` slack keeps the sets of epochs just below the horizon (a window
that a rewind dropped and the new chain opens again).
"""

from __future__ import annotations

import enum
from bisect import bisect_left

import msgspec

FAR_BELOW_EPOCHS = 10  # the Go collector's intent (epochs < current - 10), from our horizon
MAX_EPOCH_DIGITS = 20  # uint64; longer numbers are not ours: kept

SUBMISSION_SET_PREFIX = "SnapshotCollector"
ROLLOVER_SET_PREFIX = "DayRolloverEpochMarkerSetKey"
ROLLOVER_DETAILS_PREFIX = "DayRolloverEpochMarkerDetailsKey"
GO_MARKER_SET_PREFIX = "EpochMarkerSetKey"
GO_MARKER_DETAILS_PREFIX = "EpochMarkerDetailsKey"


class Family(enum.StrEnum):
    SUBMISSION_SET = "submission_set"
    ROLLOVER_DETAILS = "rollover_details"
    GO_MARKER_SET = "go_epoch_marker_set"
    GO_MARKER_DETAILS = "go_epoch_marker_details"
    UNKNOWN = "unknown"


class Retained(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the collector holds for one market (built from its state by the shell)."""

    open_epochs: tuple[int, ...] = ()  # sorted: epochs whose window is not yet batched
    batched_epochs: tuple[int, ...] = ()  # sorted: epochs batched, above `batched_floor`
    batched_floor: int = -1  # every epoch <= floor counts as batched

    def is_open(self, epoch: int) -> bool:
        return _member(self.open_epochs, epoch)

    def is_batched(self, epoch: int) -> bool:
        return epoch <= self.batched_floor or _member(self.batched_epochs, epoch)

    def horizon(self) -> int | None:
        """The lowest epoch still to batch as far as the collector knows (None: nothing known)."""
        if self.open_epochs:
            return self.open_epochs[0]
        newest = max(self.batched_epochs[-1] if self.batched_epochs else -1, self.batched_floor)
        return newest + 1 if newest >= 0 else None


class Observed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the cleanup pass read from Redis for one market before deciding."""

    # members of DayRolloverEpochMarkerSetKey.<lc>, sorted; None: not read (details kept)
    rollover_markers: tuple[int, ...] | None = None
    # members of the Go EpochMarkerSetKey.<lc> (None: not read) and the parsed
    # SubmissionLimitBlockNumber of each EpochMarkerDetailsKey.<lc>.<epoch> read
    go_marker_members: tuple[int, ...] | None = None
    go_marker_limits: dict[int, int] = {}


class Knowledge(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the rule needs, by lowercase market; `head_block`: the last block processed."""

    retained: dict[str, Retained] = {}
    observed: dict[str, Observed] = {}
    head_block: int | None = None


class Verdict(msgspec.Struct, frozen=True):
    family: Family
    market: str | None  # lowercase, when the key names a configured market
    stale: bool
    reason: str  # why, in a few words (for the report and the log)


_KEPT_UNKNOWN = Verdict(Family.UNKNOWN, None, False, "not a family the cleanup knows")


def _member(sorted_epochs: tuple[int, ...], epoch: int) -> bool:
    i = bisect_left(sorted_epochs, epoch)
    return i < len(sorted_epochs) and sorted_epochs[i] == epoch


def parse_epoch(text: str) -> int | None:
    """A decimal epoch id as the Go code writes it (digits only, uint64 range), else None."""
    if not text or len(text) > MAX_EPOCH_DIGITS or not text.isascii() or not text.isdigit():
        return None
    if len(text) > 1 and text[0] == "0":
        return None  # not how an epoch is written: someone else's key
    value = int(text)
    return value if value < 2**64 else None


def verdict(key: str, knowledge: Knowledge) -> Verdict:
    """The family of `key` and whether it is stale under `knowledge` (see the module doc)."""
    family, _, rest = key.partition(".")
    if family == SUBMISSION_SET_PREFIX:
        return _submission_set(rest, knowledge)
    if family == ROLLOVER_DETAILS_PREFIX:
        return _rollover_details(rest, knowledge)
    if family == GO_MARKER_DETAILS_PREFIX:
        return _go_marker_details(rest, knowledge)
    if family == GO_MARKER_SET_PREFIX:
        return _go_marker_set(rest, knowledge)
    return _KEPT_UNKNOWN


def _market_epoch(rest: str, knowledge: Knowledge, with_tail: bool) -> tuple[str, int] | None:
    """`<lc>.<epoch>[.<tail>]` of a configured market -> (lc, epoch); else None."""
    parts = rest.split(".", 2)
    if len(parts) != (3 if with_tail else 2) or (with_tail and not parts[2]):
        return None
    if parts[0] not in knowledge.retained:
        return None
    epoch = parse_epoch(parts[1])
    return None if epoch is None else (parts[0], epoch)


def _submission_set(rest: str, knowledge: Knowledge) -> Verdict:
    found = _market_epoch(rest, knowledge, with_tail=True)
    if found is None:
        return Verdict(Family.SUBMISSION_SET, None, False, "not a configured market's set")
    lc, epoch = found
    r = knowledge.retained[lc]
    if r.is_open(epoch):
        return Verdict(Family.SUBMISSION_SET, lc, False, "window open")
    if r.is_batched(epoch):
        return Verdict(Family.SUBMISSION_SET, lc, True, "epoch batched")
    horizon = r.horizon()
    if horizon is not None and epoch < horizon - FAR_BELOW_EPOCHS:
        return Verdict(Family.SUBMISSION_SET, lc, True, "far below every open epoch")
    return Verdict(Family.SUBMISSION_SET, lc, False, "epoch not reached or near the horizon")


def _rollover_details(rest: str, knowledge: Knowledge) -> Verdict:
    found = _market_epoch(rest, knowledge, with_tail=False)
    if found is None:
        return Verdict(Family.ROLLOVER_DETAILS, None, False, "not a configured market's marker")
    lc, epoch = found
    markers = knowledge.observed.get(lc, Observed()).rollover_markers
    if markers is None:
        return Verdict(Family.ROLLOVER_DETAILS, lc, False, "marker set not read")
    if _member(markers, epoch):
        return Verdict(Family.ROLLOVER_DETAILS, lc, False, "marker pending")
    return Verdict(Family.ROLLOVER_DETAILS, lc, True, "marker fired (not in the marker set)")


def _go_limit_past(lc: str, epoch: int, knowledge: Knowledge) -> bool | None:
    """True/False: the Go marker's limit block is below/not below the head; None: unknown."""
    limit = knowledge.observed.get(lc, Observed()).go_marker_limits.get(epoch)
    if limit is None or knowledge.head_block is None:
        return None
    return knowledge.head_block > limit


def _go_marker_details(rest: str, knowledge: Knowledge) -> Verdict:
    found = _market_epoch(rest, knowledge, with_tail=False)
    if found is None:
        return Verdict(Family.GO_MARKER_DETAILS, None, False, "not a configured market's marker")
    past = _go_limit_past(*found, knowledge)
    if past is None:
        return Verdict(Family.GO_MARKER_DETAILS, found[0], False, "limit block unknown")
    if not past:
        return Verdict(Family.GO_MARKER_DETAILS, found[0], False, "limit block not reached")
    return Verdict(Family.GO_MARKER_DETAILS, found[0], True, "limit block past")


def _go_marker_set(rest: str, knowledge: Knowledge) -> Verdict:
    if rest not in knowledge.retained:
        return Verdict(Family.GO_MARKER_SET, None, False, "not a configured market's set")
    observed = knowledge.observed.get(rest, Observed())
    members = observed.go_marker_members
    if members is None or knowledge.head_block is None:
        return Verdict(Family.GO_MARKER_SET, rest, False, "members not read")
    for epoch in members:
        limit = observed.go_marker_limits.get(epoch)
        if limit is not None and knowledge.head_block <= limit:
            return Verdict(Family.GO_MARKER_SET, rest, False, "a member's limit block not reached")
    return Verdict(Family.GO_MARKER_SET, rest, True, "every member's limit block past or gone")

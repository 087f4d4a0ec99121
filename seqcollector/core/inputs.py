"""What the core consumes: plain data, one tagged msgspec Struct per kind of input.

Every value an output depends on arrives here; the core reads no clock and does no I/O.
Hex strings are accepted in any case; the core validates and normalises them itself, so a
malformed input becomes a counted rejection, never an exception.
"""

from __future__ import annotations

import msgspec


class Block(msgspec.Struct, tag="block", frozen=True):
    """A chain block header: the only source of time for windows."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int


class Log(msgspec.Struct, tag="log", frozen=True):
    """A raw log as a node returns it; decoded by the core (`core.abi`)."""

    address: str
    topics: list[str]
    data: str
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str = ""


class MarketParams(msgspec.Struct, tag="market_params", frozen=True):
    """One data market's parameters, read from the ProtocolState views."""

    market: str
    submission_window: int  # seconds, as the Go collector treats it
    day_size: int
    daily_quota: int
    epochs_in_a_day: int
    day_counter: int


class Skipped(msgspec.Struct, array_like=True, frozen=True):
    """Something of a window's sets the shell could not hand over as a member: a key that is
    not a set, bytes that are not UTF-8, or a member it found malformed (with the set
    holding it, which the union alone does not tell)."""

    reason: str  # one of `core.batching.SKIP_REASONS`; anything else counts as "other"
    key: str  # the SnapshotCollector key ("" when not known)
    detail: str  # the shortened member, or the key's type


class SubmissionSets(msgspec.Struct, tag="submission_sets", frozen=True, omit_defaults=True):
    """The answer to a `QuerySubmissionSets` effect: the union of the window's sets."""

    query_id: int
    market: str
    epoch: int
    members: list[str]
    skipped: list[Skipped] = []
    # when the runtime read the sets (unix s) and the TTL upstream gives them
    # (SEQ_SUBMISSION_SETS_TTL_S): a window read past it may have lost submissions
    # (`core.expired_sets`); 0: not known / not checked
    read_at: int = 0
    sets_ttl_s: int = 0


class NodeCounts(msgspec.Struct, tag="node_counts", frozen=True, omit_defaults=True):
    """The answer to `QueryNodeCounts`: `TotalNodesCount` (None: missing or not an integer)
    and, of slots 1..N, those whose count is a present integer, ascending, with their counts;
    `malformed`: counts present but not integers (left out)."""

    query_id: int
    market: str
    epoch: int
    total_nodes: int | None
    slots: list[int] = []
    counts: list[int] = []
    malformed: int = 0


class DaySet(msgspec.Struct, tag="day_set", frozen=True, omit_defaults=True):
    """The answer to `QueryDaySet`: the set's size, and its integer members whose count is a
    present integer, ascending, with their counts; `malformed`: members or counts left out
    for not being integers."""

    query_id: int
    market: str
    epoch: int
    size: int
    slots: list[int] = []
    counts: list[int] = []
    malformed: int = 0


class PastDays(msgspec.Struct, tag="past_days", frozen=True, omit_defaults=True):
    """The answer to `QueryPastDays`: each asked day's set size (in the query's order), and
    the integer members of `members_of`'s set, ascending."""

    query_id: int
    market: str
    epoch: int
    sizes: list[int]
    members: list[int] = []


class EligibleOnChain(msgspec.Struct, tag="eligible_on_chain", frozen=True, omit_defaults=True):
    """The answer to `QueryEligibleOnChain`: `eligibleNodesForDay(X)` for each asked day (in
    the query's order), None where the read failed (`error` says why)."""

    query_id: int
    market: str
    epoch: int
    counts: list[int | None]
    error: str = ""


class StoredDays(msgspec.Struct, tag="stored_days", frozen=True):
    """What Redis holds of a market's days when a run starts (the Go collector's, on a
    switch): `LastKnownDayKey` and the rollover markers not yet fired, each (LastKnownDay,
    CurrentEpoch, BufferEpoch) from `DayRolloverEpochMarkerDetailsKey`. The core adopts them
    for a market it has no day record of, so a day rolled over under the Go collector
    still gets its final reward update."""

    market: str
    last_known_day: int | None
    markers: list[tuple[int, int, int]] = []


class Rewind(msgspec.Struct, tag="rewind", frozen=True):
    """A reorg: forget every block above `to_block` (the common ancestor)."""

    to_block: int


class Tick(msgspec.Struct, tag="tick", frozen=True):
    """Wall-clock time (unix seconds), journaled: closes windows when the chain stalls."""

    now: int


Answer = SubmissionSets | NodeCounts | DaySet | PastDays | EligibleOnChain
"""Every answer to a query (`core.queries`): each carries its query's id, market and epoch."""
ANSWERS = (SubmissionSets, NodeCounts, DaySet, PastDays, EligibleOnChain)

Input = (
    Block
    | Log
    | MarketParams
    | SubmissionSets
    | NodeCounts
    | DaySet
    | PastDays
    | EligibleOnChain
    | StoredDays
    | Rewind
    | Tick
)

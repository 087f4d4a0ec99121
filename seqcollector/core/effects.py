"""What the core asks the world to do: plain data, applied by `seqcollector.runtime`.

Redis effects are applied in order inside one transaction per step. Outbox effects
(`RelayerCall`, `Alert`) carry a deterministic `id`, so delivering one twice is detectable
and marking it done is idempotent. `Rejected` is a report only (logs, metrics).
"""

from __future__ import annotations

import msgspec


class SetValue(msgspec.Struct, tag="set", frozen=True):
    key: str
    value: str
    ttl_s: int | None = None


class DeleteKeys(msgspec.Struct, tag="del", frozen=True):
    keys: list[str]


class ListPush(msgspec.Struct, tag="lpush", frozen=True):
    key: str
    value: str


class IncrementBy(msgspec.Struct, tag="incrby", frozen=True):
    key: str
    amount: int
    ttl_s: int | None = None


class HashSet(msgspec.Struct, tag="hset", frozen=True):
    key: str
    field: str
    value: str


class SetAdd(msgspec.Struct, tag="sadd", frozen=True):
    """SADD `member` to the set `key`, then EXPIRE it (`ttl_s`) when given."""

    key: str
    member: str
    ttl_s: int | None = None


class SetRemove(msgspec.Struct, tag="srem", frozen=True):
    key: str
    member: str


class QuerySubmissionSets(msgspec.Struct, tag="query", frozen=True):
    """Read `SnapshotCollector.<lc>.<epoch>.<header>` for each header; answer with
    a `SubmissionSets` input carrying the same `query_id`."""

    query_id: int
    market: str
    epoch: int
    keys: list[str]


class QueryNodeCounts(msgspec.Struct, tag="query_node_counts", frozen=True):
    """P1 (periodic reward update) of `epoch`: GET `TotalNodesCount` (N), then the day's
    `EligibleSlotSubmissionsKey.<lc>.<day>.<slot>` of slots 1..N in one pipeline; answer
    with `NodeCounts`."""

    query_id: int
    market: str
    epoch: int
    day: int


class QueryDaySet(msgspec.Struct, tag="query_day_set", frozen=True):
    """P3 (final reward update of `day`, fired at batch preparation of `epoch`): SMEMBERS
    `EligibleNodeByDayKey.<lc>.<day>`, then each member's `EligibleSlotSubmissionsKey` in one
    pipeline; answer with `DaySet`. `marker_epoch`: the rollover marker's epoch (removed
    with the update)."""

    query_id: int
    market: str
    epoch: int
    day: int
    marker_epoch: int


class QueryPastDays(msgspec.Struct, tag="query_past_days", frozen=True):
    """P2 (past-days recheck at batch preparation of `epoch`): SCARD
    `EligibleNodeByDayKey.<lc>.<X>` of each of `days`, and when `members_of` is set the
    members of that day's set (PERIODIC_ELIGIBLE_COUNT_ALERTS), one pipeline; answer with
    `PastDays`. `block`: the block being processed (where the chain read that follows is
    pinned)."""

    query_id: int
    market: str
    epoch: int
    block: int
    days: list[int]
    members_of: int | None = None


class QueryEligibleOnChain(msgspec.Struct, tag="query_eligible_on_chain", frozen=True):
    """P2: `eligibleNodesForDay(X)` of the DataMarket contract at the market's address, read
    at block `block`, for each of `days` (`sizes`: each day's set size, the update P2 sends
    when the chain holds 0); answer with `EligibleOnChain`, a failed read as None."""

    query_id: int
    market: str
    epoch: int
    block: int
    days: list[int]
    sizes: list[int]


Query = QuerySubmissionSets | QueryNodeCounts | QueryDaySet | QueryPastDays | QueryEligibleOnChain
"""Every kind of query the core asks (one answer input type each: `core.queries`)."""
QUERY_EFFECTS = (
    QuerySubmissionSets,
    QueryNodeCounts,
    QueryDaySet,
    QueryPastDays,
    QueryEligibleOnChain,
)


class RelayerCall(msgspec.Struct, tag="relayer", frozen=True):
    """POST `path` on TX_RELAYER_URL; the dispatcher adds `authToken` (never journaled)."""

    id: str
    path: str
    body: dict[str, object]


class Alert(msgspec.Struct, tag="alert", frozen=True):
    """POST to SLACK_REPORTING_URL as `SequencerEventCollector: <step>`."""

    id: str
    step: str
    message: str
    severity: str  # "High" | "Medium"


class Rejected(msgspec.Struct, tag="rejected", frozen=True):
    """An input the core refused; counted in the state under `reason`."""

    reason: str
    detail: str
    block: int | None = None


Effect = (
    SetValue
    | DeleteKeys
    | ListPush
    | IncrementBy
    | HashSet
    | SetAdd
    | SetRemove
    | QuerySubmissionSets
    | QueryNodeCounts
    | QueryDaySet
    | QueryPastDays
    | QueryEligibleOnChain
    | RelayerCall
    | Alert
    | Rejected
)

REDIS_EFFECTS = (SetValue, DeleteKeys, ListPush, IncrementBy, HashSet, SetAdd, SetRemove)
OUTBOX_EFFECTS = (RelayerCall, Alert)

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


class QuerySubmissionSets(msgspec.Struct, tag="query", frozen=True):
    """Read `SnapshotCollector.<lc>.<epoch>.<header>` for each header; answer with
    a `SubmissionSets` input carrying the same `query_id`."""

    query_id: int
    market: str
    epoch: int
    keys: list[str]


Query = QuerySubmissionSets
"""Every kind of query the core asks (one answer input type each: `core.queries`)."""
QUERY_EFFECTS = (QuerySubmissionSets,)


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
    | QuerySubmissionSets
    | RelayerCall
    | Alert
    | Rejected
)

REDIS_EFFECTS = (SetValue, DeleteKeys, ListPush, IncrementBy, HashSet)
OUTBOX_EFFECTS = (RelayerCall, Alert)

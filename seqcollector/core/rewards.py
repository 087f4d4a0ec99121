"""Reward updates (`POST /submitUpdateRewards`): what pays snapshotters, through the outbox.

All three are decided at batch preparation of an epoch E (`on_batch_prepared`), the one
point the core passes at most once per (market, epoch), so a crash, a restart or a reorg
never makes one twice; each reads what it needs through a query (journaled answers: replay
sends every call byte for byte), held outside the domain (`Kind.held`):

- P1 periodic, E % REWARDS_UPDATE_EPOCH_INTERVAL == 0: the current day's counts of slots
  1..TotalNodesCount (`QueryNodeCounts`); eligibleNodes 0. A missing TotalNodesCount is a
  High alert (Go: nothing sent, no word, R8). Go sends it at release: a release can be
  reorged out and released again, the batch preparation cannot.
- P2 past-days recheck, same epochs: for X = D-1 .. max(1, D-PAST_DAYS_BUFFER), skipping a
  day whose final update is still to come (a marker that has not fired; Go: E % K <= 5, R9):
  the set sizes (`QueryPastDays`); a day of size 0 writes `ZeroCountKey` (24 h) and raises
  one Medium alert, no call (R2); the others are read on chain (`eligibleNodesForDay(X)` at
  the block being processed, `QueryEligibleOnChain`) and a day the chain holds 0 for gets
  `{[], [], X, n}`. A failed read is a Medium alert and waits for the next recheck.
- P3 final, when a rollover marker of the same market is due (`core.days`): the members of
  the day's eligible set, ascending, and their counts, read when it fires (`QueryDaySet`);
  eligibleNodes = the set's size. The marker is removed in the commit that puts the calls
  in the outbox (R5, R6).

Every call: slots ascending, a count only for a present integer, chunks of
REWARDS_UPDATE_BATCH_SIZE (all of them: R8), the market in EIP-55, a deterministic id; no
call with an empty slot list but P2's. None of it can hold back the epoch's batches (R1):
the batches are emitted before any of it, in the same step, and a failing read or relayer
only delays the reward update.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from seqcollector.core import days, keys, queries
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    Effect,
    QueryDaySet,
    QueryEligibleOnChain,
    QueryNodeCounts,
    QueryPastDays,
    RelayerCall,
    SetRemove,
    SetValue,
)
from seqcollector.core.inputs import DaySet, EligibleOnChain, NodeCounts, PastDays
from seqcollector.core.reporting import count, outbox_id, reject
from seqcollector.core.state import MarketState, State

PATH = "/submitUpdateRewards"
ZERO_COUNT_TTL_S = 24 * 3600  # as Go
STEP = "SendUpdateRewardsToRelayer"
COUNT_STEP = "SendEligibleNodesCount"
_MAX_COUNT = 2**62


def on_batch_prepared(
    state: State, lc: str, ms: MarketState, epoch: int, block: int, out: list[Effect]
) -> None:
    """After the epoch's batches were emitted: day transition, due final updates, and on
    interval epochs the past-days recheck and the periodic update (their queries)."""
    cfg = state.config
    if not cfg.rewards:  # the feature covers the day-rollover markers too (`Features.rewards`)
        return
    due = days.transition(state, lc, ms, epoch, out)
    for marker in due:
        out.append(_issue_final(state, lc, epoch, marker.day, marker.epoch))
    day = ms.day
    if day is None or epoch % cfg.rewards_update_epoch_interval != 0:
        return
    md = days.market_days(state, lc)
    past = [
        x
        for x in range(day - 1, max(1, day - cfg.past_days_buffer) - 1, -1)
        if not days.final_pending(md, x)
    ]
    members_of = day if cfg.periodic_eligible_count_alerts else None
    if past or members_of is not None:
        out.append(
            queries.issue(state, lambda qid: QueryPastDays(qid, lc, epoch, block, past, members_of))
        )
    out.append(queries.issue(state, lambda qid: QueryNodeCounts(qid, lc, epoch, day)))


def _issue_final(state: State, lc: str, epoch: int, day: int, marker_epoch: int) -> QueryDaySet:
    made = queries.issue(state, lambda qid: QueryDaySet(qid, lc, epoch, day, marker_epoch))
    assert isinstance(made, QueryDaySet)
    return made


def _calls(
    base: str, lc: str, day: int, slots: list[int], counts: list[int], eligible: int, size: int
) -> list[RelayerCall]:
    """The chunks of one update, each `{dataMarketAddress, slotIDs, submissionsList, day,
    eligibleNodes}` (the dispatcher adds authToken), ids `base:i`."""
    eip55 = checksum(lc)
    out = []
    for i, start in enumerate(range(0, len(slots), size)):
        body: dict[str, object] = {
            "dataMarketAddress": eip55,
            "slotIDs": slots[start : start + size],
            "submissionsList": counts[start : start + size],
            "day": day,
            "eligibleNodes": eligible,
        }
        out.append(RelayerCall(f"{base}:{i}", PATH, body))
    return out


def _well_formed(
    state: State, answer: Any, slots: list[int], counts: list[int], out: list[Effect]
) -> bool:
    """Slots ascending, unique, positive; counts of the same length, not negative."""
    ok = (
        len(slots) == len(counts)
        and all(0 < s < _MAX_COUNT for s in slots)
        and all(a < b for a, b in pairwise(slots))
        and all(0 <= c < _MAX_COUNT for c in counts)
    )
    if not ok:
        detail = (
            f"{type(answer).__name__} for market {answer.market} epoch {answer.epoch}: "
            "slots not ascending and positive, or counts not matching them"
        )
        reject(state, out, "malformed_answer", detail)
    return ok


def _held(state: State, query: object) -> bool:
    return True  # a held query's owner (a decision of a batch preparation) never goes away


# -- P1 -------------------------------------------------------------------------------------


def _on_node_counts(state: State, q: QueryNodeCounts, r: NodeCounts, out: list[Effect]) -> bool:
    eip55 = checksum(q.market)
    if r.total_nodes is None:
        count(state, "rewards_no_total_nodes", 1)
        message = (
            f"Epoch {q.epoch}: TotalNodesCount is missing or not an integer: no periodic "
            f"reward update for data market {eip55} on day {q.day}. The state cacher writes "
            "it; check that it runs"
        )
        out.append(Alert(_alert_id("p1-no-nodes", state, q.market, q.epoch), STEP, message, "High"))
        return False
    if not _well_formed(state, r, r.slots, r.counts, out):
        out.append(_malformed_alert(state, q.market, q.epoch, "periodic"))
        return False
    if r.malformed:
        count(state, "rewards_malformed_counts", r.malformed)
    base = outbox_id("rewards-periodic", state, q.market, q.epoch)
    size = state.config.rewards_update_batch_size
    calls = _calls(base, q.market, q.day, r.slots, r.counts, 0, size)
    out.extend(calls)
    count(state, "reward_calls_periodic", len(calls))
    return False


# -- P2 -------------------------------------------------------------------------------------


def _on_past_days(state: State, q: QueryPastDays, r: PastDays, out: list[Effect]) -> bool:
    if len(r.sizes) != len(q.days) or any(not 0 <= n < _MAX_COUNT for n in r.sizes):
        reject(state, out, "malformed_answer", f"PastDays for market {q.market} epoch {q.epoch}")
        return False
    eip55 = checksum(q.market)
    if q.members_of is not None:
        message = (
            f"Epoch {q.epoch}: Eligible node count for data market {eip55} on day "
            f"{q.members_of}: {len(r.members)}\nSlot IDs: {r.members}"
        )
        out.append(
            Alert(_alert_id("p2-count", state, q.market, q.epoch), COUNT_STEP, message, "High")
        )
    md = days.market_days(state, q.market)
    ask_days, ask_sizes = [], []
    for x, n in zip(q.days, r.sizes, strict=True):
        if n > 0:
            ask_days.append(x)
            ask_sizes.append(n)
        elif x not in md.zero:
            days._add_sorted(md.zero, x)
            out.append(SetValue(keys.zero_count(q.market, x), "true", ZERO_COUNT_TTL_S))
            message = (
                f"Epoch {q.epoch}: no eligible node for data market {eip55} on day {x} "
                f"(EligibleNodeByDayKey.{q.market}.{x} is empty): no reward update for that day"
            )
            out.append(
                Alert(
                    _alert_id(f"p2-zero:{x}", state, q.market, q.epoch),
                    COUNT_STEP,
                    message,
                    "Medium",
                )
            )
    if ask_days:
        out.append(
            queries.issue(
                state,
                lambda qid: QueryEligibleOnChain(
                    qid, q.market, q.epoch, q.block, ask_days, ask_sizes
                ),
            )
        )
    return False


def _on_chain(state: State, q: QueryEligibleOnChain, r: EligibleOnChain, out: list[Effect]) -> bool:
    if len(r.counts) != len(q.days) or any(
        c is not None and not 0 <= c < _MAX_COUNT for c in r.counts
    ):
        reject(
            state, out, "malformed_answer", f"EligibleOnChain for market {q.market} epoch {q.epoch}"
        )
        return False
    eip55 = checksum(q.market)
    failed = []
    for x, n, on_chain in zip(q.days, q.sizes, r.counts, strict=True):
        if on_chain is None:
            failed.append(x)
        elif on_chain == 0:
            out.append(
                _empty(outbox_id("rewards-recheck", state, q.market, q.epoch), q.market, x, n)
            )
            count(state, "reward_calls_recheck", 1)
    if failed:
        count(state, "rewards_chain_read_failed", len(failed))
        message = (
            f"Epoch {q.epoch}: eligibleNodesForDay of data market {eip55} could not be read "
            f"at block {q.block} for days {failed} ({r.error or 'no reason given'}); their "
            "past-days recheck waits for the next interval"
        )
        out.append(Alert(_alert_id("p2-read", state, q.market, q.epoch), STEP, message, "Medium"))
    return False


def _empty(base: str, lc: str, day: int, eligible: int) -> RelayerCall:
    """P2's one call: `{[], [], X, n}`."""
    body: dict[str, object] = {
        "dataMarketAddress": checksum(lc),
        "slotIDs": [],
        "submissionsList": [],
        "day": day,
        "eligibleNodes": eligible,
    }
    return RelayerCall(f"{base}:{day}", PATH, body)


# -- P3 -------------------------------------------------------------------------------------


def _on_day_set(state: State, q: QueryDaySet, r: DaySet, out: list[Effect]) -> bool:
    lc = q.market
    out.append(SetRemove(keys.rollover_marker_set(lc), str(q.marker_epoch)))
    out.append(DeleteKeys([keys.rollover_marker_details(lc, q.marker_epoch)]))
    if not 0 <= r.size < _MAX_COUNT or not _well_formed(state, r, r.slots, r.counts, out):
        out.append(_malformed_alert(state, lc, q.epoch, f"final (day {q.day})"))
        return False
    if r.malformed:
        count(state, "rewards_malformed_counts", r.malformed)
    size = state.config.rewards_update_batch_size
    calls = _calls(f"rewards-final:{lc}:{q.day}", lc, q.day, r.slots, r.counts, r.size, size)
    out.extend(calls)
    count(state, "reward_calls_final", len(calls))
    if not calls:
        count(state, "rewards_final_empty", 1)
    return False


def _malformed_alert(state: State, lc: str, epoch: int, what: str) -> Alert:
    message = (
        f"Epoch {epoch}: the {what} reward update of data market {checksum(lc)} was not sent: "
        "the eligibility keys read back malformed (see the rejected-input log)"
    )
    return Alert(_alert_id(f"malformed:{what}", state, lc, epoch), STEP, message, "High")


def _alert_id(what: str, state: State, lc: str, epoch: int) -> str:
    return outbox_id(f"alert-{what}", state, lc, epoch)


queries.register(queries.Kind(QueryNodeCounts, NodeCounts, _held, _on_node_counts, held=True))
queries.register(queries.Kind(QueryPastDays, PastDays, _held, _on_past_days, held=True))
queries.register(queries.Kind(QueryEligibleOnChain, EligibleOnChain, _held, _on_chain, held=True))
queries.register(queries.Kind(QueryDaySet, DaySet, _held, _on_day_set, held=True))

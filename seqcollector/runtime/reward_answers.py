"""Answers to the reward queries (`core.rewards`): the eligibility keys from Redis, and
`eligibleNodesForDay(X)` of the DataMarket contract over RPC.

Redis reads are pipelined: a periodic update of N slots is two round trips (GET
`TotalNodesCount`, then the N counts in one MGET), a final update two (SMEMBERS, then
the members' counts), a past-days recheck one; Go does one GET per slot. A Redis error
propagates (the group is retried: nothing can be committed without Redis anyway).

The contract read never raises: it is tried again while its budget lasts, and a node that
still fails answers None for the days it could not read, with the reason
(`EligibleOnChain.error`); the core alerts and waits for
the next recheck, so a failing node delays only the reward update, never a batch (R1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import redis.asyncio as aioredis
import structlog

from seqcollector.config import Settings
from seqcollector.core import keys
from seqcollector.core.effects import (
    QueryDaySet,
    QueryEligibleOnChain,
    QueryNodeCounts,
    QueryPastDays,
)
from seqcollector.core.inputs import DaySet, EligibleOnChain, NodeCounts, PastDays
from seqcollector.runtime.startup import Request, contract_view

log = structlog.get_logger(__name__)

_PAGE = 10_000  # keys per MGET (one round trip; a reply of 10,000 counts is small)
ELIGIBLE_NODES_FOR_DAY = "eligibleNodesForDay(uint256)"
RETRY_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between reads of one day, then 1 s


def _int(value: bytes | str | None) -> int | None:
    """A Redis value as the Go collector reads it (strconv.Atoi): a decimal integer."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    try:
        n = int(text, 10)
    except ValueError:
        return None
    return n if 0 <= n < 2**62 else None


class EligibilityReader:
    """Answers `QueryNodeCounts`, `QueryDaySet` and `QueryPastDays` from Redis; `before(what)`
    runs before each round trip (the simulation injects outages there)."""

    def __init__(self, redis: aioredis.Redis, before: Callable[[str], None] | None = None) -> None:
        self._redis = redis
        self._before = before

    async def answer(
        self, query: QueryNodeCounts | QueryDaySet | QueryPastDays
    ) -> NodeCounts | DaySet | PastDays:
        if isinstance(query, QueryNodeCounts):
            return await self._node_counts(query)
        if isinstance(query, QueryDaySet):
            return await self._day_set(query)
        return await self._past_days(query)

    async def _node_counts(self, q: QueryNodeCounts) -> NodeCounts:
        self._notify(f"TotalNodesCount read for market {q.market} epoch {q.epoch}")
        total = _int(await self._redis.get(keys.TOTAL_NODES_COUNT))
        if total is None:
            return NodeCounts(q.query_id, q.market, q.epoch, None)
        slots, counts, malformed = await self._counts(q.market, q.day, range(1, total + 1))
        return NodeCounts(q.query_id, q.market, q.epoch, total, slots, counts, malformed)

    async def _day_set(self, q: QueryDaySet) -> DaySet:
        self._notify(f"eligible set read for market {q.market} day {q.day}")
        raw = await self._redis.smembers(keys.eligible_nodes_by_day(q.market, q.day))
        members = [_int(m) for m in raw]
        slots = sorted(m for m in members if m is not None and m > 0)
        bad = len(members) - len(slots)
        slots, counts, malformed = await self._counts(q.market, q.day, slots)
        return DaySet(q.query_id, q.market, q.epoch, len(raw), slots, counts, malformed + bad)

    async def _past_days(self, q: QueryPastDays) -> PastDays:
        self._notify(f"past-days set sizes for market {q.market} epoch {q.epoch}")
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in q.days:
                pipe.scard(keys.eligible_nodes_by_day(q.market, day))
            if q.members_of is not None:
                pipe.smembers(keys.eligible_nodes_by_day(q.market, q.members_of))
            replies = await pipe.execute()
        sizes = [int(n) for n in replies[: len(q.days)]]
        members: list[int] = []
        if q.members_of is not None:
            found = (_int(m) for m in replies[len(q.days)])
            members = sorted(m for m in found if m is not None and m > 0)
        return PastDays(q.query_id, q.market, q.epoch, sizes, members)

    async def _counts(
        self, lc: str, day: int, slots: Sequence[int]
    ) -> tuple[list[int], list[int], int]:
        """The slots whose `EligibleSlotSubmissionsKey` holds an integer, with it, in the
        given (ascending) order, and how many held something else."""
        got_slots: list[int] = []
        got_counts: list[int] = []
        malformed = 0
        for start in range(0, len(slots), _PAGE):
            page = slots[start : start + _PAGE]
            self._notify(f"eligible counts of market {lc} day {day}")
            values = await self._redis.mget(
                [keys.eligible_slot_submissions(lc, day, slot) for slot in page]
            )
            for slot, value in zip(page, values, strict=True):
                n = _int(value)
                if n is not None:
                    got_slots.append(slot)
                    got_counts.append(n)
                elif value is not None:
                    malformed += 1
        return got_slots, got_counts, malformed

    def _notify(self, what: str) -> None:
        if self._before is not None:
            self._before(what)


class EligibleOnChainReader:
    """Answers `QueryEligibleOnChain`: `eligibleNodesForDay(X)` at the market's address, as
    of the query's block; failures are answers. All the days of one query share `budget_s`
    (CONTRACT_QUERY_TIMEOUT, capped by the caller inside the batch deadlines, so a hanging
    node cannot make the group miss its deadline and hold back the batches)."""

    def __init__(self, request: Request, budget_s: float) -> None:
        self._request = request
        self._budget_s = budget_s

    @classmethod
    def from_settings(cls, request: Request, settings: Settings) -> EligibleOnChainReader:
        """CONTRACT_QUERY_TIMEOUT, capped at a third of TIMEOUT_MARKET_PROCESSING (the read
        runs inside the batch preparation's deadlines, which it must never make fail)."""
        budget = min(settings.contract_query_timeout, settings.timeouts.market_processing / 3)
        return cls(request, budget)

    async def answer(self, q: QueryEligibleOnChain) -> EligibleOnChain:
        counts: list[int | None] = []
        errors: list[str] = []
        deadline = anyio.current_time() + self._budget_s
        for day in q.days:
            value, error = await self._read(q, day, deadline)
            counts.append(value)
            if error:
                errors.append(f"day {day}: {error}"[:300])
        return EligibleOnChain(q.query_id, q.market, q.epoch, counts, "; ".join(errors)[:1000])

    async def _read(
        self, q: QueryEligibleOnChain, day: int, deadline: float
    ) -> tuple[int | None, str]:
        """One day's count, read again after a failure (RETRY_PAUSES) while the budget lasts
        -> (count, "") or (None, the last failure)."""
        last = f"not read, the {self._budget_s:g} s budget was spent"
        for attempt in range(1_000):
            left = deadline - anyio.current_time()
            if left <= 0:
                break
            try:
                raw = await contract_view(
                    self._request,
                    q.market,
                    ELIGIBLE_NODES_FOR_DAY,
                    [("uint256", day)],
                    q.block,
                    timeout_s=left,
                    contract_name="DataMarket",
                )
                if len(raw) < 32 or int.from_bytes(raw[:32], "big") >= 2**62:
                    raise ValueError(f"returned {raw[:40].hex() or 'nothing'}")
                return int.from_bytes(raw[:32], "big"), ""
            except Exception as exc:  # a failed read is an answer (R1)
                last = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "eligible_nodes_read_failed",
                    market=q.market,
                    day=day,
                    block=q.block,
                    attempt=attempt + 1,
                    error=last,
                )
            pause = RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)]
            await anyio.sleep(min(pause, max(deadline - anyio.current_time(), 0)))
        return None, last

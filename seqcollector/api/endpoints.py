"""The 12 paths of the Go collector's read API: each decodes its body (`bodies`), runs Go's
checks in Go's order (T token, M market, S slotID, Ep epochID, Dy day, CD current day, as in
go-rewards-api.md section 3), then reads (`reads.Reader`). An endpoint returns the `response`
of Go's 200 answer or raises `ApiError` with Go's status and message.

Beyond Go: the market matches in any case (keys use it lowercase); the token compare is
constant-time, and an empty AUTH_READ_TOKEN matches no token (Go: it matches an absent one);
lists come sorted (slot IDs numerically, submission and project IDs bytewise), `[]` where Go
gives `null`; `pastDays` is capped at `MAX_DAYS` (Go starts a goroutine per day asked).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from seqcollector.api import models as m
from seqcollector.api.errors import ApiError, bad_request
from seqcollector.api.reads import Reader
from seqcollector.core import keys

MAX_SLOT = 10_000
MAX_DAYS = 10_000  # days answered at once (27 years of days; Go has no bound)
PAGE_SIZE = 50  # /discardedSubmissionsByDay, as Go


class ApiContext:
    """What every endpoint needs: the reader, the configured markets, the read token."""

    def __init__(self, reader: Reader, markets: tuple[str, ...], token: str) -> None:
        self.reader = reader
        self.markets = frozenset(a.lower() for a in markets)
        self._token = token.encode()

    def check_token(self, token: str) -> None:
        """T: 401 "Incorrect Token!" unless `token` is AUTH_READ_TOKEN (and that is set)."""
        if not (self._token and hmac.compare_digest(token.encode(), self._token)):
            raise ApiError(401, "Incorrect Token!")

    def market(self, address: str) -> str:
        """M: the market, lowercase; 400 "Invalid Data Market Address!" if not configured."""
        lc = address.lower()
        if lc not in self.markets:
            raise bad_request("Invalid Data Market Address!")
        return lc


def check_slot(slot: int) -> None:
    if not 1 <= slot <= MAX_SLOT:
        raise bad_request(f"Invalid slotID: {slot}")


def check_epoch(epoch: int) -> None:
    if epoch <= 0:
        raise bad_request("EpochID is missing or invalid")


def check_day(day: int) -> None:
    if day <= 0:
        raise bad_request("Invalid day!")


def check_past_days(past_days: int) -> None:
    if past_days < 1:
        raise bad_request("Past days should be at least 1")


def check_past_days_within(past_days: int, current: int) -> list[int]:
    """The days asked, newest first; 400 beyond the current day (Go) or `MAX_DAYS` (ours)."""
    if past_days > current:
        raise bad_request(f"Past days cannot exceed the current day ({current})")
    if past_days > MAX_DAYS:
        raise bad_request(f"Past days cannot exceed {MAX_DAYS}: ask for fewer days")
    return [current - i for i in range(past_days)]


def check_day_within(day: int, current: int) -> None:
    if day < 1:
        raise bad_request("Day must be greater than or equal to 1")
    if day > current:
        raise bad_request(f"Day must not exceed the current day ({current})")


def rfc3339_local(timestamp: int) -> str:
    """Go's `time.Unix(ts, 0).Format(time.RFC3339)`: seconds, the process's zone, `Z` at UTC."""
    try:
        moment = datetime.fromtimestamp(timestamp, UTC).astimezone()
    except (OverflowError, OSError, ValueError):
        raise ApiError(
            500, f"Failed to parse timestamp: {timestamp} is out of the representable range"
        ) from None
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    zone = (
        "Z"
        if minutes == 0
        else f"{'+-'[minutes < 0]}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    )
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{zone}"
    )


Query = Mapping[str, str]
Handler = Callable[[ApiContext, Any, Query], Awaitable[Any]]


def _flag(query: Query) -> bool:
    return query.get("includeSlotDetails") == "true"  # Go: exactly "true"


async def total_submissions(ctx: ApiContext, r: m.SubmissionsRequest, q: Query) -> Any:
    ctx.check_token(r.token)
    check_past_days(r.pastDays)
    check_slot(r.slotID)
    lc = ctx.market(r.dataMarketAddress)
    days = check_past_days_within(r.pastDays, await ctx.reader.current_day(lc))
    return await ctx.reader.daily_submissions(lc, r.slotID, days)


async def eligible_nodes_count_past_days(
    ctx: ApiContext, r: m.EligibleNodesPastDaysRequest, q: Query
) -> Any:
    ctx.check_token(r.token)
    check_past_days(r.pastDays)
    lc = ctx.market(r.dataMarketAddress)
    days = check_past_days_within(r.pastDays, await ctx.reader.current_day(lc))
    return await ctx.reader.eligible_nodes(lc, days, _flag(q))


async def eligible_nodes_count(ctx: ApiContext, r: m.EligibleNodesCountRequest, q: Query) -> Any:
    ctx.check_token(r.token)
    lc = ctx.market(r.dataMarketAddress)
    check_day_within(r.day, await ctx.reader.current_day(lc))
    return (await ctx.reader.eligible_nodes(lc, [r.day], _flag(q)))[0]


async def batch_count(ctx: ApiContext, r: m.EpochDataMarketRequest, q: Query) -> Any:
    ctx.check_token(r.token)
    check_epoch(r.epochID)
    lc = ctx.market(r.dataMarketAddress)
    count = await ctx.reader.batch_count(lc, r.epochID)
    if count is None:
        raise ApiError(
            500,
            f"Internal Server Error: Failed to fetch batch count: "
            f"{keys.batch_count(lc, r.epochID)} does not exist",
        )
    return m.BatchCount(totalBatches=count)


async def epoch_submission_details(ctx: ApiContext, r: m.EpochDataMarketRequest, q: Query) -> Any:
    ctx.check_token(r.token)
    check_epoch(r.epochID)
    lc = ctx.market(r.dataMarketAddress)
    return m.EpochSubmissionSummary(await ctx.reader.epoch_submissions(lc, r.epochID))


async def eligible_slot_submission_count(
    ctx: ApiContext, r: m.EpochDataMarketDayRequest, q: Query
) -> Any:
    ctx.check_token(r.token)
    check_day(r.day)
    check_epoch(r.epochID)
    lc = ctx.market(r.dataMarketAddress)
    counts = await ctx.reader.eligible_slot_counts(lc, r.day, r.epochID)
    return m.EligibleSubmissionCountsResponse(counts)


async def discarded_submissions_by_epoch(
    ctx: ApiContext, r: m.EpochDataMarketDayRequest, q: Query
) -> Any:
    ctx.check_token(r.token)
    check_day(r.day)
    check_epoch(r.epochID)
    lc = ctx.market(r.dataMarketAddress)
    return m.DiscardedSubmissionsAPIResponse(
        await ctx.reader.discarded_by_epoch(lc, r.day, r.epochID)
    )


async def discarded_submissions_by_day(
    ctx: ApiContext, r: m.DiscardedSubmissionsByDayRequest, q: Query
) -> Any:
    ctx.check_token(r.token)
    lc = ctx.market(r.dataMarketAddress)
    check_day_within(r.day, await ctx.reader.current_day(lc))
    check_slot(r.slotID)
    has_entries, projects = await ctx.reader.discarded_by_day(lc, r.day, r.slotID)
    if not has_entries:  # Go: the page as sent, unclamped
        return m.DiscardedSubmissionDetailsByDayAPIResponse(r.slotID, [], 0, r.page)
    if projects is None:
        raise ApiError(404, f"No discarded submissions found for slotID {r.slotID}")
    page = max(r.page, 1)
    start = (page - 1) * PAGE_SIZE
    shown = projects[start : start + PAGE_SIZE] if start <= len(projects) else []
    pages = (len(projects) + PAGE_SIZE - 1) // PAGE_SIZE
    return m.DiscardedSubmissionDetailsByDayAPIResponse(r.slotID, shown, pages, page)


def _last_submission(key_of: Callable[[str, int], str], what: str) -> Handler:
    async def last(ctx: ApiContext, r: m.SlotIDInDataMarketRequest, q: Query) -> Any:
        ctx.check_token(r.token)
        lc = ctx.market(r.dataMarketAddress)
        check_slot(r.slotID)
        ts, version = await ctx.reader.timestamp_and_version(key_of(lc, r.slotID), lc, r.slotID)
        if ts is None:
            raise ApiError(500, f"Failed to fetch last {what} submission")
        return m.SubmissionInfo(timestamp=rfc3339_local(ts), nodeVersion=version)

    return last


last_simulated_submission = _last_submission(keys.last_simulated_submission, "simulated")
last_snapshot_submission = _last_submission(keys.last_snapshot_submission, "snapshot")


async def active_nodes_count_by_epoch(
    ctx: ApiContext, r: m.EpochDataMarketRequest, q: Query
) -> Any:
    ctx.check_token(r.token)
    check_epoch(r.epochID)
    lc = ctx.market(r.dataMarketAddress)
    return await ctx.reader.active_nodes(lc, r.epochID)


async def snapshotter_node_version(
    ctx: ApiContext, r: m.SnapshotterNodeVersionRequest, q: Query
) -> Any:
    ctx.check_token(r.token)
    lc = ctx.market(r.dataMarketAddress)
    check_slot(r.slotID)
    version = await ctx.reader.node_version(lc, r.slotID)
    if version is None:
        raise ApiError(500, "Failed to fetch snapshotter node version")
    return version


class Endpoint(msgspec.Struct, frozen=True):
    """One path: its body type, handler, the type of its `response`, and its docs."""

    path: str
    request: type[msgspec.Struct]
    handler: Handler
    response: Any
    tag: str
    summary: str
    errors: tuple[int, ...] = (400, 401)
    slot_details_flag: bool = False


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/totalSubmissions",
        m.SubmissionsRequest,
        total_submissions,
        list[m.DailySubmissions],
        "Submissions",
        "Eligible and total submissions of a slot for each of the past days",
    ),
    Endpoint(
        "/eligibleNodesCountPastDays",
        m.EligibleNodesPastDaysRequest,
        eligible_nodes_count_past_days,
        list[m.EligibleNodes],
        "Eligible Nodes",
        "Eligible nodes (and their slot IDs) for each of the past days",
        slot_details_flag=True,
    ),
    Endpoint(
        "/eligibleNodesCount",
        m.EligibleNodesCountRequest,
        eligible_nodes_count,
        m.EligibleNodes,
        "Eligible Nodes",
        "Eligible nodes (and their slot IDs) of a day",
        slot_details_flag=True,
    ),
    Endpoint(
        "/batchCount",
        m.EpochDataMarketRequest,
        batch_count,
        m.BatchCount,
        "Batch Count",
        "Number of batches of an epoch (500 if none was recorded)",
        errors=(400, 401, 500),
    ),
    Endpoint(
        "/epochSubmissionDetails",
        m.EpochDataMarketRequest,
        epoch_submission_details,
        m.EpochSubmissionSummary,
        "Submissions",
        "Every submission of an epoch",
    ),
    Endpoint(
        "/eligibleSlotSubmissionCount",
        m.EpochDataMarketDayRequest,
        eligible_slot_submission_count,
        m.EligibleSubmissionCountsResponse,
        "Eligible Submission Count",
        "Eligible submission count of each slot in an epoch",
    ),
    Endpoint(
        "/discardedSubmissionsByEpoch",
        m.EpochDataMarketDayRequest,
        discarded_submissions_by_epoch,
        m.DiscardedSubmissionsAPIResponse,
        "Discarded Submissions",
        "Discarded submissions of an epoch (at most 50 projects)",
    ),
    Endpoint(
        "/discardedSubmissionsByDay",
        m.DiscardedSubmissionsByDayRequest,
        discarded_submissions_by_day,
        m.DiscardedSubmissionDetailsByDayAPIResponse,
        "Discarded Submissions",
        "Discarded submissions of a slot on a day, 50 a page",
        errors=(400, 401, 404),
    ),
    Endpoint(
        "/lastSimulatedSubmission",
        m.SlotIDInDataMarketRequest,
        last_simulated_submission,
        m.SubmissionInfo,
        "Submissions",
        "When a slot's last simulation submission came",
        errors=(400, 401, 500),
    ),
    Endpoint(
        "/lastSnapshotSubmission",
        m.SlotIDInDataMarketRequest,
        last_snapshot_submission,
        m.SubmissionInfo,
        "Submissions",
        "When a slot's last snapshot submission came",
        errors=(400, 401, 500),
    ),
    Endpoint(
        "/activeNodesCountByEpoch",
        m.EpochDataMarketRequest,
        active_nodes_count_by_epoch,
        int,
        "Active Nodes",
        "Number of nodes that submitted in an epoch",
    ),
    Endpoint(
        "/snapshotterNodeVersion",
        m.SnapshotterNodeVersionRequest,
        snapshotter_node_version,
        str,
        "Submissions",
        "A slot's snapshotter node version",
        errors=(400, 401, 500),
    ),
)

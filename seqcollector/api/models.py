"""The read API's request bodies and answers, with the Go collector's JSON names and field
order (pkgs/service/api.go), so the OpenAPI schemas and the bodies come from one place.

Requests: every field optional (Go: absent = 0 or ""), decoded by `bodies.decode_body`
with Go's encoding/json rules. Answers: encoded by msgspec in field order, as Go's structs.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# ---------------------------------------------------------------------------- requests


class SubmissionsRequest(msgspec.Struct, kw_only=True):
    """/totalSubmissions"""

    token: str = ""
    slotID: Int64 = 0
    pastDays: Int64 = 0
    dataMarketAddress: str = ""


class SlotIDInDataMarketRequest(msgspec.Struct, kw_only=True):
    """/lastSimulatedSubmission, /lastSnapshotSubmission (snapshotterAddress is ignored,
    as Go ignores it)."""

    token: str = ""
    dataMarketAddress: str = ""
    snapshotterAddress: str = ""
    slotID: Int64 = 0


class EpochDataMarketRequest(msgspec.Struct, kw_only=True):
    """/batchCount, /epochSubmissionDetails, /activeNodesCountByEpoch"""

    token: str = ""
    epochID: Int64 = 0
    dataMarketAddress: str = ""


class EpochDataMarketDayRequest(msgspec.Struct, kw_only=True):
    """/eligibleSlotSubmissionCount, /discardedSubmissionsByEpoch"""

    token: str = ""
    day: Int64 = 0
    epochID: Int64 = 0
    dataMarketAddress: str = ""


class EligibleNodesCountRequest(msgspec.Struct, kw_only=True):
    """/eligibleNodesCount"""

    day: Int64 = 0
    dataMarketAddress: str = ""
    token: str = ""


class EligibleNodesPastDaysRequest(msgspec.Struct, kw_only=True):
    """/eligibleNodesCountPastDays"""

    token: str = ""
    pastDays: Int64 = 0
    dataMarketAddress: str = ""


class DiscardedSubmissionsByDayRequest(msgspec.Struct, kw_only=True):
    """/discardedSubmissionsByDay"""

    day: Int64 = 0
    slotID: Int64 = 0
    dataMarketAddress: str = ""
    token: str = ""
    page: Int64 = 0


class SnapshotterNodeVersionRequest(msgspec.Struct, kw_only=True):
    """/snapshotterNodeVersion"""

    token: str = ""
    dataMarketAddress: str = ""
    slotID: Int64 = 0


# ----------------------------------------------------------------------------- answers


class DailySubmissions(msgspec.Struct):
    day: int
    eligibleSubmissions: int
    totalSubmissions: int


class EligibleNodes(msgspec.Struct):
    day: int
    eligibleNodesCount: int
    slotIDs: list[str]


class BatchCount(msgspec.Struct):
    totalBatches: int


class RequestFields(msgspec.Struct, omit_defaults=True):
    """A submission's request; Go omits the fields at 0 or ""."""

    slotID: int = 0
    deadline: int = 0
    snapshotCID: str = ""
    epochID: int = 0
    projectID: str = ""


class SubmissionData(msgspec.Struct, omit_defaults=True):
    request: RequestFields  # always present, as in Go's answer
    signature: str = ""
    header: str = ""


class SubmissionDetails(msgspec.Struct):
    submissionID: str
    submissionData: SubmissionData


class EpochSubmissionSummary(msgspec.Struct):
    submissions: list[SubmissionDetails]


class EligibleSubmissionCounts(msgspec.Struct):
    slotID: int
    count: int


class EligibleSubmissionCountsResponse(msgspec.Struct):
    eligibleSubmissionCounts: list[EligibleSubmissionCounts]


class DiscardedSubmissionDetails(msgspec.Struct):
    mostFrequentSnapshotCID: str
    discardedSubmissionCount: int
    discardedSubmissions: dict[str, list[str]]  # slot -> CIDs


class DiscardedSubmissionDetailsResponse(msgspec.Struct):
    projectID: str
    details: DiscardedSubmissionDetails


class DiscardedSubmissionsAPIResponse(msgspec.Struct):
    projects: list[DiscardedSubmissionDetailsResponse]


class DiscardedSubmissionByProjectDetails(msgspec.Struct):
    finalizedCID: str
    discardedSubmissionCount: int
    discardedSubmissions: list[str]


class DiscardedSubmissionByDayResponse(msgspec.Struct):
    projectID: str
    details: DiscardedSubmissionByProjectDetails


class DiscardedSubmissionDetailsByDayAPIResponse(msgspec.Struct):
    slotID: int
    discardedSubmissions: list[DiscardedSubmissionByDayResponse]
    totalPages: int
    currentPage: int


class SubmissionInfo(msgspec.Struct):
    timestamp: str  # RFC 3339, seconds, in the process's time zone (Go's time.Local)
    nodeVersion: str


class Info(msgspec.Struct):
    success: bool
    response: Any


class Envelope(msgspec.Struct):
    """Every 200 answer: `{"info":{"success":true,"response":R},"requestID":"<uuid>"}`."""

    info: Info
    requestID: str


class ErrorBody(msgspec.Struct):
    """Every error answer (Go: text/plain `<message>\\n`), with Go's status and message."""

    error: str
    requestID: str

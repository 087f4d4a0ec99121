"""The Go collector's own API tests (pkgs/service/api_test.go, commit 520a5c5), ported:
the same seeds, requests and expected answers, over real HTTP against a real redis-server.

Each Go test function is one test here, each of its subtests one parameter (47 cases in
10 tests). What differs from the Go file, and why (go-rewards-api.md section 6):
- each test seeds its own data (Go shares one miniredis whose state leaks across tests);
- /discardedSubmissionsByDay gets `CurrentDayKey` 5 (Go's test ran at the leaked day 3: 400);
- lists Go builds from map iteration are compared as multisets (our order is tested in
  test_api_beyond_go.py);
- /last*Submission answers `{"timestamp", "nodeVersion"}`, Go's real answer, where the Go
  test decodes a string (A7);
- besides Go's statuses, an error's `error` is Go's message, and a 200's `requestID` equals
  its X-Request-ID.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from apikit import LC, MARKET, OTHER_MARKET, TOKEN, go_rfc3339, multiset, served

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def body(**fields: Any) -> dict[str, Any]:
    return {"token": TOKEN, "dataMarketAddress": MARKET, **fields}


def case(name: str, request: dict[str, Any], status: int, expected: Any = None, **kw: Any) -> Any:
    return pytest.param(request, status, expected, kw, id=name)


async def check(api: Any, path: str, request: dict[str, Any], status: int, expected: Any) -> Any:
    answer = await api.call(path, request)
    assert answer.status == status, answer.text
    if status == 200:
        return answer.response
    if expected is not None:
        assert answer.error == expected
    return None


# ------------------------------------------------------------ TestHandleTotalSubmissions


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, past days 1", body(slotID=1, pastDays=1), 200,
             [{"day": 5, "eligibleSubmissions": 80, "totalSubmissions": 120}]),
        case("Valid token, past days 3", body(slotID=1, pastDays=3), 200,
             [{"day": 5, "eligibleSubmissions": 80, "totalSubmissions": 120},
              {"day": 4, "eligibleSubmissions": 60, "totalSubmissions": 200},
              {"day": 3, "eligibleSubmissions": 140, "totalSubmissions": 150}]),
        case("Valid token, all submissions till date", body(slotID=1, pastDays=5), 200,
             [{"day": 5, "eligibleSubmissions": 80, "totalSubmissions": 120},
              {"day": 4, "eligibleSubmissions": 60, "totalSubmissions": 200},
              {"day": 3, "eligibleSubmissions": 140, "totalSubmissions": 150},
              {"day": 2, "eligibleSubmissions": 50, "totalSubmissions": 100},
              {"day": 1, "eligibleSubmissions": 30, "totalSubmissions": 60}]),
        case("Valid token, negative past days", body(slotID=1, pastDays=-1), 400,
             "Past days should be at least 1"),
        case("Valid token, past days greater than current day", body(slotID=1, pastDays=6), 400,
             "Past days cannot exceed the current day (5)"),
        case("Invalid token", body(slotID=1, pastDays=1, token="invalid-token"), 401,
             "Incorrect Token!"),
        case("Invalid Data Market Address", body(slotID=1, pastDays=1,
             dataMarketAddress=OTHER_MARKET), 400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_total_submissions(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        for day, eligible, total in [(5, 80, 120), (4, 60, 200), (3, 140, 150), (2, 50, 100),
                                     (1, 30, 60)]:  # fmt: skip
            await api.redis.set(f"EligibleSlotSubmissionsKey.{LC}.{day}.1", str(eligible))
            await api.redis.set(f"SlotSubmissionsKey.{LC}.{day}.1", str(total))
        got = await check(api, "/totalSubmissions", request_body, status, expected)
        if status == 200:
            assert got == expected


# ---------------------------------------------------- TestHandleEligibleNodesCountPastDays

DAY3, DAY2, DAY1 = (
    ["slot1", "slot2", "slot3"],
    ["slot4", "slot5", "slot6"],
    ["slot7", "slot8", "slot9"],
)


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, past days 1, includeSlotDetails=true", body(pastDays=1), 200,
             [{"day": 3, "eligibleNodesCount": 3, "slotIDs": DAY3}],
             query="?includeSlotDetails=true"),
        case("Valid token, past days 3, includeSlotDetails=false", body(pastDays=3), 200,
             [{"day": 3, "eligibleNodesCount": 3, "slotIDs": []},
              {"day": 2, "eligibleNodesCount": 3, "slotIDs": []},
              {"day": 1, "eligibleNodesCount": 3, "slotIDs": []}],
             query="?includeSlotDetails=false"),
        case("Valid token, negative past days", body(pastDays=-1), 400,
             "Past days should be at least 1"),
        case("Valid token, past days greater than current day", body(pastDays=4), 400,
             "Past days cannot exceed the current day (3)"),
        case("Invalid token", body(pastDays=1, token="invalid-token"), 401, "Incorrect Token!"),
        case("Invalid Data Market Address", body(pastDays=1, dataMarketAddress=OTHER_MARKET),
             400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_eligible_nodes_count_past_days(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "3")
        for day, slots in [(3, DAY3), (2, DAY2), (1, DAY1)]:
            await api.redis.sadd(f"EligibleNodeByDayKey.{LC}.{day}", *slots)
        got = await check(
            api, "/eligibleNodesCountPastDays" + kw.get("query", ""), request_body, status, expected
        )
        if status == 200:
            assert got == expected


# ---------------------------------------------------------- TestHandleEligibleNodesCount


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, day 1, includeSlotDetails=true", body(day=1), 200,
             {"day": 1, "eligibleNodesCount": 3, "slotIDs": DAY3},
             query="?includeSlotDetails=true"),
        case("Valid token, day 1, includeSlotDetails=false", body(day=1), 200,
             {"day": 1, "eligibleNodesCount": 3, "slotIDs": []},
             query="?includeSlotDetails=false"),
        case("Invalid token", body(day=1, token="invalid-token"), 401, "Incorrect Token!"),
        case("Invalid day", body(day=4), 400, "Day must not exceed the current day (3)"),
        case("Invalid Data Market Address", body(day=1, dataMarketAddress=OTHER_MARKET), 400,
             "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_eligible_nodes_count(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "3")
        await api.redis.sadd(f"EligibleNodeByDayKey.{LC}.1", *DAY3)
        got = await check(
            api, "/eligibleNodesCount" + kw.get("query", ""), request_body, status, expected
        )
        if status == 200:
            assert got == expected


# ------------------------------------------------------------------ TestHandleBatchCount


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, batch count fetched", body(epochID=123), 200, {"totalBatches": 10}),
        case("Invalid token", body(epochID=123, token="invalid-token"), 401, "Incorrect Token!"),
        case("Invalid EpochID", body(epochID=-1), 400, "EpochID is missing or invalid"),
        case("Invalid Data Market Address", body(epochID=123, dataMarketAddress=OTHER_MARKET),
             400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_batch_count(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.123", "10")
        got = await check(api, "/batchCount", request_body, status, expected)
        if status == 200:
            assert got == expected


# ------------------------------------------------------- TestHandleEpochSubmissionDetails


def go_epoch_submissions(count: int) -> dict[str, str]:
    """getEpochSubmissionDetails(10), stored as Go's json.Marshal of the protobuf struct."""
    return {
        f"submission-{i}": json.dumps({"request": {"slotId": i, "epochId": 123}})
        for i in range(1, count + 1)
    }


def refactor_epoch_submissions(stored: dict[str, str]) -> list[dict[str, Any]]:
    """refactorEpochSubmissions: Swagger-shaped, zero fields omitted, sorted by ID."""
    out = []
    for sid, raw in stored.items():
        req = json.loads(raw)["request"]
        out.append(
            {
                "submissionID": sid,
                "submissionData": {"request": {"slotID": req["slotId"], "epochID": req["epochId"]}},
            }
        )
    return sorted(out, key=lambda d: d["submissionID"])


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, epoch submission details fetched", body(epochID=123), 200,
             {"submissions": refactor_epoch_submissions(go_epoch_submissions(10))}),
        case("Invalid token", body(epochID=123, token="invalid-token"), 401, "Incorrect Token!"),
        case("Invalid EpochID", body(epochID=-1), 400, "EpochID is missing or invalid"),
        case("Invalid Data Market Address", body(epochID=123, dataMarketAddress=OTHER_MARKET),
             400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_epoch_submission_details(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        await api.redis.hset(f"EpochSubmissionsKey.{LC}.123", mapping=go_epoch_submissions(10))
        got = await check(api, "/epochSubmissionDetails", request_body, status, expected)
        if status == 200:
            assert got == expected
            assert [s["submissionID"] for s in got["submissions"]][:3] == [
                "submission-1",
                "submission-10",
                "submission-2",
            ]  # Go's sort.Slice on the IDs, bytewise


# ------------------------------------------------------- TestHandleEligibleSubmissionCount


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, epoch submission details fetched", body(epochID=123, day=5), 200,
             {"eligibleSubmissionCounts": [{"slotID": s, "count": 10} for s in range(1, 6)]}),
        case("Invalid token", body(epochID=123, day=5, token="invalid-token"), 401,
             "Incorrect Token!"),
        case("Invalid EpochID", body(epochID=-1, day=5), 400, "EpochID is missing or invalid"),
        case("Invalid Data Market Address", body(epochID=123, day=5,
             dataMarketAddress=OTHER_MARKET), 400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_eligible_submission_count(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        key = f"EligibleSlotSubmissionByEpochKey.{LC}.5.123"
        await api.redis.hset(key, mapping={str(s): 10 for s in range(1, 6)})
        got = await check(api, "/eligibleSlotSubmissionCount", request_body, status, expected)
        if status == 200:  # Go compares the lengths; we compare the entries, unordered
            counts = got["eligibleSubmissionCounts"]
            assert multiset(counts) == multiset(expected["eligibleSubmissionCounts"])


# ------------------------------------------------------ TestHandleDiscardedSubmissionsByEpoch

BY_EPOCH = {
    "project1": {"mostFrequentSnapshotCID": "CID0", "discardedSubmissionCount": 1,
                 "discardedSubmissions": {"2": ["CID1"]}},
    "project2": {"mostFrequentSnapshotCID": "CID1", "discardedSubmissionCount": 1,
                 "discardedSubmissions": {"3": ["CID5"]}},
    "project3": {"mostFrequentSnapshotCID": "CID2", "discardedSubmissionCount": 1,
                 "discardedSubmissions": {"5": ["CID6"]}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, discarded submission details fetched", body(epochID=123, day=5), 200,
             [{"projectID": p, "details": d} for p, d in BY_EPOCH.items()]),
        case("Invalid token", body(epochID=123, day=5, token="invalid-token"), 401,
             "Incorrect Token!"),
        case("Invalid EpochID", body(epochID=-1, day=5), 400, "EpochID is missing or invalid"),
        case("Invalid Data Market Address", body(epochID=123, day=5,
             dataMarketAddress=OTHER_MARKET), 400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_discarded_submissions_by_epoch(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        key = f"DiscardedSubmissionKey.{LC}.5.123"  # storeDiscardedSubmissionDetails
        await api.redis.hset(key, mapping={p: json.dumps(d) for p, d in BY_EPOCH.items()})
        got = await check(api, "/discardedSubmissionsByEpoch", request_body, status, expected)
        if status == 200:
            assert multiset(got["projects"]) == multiset(expected)


# -------------------------------------------------------- TestHandleDiscardedSubmissionsByDay

BY_DAY = {
    "1": {"project1": {"finalizedCID": "CID0", "discardedSubmissionCount": 1,
                       "discardedSubmissions": ["CID1"]}},
    "2": {"project2": {"finalizedCID": "CID1", "discardedSubmissionCount": 1,
                       "discardedSubmissions": ["CID2"]},
          "project3": {"finalizedCID": "CID2", "discardedSubmissionCount": 2,
                       "discardedSubmissions": ["CID3", "CID4"]}},
    "3": {"project3": {"finalizedCID": "CID3", "discardedSubmissionCount": 1,
                       "discardedSubmissions": ["CID5"]}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("request_body", "status", "expected", "kw"),
    [
        case("Valid token, discarded submission details by day fetched",
             body(slotID=1, day=5), 200,
             [{"projectID": "project1", "details": BY_DAY["1"]["project1"]}]),
        case("Invalid token", body(slotID=1, day=5, token="invalid-token"), 401,
             "Incorrect Token!"),
        case("Invalid SlotID", body(slotID=-1, day=5), 400, "Invalid slotID: -1"),
        case("Invalid Day", body(slotID=1, day=0), 400, "Day must be greater than or equal to 1"),
        case("Invalid Data Market Address", body(slotID=1, day=5,
             dataMarketAddress=OTHER_MARKET), 400, "Invalid Data Market Address!"),
    ],
)  # fmt: skip
async def test_handle_discarded_submissions_by_day(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")  # Go's test ran at a leaked day 3
        key = f"DiscardedSubmissionKey.{LC}.5"  # storeDiscardedSubmissionByDayDetails
        await api.redis.hset(key, mapping={s: json.dumps(d) for s, d in BY_DAY.items()})
        got = await check(api, "/discardedSubmissionsByDay", request_body, status, expected)
        if status == 200:
            assert got["discardedSubmissions"] == expected
            assert (got["slotID"], got["totalPages"], got["currentPage"]) == (1, 1, 1)


# ------------------------------------------------ TestHandleLast{Simulated,Snapshot}Submission

LAST_CASES = [
    case("Invalid token", {"dataMarketAddress": MARKET, "slotID": 1, "token": "invalid-token"},
         401, "Incorrect Token!"),
    case("Invalid SlotID", {"dataMarketAddress": MARKET, "slotID": 100000, "token": TOKEN}, 400,
         "Invalid slotID: 100000"),
    case("Invalid Data Market Address", {"dataMarketAddress": OTHER_MARKET, "slotID": 1,
         "token": TOKEN}, 400, "Invalid Data Market Address!"),
    case("Successfully fetched", {"dataMarketAddress": MARKET, "slotID": 1, "token": TOKEN}, 200),
]  # fmt: skip


async def last_submission(
    redis_url: str, path: str, key: str, request_body: dict[str, Any], status: int, expected: Any
) -> None:
    async with served(redis_url) as api:
        value = int(time.time())
        await api.redis.set(key, value)
        got = await check(api, path, request_body, status, expected)
        if status == 200:  # Go's real answer (its test decodes a string: A7)
            assert got == {"timestamp": go_rfc3339(value), "nodeVersion": "v0.0.0"}


@pytest.mark.parametrize(("request_body", "status", "expected", "kw"), LAST_CASES)
async def test_handle_last_simulated_submission(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    key = f"LastSimulatedSubmissionKey.{LC}.1"
    await last_submission(
        redis_url, "/lastSimulatedSubmission", key, request_body, status, expected
    )


@pytest.mark.parametrize(("request_body", "status", "expected", "kw"), LAST_CASES)
async def test_handle_last_snapshot_submission(
    redis_url: str, request_body: dict[str, Any], status: int, expected: Any, kw: Any
) -> None:
    key = f"LastSnapshotSubmissionKey.{LC}.1"
    await last_submission(redis_url, "/lastSnapshotSubmission", key, request_body, status, expected)

"""Every path of the read API fuzzed from the app's own OpenAPI document (schemathesis 4),
over real HTTP to the app served under uvicorn, against a seeded redis-server: no 5xx but
Go's documented not-found 500s, every answer conforming to the document (status, content
type, schema), and no traceback or error in the log.

Bodies are generated from the document (positive: they fit it; negative: they do not), and
half of them get the right token and a configured market (in a random case), so the checks
behind the token and market run too. `EXAMPLES` per path and mode bounds the run (about
20 s on 2 loaded cores); the count run is printed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
import structlog
from anyio.from_thread import start_blocking_portal
from apikit import LC, MARKET, TOKEN, settings_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from seqcollector.api.app import build_app
from seqcollector.api.server import serve
from seqcollector.runtime.executor import redis_client

pytestmark = pytest.mark.redis
EXAMPLES = int(os.environ.get("SEQ_API_FUZZ_EXAMPLES", "40"))
# Go's 500s for what is not in Redis (go-rewards-api.md section 3), kept for its clients
GO_NOT_FOUND_500 = {
    "/batchCount": "Failed to fetch batch count",
    "/lastSimulatedSubmission": "Failed to fetch last simulated submission",
    "/lastSnapshotSubmission": "Failed to fetch last snapshot submission",
    "/snapshotterNodeVersion": "Failed to fetch snapshotter node version",
}


def seed(url: str) -> None:
    """Something for every path to find (slot 1, day 5, epoch 7)."""
    with redis.Redis.from_url(url) as r:
        r.set(f"CurrentDayKey.{LC}", "5")
        r.set(f"EligibleSlotSubmissionsKey.{LC}.5.1", "3")
        r.set(f"SlotSubmissionsKey.{LC}.5.1", "4")
        r.sadd(f"EligibleNodeByDayKey.{LC}.5", "1", "2")
        r.set(f"BatchCountKey.{LC}.7", "2")
        r.hset(f"EpochSubmissionsKey.{LC}.7", "s1", '{"request":{"slotId":1,"epochId":7}}')
        r.hset(f"EligibleSlotSubmissionByEpochKey.{LC}.5.7", "1", "3")
        r.hset(f"DiscardedSubmissionKey.{LC}.5.7", "p", '{"mostFrequentSnapshotCID":"c"}')
        r.hset(f"DiscardedSubmissionKey.{LC}.5", "1", '{"p":{"finalizedCID":"c"}}')
        r.set(f"LastSimulatedSubmissionKey.{LC}.1", "1700000000")
        r.set(f"LastSnapshotSubmissionKey.{LC}.1", "1700000000")
        r.set(f"snapshotter:{LC}:1:node_version", "v1.0.0")
        r.sadd(f"ActiveSnapshottersForEpoch.{LC}.7", "1")


@pytest.fixture
def base_url(redis_url: str) -> Iterator[str]:
    """The app served in a thread of its own (schemathesis' client is synchronous)."""
    seed(redis_url)
    with start_blocking_portal() as portal:
        client = redis_client(redis_url)
        app = build_app(settings_for(redis_url), client)
        future, port = portal.start_task(serve, app, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}"
        future.cancel()
        portal.call(client.aclose)


NEAR_SEEDS = {
    "slotID": st.integers(1, 2),
    "day": st.integers(4, 5),
    "epochID": st.integers(7, 8),
    "pastDays": st.integers(1, 5),
    "page": st.integers(0, 2),
}


def with_credentials(body: Any, market_case: str, data: st.DataObject) -> Any:
    """`body` with the right token and market, and (half the time) its numbers near the
    seeded slot, day and epoch, so the reads behind the checks run."""
    if not isinstance(body, dict):
        return body
    market = {"lower": MARKET.lower(), "upper": "0x" + MARKET[2:].upper()}.get(market_case, MARKET)
    out = {**body, "token": TOKEN, "dataMarketAddress": market}
    if data.draw(st.booleans(), label="near seeds"):
        out |= {k: data.draw(v, label=k) for k, v in NEAR_SEEDS.items() if k in body}
    return out


def test_fuzz_every_path(base_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    schema = schemathesis.openapi.from_url(base_url + "/swagger/doc.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(op.path for op in operations) == sorted(
        ["/totalSubmissions", "/eligibleNodesCountPastDays", "/eligibleNodesCount", "/batchCount",
         "/epochSubmissionDetails", "/eligibleSlotSubmissionCount",
         "/discardedSubmissionsByEpoch", "/discardedSubmissionsByDay",
         "/lastSimulatedSubmission", "/lastSnapshotSubmission", "/activeNodesCountByEpoch",
         "/snapshotterNodeVersion"]
    )  # fmt: skip
    ran: dict[str, int] = {}
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    with structlog.testing.capture_logs() as logs:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(
                    case=op.as_strategy(generation_mode=mode),
                    credentials=st.sampled_from(["none", "exact", "lower", "upper"]),
                    data=st.data(),
                )
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def fuzz(case: Any, credentials: str, data: st.DataObject) -> None:
                    if credentials != "none":
                        case.body = with_credentials(case.body, credentials, data)
                    path = case.operation.path
                    response = case.call(base_url=base_url, timeout=30)
                    with lock:
                        ran[path] = ran.get(path, 0) + 1
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code >= 500:
                        allowed = GO_NOT_FOUND_500.get(path)
                        error = response.json()["error"]
                        assert response.status_code == 500 and allowed and allowed in error, (
                            path,
                            case.body,
                            response.status_code,
                            response.text,
                        )
                    case.validate_response(
                        response,
                        checks=[
                            status_code_conformance,
                            content_type_conformance,
                            response_schema_conformance,
                        ],
                    )
                    assert response.headers["x-request-id"][0] == response.json()["requestID"]

                fuzz()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, out + err
    bad = [e for e in logs if e.get("log_level") in ("error", "critical") or "exc_info" in e]
    assert not bad, bad
    total = sum(ran.values())
    shown = dict(sorted(statuses.items()))
    print(f"\nfuzzed {total} requests over {len(ran)} paths; statuses {shown}")
    assert len(ran) == 12 and total >= 12 * EXAMPLES

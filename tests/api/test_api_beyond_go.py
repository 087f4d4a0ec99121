"""The read API beyond the Go collector's own tests, over real HTTP against a real
redis-server: the two paths Go never tested, CORS and X-Request-ID as Go, bodies Go
mishandles, markets in any case, Redis values of the wrong shape, deterministic order,
and a test for each Go defect fixed (A1-A7 of go-rewards-api.md section 3) that fails on
Go's behaviour."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from apikit import LC, MARKET, TOKEN, Api, served, settings_for
from litestar import Request as LitestarRequest
from litestar import post

from seqcollector.api import endpoints, swagger
from seqcollector.api.app import MAX_BODY_BYTES, build_app
from seqcollector.api.server import serve
from seqcollector.runtime.executor import redis_client
from sim.redis_server import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def body(**fields: Any) -> dict[str, Any]:
    return {"token": TOKEN, "dataMarketAddress": MARKET, **fields}


# ---------------------------------------------------------------- the two untested paths


async def test_active_nodes_count_by_epoch(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.sadd(f"ActiveSnapshottersForEpoch.{LC}.7", "1", "2", "3")
        assert (await api.call("/activeNodesCountByEpoch", body(epochID=7))).response == 3
        assert (await api.call("/activeNodesCountByEpoch", body(epochID=8))).response == 0
        assert (await api.call("/activeNodesCountByEpoch", body(epochID=0))).error == (
            "EpochID is missing or invalid"
        )
        bad = await api.call("/activeNodesCountByEpoch", body(epochID=7, token="x"))
        assert (bad.status, bad.error) == (401, "Incorrect Token!")
        await api.redis.set(f"ActiveSnapshottersForEpoch.{LC}.9", "not a set")
        wrong = await api.call("/activeNodesCountByEpoch", body(epochID=9))
        assert wrong.status == 500 and "WRONGTYPE" in wrong.error


async def test_snapshotter_node_version(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"snapshotter:{LC}:4:node_version", "v1.2.3")
        assert (await api.call("/snapshotterNodeVersion", body(slotID=4))).response == "v1.2.3"
        missing = await api.call("/snapshotterNodeVersion", body(slotID=5))
        assert (missing.status, missing.error) == (500, "Failed to fetch snapshotter node version")
        zero = await api.call("/snapshotterNodeVersion", body(slotID=0))
        assert (zero.status, zero.error) == (400, "Invalid slotID: 0")
        # M before S, as Go: a bad market with a bad slot is the market's error
        both = await api.call("/snapshotterNodeVersion", body(slotID=0, dataMarketAddress="0x1"))
        assert both.error == "Invalid Data Market Address!"


async def test_last_submission_node_version_and_go_encoding(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"LastSnapshotSubmissionKey.{LC}.2", "0")
        await api.redis.set(f"snapshotter:{LC}:2:node_version", "<v2>&")
        answer = await api.call("/lastSnapshotSubmission", body(slotID=2))
        assert answer.response["nodeVersion"] == "<v2>&"
        assert "\\u003cv2\\u003e\\u0026" in answer.text  # escaped as Go's encoder does
        assert answer.text.endswith("}\n")  # Go's Encoder ends with a newline


# ------------------------------------------------------------------ CORS and request ids


async def test_cors_preflight_as_gorilla(redis_url: str) -> None:
    async with served(redis_url) as api:
        pre = {"Origin": "http://dash.example", "Access-Control-Request-Method": "POST"}
        ok = await api.call(
            "/batchCount",
            method="OPTIONS",
            headers={**pre, "Access-Control-Request-Headers": "content-type, x-request-id"},
        )
        # 200 with no body: the handler (which would answer 400 for no body) never ran
        assert (ok.status, ok.text) == (200, "")
        assert ok.headers["Access-Control-Allow-Origin"] == "*"
        assert ok.headers["Access-Control-Allow-Headers"] == "Content-Type,X-Request-Id"
        assert "Access-Control-Allow-Methods" not in ok.headers  # POST is a simple method
        assert "Access-Control-Expose-Headers" not in ok.headers
        put = await api.call(
            "/batchCount", method="OPTIONS", headers={**pre, "Access-Control-Request-Method": "PUT"}
        )
        assert (put.status, put.headers["Access-Control-Allow-Methods"]) == (200, "PUT")
        patch = await api.call(
            "/batchCount",
            method="OPTIONS",
            headers={**pre, "Access-Control-Request-Method": "PATCH"},
        )
        assert patch.status == 405 and "PATCH" in patch.error
        header = await api.call(
            "/batchCount",
            method="OPTIONS",
            headers={**pre, "Access-Control-Request-Headers": "X-Secret"},
        )
        assert header.status == 403 and "X-Secret" in header.error
        no_method = await api.call("/batchCount", method="OPTIONS", headers={"Origin": "http://x"})
        assert no_method.status == 400
        bare = await api.call("/batchCount", method="OPTIONS")
        assert (bare.status, bare.text) == (200, "")
        assert "Access-Control-Allow-Origin" not in bare.headers


async def test_cors_on_answers(redis_url: str) -> None:
    async with served(redis_url) as api:
        with_origin = await api.call("/batchCount", body(epochID=1), headers={"Origin": "http://x"})
        assert with_origin.status == 500  # Go's status for an epoch without a count
        assert with_origin.headers["Access-Control-Allow-Origin"] == "*"
        without = await api.call("/batchCount", body(epochID=1))
        assert "Access-Control-Allow-Origin" not in without.headers


async def test_request_id_new_per_response_and_in_the_body(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.1", "3")
        sent = {"X-Request-ID": "client-chosen"}
        answers = [
            await api.call("/batchCount", body(epochID=1), headers=sent),  # 200
            await api.call("/batchCount", body(epochID=1, token="no")),  # 401
            await api.call("/batchCount", raw=b"{"),  # 400
            await api.call("/nowhere", body()),  # 404
            await api.call("/batchCount", raw=b" " * (MAX_BODY_BYTES + 1)),  # 413
        ]
        ids = [a.headers["X-Request-ID"] for a in answers]
        assert len(set(ids)) == len(ids) and "client-chosen" not in ids
        for rid, answer in zip(ids, answers, strict=True):
            assert uuid.UUID(rid).version == 4
            assert answer.json()["requestID"] == rid
        pre = await api.call(
            "/batchCount",
            method="OPTIONS",
            headers={"Origin": "x", "Access-Control-Request-Method": "POST"},
        )
        assert uuid.UUID(pre.headers["X-Request-ID"]).version == 4


# ---------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{", "not valid JSON"),
        (b'{"epochID": 1} trailing', "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"epochID": "1"}', "epochID must be an integer"),
        (b'{"epochID": 1.0}', "epochID must be an integer"),
        (b'{"epochID": 1e2}', "epochID must be an integer"),
        (b'{"epochID": true}', "epochID must be an integer"),
        (b'{"epochID": 9223372036854775808}', "epochID is out of range"),
        (b'{"token": 5}', "token must be a string"),
        (b'{"dataMarketAddress": ["0x"]}', "dataMarketAddress must be a string"),
    ],
)
async def test_bad_bodies_are_400_with_a_json_error(redis_url: str, raw: bytes, words: str) -> None:
    async with served(redis_url) as api:
        answer = await api.call("/batchCount", raw=raw)
        assert answer.status == 400, answer.text
        assert words in answer.error


async def test_null_body_is_all_defaults_and_keys_match_in_any_case(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        assert (await api.call("/batchCount", raw=b"null")).status == 401  # Go: all zeros
        nulls = {"token": TOKEN, "dataMarketAddress": MARKET, "epochID": None}
        assert (await api.call("/batchCount", nulls)).error == "EpochID is missing or invalid"
        folded = {"TOKEN": TOKEN, "DataMarketAddress": MARKET, "EPOCHid": 3, "unknown": [1]}
        assert (await api.call("/batchCount", folded)).response == {"totalBatches": 2}


async def test_oversized_bodies_are_413(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        fits = json.dumps(body(epochID=3)).encode()
        fits += b" " * (MAX_BODY_BYTES - len(fits))
        assert (await api.call("/batchCount", raw=fits)).response == {"totalBatches": 2}
        over = await api.call("/batchCount", raw=fits + b" ")
        assert over.status == 413 and str(MAX_BODY_BYTES) in over.error

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(3):
                yield b" " * MAX_BODY_BYTES

        async with api.session.post(api.url + "/batchCount", data=chunks()) as r:
            assert r.status == 413
            assert "at most" in (await r.json())["error"]


async def test_any_method_answers_as_post(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            answer = await api.call("/batchCount", body(epochID=3), method=method)
            assert answer.response == {"totalBatches": 2}, method
        assert (await api.call("/batchCount", method="GET")).status == 400  # Go: 400 "EOF"


async def test_market_in_any_case(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        for market in (MARKET.lower(), "0x" + MARKET[2:].upper(), MARKET):
            answer = await api.call("/batchCount", body(epochID=3, dataMarketAddress=market))
            assert answer.response == {"totalBatches": 2}, market  # Go: 400 unless byte-equal


async def test_a_configured_market_in_any_case(redis_url: str) -> None:
    settings = settings_for(redis_url, markets=(MARKET.upper().replace("0X", "0x"),))
    async with served(redis_url, settings) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        assert (await api.call("/batchCount", body(epochID=3))).response == {"totalBatches": 2}


async def test_token_compare_is_constant_time_and_exact(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = endpoints.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(endpoints.hmac, "compare_digest", spy)
    async with served(redis_url) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        assert (await api.call("/batchCount", body(epochID=3, token=TOKEN[:-1]))).status == 401
        assert (await api.call("/batchCount", body(epochID=3, token=TOKEN + " "))).status == 401
        assert (await api.call("/batchCount", body(epochID=3))).status == 200
    assert calls == [
        (TOKEN[:-1].encode(), TOKEN.encode()),
        (TOKEN.encode() + b" ", TOKEN.encode()),
        (TOKEN.encode(), TOKEN.encode()),
    ]


async def test_an_empty_read_token_lets_nothing_in(redis_url: str) -> None:
    async with served(redis_url, settings_for(redis_url, token="")) as api:
        await api.redis.set(f"BatchCountKey.{LC}.3", "2")
        # Go: an absent token equals the empty AUTH_READ_TOKEN, so anyone reads
        no_token = {"dataMarketAddress": MARKET, "epochID": 3}
        assert (await api.call("/batchCount", no_token)).status == 401
        assert (await api.call("/batchCount", body(epochID=3, token=""))).status == 401


# ------------------------------------------------------- Redis values of the wrong shape


async def test_non_integer_values_are_an_error_for_that_request_only(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        await api.redis.set(f"EligibleSlotSubmissionsKey.{LC}.4.1", "12x")  # A2: Go dies
        answer = await api.call("/totalSubmissions", body(slotID=1, pastDays=2))
        assert answer.status == 500
        assert f"EligibleSlotSubmissionsKey.{LC}.4.1" in answer.error and "12x" in answer.error
        # the process is alive and the other days answer
        ok = await api.call("/totalSubmissions", body(slotID=1, pastDays=1))
        assert ok.response == [{"day": 5, "eligibleSubmissions": 0, "totalSubmissions": 0}]
        await api.redis.set(f"SlotSubmissionsKey.{LC}.5.1", "1.5")  # Go: 0, logged
        assert (
            f"SlotSubmissionsKey.{LC}.5.1"
            in (await api.call("/totalSubmissions", body(slotID=1, pastDays=1))).error
        )
        await api.redis.set(f"CurrentDayKey.{LC}", "five")  # Go: day 0, a 400 about past days
        day = await api.call("/eligibleNodesCount", body(day=1))
        assert day.status == 500 and f"CurrentDayKey.{LC}" in day.error
        await api.redis.set(f"BatchCountKey.{LC}.2", "ten")
        batch = await api.call("/batchCount", body(epochID=2))
        assert batch.status == 500 and f"BatchCountKey.{LC}.2" in batch.error
        await api.redis.set(f"LastSimulatedSubmissionKey.{LC}.1", "soon")
        last = await api.call("/lastSimulatedSubmission", body(slotID=1))
        assert last.status == 500 and f"LastSimulatedSubmissionKey.{LC}.1" in last.error


async def test_malformed_stored_json(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        key = f"DiscardedSubmissionKey.{LC}.5"
        await api.redis.hset(key, mapping={"1": "{not json", "2": json.dumps({"p": None})})
        bad = await api.call("/discardedSubmissionsByDay", body(day=5, slotID=1))
        assert bad.status == 500 and key in bad.error  # A1: Go answers 200 with no body
        # a null project: Go dereferences nil and drops the connection
        null = await api.call("/discardedSubmissionsByDay", body(day=5, slotID=2))
        empty = {"finalizedCID": "", "discardedSubmissionCount": 0, "discardedSubmissions": []}
        assert null.response["discardedSubmissions"] == [{"projectID": "p", "details": empty}]
        subs = f"EpochSubmissionsKey.{LC}.4"
        await api.redis.hset(subs, mapping={
            "a": json.dumps({"signature": "s"}),  # no request: Go panics, connection dropped
            "b": "not json",  # skipped, as Go
            "c": json.dumps({"request": {"slotId": "7", "epochId": 4}, "unknown": 1}),  # skipped
            "d": json.dumps({"request": {"slotId": "7", "snapshotCid": "Q"}, "header": "h",
                             "dataMarket": "x", "nodeVersion": "v"}),
        })  # fmt: skip
        got = (await api.call("/epochSubmissionDetails", body(epochID=4))).response
        assert got == {
            "submissions": [
                {"submissionID": "a", "submissionData": {"request": {}, "signature": "s"}},
                {
                    "submissionID": "d",
                    "submissionData": {"request": {"slotID": 7, "snapshotCID": "Q"}, "header": "h"},
                },
            ]
        }


async def test_redis_unreachable_is_503(redis_url: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    redis = redis_client(dead, connect_timeout_s=1.0)
    app = build_app(settings_for(dead), redis)
    import anyio

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, app, "127.0.0.1", 0)
        async with aiohttp.ClientSession() as session:
            api = Api(f"http://127.0.0.1:{port}", session, redis)
            answer = await api.call("/batchCount", body(epochID=1))
            assert answer.status == 503 and "Redis unavailable" in answer.error
        tg.cancel_scope.cancel()
    await redis.aclose()


# --------------------------------------------------------------------- deterministic order


async def test_lists_are_sorted_and_stable(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        await api.redis.sadd(f"EligibleNodeByDayKey.{LC}.5", "10", "9", "2", "100", "x")
        nodes = await api.call("/eligibleNodesCount?includeSlotDetails=true", body(day=5))
        assert nodes.response["slotIDs"] == ["2", "9", "10", "100", "x"]
        flag = await api.call("/eligibleNodesCount?includeSlotDetails=True", body(day=5))
        assert flag.response == {"day": 5, "eligibleNodesCount": 5, "slotIDs": []}  # exactly "true"
        counts = {str(s): s * 2 for s in (12, 3, 7, 100)} | {"x": "1", "4": "y"}  # skipped, as Go
        await api.redis.hset(f"EligibleSlotSubmissionByEpochKey.{LC}.5.9", mapping=counts)
        got = (await api.call("/eligibleSlotSubmissionCount", body(day=5, epochID=9))).response
        assert got["eligibleSubmissionCounts"] == [
            {"slotID": s, "count": s * 2} for s in (3, 7, 12, 100)
        ]
        details = {
            "MostFrequentSnapshotCID": "c",
            "DiscardedSubmissionCount": 1,
            "DiscardedSubmissions": {"9": ["a"], "10": ["b"]},
        }  # the finalizer's keys
        projects = {f"project{n:03d}": json.dumps(details) for n in range(60, 0, -1)}
        await api.redis.hset(f"DiscardedSubmissionKey.{LC}.5.9", mapping=projects)
        first = (await api.call("/discardedSubmissionsByEpoch", body(day=5, epochID=9))).response
        again = (await api.call("/discardedSubmissionsByEpoch", body(day=5, epochID=9))).response
        assert first == again
        assert [p["projectID"] for p in first["projects"]] == [
            f"project{n:03d}" for n in range(1, 51)
        ]
        assert first["projects"][0]["details"] == {
            "mostFrequentSnapshotCID": "c",
            "discardedSubmissionCount": 1,
            "discardedSubmissions": {"10": ["b"], "9": ["a"]},  # Go's encoder sorts map keys
        }


async def test_by_day_pages(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        entry = {"finalizedCID": "f", "discardedSubmissionCount": 1, "discardedSubmissions": ["c"]}
        projects = {f"p{n:03d}": entry for n in range(120, 0, -1)}
        await api.redis.hset(f"DiscardedSubmissionKey.{LC}.5", mapping={"3": json.dumps(projects)})

        async def page(n: int) -> Any:
            return (
                await api.call("/discardedSubmissionsByDay", body(day=5, slotID=3, page=n))
            ).response

        pages = [(0, 1, "p001", 50), (-4, 1, "p001", 50), (2, 2, "p051", 50), (3, 3, "p101", 20)]
        for asked, current, first, count in [*pages, (4, 4, None, 0)]:
            got = await page(asked)
            assert (got["slotID"], got["totalPages"], got["currentPage"]) == (3, 3, current)
            ids = [p["projectID"] for p in got["discardedSubmissions"]]
            assert len(ids) == count and (ids[0] if ids else None) == first
            assert ids == sorted(ids)
        missing = await api.call("/discardedSubmissionsByDay", body(day=5, slotID=4))
        assert (missing.status, missing.error) == (
            404,
            "No discarded submissions found for slotID 4",
        )


# -------------------------------------------------------------- the other Go defects


async def test_a3_empty_lists_are_arrays_not_null(redis_url: str) -> None:
    async with served(redis_url) as api:
        got = (await api.call("/discardedSubmissionsByEpoch", body(day=5, epochID=9))).response
        assert got == {"projects": []}  # Go: {"projects": null}
        assert (await api.call("/epochSubmissionDetails", body(epochID=9))).response == {
            "submissions": []
        }
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        await api.redis.hset(f"DiscardedSubmissionKey.{LC}.5", mapping={"1": "null"})
        got = (await api.call("/discardedSubmissionsByDay", body(day=5, slotID=1))).response
        assert got["discardedSubmissions"] == []  # Go: null


async def test_a5_answers_from_redis_alone(redis_url: str) -> None:
    # No RPC node anywhere: a cache miss Go would answer from the chain.
    async with served(redis_url) as api:
        missing = await api.call("/totalSubmissions", body(slotID=1, pastDays=1))
        assert (missing.status, missing.error) == (400, "Failed to fetch current day")
        await api.redis.set(f"CurrentDayKey.{LC}", "2")
        await api.redis.set(f"SlotSubmissionsKey.{LC}.2.1", "4")
        got = (await api.call("/totalSubmissions", body(slotID=1, pastDays=2))).response
        assert got == [
            {"day": 2, "eligibleSubmissions": 0, "totalSubmissions": 4},
            {"day": 1, "eligibleSubmissions": 0, "totalSubmissions": 0},
        ]


async def test_a6_by_day_without_entries_is_gos_empty_answer(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "5")
        got = (
            await api.call("/discardedSubmissionsByDay", body(day=5, slotID=2, page=-3))
        ).response
        assert got == {"slotID": 2, "discardedSubmissions": [], "totalPages": 0, "currentPage": -3}


async def test_past_days_are_bounded(redis_url: str) -> None:
    async with served(redis_url) as api:
        await api.redis.set(f"CurrentDayKey.{LC}", "20000")
        far = await api.call("/eligibleNodesCountPastDays", body(pastDays=10_001))
        assert far.status == 400 and "10000" in far.error
        near = (await api.call("/eligibleNodesCountPastDays", body(pastDays=2))).response
        assert [d["day"] for d in near] == [20000, 19999]


# ------------------------------------------------------------ other route handlers, Swagger


async def test_extra_route_handlers_get_no_cap_and_no_token(redis_url: str) -> None:
    @post("/probe", status_code=200, include_in_schema=False)
    async def probe(request: LitestarRequest[Any, Any, Any]) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    redis = redis_client(redis_url)
    app = build_app(settings_for(redis_url), redis, route_handlers=[probe])
    import anyio

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, app, "127.0.0.1", 0)
        async with aiohttp.ClientSession() as session:
            api = Api(f"http://127.0.0.1:{port}", session, redis)
            big = await api.call("/probe", raw=b"x" * (MAX_BODY_BYTES * 2))
            assert (big.status, big.json()) == (200, {"bytes": MAX_BODY_BYTES * 2})
            assert uuid.UUID(big.headers["X-Request-ID"])
        tg.cancel_scope.cancel()
    await redis.aclose()


async def test_openapi_document_lists_the_twelve_paths(redis_url: str) -> None:
    async with served(redis_url) as api:
        async with api.session.get(api.url + "/swagger/doc.json") as r:
            assert r.status == 200
            doc = await r.json()
        assert sorted(doc["paths"]) == sorted(ep.path for ep in endpoints.ENDPOINTS)
        assert len(doc["paths"]) == 12
        for path, item in doc["paths"].items():
            assert list(item) == ["post"], path
            op = item["post"]
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert "token" in schema["properties"] and "dataMarketAddress" in schema["properties"]
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok["properties"]["info"]["properties"]["response"], path
            assert {"400", "401", "413"} <= set(op["responses"]), path
        assert "$ref" not in json.dumps(doc)
        for page in ("/swagger/", "/swagger/index.html"):
            async with api.session.get(api.url + page) as r:
                assert r.status == 200 and "/swagger/doc.json" in await r.text()
        async with api.session.get(api.url + "/swagger/assets/swagger-ui-bundle.js") as r:
            assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        async with api.session.get(api.url + "/swagger/assets/../../README.md") as r:
            assert r.status == 404


async def test_swagger_without_assets_says_to_run_make_setup(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(swagger, "ASSETS_DIR", tmp_path / "absent")
    async with served(redis_url) as api:
        answer = await api.call("/swagger/", method="GET")
        assert answer.status == 503 and "make setup" in answer.error
        async with api.session.get(api.url + "/swagger/doc.json") as r:
            assert r.status == 200  # the document needs no assets

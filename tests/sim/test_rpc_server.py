"""TesterRpcServer: a deterministic eth-tester chain with ProtocolState deployed, read over
HTTP JSON-RPC by the collector's own sources (RpcPool, fetch_headers, LogRanges,
ChainFollower, read_market_params), node-style JSON, errors, the fault proxy in front, and
chain mutations from another thread while the server answers. 127.0.0.1 only."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from eth_tester import EthereumTester  # type: ignore[import-untyped]

from seqcollector.core.abi import (
    DAY_STARTED,
    EPOCH_RELEASED,
    DayStarted,
    EpochReleased,
    decode_event,
)
from seqcollector.core.inputs import Block, Log, Rewind
from seqcollector.runtime.startup import check_contract, read_market_params
from seqcollector.sources import ChainFollower, LogRanges, RpcPool, fetch_headers
from seqcollector.sources.follower import linked_prefix
from seqcollector.sources.retrying import Backoff
from seqcollector.sources.rpc import RpcError
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.rpc_proxy import RpcProxy
from sim.rpc_server import TesterRpcServer, node_json

pytestmark = pytest.mark.anyio

MARKET = "0x" + "a1" * 20
OTHER_MARKET = "0x" + "b2" * 20
EPOCHS = 5  # epochs 3 and 5 open days 2 and 3 (2 epochs a day)
TIMEOUT_S = 30.0
FAST = Backoff(first_s=0.02, max_s=0.1)


@dataclass
class Chain:
    tester: EthereumTester
    server: TesterRpcServer
    address: str
    client: ProtocolStateClient

    @property
    def head(self) -> int:
        with self.server.lock:
            return int(self.tester.get_block_by_number("latest")["number"])

    def block(self, number: int) -> dict[str, Any]:
        with self.server.lock:
            block: dict[str, Any] = self.tester.get_block_by_number(number)
            return block


@pytest.fixture
async def chain(anyio_backend: str) -> AsyncIterator[Chain]:
    """ProtocolState with MARKET (2 epochs a day) and EPOCHS epochs released, then 2 empty
    blocks, served over HTTP. The chain is built the way a simulation actor would: the
    in-process AsyncWeb3 on the tester, each call under the server's lock."""
    tester = deterministic_tester(seed=7)
    with TesterRpcServer(tester) as server:
        w3 = async_web3(tester)
        with server.lock:
            address = await deploy_protocol_state(w3)
        client = ProtocolStateClient(w3, address)
        with server.lock:
            await client.create_data_market(MARKET)
        with server.lock:
            await client.set_epochs_in_a_day(MARKET, 2)
        for epoch in range(1, EPOCHS + 1):
            with server.lock:
                await client.release_epoch(MARKET, 10 * epoch, 10 * epoch + 9)
        with server.lock:
            mine(tester, 2)
        yield Chain(tester, server, address, client)


def pool_for(url: str) -> RpcPool:
    return RpcPool([url], request_timeout_s=10, demote_s=0.1)


def post(url: str, body: Any) -> Any:
    """One HTTP POST of a raw JSON-RPC body -> the decoded JSON reply."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def call(rid: Any, method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)}


# -- through the collector's sources -----------------------------------------------------


async def test_headers_match_the_tester_blocks(chain: Chain) -> None:
    head = chain.head
    assert head == 3 + EPOCHS + 2
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool:
            assert await pool.head() == head
            headers = await fetch_headers(pool, 0, head, chunk=4)
    assert [h.number for h in headers] == list(range(head + 1))
    for header in headers:
        block = chain.block(header.number)
        assert header.hash == block["hash"].lower()
        assert header.parent_hash == block["parent_hash"].lower()
        assert header.timestamp == block["timestamp"] == 1_700_000_000 + 2 * header.number
    assert linked_prefix(headers) == headers
    assert pool.stats["batches"] == {pool.endpoints[0]: 3}  # 11 headers in chunks of 4
    assert pool.stats["calls"]["eth_getBlockByNumber"] == head + 1
    assert not pool.stats["errors"]


async def test_logs_come_back_and_decode(chain: Chain) -> None:
    head = chain.head
    ranges = LogRanges(span=3)  # several eth_getLogs ranges; the last ends beyond the head
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool:
            logs = await ranges.fetch_logs(
                pool, chain.address, [EPOCH_RELEASED, DAY_STARTED], 0, head + 5
            )
            only_epochs = await LogRanges().fetch_logs(
                pool, chain.address.upper().replace("0X", "0x"), [EPOCH_RELEASED], 0, head
            )
            elsewhere = await LogRanges().fetch_logs(
                pool, "0x" + "00" * 20, [EPOCH_RELEASED], 0, head
            )
    assert pool.stats["calls"]["eth_getLogs"] > 2
    events = [decode_event(log.topics, log.data) for log in logs]
    E, D = EpochReleased, DayStarted
    assert [type(e) for e in events] == [E, E, D, E, E, D, E]
    released = [e for e in events if isinstance(e, EpochReleased)]
    assert [(e.market, e.epoch, e.begin, e.end) for e in released] == [
        (MARKET, n, 10 * n, 10 * n + 9) for n in range(1, EPOCHS + 1)
    ]
    assert [e.day for e in events if isinstance(e, DayStarted)] == [2, 3]
    for log in logs:
        block = chain.block(log.block_number)
        assert log.address == chain.address.lower()
        assert log.block_hash == block["hash"].lower()
        assert log.tx_hash == block["transactions"][0].lower()
        assert log.data == log.data.lower() and all(t == t.lower() for t in log.topics)
    assert [log.topics[0] for log in only_epochs] == [EPOCH_RELEASED] * EPOCHS
    assert elsewhere == []


async def test_batch_request_is_one_http_request(chain: Chain) -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool:
            before = chain.server.http_requests
            chain_id, head, code, missing = await pool.batch(
                [
                    ("eth_chainId", []),
                    ("eth_blockNumber", []),
                    ("eth_getCode", [chain.address, "latest"]),
                    ("eth_getBlockByNumber", [hex(chain.head + 100), False]),
                ]
            )
            await check_contract(pool.request, chain.address)  # eth_getCode non-empty
    assert chain.server.http_requests == before + 2
    assert pool.stats["batches"] == {pool.endpoints[0]: 1}
    assert chain_id == hex(131277322940537)
    assert head == hex(chain.head)
    with chain.server.lock:
        deployed = chain.tester.get_code(chain.address)
    assert code == deployed.lower() and len(code) > 2
    assert missing is None


async def test_read_market_params_through_http(chain: Chain) -> None:
    with chain.server.lock:
        expected = await chain.client.read_market_params(MARKET)
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool:
            (params,) = await read_market_params(pool.request, chain.address, [MARKET])
            (unregistered,) = await read_market_params(pool.request, chain.address, [OTHER_MARKET])
    assert params.market == MARKET
    assert (
        params.submission_window,
        params.day_size,
        params.daily_quota,
        params.epochs_in_a_day,
        params.day_counter,
    ) == (
        expected["snapshotSubmissionWindow"],
        expected["DAY_SIZE"],
        expected["dailySnapshotQuota"],
        expected["epochsInADay"],
        expected["dayCounter"],
    )
    assert (params.epochs_in_a_day, params.day_counter) == (2, 3)
    assert unregistered.epochs_in_a_day == 0


async def test_follower_from_block_zero_yields_every_block(chain: Chain) -> None:
    head = chain.head
    items: list[Block | Log | Rewind] = []
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool:
            follower = ChainFollower(
                pool, chain.address, start_block=0, range_blocks=4, poll_interval_s=0.05, retry=FAST
            )
            async with aclosing(follower.inputs()) as stream:  # type: ignore[type-var]
                async for item in stream:
                    items.append(item)
                    if isinstance(item, Block) and item.number == head:
                        break  # the last two blocks are empty: every log is out
    blocks = [i for i in items if isinstance(i, Block)]
    assert [b.number for b in blocks] == list(range(head + 1))
    assert all(not isinstance(i, Rewind) for i in items)
    current = -1
    for item in items:
        if isinstance(item, Block):
            assert item.hash == chain.block(item.number)["hash"].lower()
            current = item.number
        else:
            assert isinstance(item, Log) and item.block_number == current
    logs = [i for i in items if isinstance(i, Log)]
    epochs = [getattr(decode_event(i.topics, i.data), "epoch", None) for i in logs]
    assert [e for e in epochs if e is not None] == list(range(1, EPOCHS + 1))
    assert len(logs) == EPOCHS + 2  # and the two DayStartedEvents


async def test_fault_proxy_in_front(chain: Chain) -> None:
    with RpcProxy(chain.server.url, seed=3) as proxy:
        proxy.max_logs_range = 2
        with anyio.fail_after(TIMEOUT_S):
            async with pool_for(proxy.url) as pool:
                headers = await fetch_headers(pool, 0, chain.head)
                logs = await LogRanges(span=8).fetch_logs(
                    pool, chain.address, [EPOCH_RELEASED], 0, chain.head
                )
    assert [h.hash for h in headers] == [
        chain.block(n)["hash"].lower() for n in range(len(headers))
    ]
    assert len(logs) == EPOCHS
    assert proxy.faults["logs_range"] >= 1
    assert proxy.calls["eth_getBlockByNumber"] == chain.head + 1


# -- node-style JSON and errors ----------------------------------------------------------


async def test_wire_format_is_node_style(chain: Chain) -> None:
    url, head = chain.server.url, chain.head
    selector = "0x" + bytes.fromhex("00" * 4).hex()  # no such function: the call reverts
    replies = await anyio.to_thread.run_sync(
        post,
        url,
        [
            call(1, "eth_blockNumber"),
            call("two", "eth_getBlockByNumber", "latest", False),
            call(3, "eth_getBlockByNumber", hex(head + 1), False),
            call(4, "eth_getLogs", {"address": chain.address.lower(), "fromBlock": "0x0"}),
            call(5, "eth_getLogs", {"address": chain.address, "fromBlock": hex(head + 1)}),
            call(6, "net_version"),
            call(7, "eth_noSuchMethod"),
            call(8, "eth_getBlockByNumber", "0xnothex", False),
            call(9, "eth_call", {"to": chain.address, "input": selector}, "latest"),
            call(10, "eth_getBlockByNumber", "0x4", True),
            "not a request",
        ],
    )
    by_id = {r["id"]: r for r in replies}
    assert [r["id"] for r in replies] == [1, "two", 3, 4, 5, 6, 7, 8, 9, 10, None]
    assert all(r["jsonrpc"] == "2.0" for r in replies)
    assert by_id[1]["result"] == hex(head)
    latest = by_id["two"]["result"]
    assert latest["number"] == hex(head)
    assert latest["timestamp"] == hex(1_700_000_000 + 2 * head)
    assert latest["hash"] == chain.block(head)["hash"].lower()
    assert len(latest["logsBloom"]) == 2 + 512
    assert latest["transactions"] == []
    assert by_id[3] == {"jsonrpc": "2.0", "id": 3, "result": None}
    logs = by_id[4]["result"]
    with chain.server.lock:
        expected = list(chain.tester.get_logs(from_block=0, address=chain.address))
    assert len(logs) == len(expected) >= EPOCHS + 2
    assert logs[0]["removed"] is False and "type" not in logs[0]
    assert {k: logs[0][k][:2] for k in ("blockNumber", "logIndex", "transactionIndex")} == {
        "blockNumber": "0x",
        "logIndex": "0x",
        "transactionIndex": "0x",
    }
    assert logs[0]["address"] == chain.address.lower()
    assert by_id[5]["result"] == []
    assert by_id[6]["result"] == "1"
    assert by_id[7]["error"]["code"] == -32601
    assert by_id[8]["error"]["code"] == -32602
    assert by_id[9]["error"]["code"] == 3
    assert by_id[9]["error"]["message"].startswith("execution reverted")
    full = by_id[10]["result"]
    (tx,) = full["transactions"]
    assert tx["blockHash"] == full["hash"] and tx["blockNumber"] == "0x4"
    assert tx["input"].startswith("0x") and "block_hash" not in tx
    assert replies[-1]["error"]["code"] == -32600


async def test_protocol_errors(chain: Chain) -> None:
    url = chain.server.url
    parse = await anyio.to_thread.run_sync(post, url, b"{not json")
    assert parse["error"]["code"] == -32700 and parse["id"] is None
    empty = await anyio.to_thread.run_sync(post, url, [])
    assert empty["error"]["code"] == -32600
    single = await anyio.to_thread.run_sync(post, url, {"id": 5, "method": "eth_chainId"})
    assert single == {"jsonrpc": "2.0", "id": 5, "result": hex(131277322940537)}
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(url) as pool:
            with pytest.raises(RpcError) as excinfo:
                await pool.request("eth_noSuchMethod", [])
    assert excinfo.value.code == -32601


async def test_restricted_methods() -> None:
    tester = deterministic_tester(seed=1)
    with TesterRpcServer(tester, methods={"eth_blockNumber"}) as server:
        replies = await anyio.to_thread.run_sync(
            post, server.url, [call(1, "eth_blockNumber"), call(2, "eth_chainId")]
        )
    assert replies[0]["result"] == "0x0"
    assert replies[1]["error"]["code"] == -32601
    assert server.calls == {"eth_blockNumber": 1, "eth_chainId": 1}


def test_node_json() -> None:
    assert node_json({"a": 0, "b": True, "c": b"\x01", "d": "0xABcd", "e": "1", "f": None}) == {
        "a": "0x0",
        "b": True,
        "c": "0x01",
        "d": "0xabcd",
        "e": "1",
        "f": None,
    }
    assert node_json({"logsBloom": 1})["logsBloom"] == "0x" + "00" * 255 + "01"
    assert node_json([(1, 2)]) == [["0x1", "0x2"]]


# -- threads ---------------------------------------------------------------------------------


async def test_chain_moves_while_the_server_answers(chain: Chain) -> None:
    """Another thread mines (under the lock) while the pool reads headers and logs."""
    start = chain.head
    extra = 40
    done = threading.Event()
    failures: list[BaseException] = []

    def miner() -> None:
        try:
            for _ in range(extra):
                with chain.server.lock:
                    mine(chain.tester, 1)
                time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=miner, daemon=True)
    rounds = 0
    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool:
            thread.start()
            while not done.is_set() or rounds < 3:
                head = await pool.head()
                headers = await fetch_headers(pool, max(0, head - 15), head, chunk=5)
                assert linked_prefix(headers) == headers
                logs = await LogRanges().fetch_logs(pool, chain.address, [EPOCH_RELEASED], 0, head)
                assert len(logs) == EPOCHS
                rounds += 1
            thread.join(timeout=10)
            assert await pool.head() == start + extra
            final = await fetch_headers(pool, 0, start + extra)
    assert not failures
    assert not pool.stats["errors"]
    assert [h.hash for h in final] == [
        chain.block(n)["hash"].lower() for n in range(start + extra + 1)
    ]


async def test_locked_async_web3_releases_epochs_while_the_pool_reads(chain: Chain) -> None:
    """`server.async_web3()` takes the lock by itself: the simulation's actor and the HTTP
    readers share one event loop and the server thread."""
    client = ProtocolStateClient(chain.server.async_web3(), chain.address)
    seen: list[int] = []

    async def reader(pool: RpcPool) -> None:
        for _ in range(20):
            seen.append(await pool.head())
            await anyio.sleep(0.005)

    with anyio.fail_after(TIMEOUT_S):
        async with pool_for(chain.server.url) as pool, anyio.create_task_group() as tg:
            tg.start_soon(reader, pool)
            for epoch in range(EPOCHS + 1, EPOCHS + 4):
                await client.release_epoch(MARKET, 10 * epoch, 10 * epoch + 9)
                await anyio.sleep(0.01)
        async with pool_for(chain.server.url) as pool:
            logs = await LogRanges().fetch_logs(
                pool, chain.address, [EPOCH_RELEASED], 0, chain.head
            )
    assert seen == sorted(seen)
    assert len(logs) == EPOCHS + 3


async def test_close_drops_keep_alive_connections() -> None:
    tester = deterministic_tester(seed=2)
    server = TesterRpcServer(tester)
    with anyio.fail_after(TIMEOUT_S):
        with server:
            async with pool_for(server.url) as pool:
                assert await pool.head() == 0
                assert await pool.head() == 0  # the same connection, kept alive
            server.close()
            server.close()  # idempotent
            async with pool_for(server.url) as pool:
                with pytest.raises(RpcError):
                    await pool.request("eth_blockNumber", [])

"""RpcPool: raw requests and batches on HTTP, WebSocket and eth-tester; failover, demotion,
lag tracking and request counts. Faults come from `sim.rpc_proxy.RpcProxy` on loopback."""

from __future__ import annotations

import anyio
import pytest
from sourcekit import AnvilChain, EthTesterChain

from seqcollector.sources.endpoints import endpoint_name
from seqcollector.sources.rpc import RpcError, RpcPool, TransportError
from sim.redis_server import free_port
from sim.rpc_proxy import RpcProxy

pytestmark = pytest.mark.anyio


def demoted(pool: RpcPool) -> dict[str, bool]:
    return {h["endpoint"]: h["demoted"] for h in pool.health()}


async def test_request_batch_and_counts_over_http(anvil: AnvilChain) -> None:
    anvil.node.mine(5)
    async with RpcPool([anvil.node.url]) as pool:
        assert await pool.request("eth_chainId", []) == "0x7a69"
        results = await pool.batch(
            [("eth_blockNumber", []), ("eth_getBlockByNumber", ["0x2", False])]
        )
        assert results[0] == "0x5" and results[1]["number"] == "0x2"
        name = pool.endpoints[0]
        assert pool.stats["requests"] == {name: 2}  # the batch is one HTTP request
        assert pool.stats["batches"] == {name: 1}
        assert pool.stats["calls"] == {
            "eth_chainId": 1,
            "eth_blockNumber": 1,
            "eth_getBlockByNumber": 1,
        }
        assert pool.total_requests == 2


async def test_error_answer_is_raised_with_its_code_and_does_not_demote(
    anvil: AnvilChain,
) -> None:
    async with RpcPool([anvil.node.url]) as pool:
        with pytest.raises(RpcError) as caught:
            await pool.request("eth_noSuchMethod", [])
        assert not isinstance(caught.value, TransportError)
        assert caught.value.code == -32601 and caught.value.endpoint == pool.endpoints[0]
        assert caught.value.method == "eth_noSuchMethod"
        assert demoted(pool) == {pool.endpoints[0]: False}
        assert pool.stats["errors"] == {pool.endpoints[0]: 1}


async def test_eth_tester_without_batches_gets_single_requests(tester: EthTesterChain) -> None:
    await tester.mine(3)
    async with RpcPool([], providers=[tester.provider]) as pool:
        results = await pool.batch(
            [("eth_blockNumber", []), ("eth_getBlockByNumber", ["0x1", False])]
        )
        assert results[0] == 3 and results[1]["number"] == 1
        assert pool.health()[0]["batching"] is False  # detected once, remembered
        await pool.batch([("eth_blockNumber", [])])
        assert pool.stats["batches"] == {}
        assert pool.stats["calls"]["eth_blockNumber"] == 2
        assert await pool.head() == 3


@pytest.mark.parametrize("fault", ["http_500", "stall"])
async def test_failover_demotes_a_failing_endpoint(anvil: AnvilChain, fault: str) -> None:
    anvil.node.mine(3)
    with RpcProxy(anvil.node.url) as proxy:
        if fault == "http_500":
            proxy.error_rate = 1.0
        else:
            proxy.stall_rate, proxy.stall_s = 1.0, 3.0
        async with RpcPool([proxy.url, anvil.node.url], request_timeout_s=0.5) as pool:
            bad, good = pool.endpoints
            with anyio.fail_after(5):
                assert await pool.request("eth_blockNumber", []) == "0x3"
                assert await pool.batch([("eth_chainId", [])] * 3) == ["0x7a69"] * 3
            assert demoted(pool) == {bad: True, good: False}
            assert pool.stats["requests"] == {bad: 1, good: 2}
            assert pool.stats["demotions"] == {bad: 1}
            assert proxy.http_requests == 1


async def test_a_demoted_endpoint_is_tried_again_after_demote_s(anvil: AnvilChain) -> None:
    with RpcProxy(anvil.node.url) as proxy:
        proxy.error_rate = 1.0
        async with RpcPool([proxy.url, anvil.node.url], demote_s=0.3) as pool:
            await pool.request("eth_chainId", [])
            assert demoted(pool)[pool.endpoints[0]]
            proxy.error_rate = 0.0
            await anyio.sleep(0.4)
            await pool.request("eth_chainId", [])
            assert proxy.http_requests == 2 and not demoted(pool)[pool.endpoints[0]]


async def test_when_every_endpoint_is_demoted_the_least_bad_is_used(anvil: AnvilChain) -> None:
    with RpcProxy(anvil.node.url) as proxy:
        proxy.error_rate = 1.0
        async with RpcPool([proxy.url]) as pool:
            with pytest.raises(TransportError):
                await pool.request("eth_chainId", [])
            proxy.error_rate = 0.0
            assert await pool.request("eth_chainId", []) == "0x7a69"  # demoted, still asked
            assert not demoted(pool)[pool.endpoints[0]]  # a success clears the demotion


async def test_head_demotes_a_lagging_endpoint(anvil: AnvilChain) -> None:
    anvil.node.mine(20)
    with RpcProxy(anvil.node.url) as lagging:
        lagging.lag_blocks = 8
        async with RpcPool([lagging.url, anvil.node.url], max_lag_blocks=5) as pool:
            assert await pool.head() == 20
            slow, fast = pool.endpoints
            assert demoted(pool) == {slow: True, fast: False}
            heads = {h["endpoint"]: h["head"] for h in pool.health()}
            assert heads == {slow: 12, fast: 20}
            # requests for recent blocks go to the endpoint that has them
            block = await pool.request("eth_getBlockByNumber", ["0x14", False], min_block=20)
            assert block["number"] == "0x14"


async def test_min_block_prefers_an_endpoint_that_has_the_block(anvil: AnvilChain) -> None:
    anvil.node.mine(20)
    with RpcProxy(anvil.node.url) as lagging:
        lagging.lag_blocks = 3  # within max_lag_blocks: not demoted
        async with RpcPool([lagging.url, anvil.node.url], max_lag_blocks=5) as pool:
            await pool.head()
            assert not any(demoted(pool).values())
            before = lagging.http_requests
            await pool.request("eth_getBlockByNumber", ["0x14", False], min_block=20)
            assert lagging.http_requests == before  # went to the endpoint at 20
            await pool.request("eth_getBlockByNumber", ["0x2", False], min_block=2)
            assert lagging.http_requests == before + 1  # first in order when both have it


async def test_decode_rejection_fails_over(anvil: AnvilChain) -> None:
    anvil.node.mine(20)
    with RpcProxy(anvil.node.url) as lagging:
        lagging.lag_blocks = 10  # answers null for blocks above 10

        def block_or_raise(result: object) -> object:
            if result is None:
                raise ValueError("block not available")
            return result

        async with RpcPool([lagging.url, anvil.node.url]) as pool:
            block = await pool.request(
                "eth_getBlockByNumber", ["0x12", False], decode=block_or_raise
            )
            assert block["number"] == "0x12"
            assert demoted(pool)[pool.endpoints[0]]


async def test_websocket_requests_batches_and_error_answers(anvil: AnvilChain) -> None:
    anvil.node.mine(4)
    async with RpcPool([anvil.node.ws_url]) as pool:
        with anyio.fail_after(10):
            assert await pool.request("eth_blockNumber", []) == "0x4"
            with pytest.raises(RpcError) as caught:
                await pool.request("eth_noSuchMethod", [])
            assert caught.value.code is not None  # anvil: -32602 on ws, -32601 on http
            # the error answer did not break the connection
            results = await pool.batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n in range(5)]
            )
            assert [r["number"] for r in results] == [hex(n) for n in range(5)]
            assert await pool.head() == 4
        assert pool.stats["batches"] == {pool.endpoints[0]: 1}
        assert not any(demoted(pool).values())


async def test_unreachable_endpoint_raises_transport_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with RpcPool([url], request_timeout_s=2) as pool:
        with anyio.fail_after(5), pytest.raises(TransportError) as caught:
            await pool.request("eth_blockNumber", [])
        assert caught.value.code is None and caught.value.endpoint == pool.endpoints[0]


def test_endpoint_names_hide_keys() -> None:
    assert endpoint_name("https://mainnet.infura.io/v3/SECRET") == "https://mainnet.infura.io/***"
    assert endpoint_name("wss://node.example:8546/?key=SECRET") == "wss://node.example:8546/***"
    assert endpoint_name("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    pool = RpcPool(["https://a.example/k1", "https://a.example/k2"])
    assert pool.endpoints == ["https://a.example/***", "https://a.example/***#2"]


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported RPC URL scheme"):
        RpcPool(["ftp://127.0.0.1/x"])

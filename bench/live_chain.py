"""Benchmarks of the live path against anvil (figures, not tests).

(c) Backfill: 5,000 blocks holding 500 epochs. seqcollector's follower (headers by JSON-RPC
    batch, logs by adaptive eth_getLogs ranges) beside the Go collector's strategy in the same
    run (per block: a header, the full block, and an eth_getLogs): HTTP requests per 1,000
    blocks (counted by a loopback proxy) and blocks/s.
(d) Head latency: WS newHeads, block mined -> step committed to Redis, p50 and p99 over 200
    blocks, with the collector in this process; polling (HTTP) beside it for reference.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import aiohttp
import anyio
from web3 import AsyncHTTPProvider, AsyncWeb3

from seqcollector.core import Block, CoreConfig
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.startup import read_market_params
from seqcollector.sources import ChainFollower, RpcPool
from sim.anvil import Anvil, rpc
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.redis_server import RedisServer
from sim.rpc_proxy import RpcProxy

MARKET = "0x" + "a1" * 20
BLOCKS, EPOCHS = 5_000, 500


async def build_chain(node: Anvil) -> str:
    """Deploy, then 500 releases, each followed by 9 empty blocks: 5,000 blocks."""
    w3 = AsyncWeb3(AsyncHTTPProvider(node.url))
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    await contract.create_data_market(MARKET)
    for _ in range(EPOCHS):
        await contract.release_epoch(MARKET, 1, 2)
        node.mine(9, 2)
    head = int(str(rpc(node.url, "eth_blockNumber")), 16)
    if head < BLOCKS:
        node.mine(BLOCKS - head, 2)
    await w3.provider.disconnect()
    return address


async def ours(proxy: RpcProxy, address: str, last: int) -> tuple[float, int, int]:
    """(seconds, HTTP requests, ProtocolState logs) for blocks 1..last with the follower."""
    before, logs = proxy.http_requests, 0
    async with RpcPool([proxy.url]) as pool:
        follower = ChainFollower(pool, address, start_block=1, subscribe=False)
        started = time.perf_counter()
        async for inp in follower.inputs():
            if isinstance(inp, Block) and inp.number >= last:
                break
            logs += not isinstance(inp, Block)
        elapsed = time.perf_counter() - started
    return elapsed, proxy.http_requests - before, logs


async def go_strategy(proxy: RpcProxy, address: str, last: int) -> tuple[float, int, int]:
    """The Go collector: per block, a header, the block with transactions, and eth_getLogs."""
    before, logs, n_id = proxy.http_requests, 0, 0

    async def call(client: aiohttp.ClientSession, method: str, params: list[Any]) -> Any:
        nonlocal n_id
        n_id += 1
        body = {"jsonrpc": "2.0", "id": n_id, "method": method, "params": params}
        async with client.post(proxy.url, json=body) as response:
            return (await response.json())["result"]

    started = time.perf_counter()
    async with aiohttp.ClientSession() as client:
        for n in range(1, last + 1):
            await call(client, "eth_getBlockByNumber", [hex(n), False])
            await call(client, "eth_getBlockByNumber", [hex(n), True])
            found = await call(
                client,
                "eth_getLogs",
                [{"address": address, "fromBlock": hex(n), "toBlock": hex(n)}],
            )
            logs += len(found)
    return time.perf_counter() - started, proxy.http_requests - before, logs


def backfill() -> dict[str, float]:
    async def main() -> dict[str, float]:
        with Anvil(timestamp=1_800_000_000) as node, RpcProxy(node.url) as proxy:
            address = await build_chain(node)
            last = BLOCKS
            o_s, o_req, o_logs = await ours(proxy, address, last)
            g_s, g_req, g_logs = await go_strategy(proxy, address, last)
            assert o_logs == g_logs >= EPOCHS, (o_logs, g_logs)
            return {
                "blocks": last,
                "epochs (logs)": o_logs,
                "ours requests/1k blocks": o_req * 1000 / last,
                "ours blocks/s": last / o_s,
                "go requests/1k blocks": g_req * 1000 / last,
                "go blocks/s": last / g_s,
                "fewer requests x": g_req / o_req,
            }

    return anyio.run(main)


async def head_latency_run(
    node: Anvil, address: str, url: str, redis_url: str, n: int
) -> list[float]:
    """Mine n blocks one at a time; latency = mined (RPC returned) -> the step committed."""
    market_params = None
    config = CoreConfig(protocol_state=address, markets=[MARKET])
    redis = redis_client(redis_url)
    await redis.flushall()
    pipeline = Pipeline(RedisExecutor(redis, "bench"), config)
    await pipeline.open()
    mined: dict[int, float] = {}
    latencies: list[float] = []
    async with RpcPool([url]) as pool:
        market_params = await read_market_params(pool.request, address, [MARKET])
        await pipeline.apply(market_params)
        head = int(str(rpc(node.url, "eth_blockNumber")), 16)
        follower = ChainFollower(pool, address, start_block=head + 1, poll_interval_s=0.05)

        def committed(block: int, chain_head: int | None, rate: float) -> None:
            now = time.perf_counter()  # a group may commit several blocks: all up to `block`
            for number in sorted(b for b in mined if b <= block):
                if len(latencies) < n:
                    latencies.append(now - mined.pop(number))

        collector = Collector(
            pipeline,
            follower,
            on_progress=committed,
            handle_signals=False,
            stop_when=lambda p: len(latencies) >= n,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(collector.run)
            await anyio.sleep(0.5)
            for i in range(n):
                started = time.perf_counter()
                await anyio.to_thread.run_sync(node.mine)
                mined[head + 1 + i] = started
                await anyio.sleep(0.03)
            with anyio.fail_after(30):
                while len(latencies) < n:
                    await anyio.sleep(0.05)
            collector.stop()
    await redis.aclose()
    return latencies


def head_latency(n: int = 200) -> dict[str, float]:
    async def main() -> dict[str, float]:
        with Anvil(timestamp=1_800_000_000) as node, RedisServer() as server:
            w3 = AsyncWeb3(AsyncHTTPProvider(node.url))
            address = await deploy_protocol_state(w3)
            await ProtocolStateClient(w3, address).create_data_market(MARKET)
            await w3.provider.disconnect()
            ws = await head_latency_run(node, address, node.ws_url, server.url, n)
            http = await head_latency_run(node, address, node.url, server.url, n)
        q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] * 1e3  # noqa: E731
        return {
            "ws p50 ms": q(ws, 50),
            "ws p99 ms": q(ws, 99),
            "poll(50ms) p50 ms": q(http, 50),
            "poll(50ms) p99 ms": q(http, 99),
        }

    return anyio.run(main)


if __name__ == "__main__":
    for k, v in {**backfill(), **head_latency()}.items():
        print(f"{k:28} {v:,.1f}")

"""Headers by batch and logs by adaptive getLogs ranges, against anvil and eth-tester."""

from __future__ import annotations

from typing import Any

import pytest
from sourcekit import OTHER_TOPIC, AnvilChain, EthTesterChain

from seqcollector.core.abi import DAY_STARTED, EPOCH_RELEASED
from seqcollector.core.inputs import Block, Log
from seqcollector.sources.blocks import LogRanges, fetch_headers
from seqcollector.sources.range_hints import RangeHint, range_hint
from seqcollector.sources.rpc import RpcError, RpcPool
from sim.rpc_proxy import RpcProxy

pytestmark = pytest.mark.anyio


def as_log(raw: dict[str, Any]) -> Log:
    return Log(
        address=raw["address"].lower(),
        topics=[t.lower() for t in raw["topics"]],
        data=raw["data"].lower(),
        block_number=int(raw["blockNumber"], 16),
        block_hash=raw["blockHash"].lower(),
        log_index=int(raw["logIndex"], 16),
        tx_hash=raw["transactionHash"].lower(),
    )


async def test_headers_match_eth_get_block_by_number_on_anvil(anvil: AnvilChain) -> None:
    anvil.node.mine(250, interval_s=2)
    async with RpcPool([anvil.node.url]) as pool:
        headers = await fetch_headers(pool, 0, 250)
        assert pool.stats["batches"] == {pool.endpoints[0]: 3}  # 100 + 100 + 51 calls
    assert [h.number for h in headers] == list(range(251))
    for header in headers:
        raw = anvil.block(header.number)
        assert header == Block(
            number=int(raw["number"], 16),
            hash=raw["hash"],
            parent_hash=raw["parentHash"],
            timestamp=int(raw["timestamp"], 16),
        )
        assert header.hash == header.hash.lower() and header.hash.startswith("0x")


async def test_headers_match_on_eth_tester(tester: EthTesterChain) -> None:
    await tester.mine(12)
    async with RpcPool([], providers=[tester.provider]) as pool:
        headers = await fetch_headers(pool, 0, 12, chunk=5)
    for header in headers:
        block = await tester.w3.eth.get_block(header.number)
        assert header.hash == "0x" + block["hash"].hex()
        assert header.parent_hash == "0x" + block["parentHash"].hex()
        assert header.timestamp == block["timestamp"]


async def test_logs_filtered_by_address_and_topic0_sorted(anvil: AnvilChain) -> None:
    emitter, other = anvil.deploy(), anvil.deploy()
    anvil.emit(emitter, 1)
    anvil.emit(emitter, 2, topic0=OTHER_TOPIC)  # not a collected topic0
    anvil.emit(other, 3)  # another address
    anvil.emit_together(emitter, [4, 5, 6])  # three logs in one block
    anvil.emit(emitter, 7, topic0=DAY_STARTED)
    head = anvil.head()
    async with RpcPool([anvil.node.url]) as pool:
        logs = await LogRanges().fetch_logs(pool, emitter, [EPOCH_RELEASED, DAY_STARTED], 0, head)
    expected = [as_log(raw) for raw in anvil.logs(emitter, 0, head)]
    expected = [e for e in expected if e.topics[0] in (EPOCH_RELEASED, DAY_STARTED)]
    assert logs == expected and len(logs) == 5
    assert [int(log.topics[2], 16) for log in logs] == [1, 4, 5, 6, 7]
    same_block = [log for log in logs if log.block_number == logs[1].block_number]
    assert [log.log_index for log in same_block] == [0, 1, 2]


async def test_logs_on_eth_tester(tester: EthTesterChain) -> None:
    emitter = await tester.deploy()
    for epoch in (1, 2, 3):
        await tester.emit(emitter, epoch)
    await tester.emit(emitter, 9, topic0=OTHER_TOPIC)
    async with RpcPool([], providers=[tester.provider]) as pool:
        head = await pool.head()
        logs = await LogRanges(span=2).fetch_logs(pool, emitter, [EPOCH_RELEASED], 0, head)
    assert [int(log.topics[2], 16) for log in logs] == [1, 2, 3]
    assert all(log.address == emitter and log.tx_hash.startswith("0x") for log in logs)
    for log in logs:
        block = await tester.w3.eth.get_block(log.block_number)
        assert log.block_hash == "0x" + block["hash"].hex()


class HintingProxy(RpcProxy):
    """Refuses getLogs ranges wider than `limit` blocks with one of several messages."""

    def __init__(self, upstream: str, limit: int, style: str) -> None:
        super().__init__(upstream)
        self.limit, self.style = limit, style
        self.ranges: list[tuple[int, int]] = []

    def _call(self, call: dict[str, Any]) -> Any:
        if call.get("method") == "eth_getLogs":
            query = call["params"][0]
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            self.ranges.append((first, last))
            if last - first + 1 > self.limit:
                good = f"[{hex(first)}, {hex(first + self.limit - 1)}]"
                message = {
                    "suggested": f"query returned more than 10000 results. Try with this "
                    f"block range {good}.",
                    "limit": f"exceed maximum block range: {self.limit}",
                    "bare": "block range is too wide",
                    "other": "execution aborted (timeout = 5s) for unrelated reasons",
                }[self.style]
                return {
                    "jsonrpc": "2.0",
                    "id": call["id"],
                    "error": {"code": -32000, "message": message},
                }
        return super()._call(call)


@pytest.mark.parametrize("style", ["suggested", "limit", "bare"])
async def test_log_ranges_shrink_on_refusals_and_miss_nothing(
    anvil: AnvilChain, style: str
) -> None:
    emitter = anvil.deploy()
    for epoch in range(1, 41):  # one log per block, blocks 2..41
        anvil.emit(emitter, epoch)
    anvil.node.mine(10)
    head = anvil.head()
    proxy = HintingProxy(anvil.node.url, limit=7, style=style)
    with proxy:
        async with RpcPool([proxy.url]) as pool:
            ranges = LogRanges(span=32, max_span=64)
            logs = await ranges.fetch_logs(pool, emitter, [EPOCH_RELEASED], 0, head)
    assert [int(log.topics[2], 16) for log in logs] == list(range(1, 41))
    assert logs == [as_log(raw) for raw in anvil.logs(emitter, 0, head)]
    assert ranges.shrinks >= 1
    accepted = [(a, b) for a, b in proxy.ranges if b - a + 1 <= 7]
    covered = sorted(n for a, b in accepted for n in range(a, b + 1))
    assert covered == list(range(head + 1))  # every block asked exactly once, successfully
    if style == "limit":
        assert ranges.ceiling == 7 and ranges.span <= 7
        assert ranges.shrinks == 1  # a stated limit is learnt once, not rediscovered
    if style == "suggested":
        assert (0, 6) in proxy.ranges  # the hint was taken as is


async def test_a_refusal_not_about_the_range_is_raised(anvil: AnvilChain) -> None:
    emitter = anvil.deploy()
    anvil.node.mine(20)
    proxy = HintingProxy(anvil.node.url, limit=7, style="other")
    with proxy:
        async with RpcPool([proxy.url]) as pool:
            with pytest.raises(RpcError, match="unrelated"):
                await LogRanges(span=32).fetch_logs(pool, emitter, [EPOCH_RELEASED], 0, 20)
    assert len(proxy.ranges) == 1


async def test_sim_proxy_range_limit_message_is_understood(anvil: AnvilChain) -> None:
    emitter = anvil.deploy()
    for epoch in range(1, 6):
        anvil.emit(emitter, epoch)
    with RpcProxy(anvil.node.url) as proxy:
        proxy.max_logs_range = 3
        async with RpcPool([proxy.url]) as pool:
            ranges = LogRanges(span=100)
            logs = await ranges.fetch_logs(pool, emitter, [EPOCH_RELEASED], 0, anvil.head())
    assert len(logs) == 5 and ranges.ceiling == 3 and proxy.faults["logs_range"] == 1


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        (
            "query returned more than 10000 results. Try with this block range [0x10, 0x2F].",
            RangeHint(suggested_blocks=32),
        ),
        (
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K "
            "block range and no limit on the response size, or you can request any block "
            "range with a cap of 10K logs in the response. Based on your parameters, this "
            "block range should work: [0x1, 0x64]",
            RangeHint(suggested_blocks=100),
        ),
        ("exceed maximum block range: 5000", RangeHint(max_blocks=5000)),
        ("query exceeds max block range 1000", RangeHint(max_blocks=1000)),
        ("eth_getLogs is limited to a 10,000 range", RangeHint(max_blocks=10_000)),
        (
            "You can make eth_getLogs requests with up to a 2K block range",
            RangeHint(max_blocks=2000),
        ),
        ("maximum [from, to] blocks distance: 10000", RangeHint(max_blocks=10_000)),
        ("block range is too wide", RangeHint()),
        ("query returned more than 10000 results", RangeHint()),
        ("Query timeout exceeded. Consider reducing your block range.", RangeHint()),
        ("execution reverted", None),
        ("header not found", None),
        ("Too Many Requests: rate limit exceeded", None),
    ],
)
def test_range_hints(message: str, hint: RangeHint | None) -> None:
    assert range_hint(message) == hint

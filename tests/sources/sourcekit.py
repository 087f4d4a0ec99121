"""Helpers for the chain-source tests: a hand-assembled log emitter, chains to drive, and
a bounded way to read a follower.

The emitter is 23 bytes of EVM code: calldata = topic0 | topic1 | topic2 | data; it emits
LOG3(data, topic0, topic1, topic2). Init code copies it to memory and returns it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from eth_typing import HexStr
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from seqcollector.core.abi import EPOCH_RELEASED
from seqcollector.core.inputs import Block, Log, Rewind
from seqcollector.sources.follower import ChainFollower
from sim.anvil import Anvil, AnvilMissing, rpc

# PUSH1 0x40 CALLDATALOAD  PUSH1 0x20 CALLDATALOAD  PUSH1 0 CALLDATALOAD      t2 t1 t0
# PUSH1 0x60 CALLDATASIZE SUB  DUP1  PUSH1 0x60 PUSH1 0 CALLDATACOPY          mem[0:] = data
# PUSH1 0 LOG3  STOP                                                         LOG3(0, size, ...)
RUNTIME = bytes.fromhex("604035602035600035606036038060606000376000a300")
# PUSH1 len DUP1 PUSH1 offset PUSH1 0 CODECOPY PUSH1 0 RETURN
INIT = bytes.fromhex(f"60{len(RUNTIME):02x}" + "80" + "600b" + "6000" + "39" + "6000" + "f3")
assert len(INIT) == 0x0B
DEPLOY_CODE = "0x" + (INIT + RUNTIME).hex()

MARKET = "0x" + "ab" * 20
OTHER_TOPIC = "0x" + "77" * 32

Item = Block | Log | Rewind


def start_anvil(**kwargs: Any) -> Anvil:
    """A started Anvil; skip the test without the binary (fail under CI=true)."""
    try:
        node = Anvil(**kwargs)
    except AnvilMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return node.start()


def emit_data(epoch: int, topic0: str = EPOCH_RELEASED, market: str = MARKET) -> str:
    """Calldata for the emitter: an EpochReleased-shaped log (begin, end, timestamp words)."""
    words = [topic0[2:], market[2:].rjust(64, "0"), f"{epoch:064x}"]
    words += [f"{epoch * 10:064x}", f"{epoch * 10 + 9:064x}", f"{1_700_000_000 + epoch:064x}"]
    return "0x" + "".join(words)


class AnvilChain:
    """Drive an anvil node: deploy emitters, emit logs (one block per tx), mine."""

    def __init__(self, node: Anvil) -> None:
        self.node = node
        self.account = rpc(node.url, "eth_accounts")[0]  # type: ignore[index]
        self.automine = True

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc(self.node.url, method, params or [])

    def deploy(self) -> str:
        tx = self.call("eth_sendTransaction", [{"from": self.account, "data": DEPLOY_CODE}])
        return str(self.receipt(tx)["contractAddress"]).lower()

    def receipt(self, tx: str) -> dict[str, Any]:
        """The receipt of `tx` (anvil may answer eth_sendTransaction before it is mined)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            receipt: dict[str, Any] | None = self.call("eth_getTransactionReceipt", [tx])
            if receipt is not None:
                return receipt
            time.sleep(0.01)
        raise TimeoutError(f"no receipt for {tx}")

    def emit(self, address: str, epoch: int, topic0: str = EPOCH_RELEASED) -> str:
        tx = {"from": self.account, "to": address, "data": emit_data(epoch, topic0)}
        tx_hash = str(self.call("eth_sendTransaction", [tx]))
        if self.automine:
            self.receipt(tx_hash)
        return tx_hash

    def emit_together(self, address: str, epochs: Sequence[int]) -> None:
        """Several logs in one block: automine off, send, mine one block, automine on."""
        self.call("evm_setAutomine", [False])
        self.automine = False
        try:
            for epoch in epochs:
                self.emit(address, epoch)
            self.node.mine(1)
        finally:
            self.call("evm_setAutomine", [True])
            self.automine = True

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block(self, number: int) -> dict[str, Any]:
        block: dict[str, Any] = self.call("eth_getBlockByNumber", [hex(number), False])
        return block

    def logs(self, address: str, first: int, last: int) -> list[dict[str, Any]]:
        query = {"address": address, "fromBlock": hex(first), "toBlock": hex(last)}
        logs: list[dict[str, Any]] = self.call("eth_getLogs", [query])
        return logs


class EthTesterChain:
    """Drive an in-process eth-tester chain through its AsyncWeb3."""

    def __init__(self) -> None:
        self.provider = AsyncEthereumTesterProvider()
        self.w3 = AsyncWeb3(self.provider)

    async def deploy(self) -> str:
        account = (await self.w3.eth.accounts)[0]
        tx = await self.w3.eth.send_transaction({"from": account, "data": HexStr(DEPLOY_CODE)})
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx)
        return str(receipt["contractAddress"]).lower()

    async def emit(self, address: str, epoch: int, topic0: str = EPOCH_RELEASED) -> None:
        account = (await self.w3.eth.accounts)[0]
        to = self.w3.to_checksum_address(address)
        data = HexStr(emit_data(epoch, topic0))
        await self.w3.eth.send_transaction(
            {"from": account, "to": to, "data": data, "gas": 100_000}
        )

    async def mine(self, blocks: int) -> None:
        await self.provider.make_request("evm_mine", [blocks])  # type: ignore[arg-type]


async def collect(
    follower: ChainFollower,
    stop: Callable[[list[Item]], bool],
    timeout_s: float = 20.0,
    on_item: Callable[[Item, list[Item]], Any] | None = None,
) -> list[Item]:
    """Iterate the follower until `stop(items)` (fails after `timeout_s`). `on_item` may be
    a coroutine function: it runs after each item (to mine more blocks, say)."""
    items: list[Item] = []
    with anyio.fail_after(timeout_s):
        async with aclosing(follower.inputs()) as stream:  # type: ignore[type-var]
            async for item in stream:
                items.append(item)
                if on_item is not None:
                    result = on_item(item, items)
                    if hasattr(result, "__await__"):
                        await result
                if stop(items):
                    break
    return items


def block_numbers(items: Sequence[Item]) -> list[int]:
    return [item.number for item in items if isinstance(item, Block)]


def saw_block(number: int) -> Callable[[list[Item]], bool]:
    return lambda items: bool(items) and isinstance(items[-1], Block) and items[-1].number >= number


def saw_all_of(number: int) -> Callable[[list[Item]], bool]:
    """Stop after block `number` and its logs: at the next block (not included) or never."""

    def stop(items: list[Item]) -> bool:
        return bool(items) and isinstance(items[-1], Block) and items[-1].number > number

    return stop

"""The fixture contracts from Python: artifacts, deployment, small async clients.

The artifacts `fixtures/contracts/ProtocolState.json` and `DataMarket.json` are compiled from
their `.sol` sources by `make contracts`. ProtocolState's writers and setters may only be
called by the deployer (the contract's owner); the client sends from the same account
`deploy_protocol_state` uses by default: `w3.eth.default_account` if set, else
`w3.eth.accounts[0]`.

A data market is either any address (`create_data_market(address)`) or a DataMarket contract
bound to the ProtocolState (`create_data_market_contract()`: deploy, then register). For the
latter, `updateRewards` on ProtocolState also forwards to the DataMarket, so
`eligibleNodesForDay(day)` at the market address answers as in production.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import is_checksum_address, to_checksum_address
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.types import BlockIdentifier, TxReceipt

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT_PATH = ROOT / "fixtures" / "contracts" / "ProtocolState.json"
DATA_MARKET_ARTIFACT_PATH = ROOT / "fixtures" / "contracts" / "DataMarket.json"
ZERO_ROOT = b"\x00" * 32
MARKET_VIEWS = (
    "snapshotSubmissionWindow",
    "DAY_SIZE",
    "dailySnapshotQuota",
    "epochsInADay",
    "dayCounter",
    "currentEpoch",
)


@cache
def _artifact_text(path: Path) -> str:
    return path.read_text()


def load_artifact(path: Path = ARTIFACT_PATH) -> dict[str, Any]:
    """A compiled artifact (ProtocolState's by default): contractName, abi, bytecode,
    deployedBytecode (0x-hex), solcVersion, sourceSha256. A fresh dict on every call."""
    artifact: dict[str, Any] = json.loads(_artifact_text(path))
    return artifact


PROTOCOL_STATE_ABI: list[dict[str, Any]] = load_artifact()["abi"]
DATA_MARKET_ABI: list[dict[str, Any]] = load_artifact(DATA_MARKET_ARTIFACT_PATH)["abi"]


async def _default_sender(w3: AsyncWeb3[Any]) -> ChecksumAddress:
    """`w3.eth.default_account` if set, else the node's first account."""
    account = w3.eth.default_account
    if isinstance(account, str) and is_checksum_address(account):
        return account
    accounts = await w3.eth.accounts
    if not accounts:
        raise RuntimeError("the node has no unlocked account to send from")
    return accounts[0]


async def _send_and_wait(w3: AsyncWeb3[Any], call: Any, sender: ChecksumAddress) -> TxReceipt:
    """Send `call` (a contract function or constructor) from `sender`; the receipt, or
    RuntimeError if the transaction reverted."""
    tx_hash: HexBytes = await call.transact({"from": sender})
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


async def _deploy(w3: AsyncWeb3[Any], path: Path, sender: str | None, *args: Any) -> str:
    account = to_checksum_address(sender) if sender else await _default_sender(w3)
    artifact = load_artifact(path)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = await _send_and_wait(w3, factory.constructor(*args), account)
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError(f"deployment receipt of {artifact['contractName']} has no address")
    return to_checksum_address(address)


async def deploy_protocol_state(w3: AsyncWeb3[Any], sender: str | None = None) -> str:
    """Deploy ProtocolState from `sender` (default account if None); its checksummed address."""
    return await _deploy(w3, ARTIFACT_PATH, sender)


async def deploy_data_market(
    w3: AsyncWeb3[Any], protocol_state: str, sender: str | None = None
) -> str:
    """Deploy a DataMarket bound to `protocol_state` (only it may write to the market) from
    `sender` (default account if None); its checksummed address, the data market address.
    Register it with `ProtocolStateClient.create_data_market` (or use
    `create_data_market_contract`, which does both)."""
    return await _deploy(w3, DATA_MARKET_ARTIFACT_PATH, sender, to_checksum_address(protocol_state))


class ProtocolStateClient:
    """Async wrapper around a deployed ProtocolState at `address`.

    Every writer sends one transaction from `sender` (default account if None), waits for the
    receipt and returns it; a reverted transaction raises. Market addresses may be in any case.
    """

    def __init__(self, w3: AsyncWeb3[Any], address: str, sender: str | None = None) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=PROTOCOL_STATE_ABI)
        self._sender = to_checksum_address(sender) if sender else None

    async def _send(self, function: str, *args: Any) -> TxReceipt:
        if self._sender is None:
            self._sender = await _default_sender(self.w3)
        call = self.contract.functions[function](*args)
        return await _send_and_wait(self.w3, call, self._sender)

    async def _view(self, function: str, *args: Any) -> int:
        value: int = await self.contract.functions[function](*args).call()
        return value

    # writers
    async def create_data_market(self, market: str) -> TxReceipt:
        """Register `market` with the defaults (window 20 s, DAY_SIZE 864000000, quota 1000,
        720 epochs a day, dayCounter 1). A DataMarket contract must be bound to this
        ProtocolState; `updateRewards` then forwards to it."""
        return await self._send("createDataMarket", to_checksum_address(market))

    async def create_data_market_contract(self) -> str:
        """Deploy a DataMarket bound to this ProtocolState (from the client's sender, two
        transactions: deployment, then `createDataMarket`) -> its checksummed address."""
        if self._sender is None:
            self._sender = await _default_sender(self.w3)
        market = await deploy_data_market(self.w3, self.address, self._sender)
        await self.create_data_market(market)
        return market

    async def release_epoch(self, market: str, begin: int, end: int) -> TxReceipt:
        """Next epoch of `market` over blocks [begin, end]: EpochReleased, preceded by
        DayStartedEvent when the epoch opens a new day."""
        return await self._send("releaseEpoch", to_checksum_address(market), begin, end)

    async def submit_submission_batch(
        self,
        market: str,
        batch_cid: str,
        epoch_id: int,
        project_ids: list[str],
        snapshot_cids: list[str],
        finalized_cids_root_hash: bytes = ZERO_ROOT,
    ) -> TxReceipt:
        """Emits SnapshotBatchSubmitted(market, batch_cid, epoch_id, block timestamp)."""
        return await self._send(
            "submitSubmissionBatch",
            to_checksum_address(market),
            batch_cid,
            epoch_id,
            project_ids,
            snapshot_cids,
            finalized_cids_root_hash,
        )

    async def end_batch_submissions(self, market: str, epoch_id: int) -> TxReceipt:
        """Emits BatchSubmissionsCompleted(market, epoch_id, block timestamp)."""
        return await self._send("endBatchSubmissions", to_checksum_address(market), epoch_id)

    async def update_rewards(
        self,
        market: str,
        slot_ids: list[int],
        submissions_list: list[int],
        day: int,
        eligible_nodes: int,
    ) -> TxReceipt:
        """Store per-slot submission counts for `day`; the day's eligible node count is set
        by the first call with a non-zero `eligible_nodes`. For a DataMarket contract market
        the same values are forwarded to it (`DataMarketClient` reads them there)."""
        return await self._send(
            "updateRewards",
            to_checksum_address(market),
            slot_ids,
            submissions_list,
            day,
            eligible_nodes,
        )

    # setters
    async def set_snapshot_submission_window(self, market: str, value: int) -> TxReceipt:
        return await self._send("setSnapshotSubmissionWindow", to_checksum_address(market), value)

    async def set_day_size(self, market: str, value: int) -> TxReceipt:
        return await self._send("setDaySize", to_checksum_address(market), value)

    async def set_daily_snapshot_quota(self, market: str, value: int) -> TxReceipt:
        return await self._send("setDailySnapshotQuota", to_checksum_address(market), value)

    async def set_epochs_in_a_day(self, market: str, value: int) -> TxReceipt:
        return await self._send("setEpochsInADay", to_checksum_address(market), value)

    # views
    async def read_market_params(self, market: str) -> dict[str, int]:
        """{view name: value} for snapshotSubmissionWindow, DAY_SIZE, dailySnapshotQuota,
        epochsInADay, dayCounter, currentEpoch (latest block)."""
        checksummed = to_checksum_address(market)
        return {name: await self._view(name, checksummed) for name in MARKET_VIEWS}

    async def eligible_nodes_for_day(self, market: str, day: int) -> int:
        return await self._view("eligibleNodesForDay", to_checksum_address(market), day)

    async def slot_submission_count(self, market: str, slot_id: int, day: int) -> int:
        return await self._view("slotSubmissionCount", to_checksum_address(market), slot_id, day)

    async def is_data_market_contract(self, market: str) -> bool:
        """True if `market` was registered as a DataMarket contract (rewards forwarded)."""
        value: bool = await self.contract.functions.isDataMarketContract(
            to_checksum_address(market)
        ).call()
        return value


class DataMarketClient:
    """Read-only wrapper around a deployed DataMarket at `address` (the data market address).
    Its writers are ProtocolState's to call (`ProtocolStateClient.update_rewards`)."""

    def __init__(self, w3: AsyncWeb3[Any], address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=DATA_MARKET_ABI)

    async def protocol_state(self) -> str:
        value: str = await self.contract.functions.protocolState().call()
        return to_checksum_address(value)

    async def eligible_nodes_for_day(self, day: int, block: BlockIdentifier = "latest") -> int:
        """`eligibleNodesForDay(day)` as of `block` (the collector reads it at the block it
        processes)."""
        value: int = await self.contract.functions.eligibleNodesForDay(day).call(
            block_identifier=block
        )
        return value

    async def slot_submission_count(self, slot_id: int, day: int) -> int:
        value: int = await self.contract.functions.slotSubmissionCount(slot_id, day).call()
        return value

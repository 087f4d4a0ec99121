"""The ProtocolState fixture contract from Python: artifact, deployment, a small async client.

The artifact `fixtures/contracts/ProtocolState.json` is compiled from `ProtocolState.sol` by
`make contracts`. Writers and setters may only be called by the deployer (the contract's
owner); the client sends from the same account `deploy_protocol_state` uses by default:
`w3.eth.default_account` if set, else `w3.eth.accounts[0]`.
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
from web3.types import TxReceipt

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT_PATH = ROOT / "fixtures" / "contracts" / "ProtocolState.json"
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
def _artifact_text() -> str:
    return ARTIFACT_PATH.read_text()


def load_artifact() -> dict[str, Any]:
    """The compiled artifact: contractName, abi, bytecode, deployedBytecode (0x-hex),
    solcVersion, sourceSha256. A fresh dict on every call."""
    artifact: dict[str, Any] = json.loads(_artifact_text())
    return artifact


PROTOCOL_STATE_ABI: list[dict[str, Any]] = load_artifact()["abi"]


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


async def deploy_protocol_state(w3: AsyncWeb3[Any], sender: str | None = None) -> str:
    """Deploy ProtocolState from `sender` (default account if None); its checksummed address."""
    account = to_checksum_address(sender) if sender else await _default_sender(w3)
    artifact = load_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = await _send_and_wait(w3, factory.constructor(), account)
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError("deployment receipt has no contractAddress")
    return to_checksum_address(address)


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
        720 epochs a day, dayCounter 1)."""
        return await self._send("createDataMarket", to_checksum_address(market))

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
        by the first call with a non-zero `eligible_nodes`."""
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

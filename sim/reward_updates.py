"""`submitUpdateRewards` on the simulated relayer's side: what a valid body is, and putting the
accepted ones on chain (`ProtocolState.updateRewards`) deterministically.

A body is the Go collector's, in its key order:
`{"dataMarketAddress","slotIDs","submissionsList","day","eligibleNodes","authToken"}`.
`problem_with_update_rewards` names the first thing wrong with one (None if it is valid); the
relayer answers such a body 400 and records it as a protocol violation.

`OnChainRewards.submit` sends every accepted body not yet on chain, once per distinct body
(a delivery repeated by the at-least-once outbox lands once), in a canonical order (market,
day, slots, counts, eligibleNodes), not in arrival order: concurrent chunks arrive in any
order, and each transaction mines a block, so the chain (and the collector's digest) would
otherwise depend on timing. Bodies whose block a reorg replaced are sent again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped]
from eth_utils.address import is_checksum_address
from web3.exceptions import BlockNotFound, ContractLogicError

if TYPE_CHECKING:
    from sim.contract import ProtocolStateClient

REVERTED = (ContractLogicError, TransactionFailed, RuntimeError)  # anvil, eth-tester, status 0
UPDATE_REWARDS_PATH = "/submitUpdateRewards"
UPDATE_REWARDS_FIELDS = (
    "dataMarketAddress",
    "slotIDs",
    "submissionsList",
    "day",
    "eligibleNodes",
    "authToken",
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def problem_with_auth(body: dict[str, Any], token: str | None) -> str | None:
    """With a configured `token`, the body's `authToken` must equal it."""
    if token is None:
        return None
    if "authToken" not in body:
        return "missing field authToken"
    if body["authToken"] != token:
        return "authToken does not match TX_RELAYER_AUTH_WRITE_TOKEN"
    return None


def problem_with_update_rewards(body: object, token: str | None = None) -> str | None:
    """The first problem of a `submitUpdateRewards` body, or None if it is valid: every field
    present and no other, the market in EIP-55, slotIDs strictly ascending integers >= 1,
    submissionsList integers >= 0 of the same length, day >= 1, eligibleNodes >= 0, and the
    auth token (checked when `token` is given)."""
    if not isinstance(body, dict):
        return f"body is a JSON {type(body).__name__}, not an object"
    missing = [f for f in UPDATE_REWARDS_FIELDS if f not in body]
    if missing:
        return f"missing field {', '.join(missing)}"
    extra = sorted(set(body) - set(UPDATE_REWARDS_FIELDS))
    if extra:
        return f"unexpected field {', '.join(extra)}"
    market = body["dataMarketAddress"]
    if not isinstance(market, str) or not is_checksum_address(market):
        return f"dataMarketAddress {market!r} is not an EIP-55 address"
    slots, counts = body["slotIDs"], body["submissionsList"]
    for name, values, low in (("slotIDs", slots, 1), ("submissionsList", counts, 0)):
        if not isinstance(values, list):
            return f"{name} is not a list"
        bad = next((i for i, v in enumerate(values) if not _is_int(v) or v < low), None)
        if bad is not None:
            return f"{name}[{bad}] = {values[bad]!r} is not an integer >= {low}"
    if len(slots) != len(counts):
        return f"slotIDs has {len(slots)} entries, submissionsList {len(counts)}"
    unordered = next((i for i in range(1, len(slots)) if slots[i] <= slots[i - 1]), None)
    if unordered is not None:
        return (
            f"slotIDs not strictly ascending at index {unordered} "
            f"({slots[unordered]} after {slots[unordered - 1]})"
        )
    for name, low in (("day", 1), ("eligibleNodes", 0)):
        if not _is_int(body[name]) or body[name] < low:
            return f"{name} = {body[name]!r} is not an integer >= {low}"
    return problem_with_auth(body, token)


def _order(body: dict[str, Any]) -> tuple[str, int, list[int], list[int], int]:
    return (
        str(body["dataMarketAddress"]),
        int(body["day"]),
        list(body["slotIDs"]),
        list(body["submissionsList"]),
        int(body["eligibleNodes"]),
    )


def _identity(body: dict[str, Any]) -> str:
    """A body without its token, as canonical JSON: repeated deliveries share it."""
    return json.dumps(
        {k: v for k, v in body.items() if k != "authToken"}, sort_keys=True, separators=(",", ":")
    )


@dataclass
class Landed:
    identity: str
    block_number: int
    block_hash: str


@dataclass
class OnChainRewards:
    """Which accepted bodies are on chain, and where (newest last)."""

    landed: list[Landed] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # identity -> revert message
    replaced_by_reorg: int = 0  # bodies whose block a reorg replaced (sent again)

    async def submit(self, client: ProtocolStateClient, bodies: list[dict[str, Any]]) -> int:
        """Send every body of `bodies` (accepted, in any order, repeats allowed) that is not
        on the canonical chain yet, one `updateRewards` transaction each -> how many sent.
        A reverted transaction is recorded in `refused` (a protocol violation), not resent."""
        await self._forget_replaced(client)
        on_chain = {landed.identity for landed in self.landed}
        due: dict[str, dict[str, Any]] = {}
        for body in bodies:
            identity = _identity(body)
            if identity not in on_chain and identity not in self.refused:
                due.setdefault(identity, body)
        for identity, body in sorted(due.items(), key=lambda item: _order(item[1])):
            market, day, slots, counts, eligible = _order(body)
            try:
                receipt = await client.update_rewards(market, slots, counts, day, eligible)
            except REVERTED as exc:
                self.refused[identity] = f"{type(exc).__name__}: {exc}"
                continue
            block_hash = receipt["blockHash"]
            self.landed.append(
                Landed(identity, int(receipt["blockNumber"]), "0x" + bytes(block_hash).hex())
            )
        return len(due)

    async def _forget_replaced(self, client: ProtocolStateClient) -> None:
        """Drop the bodies whose block is no longer canonical (newest first: once one is
        canonical, every older one is)."""
        while self.landed:
            newest = self.landed[-1]
            try:
                block = await client.w3.eth.get_block(newest.block_number)
                canonical = "0x" + bytes(block["hash"]).hex() == newest.block_hash
            except BlockNotFound:  # past the head after a reorg to a shorter chain
                canonical = False
            if canonical:
                return
            self.landed.pop()
            self.replaced_by_reorg += 1

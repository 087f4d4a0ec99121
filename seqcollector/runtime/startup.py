"""Start-up against the chain: the contract must exist; market parameters come from its views.

The parameters become `MarketParams` inputs (journaled like any input), so the core writes
the start-up tables (`SubmissionLimitTable`, `DaySizeTableKey`, `DailySnapshotQuotaTableKey`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from seqcollector.core import MarketParams
from seqcollector.core.addresses import checksum

Request = Callable[[str, list[Any]], Awaitable[Any]]

# ProtocolState views, each taking the market address (the reference's names).
VIEWS = ("snapshotSubmissionWindow", "DAY_SIZE", "dailySnapshotQuota", "epochsInADay", "dayCounter")


class StartupError(Exception):
    """The collector cannot start; the message says what to fix."""


def _selector(view: str) -> str:
    return "0x" + keccak(text=f"{view}(address)")[:4].hex()


async def check_contract(request: Request, protocol_state: str) -> None:
    """Raise StartupError when there is no code at PROTOCOL_STATE_CONTRACT."""
    code = _hex(await request("eth_getCode", [checksum(protocol_state), "latest"]))
    if code in ("0x", "0x0"):
        raise StartupError(
            f"PROTOCOL_STATE_CONTRACT {checksum(protocol_state)}: no contract code on this chain;"
            " check the address and that RPC_NODES point at the chain it lives on"
        )


async def read_market_params(
    request: Request, protocol_state: str, markets: Sequence[str]
) -> list[MarketParams]:
    """One `MarketParams` per market, read from the views at the latest block."""
    out = []
    for market in markets:
        values = []
        for view in VIEWS:
            data = _selector(view) + encode(["address"], [checksum(market)]).hex()
            call = {"to": checksum(protocol_state), "data": data}
            raw = _hex(await request("eth_call", [call, "latest"]))
            if len(raw) < 66:
                raise StartupError(
                    f"market {checksum(market)}: ProtocolState.{view}(address) returned {raw!r};"
                    " is PROTOCOL_STATE_CONTRACT a ProtocolState and the market registered?"
                )
            values.append(int(raw[2:66], 16))
        out.append(MarketParams(market, *values))
    return out


def _hex(raw: object) -> str:
    """Providers answer with 0x-strings (HTTP/WS) or bytes (some in-process ones)."""
    if isinstance(raw, bytes | bytearray):
        return "0x" + bytes(raw).hex()
    return raw if isinstance(raw, str) else "0x"

"""Small builders for core tests: raw blocks and ABI-encoded ProtocolState logs."""

from __future__ import annotations

import hashlib

from eth_abi.abi import encode

from seqcollector.core import Block, CoreConfig, Log, MarketParams, new_state, step
from seqcollector.core.abi import (
    BATCH_SUBMISSIONS_COMPLETED,
    DAY_STARTED,
    EPOCH_RELEASED,
    SNAPSHOT_BATCH_SUBMITTED,
)
from seqcollector.core.effects import Effect
from seqcollector.core.state import State

PS = "0x" + "aa" * 20
MARKET = "0x0c8ca0a1d4f56fd6a9f0e1b1b2a3b4c5d6e7f809"  # lowercase on purpose
T0 = 1_700_000_000


def h(n: int, branch: int = 0) -> str:
    return "0x" + hashlib.sha256(f"{branch}:{n}".encode()).hexdigest()


def block(n: int, branch: int = 0, parent_branch: int | None = None, dt: int = 2) -> Block:
    pb = branch if parent_branch is None else parent_branch
    return Block(n, h(n, branch), h(n - 1, pb), T0 + n * dt)


def word(n: int) -> str:
    return "0x" + n.to_bytes(32, "big").hex()


def addr_topic(a: str) -> str:
    return "0x" + "00" * 12 + a[2:]


def epoch_released(n: int, epoch: int, market: str = MARKET, branch: int = 0) -> Log:
    data = "0x" + encode(["uint256"] * 3, [1, 2, 3]).hex()
    return Log(PS, [EPOCH_RELEASED, addr_topic(market), word(epoch)], data, n, h(n, branch), 0)


def day_started(n: int, day: int, market: str = MARKET) -> Log:
    data = "0x" + encode(["uint256", "uint256"], [day, 5]).hex()
    return Log(PS, [DAY_STARTED, addr_topic(market)], data, n, h(n), 0)


def batch_submitted(n: int, epoch: int, cid: str, market: str = MARKET) -> Log:
    data = "0x" + encode(["string", "uint256"], [cid, 5]).hex()
    return Log(PS, [SNAPSHOT_BATCH_SUBMITTED, addr_topic(market), word(epoch)], data, n, h(n), 1)


def batch_completed(n: int, epoch: int, market: str = MARKET) -> Log:
    data = "0x" + encode(["uint256"], [5]).hex()
    return Log(PS, [BATCH_SUBMISSIONS_COMPLETED, addr_topic(market), word(epoch)], data, n, h(n), 2)


def config(**kw: object) -> CoreConfig:
    base: dict[str, object] = {"protocol_state": PS, "markets": [MARKET], "batch_size": 2}
    base.update(kw)
    return CoreConfig(**base)  # type: ignore[arg-type]


def params(window: int = 6, market: str = MARKET, day: int = 1) -> MarketParams:
    return MarketParams(market, window, 864_000_000, 1000, 10, day)


def started(window: int = 6, **kw: object) -> State:
    """A state with market parameters and block 100 processed."""
    state = new_state(config(**kw))
    step(state, params(window))
    step(state, block(100))
    return state


def run(state: State, *inputs: object) -> list[Effect]:
    out: list[Effect] = []
    for inp in inputs:
        out.extend(step(state, inp)[1])  # type: ignore[arg-type]
    return out


def of(effects: list[Effect], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in effects if isinstance(e, kind)]

"""What a simulation run saw, for its report and its invariant checks (plain data)."""

from __future__ import annotations

import msgspec


class WindowSpan(msgspec.Struct, frozen=True):
    market: str  # EIP-55
    epoch: int
    opened_block: int
    closed_block: int | None  # None: still open when the run ended


class BatchMark(msgspec.Struct, frozen=True):
    market: str  # EIP-55
    epoch: int
    batches: int
    submissions: int
    block: int  # the collector's head when the batches were committed


class FaultMark(msgspec.Struct, frozen=True):
    kind: str  # rpc | lag | redis | crash | reorg | relayer | deepreorg
    block: int  # the chain head when it happened
    detail: str


class InvariantResult(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


class SimRecord(msgspec.Struct):
    seed: int
    mode: str  # "evm" (eth-tester) | "fast" (synthetic chain)
    markets: list[str]
    faults_enabled: list[str]
    first_block: int = 0
    last_block: int = 0
    windows: list[WindowSpan] = []
    batches: list[BatchMark] = []
    faults: list[FaultMark] = []
    invariants: list[InvariantResult] = []
    summary: dict[str, int | float | str] = {}
    digest: str = ""


class CanonicalWindow(msgspec.Struct, frozen=True):
    """A window on the final canonical chain: blocks [release, close)."""

    market: str  # lowercase
    epoch: int
    release: int
    close: int | None  # None: the chain ended before it closed

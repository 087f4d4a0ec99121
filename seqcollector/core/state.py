"""The core's state: msgspec Structs, serialised whole into Redis with every step.

`Domain` is what a reorg rewinds (windows, days, pending queries); the rest is history that
a rewind must not undo: which epochs were already batched (at most once, ever), counters
of rejected inputs, the query-id sequence.
"""

from __future__ import annotations

import msgspec

from seqcollector.core.config import CoreConfig
from seqcollector.core.inputs import MarketParams


class BlockRef(msgspec.Struct, array_like=True):
    number: int
    hash: str
    timestamp: int


class Window(msgspec.Struct):
    """The submission window of (market, epoch): blocks from `opened_at` with ts <= deadline."""

    epoch: int
    opened_at: int  # block number of the EpochReleased log
    deadline: int  # release block timestamp + snapshotSubmissionWindow
    query_id: int | None = None  # set once closed and queried
    headers: list[str] = []  # hashes of the window's blocks, set when closed


class MarketState(msgspec.Struct):
    params: MarketParams | None = None
    day: int | None = None
    windows: dict[int, Window] = {}
    last_completed_epoch: int | None = None
    # slots whose SlotSubmissionsKey of `counted_day` already got its TTL: the TTL is set on
    # a key's first increment of the day only (an EXPIRE per slot per epoch is half of a
    # batch's Redis commands)
    counted_day: int | None = None
    counted_slots: list[int] = []  # sorted


class Domain(msgspec.Struct):
    """Everything a rewind restores: per-market windows, days and pending queries."""

    markets: dict[str, MarketState] = {}


class Snapshot(msgspec.Struct, array_like=True):
    block: int  # the domain as it was after every input up to (not including) block+1
    domain: bytes


class EmittedEpochs(msgspec.Struct):
    """Epochs of one market whose batches were emitted; never rewound."""

    epochs: list[int] = []  # sorted, the most recent `emitted_epochs_kept`
    floor: int = -1  # every epoch <= floor is treated as emitted (older than the list)
    # the release block of each of `epochs` (same order): a reorg deeper than the history
    # forgets the epochs released in the blocks it replaced (`core.history`)
    released: list[int] = []


class State(msgspec.Struct):
    config: CoreConfig
    domain: Domain = msgspec.field(default_factory=Domain)
    blocks: list[BlockRef] = []  # recent canonical blocks, oldest first
    snapshots: list[Snapshot] = []
    dirty: bool = True  # domain changed since the last snapshot
    emitted: dict[str, EmittedEpochs] = {}
    next_query_id: int = 1
    inputs_seen: int = 0
    counters: dict[str, int] = {}
    # sparse older blocks, oldest first, and the first block processed: what a reorg
    # deeper than `blocks` rewinds to (`core.history`)
    anchors: list[BlockRef] = []
    origin: BlockRef | None = None

    @property
    def head(self) -> BlockRef | None:
        return self.blocks[-1] if self.blocks else None


def new_state(config: CoreConfig) -> State:
    """The state before any input."""
    domain = Domain(markets={m: MarketState() for m in config.markets})
    return State(config=config, domain=domain)


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(State)
_domain_decoder = msgspec.msgpack.Decoder(Domain)


def dump_state(state: State) -> bytes:
    return _state_encoder.encode(state)


def load_state(raw: bytes) -> State:
    return _state_decoder.decode(raw)


def dump_domain(domain: Domain) -> bytes:
    return _state_encoder.encode(domain)


def load_domain(raw: bytes) -> Domain:
    return _domain_decoder.decode(raw)

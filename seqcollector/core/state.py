"""The core's state: msgspec Structs, serialised whole into Redis with every step.

`Domain` is what a reorg rewinds (windows, days, pending queries); the rest is history that
a rewind must not undo: which epochs were already batched (at most once, ever), counters
of rejected inputs, the query-id sequence.

`STATE_FORMAT` is written into every stored state; `load_state` refuses a state of another
format (`StateFormatError`, whose message says what to do) instead of misreading it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import msgspec

from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import Query
from seqcollector.core.inputs import MarketParams

STATE_FORMAT: Final = 3  # 1: before issue 9 (no `format` field); 2: before days and rewards


class StateFormatError(ValueError):
    """A stored state of another format than this version reads."""

    def __init__(self, found: int) -> None:
        self.found = found
        super().__init__(
            f"the stored core state is format {found}, this version of seqcollector reads "
            f"format {STATE_FORMAT}: run the version that wrote it, or start this one on a new "
            "namespace (--namespace) and, to carry history over, replay the recorded journal "
            "into it (seqcollector replay JOURNAL --redis URL --namespace NEW)"
        )


class BlockRef(msgspec.Struct, array_like=True):
    number: int
    hash: str
    timestamp: int


class Phase(IntEnum):
    """Where a submission window is; `core.windows.advance` is the one place that moves it.

    OPEN -> QUERIED (its deadline passed: the sets of its blocks are asked for) -> batched
    (the answer arrived: the batches are emitted, the window is removed and its epoch is
    recorded as emitted, `State.emitted`). A rewind may bring a window back to an earlier
    phase (the domain as it was); an emitted epoch never gets a window again."""

    OPEN = 0
    QUERIED = 1
    BATCHED = 2  # a target only: a batched window is removed, never stored


class Window(msgspec.Struct):
    """The submission window of (market, epoch): blocks from `opened_at` with ts <= deadline."""

    epoch: int
    opened_at: int  # block number of the EpochReleased log
    deadline: int  # release block timestamp + snapshotSubmissionWindow
    phase: Phase = Phase.OPEN


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
    """Everything a rewind restores: per-market windows and days, and the pending queries
    (by id; each has an owner that must be live: `core.queries`)."""

    markets: dict[str, MarketState] = {}
    queries: dict[int, Query] = {}


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


class DayMarker(msgspec.Struct, array_like=True):
    """A day rollover seen at batch preparation of `epoch`: the final reward update of
    `day` is due at the market's first batch preparation of an epoch >= `buffer_epoch`."""

    day: int
    epoch: int
    buffer_epoch: int


class MarketDays(msgspec.Struct):
    """What batch preparation decided about a market's days; never rewound (a batched
    epoch is never batched again, so what its batch preparation did stands)."""

    last_known_day: int | None = None
    markers: list[DayMarker] = []  # not yet fired, by day
    fired: list[int] = []  # days whose final update was issued (sorted, recent ones)
    zero: list[int] = []  # days found with no eligible node, alerted once (sorted, recent)


class State(msgspec.Struct):
    config: CoreConfig
    format: int = STATE_FORMAT
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
    # days and rewards (`core.days`, `core.rewards`): decided at batch preparation, never
    # rewound; their pending queries are held here, not in the domain
    days: dict[str, MarketDays] = {}
    held_queries: dict[int, Query] = {}
    # market -> epochs batched past the submission sets' TTL, not alerted yet
    # (`core.expired_sets`)
    expired_sets: dict[str, list[int]] = {}

    @property
    def head(self) -> BlockRef | None:
        return self.blocks[-1] if self.blocks else None


def new_state(config: CoreConfig) -> State:
    """The state before any input."""
    domain = Domain(markets={m: MarketState() for m in config.markets})
    return State(config=config, domain=domain)


class _Format(msgspec.Struct):
    format: int = 1  # states written before the field existed


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(State)
_format_decoder = msgspec.msgpack.Decoder(_Format)
_domain_decoder = msgspec.msgpack.Decoder(Domain)


def dump_state(state: State) -> bytes:
    return _state_encoder.encode(state)


def load_state(raw: bytes) -> State:
    """Decode a stored state; `StateFormatError` if another format wrote it (msgspec's
    DecodeError / ValidationError if it is damaged)."""
    found = _format_decoder.decode(raw).format
    if found != STATE_FORMAT:
        raise StateFormatError(found)
    return _state_decoder.decode(raw)


def dump_domain(domain: Domain) -> bytes:
    return _state_encoder.encode(domain)


def load_domain(raw: bytes) -> Domain:
    return _domain_decoder.decode(raw)

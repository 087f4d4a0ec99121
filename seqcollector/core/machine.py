"""`step(state, input) -> (state, effects)`: the only entry into the core.

Pure and deterministic: no I/O, no clock, no randomness; every iteration whose order reaches
an output is over sorted keys. The state is updated in place (copy it with
`load_state(dump_state(s))` to keep one). Bad input never raises: it is refused with a
counted `Rejected` effect (and an `Alert` where an operator must act).

This module dispatches; each rule lives in the module named after its concern: `windows`
(submission windows and their phases, at most once), `queries` (what the core asks and the
answers it accepts), `batching`, `days`, `markets`, `rewinds`, `history` (blocks kept,
anchors, emitted epochs), `invariants` (what holds after every step).
"""

from __future__ import annotations

import msgspec

from seqcollector.core import days, history, keys, queries, windows
from seqcollector.core.abi import (
    BatchSubmissionsCompleted,
    DayStarted,
    EpochReleased,
    Refusal,
    SnapshotBatchSubmitted,
    decode_event,
)
from seqcollector.core.addresses import checksum, lower_address, lower_hash
from seqcollector.core.batching import go_json
from seqcollector.core.effects import Effect, ListPush, Query, SetValue
from seqcollector.core.inputs import (
    ANSWERS,
    Block,
    Input,
    Log,
    MarketParams,
    Rewind,
    StoredDays,
    Tick,
)
from seqcollector.core.markets import on_market_params
from seqcollector.core.reporting import reject
from seqcollector.core.rewinds import on_rewind
from seqcollector.core.state import BlockRef, Snapshot, State, dump_domain

_MAX = 2**62  # numbers kept in the state must fit msgpack's 64-bit ints, sums included


def step(state: State, inp: Input) -> tuple[State, list[Effect]]:
    """Apply one input; return the (same, updated) state and the effects to execute."""
    out: list[Effect] = []
    state.inputs_seen += 1
    unfit = _unfit_number(inp)
    if unfit is not None:
        reject(state, out, "number_out_of_range", f"{type(inp).__name__} input: {unfit}")
        return state, out
    if isinstance(inp, Block):
        changed = _on_block(state, inp, out)
    elif isinstance(inp, Log):
        changed = _on_log(state, inp, out)
    elif isinstance(inp, ANSWERS):
        changed = queries.on_answer(state, inp, out)
    elif isinstance(inp, MarketParams):
        changed = on_market_params(state, inp, out)
    elif isinstance(inp, StoredDays):
        changed = days.on_stored_days(state, inp, out)
    elif isinstance(inp, Rewind):
        changed = on_rewind(state, inp, out)
    elif isinstance(inp, Tick):
        changed = _on_tick(state, inp, out)
    else:  # pragma: no cover - the Input union is closed
        reject(state, out, "unknown_input", type(inp).__name__)
        changed = False
    if changed:  # the one place the domain is marked changed (snapshotted at the next block)
        state.dirty = True
    return state, out


_INT64 = (-(2**63), 2**63 - 1)  # what msgpack (the state) and every downstream reader can hold


def _int_fields(cls: type[Input]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(cls) if f.type in (int, int | None))


_INT_FIELDS = {
    cls: _int_fields(cls) for cls in (Block, Log, MarketParams, *ANSWERS, StoredDays, Rewind, Tick)
}


def _unfit_number(inp: Input) -> str | None:
    """The first integer field of `inp` outside int64, named; checked before anything is
    formatted (Python refuses to print an int of more than 4,300 digits) or stored."""
    lo, hi = _INT64
    for name in _INT_FIELDS.get(type(inp), ()):
        value = getattr(inp, name)
        if isinstance(value, int) and not lo <= value <= hi:
            return f"{name} has {value.bit_length()} bits, outside int64"
    return None


def pending_queries(state: State) -> list[Query]:
    """Queries emitted but not yet answered (to re-issue after a restart), in a stable order."""
    return queries.pending(state)


# -- blocks and ticks -----------------------------------------------------------------------


def _on_block(state: State, b: Block, out: list[Effect]) -> bool:
    block_hash, parent = lower_hash(b.hash), lower_hash(b.parent_hash)
    if (
        block_hash is None
        or parent is None
        or not (0 <= b.number <= _MAX and 0 <= b.timestamp <= _MAX)
    ):
        reject(state, out, "malformed_block", f"block {b.number}: bad hash or number", b.number)
        return False
    head = state.head
    if head is not None:
        if b.number != head.number + 1:
            hint = "feed a rewind first" if b.number <= head.number else "blocks were skipped"
            detail = f"block {b.number} after head {head.number}: {hint}"
            reject(state, out, "block_out_of_order", detail, b.number)
            return False
        if parent != head.hash:
            detail = f"block {b.number} parent {parent} != head hash {head.hash}: reorg, rewind"
            reject(state, out, "parent_mismatch", detail, b.number)
            return False
        if b.timestamp < head.timestamp:
            detail = f"block {b.number} timestamp {b.timestamp} < parent's {head.timestamp}"
            reject(state, out, "timestamp_regression", detail, b.number)
            return False
    if state.dirty:  # the domain as it was after block b-1: the base of a rewind to it
        snapshot = Snapshot(b.number - 1, dump_domain(state.domain))
        if state.snapshots and state.snapshots[-1].block == snapshot.block:
            state.snapshots[-1] = snapshot  # changed since a rewind restored that block's
        else:
            state.snapshots.append(snapshot)
        state.dirty = False
    ref = BlockRef(b.number, block_hash, b.timestamp)
    state.blocks.append(ref)
    history.note_block(state, ref)
    out.append(SetValue(keys.block_hash(b.number), block_hash, state.config.block_hash_ttl_s))
    changed = windows.close_due(state, b.timestamp, b.number, out)
    history.prune(state)
    return changed


def _on_tick(state: State, t: Tick, out: list[Effect]) -> bool:
    head = state.head
    return head is not None and windows.close_due(state, t.now, head.number + 1, out)


# -- logs ---------------------------------------------------------------------------------


def _on_log(state: State, log: Log, out: list[Effect]) -> bool:
    where = f"log {log.log_index} of block {log.block_number}"
    if lower_address(log.address) != state.config.protocol_state:
        reject(state, out, "foreign_address", f"{where}: address {log.address[:64]}")
        return False
    head = state.head
    if head is None or log.block_number != head.number or lower_hash(log.block_hash) != head.hash:
        reject(state, out, "log_not_at_head", f"{where}: not the current head block")
        return False
    event = decode_event(log.topics, log.data)
    if isinstance(event, Refusal):
        reject(state, out, event.reason, f"{where}: {event.detail}", log.block_number)
        return False
    ms = state.domain.markets.get(event.market)
    if ms is None:
        reject(state, out, "unconfigured_market", f"{where}: market {event.market}")
        return False
    if isinstance(event, EpochReleased):
        return windows.open_window(state, ms, event, head, out)
    if isinstance(event, SnapshotBatchSubmitted):
        if state.config.attestor_queue_push_enabled:
            item = {
                "DataMarketAddress": checksum(event.market),
                "BatchCID": event.batch_cid,
                "EpochID": event.epoch,
            }
            out.append(ListPush(keys.ATTESTOR_QUEUE, go_json(item)))
        return False
    if isinstance(event, BatchSubmissionsCompleted):
        if ms.last_completed_epoch is None or event.epoch > ms.last_completed_epoch:
            ms.last_completed_epoch = event.epoch
            return True
        return False
    if isinstance(event, DayStarted):
        return days.on_day_started(ms, event, out)
    return False  # pragma: no cover - decode_event's events are all handled above

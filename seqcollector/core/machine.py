"""`step(state, input) -> (state, effects)`: the only entry into the core.

Pure and deterministic: no I/O, no clock, no randomness; every iteration whose order reaches
an output is over sorted keys. The state is updated in place (copy it with
`load_state(dump_state(s))` to keep one). Bad input never raises: it is refused with a
counted `Rejected` effect (and an `Alert` where an operator must act).
"""

from __future__ import annotations

from bisect import bisect_left

import msgspec

from seqcollector.core import history, keys
from seqcollector.core.abi import (
    BatchSubmissionsCompleted,
    DayStarted,
    EpochReleased,
    Refusal,
    SnapshotBatchSubmitted,
    decode_event,
)
from seqcollector.core.addresses import checksum, lower_address, lower_hash
from seqcollector.core.batching import SKIP_REASONS, finalizer_item, go_json, plan_batches
from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    Effect,
    HashSet,
    IncrementBy,
    ListPush,
    QuerySubmissionSets,
    Rejected,
    RelayerCall,
    SetValue,
)
from seqcollector.core.inputs import Block, Input, Log, MarketParams, Rewind, SubmissionSets, Tick
from seqcollector.core.state import (
    BlockRef,
    MarketState,
    Snapshot,
    State,
    Window,
    dump_domain,
    load_domain,
)

_PRUNE_EVERY = 128  # prune history in chunks, not on every block
_MAX = 2**62  # numbers kept in the state must fit msgpack's 64-bit ints, sums included


def step(state: State, inp: Input) -> tuple[State, list[Effect]]:
    """Apply one input; return the (same, updated) state and the effects to execute."""
    out: list[Effect] = []
    state.inputs_seen += 1
    unfit = _unfit_number(inp)
    if unfit is not None:
        _reject(state, out, "number_out_of_range", f"{type(inp).__name__} input: {unfit}")
        return state, out
    if isinstance(inp, Block):
        _on_block(state, inp, out)
    elif isinstance(inp, Log):
        _on_log(state, inp, out)
    elif isinstance(inp, SubmissionSets):
        _on_submission_sets(state, inp, out)
    elif isinstance(inp, MarketParams):
        _on_market_params(state, inp, out)
    elif isinstance(inp, Rewind):
        _on_rewind(state, inp, out)
    elif isinstance(inp, Tick):
        _on_tick(state, inp, out)
    else:  # pragma: no cover - the Input union is closed
        _reject(state, out, "unknown_input", type(inp).__name__)
    return state, out


_INT64 = (-(2**63), 2**63 - 1)  # what msgpack (the state) and every downstream reader can hold


def _int_fields(cls: type[Input]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(cls) if f.type in (int, int | None))


_INT_FIELDS = {
    cls: _int_fields(cls) for cls in (Block, Log, MarketParams, SubmissionSets, Rewind, Tick)
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


def pending_queries(state: State) -> list[QuerySubmissionSets]:
    """Queries emitted but not yet answered (to re-issue after a restart), in a stable order."""
    return [
        _query(lc, w)
        for lc, ms in sorted(state.domain.markets.items())
        for _, w in sorted(ms.windows.items())
        if w.query_id is not None
    ]


# -- blocks and windows -------------------------------------------------------------------


def _on_block(state: State, b: Block, out: list[Effect]) -> None:
    block_hash, parent = lower_hash(b.hash), lower_hash(b.parent_hash)
    if (
        block_hash is None
        or parent is None
        or not (0 <= b.number <= _MAX and 0 <= b.timestamp <= _MAX)
    ):
        _reject(state, out, "malformed_block", f"block {b.number}: bad hash or number", b.number)
        return
    head = state.head
    if head is not None:
        if b.number != head.number + 1:
            hint = "feed a rewind first" if b.number <= head.number else "blocks were skipped"
            detail = f"block {b.number} after head {head.number}: {hint}"
            _reject(state, out, "block_out_of_order", detail, b.number)
            return
        if parent != head.hash:
            detail = f"block {b.number} parent {parent} != head hash {head.hash}: reorg, rewind"
            _reject(state, out, "parent_mismatch", detail, b.number)
            return
        if b.timestamp < head.timestamp:
            detail = f"block {b.number} timestamp {b.timestamp} < parent's {head.timestamp}"
            _reject(state, out, "timestamp_regression", detail, b.number)
            return
    if state.dirty:
        state.snapshots.append(Snapshot(b.number - 1, dump_domain(state.domain)))
        state.dirty = False
    ref = BlockRef(b.number, block_hash, b.timestamp)
    state.blocks.append(ref)
    history.note_block(state, ref)
    out.append(SetValue(keys.block_hash(b.number), block_hash, state.config.block_hash_ttl_s))
    _close_windows(state, b.timestamp, b.number, out)
    _prune(state)


def _on_tick(state: State, t: Tick, out: list[Effect]) -> None:
    head = state.head
    if head is not None:
        _close_windows(state, t.now, head.number + 1, out)


def _close_windows(state: State, now: int, first_outside: int, out: list[Effect]) -> None:
    """Close every unqueried window whose deadline is before `now`; blocks < first_outside."""
    # markets iterate in config order (sorted at new_state, kept by msgpack): deterministic
    for lc, ms in state.domain.markets.items():
        due = [w for w in ms.windows.values() if w.query_id is None and w.deadline < now]
        if due:
            for w in sorted(due, key=lambda w: w.epoch):
                _close_window(state, lc, ms, w, first_outside, out)


def _close_window(
    state: State, lc: str, ms: MarketState, w: Window, first_outside: int, out: list[Effect]
) -> None:
    state.dirty = True
    if _is_emitted(state, lc, w.epoch):
        del ms.windows[w.epoch]
        _reject(state, out, "epoch_already_batched", f"market {lc} epoch {w.epoch}")
        return
    first = state.blocks[0].number
    inside = state.blocks[max(w.opened_at - first, 0) : first_outside - first]
    w.headers = [blk.hash for blk in inside if blk.timestamp <= w.deadline]
    w.query_id = state.next_query_id
    state.next_query_id += 1
    out.append(_query(lc, w))


def _query(lc: str, w: Window) -> QuerySubmissionSets:
    assert w.query_id is not None
    set_keys = [keys.submission_set(lc, w.epoch, h) for h in w.headers]
    return QuerySubmissionSets(w.query_id, lc, w.epoch, set_keys)


# -- logs ---------------------------------------------------------------------------------


def _on_log(state: State, log: Log, out: list[Effect]) -> None:
    where = f"log {log.log_index} of block {log.block_number}"
    if lower_address(log.address) != state.config.protocol_state:
        _reject(state, out, "foreign_address", f"{where}: address {log.address[:64]}")
        return
    head = state.head
    if head is None or log.block_number != head.number or lower_hash(log.block_hash) != head.hash:
        _reject(state, out, "log_not_at_head", f"{where}: not the current head block")
        return
    event = decode_event(log.topics, log.data)
    if isinstance(event, Refusal):
        _reject(state, out, event.reason, f"{where}: {event.detail}", log.block_number)
        return
    ms = state.domain.markets.get(event.market)
    if ms is None:
        _reject(state, out, "unconfigured_market", f"{where}: market {event.market}")
        return
    if isinstance(event, EpochReleased):
        _open_window(state, ms, event, head, out)
    elif isinstance(event, SnapshotBatchSubmitted):
        if state.config.attestor_queue_push_enabled:
            item = {
                "DataMarketAddress": checksum(event.market),
                "BatchCID": event.batch_cid,
                "EpochID": event.epoch,
            }
            out.append(ListPush(keys.ATTESTOR_QUEUE, go_json(item)))
    elif isinstance(event, BatchSubmissionsCompleted):
        if ms.last_completed_epoch is None or event.epoch > ms.last_completed_epoch:
            ms.last_completed_epoch = event.epoch
            state.dirty = True
    elif isinstance(event, DayStarted):
        ms.day = event.day
        state.dirty = True
        out.append(SetValue(keys.current_day(event.market), str(event.day)))


def _open_window(
    state: State, ms: MarketState, ev: EpochReleased, head: BlockRef, out: list[Effect]
) -> None:
    what = f"market {ev.market} epoch {ev.epoch} at block {head.number}"
    if ms.params is None:
        _reject(state, out, "no_market_params", what, head.number)
        out.append(_alert(state, "EpochReleased", f"{what}: no market parameters", "High"))
        return
    if ev.epoch in ms.windows:
        _reject(state, out, "duplicate_epoch", what, head.number)
        return
    if _is_emitted(state, ev.market, ev.epoch):
        _reject(state, out, "epoch_already_batched", what, head.number)
        return
    deadline = head.timestamp + ms.params.submission_window
    ms.windows[ev.epoch] = Window(ev.epoch, head.number, deadline)
    state.dirty = True


# -- market parameters ----------------------------------------------------------------------


def _on_market_params(state: State, p: MarketParams, out: list[Effect]) -> None:
    lc = lower_address(p.market)
    ms = state.domain.markets.get(lc) if lc is not None else None
    if lc is None or ms is None:
        _reject(state, out, "unconfigured_market", f"market parameters for {p.market[:64]}")
        return
    numbers = (p.submission_window, p.day_size, p.daily_quota, p.epochs_in_a_day, p.day_counter)
    if min(numbers) < 0 or max(numbers) > _MAX:
        _reject(state, out, "malformed_params", f"market {lc}: parameter out of range {numbers}")
        return
    params = MarketParams(lc, *numbers)
    if ms.day is None:
        ms.day = p.day_counter
    tables = (p.submission_window, p.day_size, p.daily_quota)
    old = ms.params
    ms.params = params
    # Only the start-up tables' values count: the day counter moves on, a re-read at a
    # restart must not write (or journal) anything new.
    if old is None or (old.submission_window, old.day_size, old.daily_quota) != tables:
        eip55 = checksum(lc)
        out.append(HashSet(keys.SUBMISSION_LIMIT_TABLE, eip55, str(p.submission_window)))
        out.append(HashSet(keys.DAY_SIZE_TABLE, eip55, str(p.day_size)))
        out.append(HashSet(keys.DAILY_SNAPSHOT_QUOTA_TABLE, eip55, str(p.daily_quota)))
    state.dirty = True


# -- batching -------------------------------------------------------------------------------


def _on_submission_sets(state: State, r: SubmissionSets, out: list[Effect]) -> None:
    lc = lower_address(r.market)
    ms = state.domain.markets.get(lc) if lc is not None else None
    w = ms.windows.get(r.epoch) if ms is not None else None
    if lc is None or ms is None or w is None or w.query_id != r.query_id:
        detail = f"query {r.query_id} market {r.market[:64]} epoch {r.epoch}: none pending"
        _reject(state, out, "stale_query_result", detail)
        return
    if _is_emitted(state, lc, r.epoch):  # at most once, whatever a rewind restored
        del ms.windows[r.epoch]
        state.dirty = True
        _reject(state, out, "epoch_already_batched", f"market {lc} epoch {r.epoch}")
        return
    plan = plan_batches(r.members, state.config.batch_size)
    eip55, cfg = checksum(lc), state.config
    for batch_id, batch in enumerate(plan.batches, start=1):
        out.append(ListPush(keys.FINALIZER_QUEUE, finalizer_item(eip55, r.epoch, batch_id, batch)))
        key = keys.batch_submissions(lc, r.epoch, batch_id)
        out.append(SetValue(key, go_json(batch), cfg.batch_ttl_s))
    count = len(plan.batches)
    out.append(SetValue(keys.batch_count(lc, r.epoch), str(count), cfg.batch_ttl_s))
    body: dict[str, object] = {"dataMarketAddress": eip55, "epochID": r.epoch, "batchSize": count}
    out.append(
        RelayerCall(_outbox_id("submitBatchSize", state, lc, r.epoch), "/submitBatchSize", body)
    )
    day = ms.day if ms.day is not None else 0
    if ms.counted_day != day:
        ms.counted_day, ms.counted_slots = day, []
    for slot, n in plan.slot_counts:
        first = _add_sorted(ms.counted_slots, slot)
        ttl = cfg.slot_submissions_ttl_s if first else None
        out.append(IncrementBy(keys.slot_submissions(lc, day, slot), n, ttl))
    skipped = [(e.reason, e.key, e.detail) for e in r.skipped]
    skipped += [(reason, "", _shorten(member)) for reason, member in plan.skipped]
    if skipped:
        _report_skipped(state, out, lc, r.epoch, len(w.headers), skipped)
    del ms.windows[r.epoch]
    _mark_emitted(state, lc, r.epoch, w.opened_at)
    _count(state, "epochs_batched", 1)
    _count(state, "batches", count)
    state.dirty = True


def _outbox_id(kind: str, state: State, lc: str, epoch: int) -> str:
    """The id of an epoch's outbox entry. An epoch batched again after a reorg deeper than
    MAX_REORG_DEPTH (the new chain's) gets an id of its own: the dispatcher marks an id
    done after its POST, which must never remove the new chain's entry in place of the old."""
    generation = state.counters.get("reorg_too_deep", 0)
    return f"{kind}:{lc}:{epoch}" + (f":{generation}" if generation else "")


_SKIP_EXAMPLES = 3


def _report_skipped(
    state: State,
    out: list[Effect],
    lc: str,
    epoch: int,
    sets: int,
    skipped: list[tuple[str, str, str]],
) -> None:
    """Count what a window's sets held that could not be batched, by reason, and alert once
    for the window, naming the market, epoch, keys and (shortened) members. The window is
    batched with the rest: one bad submission never stops a market, let alone the others."""
    by_reason: dict[str, int] = {}
    named = sorted((_reason(reason), key, detail) for reason, key, detail in skipped)
    for reason, _, _ in named:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    for name, n in sorted(by_reason.items()):
        _count(state, name, n)
    counts = ", ".join(f"{name} {n}" for name, n in sorted(by_reason.items()))
    examples = "; ".join(
        f"{reason} {_clip(detail)} in "
        + (_clip(key, 160) if key else f"one of the window's {sets} sets")
        for reason, key, detail in named[:_SKIP_EXAMPLES]
    )
    message = (
        f"market {checksum(lc)} epoch {epoch}: skipped {len(skipped)}"
        f" entr{'y' if len(skipped) == 1 else 'ies'} of the window's"
        f" submission sets ({counts}), batched the rest; {examples}. Upstream (the dequeuer)"
        " wrote them: a member must be <market>.<epoch>.<project>.<slot> in a set"
    )
    out.append(
        Alert(_outbox_id("skipped", state, lc, epoch), "BatchPreparation", message, "Medium")
    )


def _reason(reason: str) -> str:
    return reason if reason in SKIP_REASONS else "other_skipped"


def _clip(text: str, limit: int = 120) -> str:
    """Text from outside (a key, the shell's description of a member), shortened, JSON-safe."""
    return _printable(text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)")


def _shorten(text: str, limit: int = 80) -> str:
    """`text` quoted, at most about `limit` characters, safe to write as JSON."""
    if len(text) <= limit:
        return _printable(repr(text))
    return _printable(repr(text[:limit])) + f"... ({len(text)} chars)"


def _printable(text: str) -> str:
    """`text` with anything UTF-8 cannot carry (lone surrogates) escaped."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _add_sorted(values: list[int], value: int) -> bool:
    """Insert into a sorted list; True if it was not there."""
    i = bisect_left(values, value)
    if i < len(values) and values[i] == value:
        return False
    values.insert(i, value)
    return True


def _is_emitted(state: State, lc: str, epoch: int) -> bool:
    e = state.emitted.get(lc)
    if e is None:
        return False
    i = bisect_left(e.epochs, epoch)
    return epoch <= e.floor or (i < len(e.epochs) and e.epochs[i] == epoch)


def _mark_emitted(state: State, lc: str, epoch: int, release: int) -> None:
    history.mark_emitted(state, lc, epoch, release, state.config.emitted_epochs_kept)


# -- reorgs ---------------------------------------------------------------------------------


def _on_rewind(state: State, r: Rewind, out: list[Effect]) -> None:
    head = state.head
    if head is None or r.to_block >= head.number:
        return
    # every replaced block's key, not only those of the blocks still held (`core.history`)
    first_key, last_key = history.replaced_block_keys(r.to_block, head.number)
    out.append(DeleteKeys([keys.block_hash(n) for n in range(first_key, last_key + 1)]))
    depth = head.number - r.to_block
    oldest = state.blocks[0].number
    base = [s for s in state.snapshots if s.block <= r.to_block]
    state.blocks = [b for b in state.blocks if b.number <= r.to_block]
    history.drop_anchors_above(state, r.to_block)
    if depth > state.config.max_reorg_depth or not base or r.to_block < oldest:
        _deep_rewind(state, r.to_block, head, depth, oldest, (first_key, last_key), out)
        state.snapshots = base  # snapshots above the rewind belong to the orphaned branch
        state.dirty = True
        return
    state.domain = load_domain(base[-1].domain)
    state.snapshots = base
    state.dirty = False
    for lc, ms in state.domain.markets.items():  # batched since the snapshot: not again
        for epoch in [e for e in ms.windows if _is_emitted(state, lc, e)]:
            del ms.windows[epoch]
            state.dirty = True
    _count(state, "rewinds", 1)


def _deep_rewind(
    state: State,
    to_block: int,
    head: BlockRef,
    depth: int,
    oldest: int,
    deleted: tuple[int, int],
    out: list[Effect],
) -> None:
    """A reorg deeper than MAX_REORG_DEPTH or below the retained blocks: resume from the
    block it names (held, an anchor, or none: a new base), drop the windows and forget the
    emitted epochs of the replaced blocks, and say what could not be undone."""
    what = f"reorg of {depth} blocks to block {to_block} (head {head.number})"
    _reject(state, out, "reorg_too_deep", what, to_block if to_block >= 0 else None)
    limit = state.config.max_reorg_depth
    if depth > limit:
        parts = [f"{what} exceeds MAX_REORG_DEPTH={limit}"]
    else:
        parts = [f"{what} (MAX_REORG_DEPTH={limit}) reaches below the history kept"]
    if to_block < oldest:
        _count(state, "chain_resets", 1)
        anchor = history.rewind_base(state, to_block)
        if anchor is not None:
            state.blocks = [anchor]
            parts.append(f"below the blocks held (from {oldest}): resumed from anchor block")
        else:
            _count(state, "unlinked_bases", 1)
            parts.append(
                f"below the blocks held (from {oldest}) and no anchor there: the next block"
                " is accepted as a new base, its parent unchecked"
            )
    first_key, last_key = deleted
    if first_key <= last_key:
        parts.append(f"deleted BlockHashByNumberKey of blocks {first_key}..{last_key}")
    if first_key > to_block + 1:
        ttl = state.config.block_hash_ttl_s
        parts.append(f"those of blocks {to_block + 1}..{first_key - 1} expire by their TTL {ttl} s")
    dropped: list[str] = []
    for lc, ms in state.domain.markets.items():
        gone = sorted(e for e, w in ms.windows.items() if w.opened_at > to_block)
        for epoch in gone:
            del ms.windows[epoch]
        if gone:
            dropped.append(f"market {checksum(lc)} epochs {history.summary(gone)}")
    parts.append("windows dropped: " + ("; ".join(dropped) if dropped else "none"))
    forgotten = history.forget_emitted(state, to_block)
    if forgotten:
        _count(state, "batches_not_undone", sum(len(v) for v in forgotten.values()))
        listed = "; ".join(
            f"market {checksum(lc)} epochs {history.summary(epochs)}"
            for lc, epochs in forgotten.items()
        )
        parts.append(
            f"already batched and pushed to {keys.FINALIZER_QUEUE} from the replaced blocks,"
            f" which cannot be undone (the new chain's epochs are batched anew): {listed}"
        )
    parts.append("check the node and the batches")
    out.append(_alert(state, "Reorg", "; ".join(parts), "High"))


def _prune(state: State) -> None:
    """Every _PRUNE_EVERY blocks, drop history no rewind of max_reorg_depth or open window needs."""
    head = state.blocks[-1].number
    if head % _PRUNE_EVERY:
        return
    keep_from = head - state.config.max_reorg_depth
    for ms in state.domain.markets.values():
        for w in ms.windows.values():
            if w.query_id is None:
                keep_from = min(keep_from, w.opened_at)
    if state.blocks[0].number < keep_from:
        state.blocks = state.blocks[keep_from - state.blocks[0].number :]
    # keep the newest snapshot below the limit: it is the base of the deepest rewind
    limit = head - state.config.max_reorg_depth
    base = bisect_left(state.snapshots, limit, key=lambda s: s.block) - 1
    if base > 0:
        state.snapshots = state.snapshots[base:]


# -- reporting ------------------------------------------------------------------------------


def _count(state: State, name: str, n: int) -> None:
    state.counters[name] = state.counters.get(name, 0) + n


def _reject(
    state: State, out: list[Effect], reason: str, detail: str, block: int | None = None
) -> None:
    _count(state, reason, 1)
    out.append(Rejected(reason, _printable(detail), block))


def _alert(state: State, step_name: str, message: str, severity: str) -> Alert:
    return Alert(f"{step_name}:{state.inputs_seen}", step_name, message, severity)

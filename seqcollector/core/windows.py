"""Submission windows: opened by EpochReleased, closed by the first block (or tick) past
their deadline, batched when the sets of their blocks arrive.

The window of (market, epoch) holds every block from the release block whose timestamp is
<= release timestamp + snapshotSubmissionWindow. `advance` is the one place a window moves
between phases (`state.Phase`: OPEN -> QUERIED -> BATCHED) and the one place the
at-most-once rule is applied: an epoch whose batches were emitted (`core.history`) never
gets a window again, whatever a rewind restored.
"""

from __future__ import annotations

from seqcollector.core import days, expired_sets, history, keys, queries, rewards
from seqcollector.core.abi import EpochReleased
from seqcollector.core.batching import emit_batches, plan_batches, report_skipped
from seqcollector.core.effects import Effect, QuerySubmissionSets
from seqcollector.core.inputs import SubmissionSets
from seqcollector.core.reporting import alert, count, reject, shorten
from seqcollector.core.state import BlockRef, MarketState, Phase, State, Window

# the phase a window must be in to move to each phase (None: no window yet)
_FROM: dict[Phase, Phase | None] = {
    Phase.OPEN: None,
    Phase.QUERIED: Phase.OPEN,
    Phase.BATCHED: Phase.QUERIED,
}


def advance(
    state: State,
    lc: str,
    ms: MarketState,
    epoch: int,
    to: Phase,
    out: list[Effect],
    block: int | None = None,
) -> bool:
    """Move the window of (lc, epoch) to phase `to`; False (and nothing moved) if its epoch
    was already batched: the window is dropped with its queries and the move refused
    (`epoch_already_batched`). Opening creates no window here (`open_window` does)."""
    w = ms.windows.get(epoch)
    assert (w.phase if w is not None else None) == _FROM[to], (lc, epoch, w, to)
    if history.is_emitted(state, lc, epoch):
        if w is not None:
            del ms.windows[epoch]
            queries.drop_owned(state, lc, epoch)
        where = f" at block {block}" if block is not None else ""
        reject(state, out, "epoch_already_batched", f"market {lc} epoch {epoch}{where}", block)
        return False
    if w is not None:
        if to is Phase.BATCHED:
            del ms.windows[epoch]
            history.mark_emitted(state, lc, epoch, w.opened_at, state.config.emitted_epochs_kept)
        else:
            w.phase = to
    return True


def open_window(
    state: State, ms: MarketState, ev: EpochReleased, head: BlockRef, out: list[Effect]
) -> bool:
    """EpochReleased at the head block: open its window. -> the domain changed."""
    what = f"market {ev.market} epoch {ev.epoch} at block {head.number}"
    if ms.params is None:
        reject(state, out, "no_market_params", what, head.number)
        out.append(alert(state, "EpochReleased", f"{what}: no market parameters", "High"))
        return False
    if ev.epoch in ms.windows:
        reject(state, out, "duplicate_epoch", what, head.number)
        return False
    if not advance(state, ev.market, ms, ev.epoch, Phase.OPEN, out, head.number):
        return False
    deadline = head.timestamp + ms.params.submission_window
    ms.windows[ev.epoch] = Window(ev.epoch, head.number, deadline)
    return True


def close_due(state: State, now: int, first_outside: int, out: list[Effect]) -> bool:
    """Close every open window whose deadline is before `now` (a block's timestamp or a
    tick); its blocks are those < first_outside. -> the domain changed."""
    changed = False
    # markets iterate in config order (sorted at new_state, kept by msgpack): deterministic
    for lc, ms in state.domain.markets.items():
        due = [w for w in ms.windows.values() if w.phase is Phase.OPEN and w.deadline < now]
        for w in sorted(due, key=lambda w: w.epoch):
            changed = True
            if advance(state, lc, ms, w.epoch, Phase.QUERIED, out):
                out.append(_query_sets(state, lc, w, first_outside))
    return changed


def _query_sets(state: State, lc: str, w: Window, first_outside: int) -> QuerySubmissionSets:
    first = state.blocks[0].number
    inside = state.blocks[max(w.opened_at - first, 0) : first_outside - first]
    set_keys = [
        keys.submission_set(lc, w.epoch, blk.hash) for blk in inside if blk.timestamp <= w.deadline
    ]
    made = queries.issue(state, lambda qid: QuerySubmissionSets(qid, lc, w.epoch, set_keys))
    assert isinstance(made, QuerySubmissionSets)
    return made


def _sets_live(state: State, q: QuerySubmissionSets) -> bool:
    ms = state.domain.markets.get(q.market)
    w = ms.windows.get(q.epoch) if ms is not None else None
    return w is not None and w.phase is Phase.QUERIED


def _on_sets(state: State, q: QuerySubmissionSets, r: SubmissionSets, out: list[Effect]) -> bool:
    """The window's sets arrived: batch them (finalizer items, batch count, the relayer's
    batch size, the day's slot counts), record the epoch as emitted, then the day
    transition and reward updates of that batch preparation (`core.rewards`)."""
    lc, ms = q.market, state.domain.markets[q.market]
    deadline = ms.windows[q.epoch].deadline
    if not advance(state, lc, ms, q.epoch, Phase.BATCHED, out):
        return True
    expired_sets.note(state, lc, q.epoch, deadline, r.read_at, r.sets_ttl_s, out)
    plan = plan_batches(r.members, state.config.batch_size)
    emit_batches(state, lc, q.epoch, plan.batches, out)
    days.count_slots(state, lc, ms, plan.slot_counts, out)
    skipped = [(e.reason, e.key, e.detail) for e in r.skipped]
    skipped += [(reason, "", shorten(member)) for reason, member in plan.skipped]
    if skipped:
        report_skipped(state, out, lc, q.epoch, len(q.keys), skipped)
    count(state, "epochs_batched", 1)
    count(state, "batches", len(plan.batches))
    # after the batches, in the same step: nothing of the rewards can hold them back (R1)
    head = state.head
    rewards.on_batch_prepared(state, lc, ms, q.epoch, head.number if head else 0, out)
    return True


queries.register(queries.Kind(QuerySubmissionSets, SubmissionSets, _sets_live, _on_sets))


def drop_batched(state: State) -> bool:
    """After a rewind restored the domain: drop the windows (and their queries) of epochs
    batched since, silently: they are never batched again. -> any dropped."""
    dropped = False
    for lc, ms in state.domain.markets.items():
        for epoch in [e for e in ms.windows if history.is_emitted(state, lc, e)]:
            del ms.windows[epoch]
            queries.drop_owned(state, lc, epoch)
            dropped = True
    return dropped


def drop_opened_after(state: State, block: int) -> dict[str, list[int]]:
    """Drop the windows released above `block` (a chain that no longer exists) and their
    queries -> per market, the epochs dropped (sorted)."""
    gone: dict[str, list[int]] = {}
    for lc, ms in state.domain.markets.items():
        epochs = sorted(e for e, w in ms.windows.items() if w.opened_at > block)
        for epoch in epochs:
            del ms.windows[epoch]
            queries.drop_owned(state, lc, epoch)
        if epochs:
            gone[lc] = epochs
    return gone


def oldest_open_block(state: State) -> int | None:
    """The release block of the oldest window still collecting blocks (history must keep
    its blocks)."""
    opened = [
        w.opened_at
        for ms in state.domain.markets.values()
        for w in ms.windows.values()
        if w.phase is Phase.OPEN
    ]
    return min(opened) if opened else None

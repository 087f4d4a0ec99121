"""Reorgs: `Rewind(to_block)` restores the domain as it was at that block.

Within MAX_REORG_DEPTH and the retained history, the domain comes back from the newest
snapshot at or below the block, minus the windows of epochs batched since (never batched
again). Deeper (or below the history kept) the core resumes from the block it names
(`core.history`), drops the windows released above it, forgets the epochs emitted from the
replaced blocks, and says in one alert what could not be undone.

An operator's rewind (`seqcollector rewind --to-block N`) is that same reorg rewind, taken
only where it restores the retained history exactly (`rewind_to`): from the oldest block
`oldest_rewind_block` names to the block below the head; anything else is refused.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from seqcollector.core import history, keys, windows
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import DeleteKeys, Effect, Rejected
from seqcollector.core.inputs import Rewind
from seqcollector.core.reporting import alert, count, reject
from seqcollector.core.state import BlockRef, State, load_domain


def on_rewind(state: State, r: Rewind, out: list[Effect]) -> bool:
    """-> the domain changed since the snapshot it was restored from (or not restored)."""
    head = state.head
    if head is None or r.to_block >= head.number:
        return False
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
        return True
    state.domain = load_domain(base[-1].domain)
    state.snapshots = base
    state.dirty = False  # the domain is the snapshot's
    count(state, "rewinds", 1)
    return windows.drop_batched(state)  # batched since the snapshot: not again


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
    reject(state, out, "reorg_too_deep", what, to_block if to_block >= 0 else None)
    limit = state.config.max_reorg_depth
    if depth > limit:
        parts = [f"{what} exceeds MAX_REORG_DEPTH={limit}"]
    else:
        parts = [f"{what} (MAX_REORG_DEPTH={limit}) reaches below the history kept"]
    if to_block < oldest:
        count(state, "chain_resets", 1)
        anchor = history.rewind_base(state, to_block)
        if anchor is not None:
            state.blocks = [anchor]
            parts.append(f"below the blocks held (from {oldest}): resumed from anchor block")
        else:
            count(state, "unlinked_bases", 1)
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
    dropped = [
        f"market {checksum(lc)} epochs {history.summary(epochs)}"
        for lc, epochs in windows.drop_opened_after(state, to_block).items()
    ]
    parts.append("windows dropped: " + ("; ".join(dropped) if dropped else "none"))
    forgotten = history.forget_emitted(state, to_block)
    if forgotten:
        count(state, "batches_not_undone", sum(len(v) for v in forgotten.values()))
        listed = "; ".join(
            f"market {checksum(lc)} epochs {history.summary(epochs)}"
            for lc, epochs in forgotten.items()
        )
        parts.append(
            f"already batched and pushed to {keys.FINALIZER_QUEUE} from the replaced blocks,"
            f" which cannot be undone (the new chain's epochs are batched anew): {listed}"
        )
    parts.append("check the node and the batches")
    out.append(alert(state, "Reorg", "; ".join(parts), "High"))


# -- an operator's rewind -----------------------------------------------------------------


class RewindRefusal(msgspec.Struct, frozen=True):
    """Why `rewind_to` changed nothing: no block was processed yet (`no_blocks`), the block
    is not below the head (`not_below_head`), or it is below what the retained history
    restores exactly (`beyond_history`; `oldest` is how far back it can go, None: nowhere)."""

    reason: Literal["no_blocks", "not_below_head", "beyond_history"]
    to_block: int
    head: int | None
    oldest: int | None


def oldest_rewind_block(state: State) -> int | None:
    """The oldest block a rewind restores from the retained history, as a reorg within
    MAX_REORG_DEPTH does (`on_rewind` without `_deep_rewind`): at most MAX_REORG_DEPTH
    below the head, a block still held, with a snapshot at or below it. None: no block
    below the head qualifies."""
    head = state.head
    if head is None or not state.snapshots:
        return None
    oldest = max(
        head.number - state.config.max_reorg_depth,
        state.blocks[0].number,
        state.snapshots[0].block,  # snapshots are in block order
    )
    return oldest if oldest < head.number else None


def rewind_to(state: State, to_block: int) -> list[Effect] | RewindRefusal:
    """Rewind the state to block `to_block` as a reorg whose common ancestor is that block
    would: the core's own `step(state, Rewind(to_block))`, so the domain is the one the
    core had after block `to_block` (less the windows of epochs batched since, which are
    never batched again), and the effects are the reorg's (`BlockHashByNumberKey` of the
    blocks above it deleted). Only within the retained history (`oldest_rewind_block`);
    otherwise the state is left untouched and the refusal says why."""
    from seqcollector.core.machine import step  # machine dispatches rewinds to this module

    head = state.head
    if head is None:
        return RewindRefusal("no_blocks", to_block, None, None)
    oldest = oldest_rewind_block(state)
    if to_block >= head.number:
        return RewindRefusal("not_below_head", to_block, head.number, oldest)
    if oldest is None or to_block < oldest:
        return RewindRefusal("beyond_history", to_block, head.number, oldest)
    effects = step(state, Rewind(to_block))[1]
    assert not any(isinstance(e, Rejected) for e in effects), effects  # within the history
    return effects


def batched_above(state: State, to_block: int) -> dict[str, list[int]]:
    """Per market, the epochs batched after block `to_block`, read before rewinding to it:
    those whose window the restored snapshot holds (dropped by the rewind) and those
    released above it. A rewind keeps them batched; their batches stay pushed."""
    base = [s for s in state.snapshots if s.block <= to_block]
    held = load_domain(base[-1].domain).markets if base else {}
    out: dict[str, list[int]] = {}
    for lc, e in sorted(state.emitted.items()):
        ms = held.get(lc)
        epochs = {
            epoch for epoch in (ms.windows if ms else ()) if history.is_emitted(state, lc, epoch)
        }
        if len(e.released) == len(e.epochs):
            epochs.update(ep for ep, at in zip(e.epochs, e.released, strict=True) if at > to_block)
        if epochs:
            out[lc] = sorted(epochs)
    return out

"""Reorgs: `Rewind(to_block)` restores the domain as it was at that block.

Within MAX_REORG_DEPTH and the retained history, the domain comes back from the newest
snapshot at or below the block, minus the windows of epochs batched since (never batched
again). Deeper (or below the history kept) the core resumes from the block it names
(`core.history`), drops the windows released above it, forgets the epochs emitted from the
replaced blocks, and says in one alert what could not be undone.
"""

from __future__ import annotations

from seqcollector.core import history, keys, windows
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import DeleteKeys, Effect
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

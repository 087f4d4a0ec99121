"""Chain history beyond the recent blocks: anchors, rewinds below the retained blocks, and
which emitted epochs a reorg that deep takes back.

Pure helpers of `core.machine` (no I/O, no clock, never raising); the follower uses the
same anchor rule on the blocks it yields (`push_anchor`).

Anchors. Besides the contiguous recent blocks (`State.blocks`, `MAX_REORG_DEPTH` and the
open windows' worth), the state keeps sparse `BlockRef`s at exponentially spaced distances:
for every level k, the latest block processed whose number is a multiple of 2^k, plus
`origin`, the first block processed (block 0 counts as a multiple of every 2^k). Kept as
one list, oldest first, in which the trailing-zero count of the numbers strictly decreases
towards the newest: a new block pops every newer anchor whose level it covers. So at most
64 entries, O(1) amortised per block, and a chain reset of any depth finds a recent
common block within a factor of two of the reset's depth. They are in the checkpointed
state, so they survive restarts; the follower gets them with its `known` blocks.

Rewinds below the retained blocks (`rewind_base`). A `Rewind(a)` to a block the core no
longer holds is a reorg deeper than its history:
- a is an anchor: the anchor becomes the head, so the next block (a+1) is linked to it
  and the parent check stays intact;
- otherwise (`a == -1` is the follower's "nothing in common": another chain, a reset to
  genesis) every block is forgotten and the next block is accepted as a new base whose
  parent cannot be checked: counted (`unlinked_bases`) and alerted.
Either way the anchors above a go, and `BlockHashByNumberKey.<n>` is deleted for every n in
(a, old head], not only for the blocks held (`replaced_block_keys`, at most the newest
`MAX_KEYS_DELETED`; older ones expire by their TTL); the new chain's blocks rewrite
theirs as they are processed.

Epochs. Within MAX_REORG_DEPTH an epoch's batches are emitted at most once, ever (the rule
the simulation's twin digests depend on). A reorg deeper than that (or below the retained
history) replaces blocks whose epochs belong to a chain that no longer exists: the epochs
released in the replaced blocks are forgotten from `State.emitted` (`forget_emitted`,
which is why each emitted epoch keeps its release block), so the new chain's epochs with
the same ids are batched; the alert lists those whose batches were already pushed to
`finalizerQueue`, which cannot be undone.
"""

from __future__ import annotations

from bisect import bisect_left

from seqcollector.core.state import BlockRef, EmittedEpochs, Phase, State

PRUNE_EVERY = 128  # prune history in chunks, not on every block
MAX_KEYS_DELETED = 100_000  # BlockHashByNumberKey deletions per rewind; older keys expire
_LEVELS = 63  # numbers are < 2^62 (see machine._MAX): 0 counts as the top level


def level(number: int) -> int:
    """The anchor level of a block number: its count of trailing zero bits (0: the top)."""
    if number <= 0:
        return _LEVELS
    return min((number & -number).bit_length() - 1, _LEVELS)


_TOP_BIT = 1 << _LEVELS  # the lowest set bit of block 0, as it were


def push_anchor(anchors: list[BlockRef], ref: BlockRef) -> None:
    """Add the newest processed block to `anchors` (oldest first): it replaces every newer
    anchor of a level it covers, so levels strictly decrease towards the newest. (Levels
    compare as lowest set bits: a per-block cost of a few tenths of a microsecond.)"""
    n = ref.number
    low = n & -n if n > 0 else _TOP_BIT
    while anchors:
        top = anchors[-1].number
        if top >= n or (top & -top if top > 0 else _TOP_BIT) <= low:
            anchors.pop()
        else:
            break
    anchors.append(ref)


def note_block(state: State, ref: BlockRef) -> None:
    """A block was processed: keep the anchors and the origin up to date."""
    if state.origin is None:
        state.origin = ref
    push_anchor(state.anchors, ref)


def anchor_refs(state: State) -> list[BlockRef]:
    """The origin and the anchors, oldest first, without duplicates (for the follower)."""
    out = [] if state.origin is None else [state.origin]
    for ref in state.anchors:
        if not out or ref.number > out[-1].number:
            out.append(ref)
        elif ref.number == out[-1].number and ref.hash != out[-1].hash:
            out[-1] = ref  # the origin was replaced on a reorg within the history
    return out


def drop_anchors_above(state: State, to_block: int) -> None:
    while state.anchors and state.anchors[-1].number > to_block:
        state.anchors.pop()
    if state.origin is not None and state.origin.number > to_block:
        state.origin = None


def rewind_base(state: State, to_block: int) -> BlockRef | None:
    """The block a rewind below the retained blocks resumes from: the anchor at `to_block`
    (or the origin), or None when there is none (the next block becomes a new base)."""
    for ref in reversed(state.anchors):
        if ref.number == to_block:
            return ref
        if ref.number < to_block:
            break
    origin = state.origin
    return origin if origin is not None and origin.number == to_block else None


def replaced_block_keys(to_block: int, head: int) -> tuple[int, int]:
    """The block numbers [first, last] whose BlockHashByNumberKey a rewind to `to_block`
    from `head` deletes: (to_block, head], the newest MAX_KEYS_DELETED of them."""
    return max(to_block + 1, head - MAX_KEYS_DELETED + 1, 0), head


def is_emitted(state: State, lc: str, epoch: int) -> bool:
    """Were the batches of (lc, epoch) emitted (at most once, ever: `core.windows`)?"""
    e = state.emitted.get(lc)
    if e is None:
        return False
    i = bisect_left(e.epochs, epoch)
    return epoch <= e.floor or (i < len(e.epochs) and e.epochs[i] == epoch)


def prune(state: State) -> None:
    """Every PRUNE_EVERY blocks, drop the blocks and snapshots no rewind of max_reorg_depth
    and no open window needs."""
    head = state.blocks[-1].number
    if head % PRUNE_EVERY:
        return
    keep_from = head - state.config.max_reorg_depth
    for ms in state.domain.markets.values():
        for w in ms.windows.values():
            if w.phase is Phase.OPEN:
                keep_from = min(keep_from, w.opened_at)
    if state.blocks[0].number < keep_from:
        state.blocks = state.blocks[keep_from - state.blocks[0].number :]
    # keep the newest snapshot below the limit: it is the base of the deepest rewind
    limit = head - state.config.max_reorg_depth
    base = bisect_left(state.snapshots, limit, key=lambda s: s.block) - 1
    if base > 0:
        state.snapshots = state.snapshots[base:]


def mark_emitted(state: State, lc: str, epoch: int, release: int, kept: int) -> None:
    """`epoch` of market `lc`, released at block `release`, was batched."""
    e = state.emitted.setdefault(lc, EmittedEpochs())
    if len(e.released) != len(e.epochs):  # a state from before release blocks were kept
        e.released = [-1] * len(e.epochs)
    i = bisect_left(e.epochs, epoch)
    e.epochs.insert(i, epoch)
    e.released.insert(i, release)
    if len(e.epochs) > kept:
        e.floor = max(e.floor, e.epochs.pop(0))
        e.released.pop(0)


def forget_emitted(state: State, to_block: int) -> dict[str, list[int]]:
    """Forget the emitted epochs released above `to_block` (a chain that no longer exists)
    -> per market, the epochs forgotten: their batches were pushed and cannot be undone."""
    gone: dict[str, list[int]] = {}
    for lc, e in sorted(state.emitted.items()):
        if len(e.released) != len(e.epochs):
            continue  # release blocks unknown: keep the at-most-once rule
        keep = [i for i, at in enumerate(e.released) if at <= to_block]
        if len(keep) == len(e.epochs):
            continue
        gone[lc] = [e.epochs[i] for i, at in enumerate(e.released) if at > to_block]
        e.epochs = [e.epochs[i] for i in keep]
        e.released = [e.released[i] for i in keep]
    return gone


def summary(items: list[int], limit: int = 10) -> str:
    """`[1, 2, 3]`, or its first `limit` and how many more."""
    if len(items) <= limit:
        return str(items)
    return f"{str(items[:limit])[:-1]}, ... (+{len(items) - limit} more)]"

"""Replaying a run's journal through the core: the canonical effects, the digest, and the
timeline of windows and batches for the report and the invariants."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from seqcollector.core import invariants, new_state, step
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import (
    Effect,
    ListPush,
    QuerySubmissionSets,
    RelayerCall,
    SetValue,
)
from seqcollector.core.state import BlockRef
from seqcollector.journal import EffectsDigest, read_header, read_inputs
from sim.keysum import KeySum, item_digest
from sim.record import BatchMark, WindowSpan


class Timeline:
    def __init__(self) -> None:
        self.windows: dict[tuple[str, int], WindowSpan] = {}
        self.batches: list[BatchMark] = []
        self.closed_at: dict[tuple[str, int], tuple[int, str]] = {}  # (number, hash) of close
        self.pushed: Counter[str] = Counter()  # digests of the finalizerQueue items pushed
        self.batch_counts: dict[tuple[str, int], int] = {}
        # an epoch batched again after a reorg deeper than MAX_REORG_DEPTH (the new chain's
        # epoch of the same id): what its earlier generations pushed, which cannot be undone
        self.superseded: dict[tuple[str, int], Superseded] = {}
        self.opened_hash: dict[tuple[str, int], str] = {}  # the release block's, last opened
        # the periodic reward update (P1) bodies committed, by (market, epoch)
        self.periodic: dict[tuple[str, int], list[dict[str, object]]] = {}
        self.digest = ""
        self._generation: dict[tuple[str, int], Superseded] = {}  # the latest, per epoch


class Superseded:
    """Queue items of an epoch's earlier generations: batch ids, key multiset, item count,
    how many generations."""

    def __init__(self) -> None:
        self.batch_ids: list[int] = []
        self.keys = KeySum()
        self.generations = 0

    def add(self, other: Superseded) -> None:
        self.batch_ids += other.batch_ids
        self.keys = self.keys.plus(other.keys)
        self.generations += max(other.generations, 1)


def replay_timeline(journal: Path, effects_out: Path | None = None) -> Timeline:
    """Step every input of `journal`; optionally write the effects stream (one JSON line)."""
    t = Timeline()
    state = new_state(read_header(journal).config)
    out = effects_out.open("wb") if effects_out is not None else None
    digest = EffectsDigest(out)
    try:
        for _, _, inp in read_inputs(journal):
            before = {(lc, e) for lc, ms in state.domain.markets.items() for e in ms.windows}
            _, effects = step(state, inp)
            invariants.check(state)
            digest.add(effects)
            head = state.head
            for lc, ms in state.domain.markets.items():
                for e, w in ms.windows.items():
                    if (lc, e) not in before:
                        t.windows[(lc, e)] = WindowSpan(checksum(lc), e, w.opened_at, None)
                        t.opened_hash[(lc, e)] = _hash_of(state.blocks, w.opened_at)
            _scan(t, effects, head.number if head else -1, head.hash if head else "")
    finally:
        if out is not None:
            out.close()
    t.digest = digest.hexdigest()
    return t


def _hash_of(blocks: list[BlockRef], number: int) -> str:
    i = number - blocks[0].number if blocks else -1
    return blocks[i].hash if 0 <= i < len(blocks) else ""


def _scan(t: Timeline, effects: list[Effect], head: int, head_hash: str) -> None:
    pushes: dict[tuple[str, int], int] = {}
    keys_in: dict[tuple[str, int], int] = {}
    this_step: dict[tuple[str, int], Superseded] = {}
    for effect in effects:
        if isinstance(effect, QuerySubmissionSets):
            key = (effect.market, effect.epoch)
            t.closed_at[key] = (head, head_hash)
            if key in t.windows:
                w = t.windows[key]
                t.windows[key] = WindowSpan(w.market, w.epoch, w.opened_block, head)
        elif isinstance(effect, RelayerCall) and effect.id.startswith("rewards-periodic:"):
            _, lc, epoch_text = effect.id.split(":")[:3]
            t.periodic.setdefault((lc, int(epoch_text)), []).append(effect.body)
        elif isinstance(effect, ListPush) and effect.key == "finalizerQueue":
            t.pushed[item_digest(effect.value)] += 1
            item = json.loads(effect.value)
            key = (item["DataMarketAddress"].lower(), item["EpochID"])
            keys_in[key] = keys_in.get(key, 0) + sum(len(v) for v in item["Batch"].values())
            gen = this_step.setdefault(key, Superseded())
            gen.batch_ids.append(int(item["BatchID"]))
            for members in item["Batch"].values():
                for member in members:
                    gen.keys.add(member)
        elif isinstance(effect, SetValue) and effect.key.startswith("BatchCountKey."):
            _, lc, epoch_text = effect.key.split(".")
            key = (lc, int(epoch_text))
            if key in t.batch_counts:  # batched again: the earlier generation is superseded
                t.superseded.setdefault(key, Superseded()).add(t._generation[key])
            t._generation[key] = this_step.get(key, Superseded())
            t.batch_counts[key] = int(effect.value)
            pushes[key] = int(effect.value)
    for (market, epoch), n in pushes.items():
        mark = BatchMark(checksum(market), epoch, n, keys_in.get((market, epoch), 0), head)
        t.batches.append(mark)

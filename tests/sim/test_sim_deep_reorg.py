"""The `deepreorg` fault (fast mode): a reorg deeper than the collector's MAX_REORG_DEPTH.

Every canonical epoch of the new chain is batched exactly once with exactly its window's
submissions (the old chain's batches of the same epoch ids stay pushed, counted apart), the
digest equals the clean twin's under crashes, outages and relayer faults, and the invariants
catch the old at-most-once-ever rule (the new chain's epochs never batched)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from seqcollector.core import history
from sim.harness import SimFailed, SimSpec, run_simulation, world_spec
from sim.record import SimRecord

SMALL = {"epochs": 6, "markets": 2, "projects": 4, "slots": 5}


def simulate(spec: SimSpec, out: Path) -> SimRecord:
    return anyio.run(run_simulation, spec, out)


@pytest.mark.parametrize("seed", range(1, 21))
def test_deep_reorgs_keep_every_invariant(seed: int, tmp_path: Path) -> None:
    spec = SimSpec(seed=seed, faults=frozenset({"deepreorg"}), **SMALL)
    [(_at, depth)] = world_spec(spec).reorgs
    assert depth > 2 * spec.max_reorg_depth  # deeper than the collector's MAX_REORG_DEPTH
    record = simulate(spec, tmp_path)
    assert all(i.ok for i in record.invariants), record.invariants
    assert record.summary["deep reorgs"] == 1
    assert [f.kind for f in record.faults] == ["deepreorg"]


def test_deep_reorg_with_crashes_and_outages_has_the_clean_twins_digest(tmp_path: Path) -> None:
    faults = frozenset({"deepreorg", "reorg", "crash", "redis", "relayer"})
    record = simulate(SimSpec(seed=8, faults=faults, crash_rate=0.08, **SMALL), tmp_path / "a")
    names = [i.name for i in record.invariants if i.ok]
    assert "same effects digest as the clean run of the seed" in names
    assert len(names) == 6  # with "no commit after lease loss" (vacuous: no failover here)
    clean = simulate(SimSpec(seed=8, faults=frozenset({"deepreorg", "reorg"}), **SMALL), tmp_path)
    assert clean.digest == record.digest
    again = record.summary["epochs batched again after a deep reorg (old batches not undone)"]
    assert isinstance(again, int) and again > 0


def test_the_old_at_most_once_ever_rule_fails_the_invariants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "forget_emitted", lambda state, to_block: {})
    with pytest.raises(SimFailed, match="after a deep reorg, never batched from it"):
        simulate(SimSpec(seed=1, faults=frozenset({"deepreorg"}), **SMALL), tmp_path)


def test_existing_kinds_draw_the_same_world_as_before(tmp_path: Path) -> None:
    """`deepreorg` draws from its own RNG: the other kinds' worlds do not move."""
    base = SimSpec(seed=3, faults=frozenset({"reorg", "crash"}), **SMALL)
    deep = SimSpec(seed=3, faults=frozenset({"reorg", "crash", "deepreorg"}), **SMALL)
    shallow = dict(world_spec(base).reorgs)
    with_deep = dict(world_spec(deep).reorgs)
    assert all(with_deep.get(at) == d for at, d in shallow.items() if at in with_deep)
    assert len(with_deep) >= len(shallow)

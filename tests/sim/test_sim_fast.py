"""The simulation harness in fast mode: invariants under every fault on 50 seeds, the same
digest for the same seed (and from `replay`), crashes anywhere, random fault mixes."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.replay import replay_journal
from sim.faults import KINDS
from sim.harness import SimFailed, SimSpec, run_simulation
from sim.spawned import Spawned

SMALL = {"epochs": 6, "markets": 2, "projects": 4, "slots": 5}
SOAK = os.environ.get("SEQ_SOAK", "") == "1"


def simulate(spec: SimSpec, out: Path) -> object:
    return anyio.run(run_simulation, spec, out)


@pytest.mark.parametrize("seed", range(1, 51))
def test_every_invariant_holds_with_every_fault(seed: int, tmp_path: Path) -> None:
    record = simulate(SimSpec(seed=seed, faults=frozenset(KINDS), **SMALL), tmp_path)
    assert all(i.ok for i in record.invariants), record.invariants  # type: ignore[attr-defined]
    assert len(record.invariants) == 6  # type: ignore[attr-defined]


def test_same_seed_same_digest_and_replay_agrees(tmp_path: Path) -> None:
    spec = SimSpec(seed=9, faults=frozenset({"reorg", "crash"}), **SMALL)
    a = simulate(spec, tmp_path / "a")
    b = simulate(spec, tmp_path / "b")
    assert a.digest == b.digest  # type: ignore[attr-defined]
    assert (tmp_path / "a" / "journal.jsonl").read_bytes() == (
        tmp_path / "b" / "journal.jsonl"
    ).read_bytes()
    replayed = anyio.run(replay_journal, tmp_path / "a" / "journal.jsonl", embedded_redis(), "r")
    assert replayed.digest == a.digest  # type: ignore[attr-defined]
    assert (tmp_path / "a" / "report.html").read_text().count("<svg") == 1


@settings(
    max_examples=1000 if SOAK else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(1, 10_000),
    points=st.sets(
        st.tuples(st.integers(1, 40), st.sampled_from(["before EXEC", "after EXEC"])),
        min_size=1,
        max_size=3,
    ),
)
def test_a_crash_anywhere_gives_the_clean_runs_digest(
    seed: int, points: set[tuple[int, str]], tmp_path: Path
) -> None:
    spec = SimSpec(
        seed=seed,
        epochs=3,
        markets=2,
        projects=3,
        slots=3,
        faults=frozenset({"reorg"}),
        crash_at=frozenset(points),
    )
    record = simulate(spec, tmp_path / f"s{seed}")
    assert all(i.ok for i in record.invariants), record.invariants  # type: ignore[attr-defined]


@settings(
    max_examples=200 if SOAK else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(1, 10_000), kinds=st.sets(st.sampled_from(KINDS)))
def test_random_fault_mixes_keep_every_invariant(
    seed: int, kinds: set[str], tmp_path: Path
) -> None:
    spec = SimSpec(seed=seed, faults=frozenset(kinds), epochs=4, markets=2, projects=3, slots=4)
    record = simulate(spec, tmp_path / f"m{seed}")
    assert all(i.ok for i in record.invariants), record.invariants  # type: ignore[attr-defined]


def test_cli_sim_prints_digest_last_and_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqcollector",
            "sim",
            "--fast",
            "--seed",
            "4",
            "--epochs",
            "4",
            "--faults",
            "crash,relayer",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("digest ") and len(last) == len("digest ") + 64
    for name in ("journal.jsonl", "effects.jsonl", "report.html", "sim.log"):
        assert (out / name).is_file(), name
    replay = subprocess.run(
        [sys.executable, "-m", "seqcollector", "replay", "-q", str(out / "journal.jsonl")],
        capture_output=True,
        text=True,
    )
    assert replay.stdout.strip().splitlines()[-1] == last


def test_cli_sim_rejects_an_unknown_fault_kind(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqcollector",
            "sim",
            "--fast",
            "--faults",
            "crash,meteor",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "meteor" in proc.stderr


def test_world_and_finalizer_in_processes_of_their_own_give_the_same_digest(
    redis_url: str, tmp_path: Path
) -> None:
    """The load setup (world and finalizer spawned, a Redis server) against the in-process,
    embedded twin of the same seed, with Redis outages and relayer failures."""
    spec = SimSpec(
        seed=5,
        faults=frozenset({"relayer", "redis"}),
        lockstep=False,
        processes=True,
        **SMALL,
    )
    record = anyio.run(run_simulation, spec, tmp_path, redis_url)
    assert [i.name for i in record.invariants if not i.ok] == []
    assert "same effects digest as the clean run of the seed" in [i.name for i in record.invariants]
    assert record.summary["epochs batched"] >= 12  # 6 per market, and what the tail closes


def test_processes_need_a_redis_server_and_no_crashes(tmp_path: Path) -> None:
    with pytest.raises(SimFailed, match="need a Redis server"):
        simulate(SimSpec(processes=True, lockstep=False, **SMALL), tmp_path)
    with pytest.raises(SimFailed, match="no crash faults"):
        anyio.run(
            run_simulation,
            SimSpec(processes=True, lockstep=False, faults=frozenset({"crash"}), **SMALL),
            tmp_path,
            "redis://127.0.0.1:1/0",
        )


def test_a_spawned_actor_that_dies_is_reported_by_name() -> None:
    doomed = Spawned("doomed", operator.truediv, 1)  # 1 / <its pipe end>: a TypeError
    with doomed, pytest.raises(RuntimeError, match=r"the doomed process exited \(code 1\)"):
        doomed.receive(30)

"""One composition root: `run`, the fast and the EVM simulation build their collector through
`runtime.compose`; the simulations share one restart loop and one dequeuer; no import circle
between the simulation's modules (issue 9, section 5)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from seqcollector.core import CoreConfig
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.compose import Delivery, compose_collector
from seqcollector.runtime.executor import RedisExecutor, embedded_redis
from seqcollector.runtime.outbox import OutboxDispatcher
from seqcollector.runtime.pipeline import Pipeline
from sim.collector_runs import run_restarting
from sim.faults import SimCrash
from sim.record import FaultMark

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = "seqcollector/runtime/compose.py"
CONFIG = CoreConfig(protocol_state="0x" + "5e" * 20, markets=["0x" + "11" * 20])


def _sources(*packages: str) -> dict[str, ast.Module]:
    out = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[path.relative_to(ROOT).as_posix()] = ast.parse(path.read_text())
    return out


def _calls(tree: ast.Module, name: str) -> int:
    """Calls of `name(...)` (or `<anything>.name(...)`) anywhere in the module."""
    called = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    return sum(1 for f in called if f == name or f.endswith("." + name))


@pytest.mark.parametrize("part", ["Pipeline", "Collector", "OutboxDispatcher", "ChainFollower"])
def test_collector_parts_are_built_in_the_composition_root_only(part: str) -> None:
    modules = _sources("seqcollector", "sim")
    assert [m for m, tree in modules.items() if _calls(tree, part)] == [COMPOSE]


def test_run_and_both_simulations_build_through_the_root() -> None:
    modules = _sources("seqcollector", "sim")
    roots = [m for m, tree in modules.items() if _calls(tree, "compose_collector")]
    assert roots == [
        "seqcollector/runtime/live.py",
        "seqcollector/runtime/record.py",  # `record`: a read-only executor, no outbox run
        "seqcollector/runtime/rewind.py",  # the operator's rewind: a pipeline, no outbox run
        "sim/collector_runs.py",
    ]
    sims = [m for m, tree in modules.items() if _calls(tree, "SimCollector.build")]
    assert sims == ["sim/evm.py", "sim/harness.py"]
    restarts = [m for m, tree in modules.items() if _calls(tree, "run_restarting")]
    assert restarts == ["sim/evm.py", "sim/harness.py"]


def test_the_dequeuer_is_written_once() -> None:
    """Only `sim.dequeuer` adds to the submission sets (the finalizer's SADDs are its own
    eligibility keys)."""
    modules = _sources("sim")
    writers = [
        m for m, tree in modules.items() if _calls(tree, "sadd") or "'SADD'" in ast.unparse(tree)
    ]
    assert sorted(writers) == ["sim/dequeuer.py", "sim/finalizer.py"]


def _imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Every module of `known` that `tree` imports, at any depth (functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def test_no_import_circle_in_the_simulation_or_the_runtime() -> None:
    modules = {
        path.removesuffix(".py").replace("/", "."): tree
        for path, tree in _sources("sim", "seqcollector/runtime").items()
        if not path.endswith("__init__.py")
    }
    graph = {m: _imports(tree, set(modules)) - {m} for m, tree in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return False

    circles = sorted(m for m in graph for n in graph[m] if reaches(n, m))
    assert circles == []
    assert "sim.harness" not in graph["sim.evm"]


def test_importing_the_evm_simulation_does_not_import_the_harness() -> None:
    code = "import sys, sim.evm; print('sim.harness' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


def test_delivery_defaults_are_the_dispatchers() -> None:
    """`Delivery` leaves unset what `OutboxDispatcher` defaults: the same figures."""
    params = inspect.signature(OutboxDispatcher).parameters
    defaults = inspect.signature(Delivery).parameters
    for name, param in defaults.items():
        if param.default is not inspect.Parameter.empty:
            assert params[name].default == param.default, name


class _Answerer:
    async def answer(self, query: Any) -> Any:
        raise AssertionError("not asked here")


def test_answerers_are_merged_over_the_submission_set_reader() -> None:
    redis = embedded_redis()
    executor = RedisExecutor(redis, "t")
    delivery = Delivery("http://127.0.0.1:9", "token", "")

    class OtherQuery:
        pass

    other = _Answerer()
    root = compose_collector(executor, CONFIG, delivery, answerers={OtherQuery: other})
    table = root.pipeline().answerers
    assert isinstance(table[QuerySubmissionSets], SubmissionSetReader)
    assert table[OtherQuery] is other
    replaced = compose_collector(executor, CONFIG, delivery, answerers={QuerySubmissionSets: other})
    assert replaced.pipeline().answerers[QuerySubmissionSets] is other


def test_a_crash_restarts_the_collector_from_a_new_pipeline() -> None:
    async def main() -> tuple[list[Pipeline], list[FaultMark]]:
        executor = RedisExecutor(embedded_redis(), "t")
        root = compose_collector(executor, CONFIG, Delivery("http://127.0.0.1:9", "t", ""))
        opened: list[Pipeline] = []
        faults: list[FaultMark] = []

        async def run_once(pipeline: Pipeline) -> None:
            opened.append(pipeline)
            if len(opened) < 3:
                raise BaseExceptionGroup("task group", [SimCrash(f"crash {len(opened)}")])

        await run_restarting(root, run_once, faults)
        return opened, faults

    opened, faults = anyio.run(main)
    assert len(set(map(id, opened))) == 3
    assert faults == [FaultMark("crash", 0, "crash 1"), FaultMark("crash", 0, "crash 2")]


def test_restarts_end_after_a_crash_once_done() -> None:
    async def main() -> int:
        executor = RedisExecutor(embedded_redis(), "t")
        root = compose_collector(executor, CONFIG, Delivery("http://127.0.0.1:9", "t", ""))
        runs = 0

        async def run_once(pipeline: Pipeline) -> None:
            nonlocal runs
            runs += 1
            raise SimCrash("late")

        await run_restarting(root, run_once, [], done=lambda: True)
        with pytest.raises(ValueError):

            async def fails(pipeline: Pipeline) -> None:
                raise ValueError("not a crash")

            await run_restarting(root, fails, [])
        return runs

    assert anyio.run(main) == 1

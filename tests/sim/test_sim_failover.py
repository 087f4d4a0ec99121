"""The `failover` fault (issue 11 §4): an active paused past its lease, a standby taking
over, the paused one resuming: fenced out of its commit and its deliveries, every other
invariant and the twin digest still holding. And the invariant bites: without the fence,
the resumed active's commit is not refused by the lease."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from seqcollector.core.effects import RelayerCall, SetValue
from seqcollector.runtime.compose import Delivery, outbox_dispatcher
from seqcollector.runtime.executor import ConcurrentWriterError, RedisExecutor, embedded_redis
from seqcollector.runtime.lease import Lease
from seqcollector.runtime.outbox import OutboxDispatcher
from sim import invariants
from sim.faults import FaultyExecutor, FenceCheck, SimFailover
from sim.harness import SimSpec, run_simulation

SMALL = {"epochs": 6, "markets": 2, "projects": 4, "slots": 5}


def simulate(spec: SimSpec, out: Path) -> Any:
    return anyio.run(run_simulation, spec, out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_failover_alone_fences_out_the_paused_active(seed: int, tmp_path: Path) -> None:
    record = simulate(SimSpec(seed=seed, faults=frozenset({"failover"}), **SMALL), tmp_path)
    assert all(i.ok for i in record.invariants), record.invariants
    fence = next(i for i in record.invariants if i.name == "no commit after lease loss")
    failovers = record.summary["failovers (paused active fenced out on resume)"]
    assert failovers >= 1 and fence.detail == f"{failovers} checked"
    assert sum(f.kind == "failover" for f in record.faults) == failovers
    assert any(i.name.startswith("same effects digest") and i.ok for i in record.invariants)


def test_failover_with_crashes_outages_and_a_faulty_relayer(tmp_path: Path) -> None:
    kinds = frozenset({"failover", "crash", "redis", "relayer", "reorg"})
    record = simulate(SimSpec(seed=4, faults=kinds, **SMALL), tmp_path)
    assert all(i.ok for i in record.invariants), record.invariants
    assert record.summary["failovers (paused active fenced out on resume)"] >= 1


def test_the_invariant_names_what_a_resumed_active_did() -> None:
    good = FenceCheck(7, 1003, "LeaseLost", [], 2, "LeaseLost", 0)
    assert good.ok and invariants.no_commit_after_lease_loss([good]).ok
    bad = [
        FenceCheck(7, 1003, "committed", ["BatchCountKey.x.1"], 0, "delivered 0", 0),
        FenceCheck(9, 1004, "LeaseLost", [], 1, "delivered 1", 1),
    ]
    result = invariants.no_commit_after_lease_loss(bad)
    assert not result.ok
    assert "input 7 (block 1003): commit committed, not LeaseLost" in result.detail
    assert "wrote BatchCountKey.x.1" in result.detail
    assert "input 9 (block 1004): delivery delivered 1, 1 POST(s) started" in result.detail


def test_without_the_fence_the_resumed_commit_is_not_a_lease_refusal() -> None:
    """The same pause with the lease left out of the paused executor: the checkpoint
    comparison still refuses it, but as another writer; the fence is what says LeaseLost."""

    async def main() -> str:
        redis = embedded_redis()
        lease = Lease(redis, "ns", 3600, holder="a")
        delivery = Delivery("http://127.0.0.1:9", "t", "")

        def dispatcher_for(held: Lease) -> OutboxDispatcher:
            dispatcher = outbox_dispatcher(redis, "ns", delivery)
            dispatcher.lease = held
            return dispatcher

        executor = FaultyExecutor(
            redis,
            "ns",
            seed=1,
            kinds=frozenset({"failover"}),
            lease=lease,
            dispatcher_for=dispatcher_for,
        )
        executor._next_pause = 2
        await executor.load()
        assert await executor.commit(1, 1, [SetValue("k", "1")], b"s1")
        with pytest.raises(SimFailover):
            await executor.commit(2, 2, [SetValue("k", "2")], b"s2")
        paused = executor._paused
        assert paused is not None
        unfenced = RedisExecutor(redis, "ns")  # no lease
        await unfenced.load()
        call = RelayerCall("c:1", "/submitBatchSize", {"n": 1})
        await executor.commit(2, 2, [SetValue("k", "2"), call], b"s2")  # the standby's
        [check] = executor.fence_checks  # it left an entry pending: the paused one resumed
        assert check.ok and check.delivery == "LeaseLost" and check.pending == 1, check
        try:
            await unfenced.commit(2, 2, [SetValue("k", "x")], b"sx")
        except ConcurrentWriterError:
            return "ConcurrentWriterError"
        return "committed"

    assert anyio.run(main) == "ConcurrentWriterError"

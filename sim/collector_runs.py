"""The collector of a simulation, fast or EVM: assembled by the composition root
(`runtime.compose`) from the simulated parts, and restarted after every simulated crash.

The parts: a `FaultyExecutor` (crashes, Redis outages, failovers; its outages also hit the
readers of the core's queries), the lease when the run has failovers (a TTL no run
reaches: its expiry is driven by the executor, from the seed), the loopback relayer, the
core's invariants checked after every step and a pace quick enough for a simulated second.
A crash (`SimCrash`) kills the collector at an effect boundary; the next one opens a new
pipeline, which loads what Redis holds, exactly as a restarted process would. A failover
(`SimFailover`) stops the active the same way, and the next one is the standby taking over
from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from seqcollector.config import Timeouts
from seqcollector.core import CoreConfig
from seqcollector.runtime.compose import (
    CollectorRoot,
    Pace,
    compose_collector,
    outbox_dispatcher,
)
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.lease import Lease
from seqcollector.runtime.outbox import OutboxDispatcher
from seqcollector.runtime.pipeline import Answerer, Pipeline
from sim.faults import FaultyExecutor, FenceCheck, SimFailover, find_crash
from sim.record import FaultMark
from sim.relayer import Relayer
from sim.spec import SimSpec

NAMESPACE = "seqcollector"
SIM_PACE = Pace(dispatch_interval_s=0.01, retry_first_s=0.001, retry_max_s=0.02)
OUTBOX_DRAIN_S = 60
SIM_LEASE_S = 3600.0  # never reached by a run: the failover fault expires the lease itself


@dataclass(frozen=True)
class SimCollector:
    """A simulation's collector root and the faulty executor inside it."""

    root: CollectorRoot
    executor: FaultyExecutor

    @classmethod
    def build(
        cls,
        spec: SimSpec,
        redis: aioredis.Redis,
        relayer: Relayer,
        config: CoreConfig,
        journal: Path,
        timeouts: Timeouts | None = None,
        answerers: Mapping[type[Any], Answerer] | None = None,
    ) -> SimCollector:
        """The collector of `spec`'s run on `redis`, delivering to `relayer`, recording
        `journal`; the executor injects `spec`'s crash, redis and failover faults."""
        lease = None
        if "failover" in spec.faults:
            lease = Lease(redis, NAMESPACE, SIM_LEASE_S, holder="sim-active")

        def dispatcher_for(held: Lease) -> OutboxDispatcher:  # a paused active's own
            dispatcher = outbox_dispatcher(redis, NAMESPACE, relayer.delivery())
            dispatcher.lease = held
            return dispatcher

        executor = FaultyExecutor(
            redis,
            NAMESPACE,
            spec.seed,
            spec.faults,
            crash_rate=spec.crash_rate,
            crash_at=spec.crash_at,
            lease=lease,
            dispatcher_for=dispatcher_for,
        )
        root = compose_collector(
            executor,
            config,
            relayer.delivery(),
            timeouts=timeouts,
            journal=journal,
            answerers=answerers,
            before_read=executor.maybe_outage,
            check_invariants=True,
            pace=SIM_PACE,
            handle_signals=False,
            lease=lease,
        )
        return cls(root, executor)

    def outages(self) -> list[FaultMark]:
        """The Redis outages the executor injected, in order."""
        return [
            FaultMark("redis", 0, line) for line in self.executor.log if line.startswith("redis")
        ]

    def fence_checks(self) -> list[FenceCheck]:
        """What each paused active did when it resumed (failover faults)."""
        return list(self.executor.fence_checks)

    async def drain_outbox(self) -> None:
        """Deliver what the outbox still holds (the run is over; at most a minute)."""
        pending = StoreLayout(self.executor.namespace).outbox_pending
        with anyio.fail_after(OUTBOX_DRAIN_S):
            while await self.executor.redis.zcard(pending):
                await self.root.dispatcher.deliver_pending()


async def run_restarting(
    root: CollectorRoot,
    run_once: Callable[[Pipeline], Awaitable[None]],
    faults: list[FaultMark],
    done: Callable[[], bool] = lambda: False,
) -> float:
    """Collector after collector: open a new pipeline, `run_once` on it (build the source
    and the collector, run it), until one returns. A simulated crash is recorded in `faults`
    (at the head the crashed pipeline had) and the next collector starts from Redis, unless
    `done()`. Any other error propagates. Returns the seconds the pipelines were busy."""
    busy = 0.0
    while True:
        pipeline = root.pipeline()
        try:
            await pipeline.open()
            await run_once(pipeline)
            return busy + pipeline.busy_s
        except BaseException as exc:  # a simulated crash arrives in an exception group
            crash = find_crash(exc)
            if crash is None:
                raise
            head = pipeline.state.head
            kind = "failover" if isinstance(crash, SimFailover) else "crash"
            faults.append(FaultMark(kind, head.number if head else 0, str(crash)))
            busy += pipeline.busy_s
            if done():
                return busy
        finally:
            await pipeline.close()

"""Lockstep feeding of a synthetic chain: one block in flight, the world waits for it.

The world (chain + dequeuer) produces steps: the market parameters, then per block
`[Rewind?] Block logs...`. Before a step is handed to the collector, the submissions the
snapshotters made so far are written to Redis as the dequeuer does (`sim.dequeuer`). The
next step is produced only once the collector has committed the previous one, so what it
reads from Redis never depends on timing: the same seed gives the same journal and digest
with or without crashes, outages and slow relayers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import redis.asyncio as aioredis

from seqcollector.core import Block, Input, Rewind
from seqcollector.runtime.pipeline import Pipeline
from sim.dequeuer import Dequeuer
from sim.synthetic import SyntheticWorld

LOAD_AHEAD_STEPS = 64  # without lockstep: the world writes this many blocks' submissions at once
KEEP_STEPS = 4096  # steps kept for a restarted collector to resume from (it is never far behind)


class SyntheticSteps:
    """The world's inputs cut into steps, kept so that a restarted collector can resume."""

    def __init__(
        self, world: SyntheticWorld, redis: aioredis.Redis, values: bool = True, ahead: int = 0
    ) -> None:
        self.world = world
        self.dequeuer = Dequeuer(redis, values)
        self.ahead = ahead  # steps cut (and their submissions written) ahead of the one asked
        self.steps: dict[int, list[Input]] = {}  # the recent ones: a restart resumes nearby
        self.count = 0
        self._by_hash: dict[str, int] = {}
        self._inputs = world.inputs()
        self._pending: Input | None = None
        self.done = False

    async def step(self, i: int) -> list[Input] | None:
        """Step i (written to Redis first), or None past the end of the chain.

        With `ahead`, the submissions of the next `ahead` steps are written too, in one go:
        the collector only reads the sets of a window's own blocks, so writing a later
        block's submissions early changes nothing it reads, and the world rarely waits."""
        if self.count <= i:
            while self.count <= i + self.ahead and not self.done:
                self._cut()
            await self._flush()
        if i - KEEP_STEPS in self.steps:
            for old in [k for k in self.steps if k < i - KEEP_STEPS]:
                gone = self.steps.pop(old)
                for x in gone:
                    if isinstance(x, Block):
                        self._by_hash.pop(x.hash, None)
        return self.steps.get(i) if i < self.count else None

    def _cut(self) -> None:
        step: list[Input] = [self._pending] if self._pending is not None else []
        self._pending = None
        for inp in self._inputs:
            starts_new = isinstance(inp, Rewind) or (
                isinstance(inp, Block) and any(isinstance(x, Block) for x in step)
            )
            if step and starts_new and not (isinstance(inp, Block) and _only_rewinds(step)):
                self._pending = inp
                break
            step.append(inp)
        else:
            self.done = True
        if step:
            for x in step:
                if isinstance(x, Block):
                    self._by_hash[x.hash] = self.count
            self.steps[self.count] = step
            self.count += 1

    async def _flush(self) -> None:
        new, self.world.written = self.world.written, []  # drained: a long run stays small
        await self.dequeuer.write(new)

    def resume_index(self, pipeline: Pipeline) -> int:
        """The first step the collector has not committed."""
        head = pipeline.state.head
        if head is None:
            return 0 if pipeline.seq == 0 else 1
        return self._by_hash[head.hash] + 1


def _only_rewinds(step: list[Input]) -> bool:
    return all(isinstance(x, Rewind) for x in step)


class LockstepSource:
    """An `InputSource` for the collector: yields step after step and lets the world act
    (`between`) every `between_every` steps.

    Determinism does not need the collector to keep up: a step's submissions are in Redis
    before the step is yielded, and a window only reads blocks before the one closing it. With
    `wait=True` each step also waits until the collector committed the previous one (one
    block in flight, a commit per block); without, the collector commits whatever has piled
    up in one transaction, as it does when catching up.
    """

    def __init__(
        self,
        steps: SyntheticSteps,
        start: int,
        pipeline: Pipeline,
        between: Callable[[], Awaitable[Any]] | None = None,
        on_step: Callable[[int], None] | None = None,
        wait: bool = True,
        between_every: int = 1,
    ) -> None:
        self.steps = steps
        self.index = start
        self.pipeline = pipeline
        self.between = between
        self.on_step = on_step
        self.wait = wait
        self.between_every = between_every
        self.chain_head: int | None = None

    async def units(self) -> AsyncGenerator[list[Input], None]:
        while (step := await self.steps.step(self.index)) is not None:
            target = self.pipeline.seq + len(step)
            yield step  # one unit: committed whole
            while self.wait and self.pipeline.seq < target:  # committed (answers add inputs)
                await anyio.sleep(0.0005)
            self.index += 1
            if self.between is not None and self.index % self.between_every == 0:
                await self.between()
            if self.on_step is not None:
                self.on_step(self.index)

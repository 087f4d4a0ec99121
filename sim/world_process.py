"""The synthetic world (chain and dequeuer) in a process of its own, for load runs.

In production the chain node and the dequeuer are other processes; here the world runs in a
spawned child that writes the submissions into the Redis server and sends the steps over a
pipe, `CHUNK` at a time, each chunk only once its submissions are written (so what the
collector reads is the same as with the world in-process: same journal, same digest). The
collector's process then does the collector's work only, and the figures are its own.

`WorldProcess` is an `InputSource`: `units()` yields the steps. There is no resuming from
an earlier step, so a run with crashes keeps the world in-process.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from multiprocessing.connection import Connection

import anyio

from seqcollector.core import Input
from seqcollector.runtime.executor import redis_client
from sim.lockstep import LOAD_AHEAD_STEPS, SyntheticSteps
from sim.spawned import Spawned
from sim.synthetic import SyntheticWorld, WorldSpec

CHUNK = LOAD_AHEAD_STEPS  # steps per message; their submissions are written before it
RECV_TIMEOUT_S = 120.0


class WorldProcess(Spawned):
    def __init__(self, spec: WorldSpec, redis_url: str, values: bool = True) -> None:
        super().__init__("world", _world_main, spec, redis_url, values)
        self.chain_head: int | None = spec.first_block + spec.blocks - 1
        self.steps = 0
        self.hashes: dict[int, str] = {}  # the final chain's block hashes, once it is done
        self.on_step: Callable[[int], None] | None = None

    def canonical_hash(self, number: int) -> str | None:
        return self.hashes.get(number)

    async def units(self) -> AsyncGenerator[list[Input], None]:
        while (chunk := await anyio.to_thread.run_sync(self.receive, RECV_TIMEOUT_S)) is not None:
            for step in chunk:
                self.steps += 1
                yield step
                if self.on_step is not None:
                    self.on_step(self.steps)
        self.hashes = await anyio.to_thread.run_sync(self.receive, RECV_TIMEOUT_S)


def _world_main(spec: WorldSpec, redis_url: str, values: bool, conn: Connection) -> None:
    async def run() -> None:
        redis = redis_client(redis_url)
        world = SyntheticWorld(spec, keep_sets=False)
        steps = SyntheticSteps(world, redis, values=values, ahead=CHUNK)
        sent = 0
        chunk: list[list[Input]] = []
        while (step := await steps.step(len(chunk) + CHUNK * sent)) is not None:
            chunk.append(step)
            if len(chunk) == CHUNK:  # (their submissions are written: `step` wrote ahead)
                conn.send(chunk)
                chunk, sent = [], sent + 1
        if chunk:
            conn.send(chunk)
        conn.send(None)
        last = spec.first_block + spec.blocks
        hashes = {n: world.canonical_hash(n) for n in range(spec.first_block, last)}
        conn.send({n: h for n, h in hashes.items() if h is not None})
        await redis.aclose()

    anyio.run(run)

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

import multiprocessing
from collections.abc import AsyncGenerator, Callable
from multiprocessing.connection import Connection

import anyio

from seqcollector.core import Input
from sim.synthetic import WorldSpec

CHUNK = 64  # steps per message; the world writes their submissions in one go before it
RECV_TIMEOUT_S = 120.0


class WorldProcess:
    def __init__(self, spec: WorldSpec, redis_url: str, values: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_world_main, args=(spec, redis_url, values, child), name="sim-world", daemon=True
        )
        self.chain_head: int | None = spec.first_block + spec.blocks - 1
        self.steps = 0
        self.hashes: dict[int, str] = {}  # the final chain's block hashes, once it is done
        self.on_step: Callable[[int], None] | None = None

    def __enter__(self) -> WorldProcess:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)

    def canonical_hash(self, number: int) -> str | None:
        return self.hashes.get(number)

    async def units(self) -> AsyncGenerator[list[Input], None]:
        while (chunk := await anyio.to_thread.run_sync(self._receive)) is not None:
            for step in chunk:
                self.steps += 1
                yield step
                if self.on_step is not None:
                    self.on_step(self.steps)
        self.hashes = await anyio.to_thread.run_sync(self._receive)

    def _receive(self) -> list[list[Input]] | dict[int, str] | None:
        if not self._conn.poll(RECV_TIMEOUT_S):
            state = "running" if self._process.is_alive() else f"exit {self._process.exitcode}"
            raise TimeoutError(
                f"the world process sent nothing for {RECV_TIMEOUT_S} s ({state}); its error, "
                "if any, is above"
            )
        try:
            message: list[list[Input]] | dict[int, str] | None = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the world process exited (code {self._process.exitcode}); its error is above. "
                "A script that runs the simulation needs an `if __name__ == '__main__':` guard"
            ) from None
        return message


def _world_main(spec: WorldSpec, redis_url: str, values: bool, conn: Connection) -> None:
    from seqcollector.runtime.executor import redis_client
    from sim.lockstep import SyntheticSteps
    from sim.synthetic import SyntheticWorld

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

"""Replay: feed a journal through the core and the executor; return the effects digest.

The digest covers every effect the core emits, whatever the store already held, so the same
journal gives the same digest on every machine. Effects are committed in chunks of inputs,
each chunk one MULTI/EXEC with the state and checkpoint, so a replay can be resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import anyio
import msgspec
import redis.asyncio as aioredis

from seqcollector.core import dump_state, new_state, step
from seqcollector.core.effects import Effect
from seqcollector.core.state import State
from seqcollector.errors import DependencyError
from seqcollector.journal import EffectsDigest, read_header, read_inputs
from seqcollector.runtime.executor import RedisExecutor

CHUNK_INPUTS = 1000
CHUNK_EFFECTS = 5000


class ReplayResult(msgspec.Struct):
    digest: str
    inputs: int
    effects: int
    commits: int
    state: State


class ReplayConflict(Exception):
    """The store's namespace already holds a checkpoint from an earlier run."""


async def replay_journal(
    path: str | Path,
    redis: aioredis.Redis,
    namespace: str,
    effects_out: IO[bytes] | None = None,
    resume: bool = False,
    on_progress: Callable[[int], None] | None = None,
    redis_timeout_s: float = 5.0,
) -> ReplayResult:
    """Replay `path` into `redis` under `namespace`. `on_progress(bytes_read)` shows progress.

    Every Redis operation has `redis_timeout_s`; a Redis that stops answering ends the
    replay with a `DependencyError` naming the input it was committing (resume with
    `--resume`)."""
    header = read_header(path)
    state = new_state(header.config)
    executor = RedisExecutor(redis, namespace)
    with _redis_deadline(redis_timeout_s, "reading the checkpoint"):
        _, checkpoint = await executor.load()
    applied = checkpoint.seq if checkpoint is not None else 0
    if applied and not resume:
        raise ReplayConflict(
            f"namespace {namespace!r} already holds a replay up to input {applied}: "
            "pass --resume to continue it or --namespace to start a new one"
        )
    digest = EffectsDigest(effects_out)
    pending: list[Effect] = []
    seq = commits = 0
    for seq, (_, offset, inp) in enumerate(read_inputs(path), start=1):
        _, effects = step(state, inp)
        digest.add(effects)
        if seq <= applied:
            continue
        pending.extend(effects)
        if seq % CHUNK_INPUTS == 0 or len(pending) >= CHUNK_EFFECTS:
            with _redis_deadline(redis_timeout_s, f"committing inputs up to {seq}"):
                commits += await _commit(executor, seq, state, pending)
            pending = []
            if on_progress is not None:
                on_progress(offset)
    if seq > applied:
        with _redis_deadline(redis_timeout_s, f"committing inputs up to {seq}"):
            commits += await _commit(executor, seq, state, pending)
    return ReplayResult(digest.hexdigest(), seq, digest.count, commits, state)


@contextmanager
def _redis_deadline(timeout_s: float, doing: str) -> Iterator[None]:
    try:
        with anyio.fail_after(timeout_s):
            yield
    except TimeoutError:
        raise DependencyError(
            f"Redis did not answer within {timeout_s:g} s (TIMEOUT_REDIS_OPERATION) while "
            f"{doing}; check the server, then run the replay again with --resume"
        ) from None


async def _commit(executor: RedisExecutor, seq: int, state: State, effects: list[Effect]) -> int:
    head = state.head
    done = await executor.commit(seq, head.number if head else None, effects, dump_state(state))
    return 1 if done else 0

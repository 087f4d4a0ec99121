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

from seqcollector.core import Block, CoreConfig, Input, dump_state, load_state, new_state, step
from seqcollector.core.effects import Effect
from seqcollector.core.state import State
from seqcollector.errors import DependencyError
from seqcollector.journal import EffectsDigest, read_header, read_inputs
from seqcollector.journal_dir import ChainedDigest, first_head, list_segments, read_dir
from seqcollector.runtime.executor import RedisExecutor

CHUNK_INPUTS = 1000
CHUNK_EFFECTS = 5000


class ReplayResult(msgspec.Struct):
    digest: str
    inputs: int
    effects: int
    commits: int
    state: State


class Source(msgspec.Struct):
    """A journal opened for replay: its configuration, the state before its first input,
    and (seq, bytes read or None, input) for each input."""

    config: CoreConfig
    state: State
    base_seq: int  # the seq of the first input (1, or a kept segment's)
    inputs: Iterator[tuple[int, int | None, Input]]
    chain: str | None = None  # a directory: its first segment's digest chain
    boundaries: frozenset[int] = frozenset()  # a directory: the seq each later segment starts


def open_source(path: str | Path) -> Source:
    """A journal file, or a journal directory (`journal_dir`: its segments in order, from
    the oldest kept segment's state)."""
    if Path(path).is_dir():
        head = first_head(path)
        inputs = ((seq, None, inp) for seq, inp in read_dir(path))
        bases = frozenset(s.base_seq for s in list_segments(path)[1:])
        state = load_state(head.state)
        return Source(head.header.config, state, head.base_seq, inputs, head.chain, bases)
    header = read_header(path)
    numbered = (
        (seq, offset, inp) for seq, (_, offset, inp) in enumerate(read_inputs(path), start=1)
    )
    return Source(header.config, new_state(header.config), 1, numbered)


def in_range(
    inputs: Iterator[tuple[int, int | None, Input]], from_block: int | None, to_block: int | None
) -> Iterator[tuple[bool, int, int | None, Input]]:
    """(inside, seq, offset, input): `inside` from the first `Block` numbered from_block or
    above; the inputs stop before the first `Block` above to_block after that."""
    inside = from_block is None
    for seq, offset, inp in inputs:
        if isinstance(inp, Block):
            if not inside and inp.number >= (from_block or 0):
                inside = True
            if inside and to_block is not None and inp.number > to_block:
                return
        yield inside, seq, offset, inp


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
    from_block: int | None = None,
    to_block: int | None = None,
) -> ReplayResult:
    """Replay `path` (a journal file or directory) into `redis` under `namespace`.
    `on_progress(bytes_read)` shows progress (files only). The digest of a whole directory
    is its `ChainedDigest` (the one `run` reports); of a file or a range, the sha256 of the
    effects stream.

    `from_block`/`to_block`: the inputs before the first block from_block are stepped
    through the core to rebuild the state before it, their effects neither executed nor
    digested; the effects from there to to_block are. The first commit holds that state.

    Every Redis operation has `redis_timeout_s`; a Redis that stops answering ends the
    replay with a `DependencyError` naming the input it was committing (resume with
    `--resume`)."""
    source = open_source(path)
    state = source.state
    executor = RedisExecutor(redis, namespace)
    with _redis_deadline(redis_timeout_s, "reading the checkpoint"):
        _, checkpoint = await executor.load()
    applied = checkpoint.seq if checkpoint is not None else 0
    if applied and not resume:
        raise ReplayConflict(
            f"namespace {namespace!r} already holds a replay up to input {applied}: "
            "pass --resume to continue it or --namespace to start a new one"
        )
    whole_dir = source.chain is not None and from_block is None and to_block is None
    digest: EffectsDigest | ChainedDigest = (
        ChainedDigest(source.chain or "", effects_out) if whole_dir else EffectsDigest(effects_out)
    )
    pending: list[Effect] = []
    commits = inputs = 0
    seq = source.base_seq - 1
    for inside, seq, offset, inp in in_range(source.inputs, from_block, to_block):
        _, effects = step(state, inp)
        if not inside:
            continue
        if isinstance(digest, ChainedDigest) and seq in source.boundaries:
            digest.next_segment()  # as the run chained it when it rotated
        inputs += 1
        digest.add(effects)
        if seq <= applied:
            continue
        pending.extend(effects)
        if seq % CHUNK_INPUTS == 0 or len(pending) >= CHUNK_EFFECTS:
            with _redis_deadline(redis_timeout_s, f"committing inputs up to {seq}"):
                commits += await _commit(executor, seq, state, pending)
            pending = []
            if on_progress is not None and offset is not None:
                on_progress(offset)
    if isinstance(digest, ChainedDigest):  # segments after the last input (an empty open one)
        for _ in sorted(b for b in source.boundaries if b > seq):
            digest.next_segment()
    if seq > applied and inputs:
        with _redis_deadline(redis_timeout_s, f"committing inputs up to {seq}"):
            commits += await _commit(executor, seq, state, pending)
    return ReplayResult(digest.hexdigest(), inputs, digest.count, commits, state)


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

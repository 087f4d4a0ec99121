"""SegmentedJournal under any sequence of groups, failed commits, rotations and crashes:
the directory always reads back as exactly the committed inputs, in order, and resuming
gives the digest of their effects."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import anyio
from corekit import PS, block, epoch_released
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcollector.core import CoreConfig, Input, dump_state, new_state, step
from seqcollector.journal import encode_effect
from seqcollector.journal_dir import (
    JournalDirSpec,
    SegmentedJournal,
    list_segments,
    read_dir,
    segment_inputs,
)

MARKET = "0x" + "cd" * 20
CONFIG = CoreConfig(protocol_state=PS, markets=[MARKET], batch_size=2)

# a group: how many blocks, whether its commit fails (the journal is truncated back)
groups = st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=25)


def chain(n: int) -> list[Input]:
    out: list[Input] = []
    for b in range(1000, 1000 + n):
        out.append(block(b))
        if b % 5 == 0:
            out.append(epoch_released(b, b // 5, MARKET))
    return out


@settings(max_examples=60, deadline=None)
@given(
    plan=groups,
    segment_blocks=st.integers(1, 6),
    segment_bytes=st.sampled_from([300, 2000, 10**9]),
    crash_at=st.integers(0, 30),
    torn=st.binary(max_size=12).filter(lambda b: b"\n" not in b),
)
def test_the_directory_holds_exactly_the_committed_inputs(
    plan: list[tuple[int, bool]],
    segment_blocks: int,
    segment_bytes: int,
    crash_at: int,
    torn: bytes,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = JournalDirSpec(
            Path(tmp) / "j", segment_bytes=segment_bytes, segment_blocks=segment_blocks
        )
        anyio.run(_scenario, spec, plan, crash_at, torn)


async def _scenario(
    spec: JournalDirSpec, plan: list[tuple[int, bool]], crash_at: int, torn: bytes
) -> None:
    state = new_state(CONFIG)
    journal = SegmentedJournal(spec, CONFIG)
    digest = journal.open(0, dump_state(state))  # the pipeline adds each commit's effects
    committed: list[Input] = []
    units = iter(_units(sum(n for n, _ in plan) + 1))
    for i, (n, fails) in enumerate(plan):
        group = [inp for _ in range(n) for inp in next(units)]
        mark = journal.position()
        journal.write_many(group)
        journal.flush()
        if fails:  # the commit did not land: the pipeline truncates back and retries
            journal.truncate(mark)
            journal.write_many(group)
            journal.flush()
        for inp in group:
            digest.add(step(state, inp)[1])
        committed.extend(group)
        await journal.committed(len(committed), dump_state(state))
        if i == crash_at:  # a crash after the next group was journaled, before its commit
            journal.write_many(next(units))
            journal.flush()
            break
    # the process dies: no close; maybe a torn line at the end of the open segment
    assert journal.open_segment is not None
    with journal.open_segment.path.open("ab") as f:
        f.write(torn)
    segs = list_segments(spec.path)
    assert all(s.compressed for s in segs[:-1])
    resumed = SegmentedJournal(spec, CONFIG)
    again = resumed.open(len(committed), dump_state(state))  # cuts the uncommitted lines
    expected = _chained(spec.path)
    assert digest.hexdigest() == again.hexdigest() == expected
    assert [inp for _, inp in read_dir(spec.path)] == committed
    assert [seq for seq, _ in read_dir(spec.path)] == list(range(1, len(committed) + 1))
    resumed.close()


def _chained(directory: Path) -> str:
    """The directory's digest from its definition: per segment, the sha256 of its inputs'
    effect lines; chained sha256(chain ":" segment), from ""."""
    chain = ""
    state = new_state(CONFIG)
    segs = list_segments(directory)
    for i, seg in enumerate(segs):
        lines = b""
        for _, _, inp in segment_inputs(seg, open_segment=i == len(segs) - 1):
            lines += b"".join(encode_effect(e) + b"\n" for e in step(state, inp)[1])
        chain = hashlib.sha256(f"{chain}:{hashlib.sha256(lines).hexdigest()}".encode()).hexdigest()
    return chain


def _units(n: int) -> list[list[Input]]:
    """[Block, *its logs] per block."""
    units: list[list[Input]] = []
    for inp in chain(n):
        if inp.__class__.__name__ == "Block":
            units.append([inp])
        else:
            units[-1].append(inp)
    return units

"""Journals in a directory: rotated segments, closed ones compressed, kept by age and size.

`run` journals into SEQ_JOURNAL_DIR/<namespace>/ (default `./journal/<namespace>`):

    seg-000000000001.jsonl.zst   closed segments, zstd-compressed, in input order
    seg-000000004711.jsonl       the open segment, flushed line by line

Each segment is a journal of its own (`journal.JournalHeader` then one input per line); its
header's meta holds `base_seq`, the sequence number of its first input, and `state`, the
committed core state before that input (base64 of `core.dump_state`). So a segment can be
replayed alone, retention can drop the oldest segments and the directory still replays
(from the oldest kept segment's state), and a recovery can start from the newest segment at
or before a checkpoint (`head_for`, `read_dir(from_seq=...)`).

A segment is closed when it reaches SEQ_JOURNAL_SEGMENT_MB or SEQ_JOURNAL_SEGMENT_BLOCKS,
always after a commit: the next one is opened (its header fsynced, and the directory), the
old one fsynced, compressed to `.jsonl.zst` (written to `.tmp`, fsynced, renamed), then the
oldest closed segments beyond SEQ_JOURNAL_RETAIN_DAYS or SEQ_JOURNAL_RETAIN_GB are deleted;
the open segment never is.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio.to_thread
import msgspec
import structlog
import zstandard

from seqcollector.config import ConfigError
from seqcollector.core import Block, CoreConfig, Input, dump_state, load_state, step
from seqcollector.core.effects import Effect
from seqcollector.journal import (
    EffectsDigest,
    JournalError,
    JournalHeader,
    _input_decoder,
    _parse_header,
    committed_marker,
    encode_input,
)

if TYPE_CHECKING:
    from seqcollector.config import Settings

log = structlog.get_logger(__name__)

SEGMENT_RE = re.compile(r"^seg-(\d{12})\.jsonl(\.zst)?$")
ZSTD_LEVEL = 3
MB = 2**20
GB = 2**30
DAY_S = 24 * 3600.0
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class JournalDirSpec:
    """Where and how `run` journals (from SEQ_JOURNAL_*; `spec_from_settings`)."""

    path: Path
    segment_bytes: int = 64 * MB
    segment_blocks: int = 100_000
    retain_s: float = 30 * DAY_S
    retain_bytes: int = 20 * GB


def spec_from_settings(settings: Settings, namespace: str) -> JournalDirSpec | None:
    """SEQ_JOURNAL_DIR/<namespace>, or None when SEQ_JOURNAL_DIR=off."""
    if settings.journal_dir.strip().lower() == "off":
        return None
    return JournalDirSpec(
        Path(settings.journal_dir) / namespace.replace("/", "_"),
        segment_bytes=settings.journal_segment_mb * MB,
        segment_blocks=settings.journal_segment_blocks,
        retain_s=settings.journal_retain_days * DAY_S,
        retain_bytes=settings.journal_retain_gb * GB,
    )


@dataclass(frozen=True)
class Segment:
    path: Path
    base_seq: int
    compressed: bool


@dataclass(frozen=True)
class SegmentHead:
    """A segment's header: its first input's sequence number, the state before it, and
    the digest chain of the segments before it (`ChainedDigest`)."""

    segment: Segment
    header: JournalHeader
    base_seq: int
    state: bytes
    header_bytes: int  # length of the header line (where the inputs start)
    chain: str = ""


def chain_next(chain: str, segment_digest: str) -> str:
    return hashlib.sha256(f"{chain}:{segment_digest}".encode()).hexdigest()


class ChainedDigest:
    """The effects digest of a journal directory: each segment's effects digest (sha256 of
    its effect lines, as `EffectsDigest`) chained, chain_k = sha256(chain_k-1 ":" seg_k),
    from chain_0 = "". Each segment's header holds the chain before it (meta `chain`), so a
    restart replays only the open segment, and the digest still covers what retention
    deleted. `hexdigest()`: the chain through the open segment; `run` reports it at its
    stop and `replay DIR` prints it."""

    def __init__(self, chain: str = "", out: IO[bytes] | None = None) -> None:
        self.chain = chain
        self._out = out
        self._segment = EffectsDigest(out)
        self.count = 0

    def add(self, effects: Iterable[Effect]) -> None:
        before = self._segment.count
        self._segment.add(effects)
        self.count += self._segment.count - before

    def hexdigest(self) -> str:
        return chain_next(self.chain, self._segment.hexdigest())

    def next_segment(self) -> str:
        """The open segment is closed: its digest joins the chain (returned)."""
        self.chain = self.hexdigest()
        self._segment = EffectsDigest(self._out)
        return self.chain


class StoreLost(JournalError):
    """The store is empty but the journal directory holds committed inputs: Redis lost the
    collector's data. Refused rather than started over (the Go collector's behaviour)."""


def segment_name(base_seq: int) -> str:
    return f"seg-{base_seq:012d}.jsonl"


def list_segments(directory: str | Path) -> list[Segment]:
    """The segments of a journal directory in input order (a segment present both plain
    and compressed, a crash between the rename and the unlink, counts as compressed)."""
    found: dict[int, Segment] = {}
    for p in Path(directory).iterdir():
        m = SEGMENT_RE.match(p.name)
        if m is None:
            continue
        base, compressed = int(m[1]), m[2] is not None
        if base in found and not compressed:
            continue
        found[base] = Segment(p, base, compressed)
    return [found[b] for b in sorted(found)]


def _lines(seg: Segment) -> Iterator[tuple[int, bytes]]:
    """(offset of the line in the uncompressed stream, line) for each line of a segment."""
    offset = 0
    try:
        with seg.path.open("rb") as raw:
            stream: IO[bytes] = raw
            if seg.compressed:
                reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
                stream = io.BufferedReader(reader)
            for line in stream:
                yield offset, line
                offset += len(line)
    except zstandard.ZstdError as exc:
        raise JournalError(
            f"{seg.path}: damaged zstd data after uncompressed byte {offset}: {exc}; the inputs "
            "from there on are lost: restore the segment from a backup, or replay the segments "
            "before it"
        ) from None
    except OSError as exc:
        raise JournalError(f"{seg.path}: cannot read the segment: {exc.strerror or exc}") from None


def read_head(seg: Segment) -> SegmentHead:
    first = next(_lines(seg), None)
    line = b"" if first is None else first[1]
    header = _parse_header(seg.path, line)
    try:
        base_seq = int(header.meta["base_seq"])
        state = base64.b64decode(header.meta["state"], validate=True)
    except (KeyError, ValueError) as exc:
        raise JournalError(
            f"{seg.path}: byte 0: not a journal segment header (meta base_seq/state: {exc}); "
            "a single-file journal is replayed with `replay FILE`"
        ) from None
    if base_seq != seg.base_seq:
        raise JournalError(
            f"{seg.path}: byte 0: the header says its first input is {base_seq}, the name "
            f"{seg.base_seq}; rename the segment after its header"
        )
    chain = header.meta.get("chain", "")
    return SegmentHead(seg, header, base_seq, state, len(line), chain)


def segment_inputs(seg: Segment, open_segment: bool = False) -> Iterator[tuple[int, int, Input]]:
    """(seq, byte offset after the line, input) of a segment's inputs. A torn last line
    (no newline) is skipped in the open segment (a crash; resuming truncates it) and is an
    error in a closed one."""
    seq = seg.base_seq - 1
    lines = _lines(seg)
    next(lines, None)  # the header (`read_head`)
    for start, line in lines:
        if not line.endswith(b"\n"):
            if open_segment:
                return
            raise JournalError(
                f"{seg.path}: byte {start}: truncated line after input {seq} (a closed segment "
                "ends with a whole line): the segment was cut; restore it from a backup"
            )
        if not line.strip():
            continue
        try:
            inp = _input_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise JournalError(
                f"{seg.path}: byte {start}: input {seq + 1} is not a valid input: {exc}"
            ) from None
        seq += 1
        yield seq, start + len(line), inp


def first_head(directory: str | Path) -> SegmentHead:
    """The oldest kept segment's header: where a replay of the directory starts."""
    return read_head(_segments_or_fail(directory)[0])


def head_for(directory: str | Path, seq: int) -> SegmentHead:
    """The newest segment whose state is at or before input `seq` (a recovery starts there:
    its state, then `read_dir(directory, from_seq=head.base_seq)` up to the checkpoint)."""
    segs = [s for s in _segments_or_fail(directory) if s.base_seq <= max(seq, 1)]
    if not segs:
        raise JournalError(
            f"{directory}: the oldest kept segment starts after input {seq}: retention "
            "dropped the inputs before it"
        )
    return read_head(segs[-1])


def last_seq(directory: str | Path) -> int:
    """The sequence number of the directory's last whole input (its open segment alone is
    read): with `head_for`, where a recovery that lost the store's checkpoint stops."""
    last = _segments_or_fail(directory)[-1]
    seqs = (n for n, _, _ in segment_inputs(last, open_segment=not last.compressed))
    return max(seqs, default=read_head(last).base_seq - 1)


def _segments_or_fail(directory: str | Path) -> list[Segment]:
    if not Path(directory).is_dir():
        raise JournalError(f"{directory}: not a journal directory")
    segs = list_segments(directory)
    if not segs:
        raise JournalError(f"{directory}: no journal segments (seg-*.jsonl, seg-*.jsonl.zst)")
    return segs


def read_dir(directory: str | Path, from_seq: int = 0) -> Iterator[tuple[int, Input]]:
    """(seq, input) for every input of the directory's segments in order, from `from_seq`
    (a segment that ends before it is not read); each segment must start where the one
    before ended and have the same core configuration (`JournalError` naming the segment
    and the byte offset otherwise)."""
    segs = _segments_or_fail(directory)
    expected: int | None = None
    config: CoreConfig | None = None
    for i, seg in enumerate(segs):
        head = read_head(seg)
        if expected is not None and head.base_seq != expected:
            raise JournalError(
                f"{seg.path}: byte 0: starts at input {head.base_seq} but the segment before "
                f"ends at input {expected - 1}: inputs are missing (a segment lost or cut)"
            )
        if config is not None and head.header.config != config:
            raise JournalError(f"{seg.path}: byte 0: another core configuration than before")
        config = head.header.config
        last = i == len(segs) - 1
        if not last and segs[i + 1].base_seq <= from_seq:
            expected = segs[i + 1].base_seq
            continue
        seq = head.base_seq - 1
        for seq, _, inp in segment_inputs(seg, open_segment=last and not seg.compressed):
            if seq >= from_seq:
                yield seq, inp
        expected = seq + 1


def _drop_tail(path: Path, size: int) -> None:
    """Cut `path` to `size` bytes; whole lines cut (inputs whose commit never landed) are
    kept beside it in `uncommitted-<name>-<time>` for a recovery, with a warning."""
    with path.open("r+b") as f:
        f.seek(size)
        tail = f.read()
        whole = tail[: tail.rfind(b"\n") + 1]
        if whole:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            kept = path.with_name(f"uncommitted-{path.name}-{stamp}")
            kept.write_bytes(whole)
            log.warning(
                "journal_uncommitted_inputs",
                segment=path.name,
                lines=whole.count(b"\n"),
                kept_in=kept.name,
                hint="inputs journaled but not in the store's checkpoint (a crash before the "
                "commit, or a store that lost data) were cut from the open segment",
            )
        f.truncate(size)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Unfit(Exception):
    """The directory's journal does not lead to the stored state (it is set aside)."""


class SegmentedJournal:
    """The journal of a run in a directory (`Pipeline` writes it like a `JournalWriter`)."""

    def __init__(self, spec: JournalDirSpec, config: CoreConfig) -> None:
        self.spec = spec
        self.config = config
        self.committed_seq = 0
        self.digest = ChainedDigest()  # `open` returns it; the pipeline adds the effects
        self._file: IO[bytes] | None = None
        self._segment: Segment | None = None
        self._blocks = 0
        self._mark: tuple[int, int] = (0, 0)  # (position, blocks) at the last `position()`

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def open_segment(self) -> Segment | None:
        return self._segment

    # -- opening, resuming ----------------------------------------------------------------

    def open(self, seq: int, state: bytes) -> ChainedDigest:
        """`_open`; a directory that cannot be made or written is a `ConfigError` naming
        SEQ_JOURNAL_DIR (exit 2)."""
        try:
            return self._open(seq, state)
        except OSError as exc:
            raise ConfigError(
                "SEQ_JOURNAL_DIR",
                f"cannot write the journal in {self.spec.path}: {exc.strerror or exc}; set it "
                "to a writable directory, or to off to run without a journal",
            ) from None

    def _open(self, seq: int, state: bytes) -> ChainedDigest:
        """Start or resume for a store at input `seq` with committed `state`; returns the
        directory's digest up to `seq` (`ChainedDigest`: the pipeline adds each commit's
        effects to it, the journal chains it at each rotation). The open segment is
        replayed from its header's state and must reach `state` at `seq`. A directory that
        does not lead there (another store, a rewind under another SEQ_JOURNAL_DIR, a gap
        while journaling was off) is moved to `set-aside-<time>/` with a warning, and a new
        segment starts at `seq + 1`."""
        directory = self.spec.path
        directory.mkdir(parents=True, exist_ok=True)
        for tmp in directory.glob("seg-*.tmp"):
            tmp.unlink()  # a compression or a new segment a crash interrupted
        for zst in directory.glob("seg-*.jsonl.zst"):
            plain = zst.with_suffix("")  # renamed complete, then the plain one unlinked
            if plain.exists():
                plain.unlink()
        segs = list_segments(directory)
        self.committed_seq = seq
        self.digest = ChainedDigest()
        marker = committed_marker(directory, is_dir=True)
        if segs and seq == 0 and marker.exists() and last_seq(directory) > 0:
            raise StoreLost(
                f"the store holds no checkpoint, but the journal in {directory} holds inputs "
                f"up to {last_seq(directory)} of an earlier run: Redis lost its data (a restart "
                "without persistence, FLUSHALL, eviction). Run `seqcollector run --recover` to "
                "rebuild it from the journal, or move the directory away to start over (the "
                "finalizer and the relayer may then get epochs they already had)"
            )
        if segs:
            try:
                digest, kept = self._replay_to(segs[-1], seq, state)
            except (JournalError, _Unfit) as exc:
                self._set_aside(segs, str(exc))
            else:
                last = segs[-1]
                self.digest = digest
                if last.compressed:
                    self._start(seq + 1, state, digest.hexdigest())
                    digest.next_segment()
                else:
                    _drop_tail(last.path, kept)  # inputs written, never committed (a crash)
                    self._file = last.path.open("ab")
                    self._segment = last
                    self._blocks = sum(
                        isinstance(inp, Block) for _, _, inp in segment_inputs(last, True)
                    )
                self._compress_closed()
                self._retain()
                return digest
        self._start(seq + 1, state, self.digest.chain)
        return self.digest

    def _replay_to(self, last: Segment, seq: int, state_bytes: bytes) -> tuple[ChainedDigest, int]:
        """Replay the last segment up to `seq` -> the digest there and the byte offset
        after input `seq` (what to keep of the segment)."""
        head = read_head(last)
        if head.header.config != self.config:
            raise _Unfit("the journal is of another core configuration")
        if head.base_seq - 1 > seq:
            raise _Unfit(
                f"the store holds inputs up to {seq} but the journal goes on to input "
                f"{head.base_seq - 1} (a store restored from an older copy, or lost)"
            )
        state = load_state(head.state)
        digest = ChainedDigest(head.chain)
        reached, kept = head.base_seq - 1, head.header_bytes
        for n, end, inp in segment_inputs(last, open_segment=not last.compressed):
            if n > seq:
                if last.compressed:
                    raise _Unfit(f"a closed segment holds inputs after {seq}, the store's last")
                break
            digest.add(step(state, inp)[1])
            reached, kept = n, end
        if reached != seq or dump_state(state) != state_bytes:
            raise _Unfit(
                f"the journal holds inputs up to {reached} and the store {seq}, or it replays "
                "to another state"
            )
        return digest, kept

    def _set_aside(self, segs: list[Segment], why: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.spec.path / f"set-aside-{stamp}"
        aside.mkdir()
        for seg in segs:
            for p in self.spec.path.glob(f"{segment_name(seg.base_seq)}*"):
                p.rename(aside / p.name)
        _fsync_dir(self.spec.path)
        log.warning(
            "journal_set_aside",
            journal_dir=str(self.spec.path),
            moved_to=str(aside),
            segments=len(segs),
            reason=why,
            hint="the journal directory did not replay to the stored state; a new journal "
            "starts at the stored state, the old segments are kept in moved_to",
        )

    def _start(self, base_seq: int, state: bytes, chain: str) -> None:
        """Open a new segment at `base_seq` (after `state`, the digest chain at `chain`),
        its header written and fsynced, and the directory."""
        seg = Segment(self.spec.path / segment_name(base_seq), base_seq, False)
        meta = {
            "base_seq": str(base_seq),
            "chain": chain,
            "state": base64.b64encode(state).decode(),
            "created_at": datetime.now(UTC).isoformat(),
        }
        tmp = seg.path.with_name(seg.path.name + ".tmp")  # whole header, or no segment
        with tmp.open("wb") as f:
            f.write(_encoder.encode(JournalHeader(config=self.config, meta=meta)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, seg.path)
        _fsync_dir(self.spec.path)
        f = seg.path.open("ab")
        self._file, self._segment, self._blocks = f, seg, 0
        self._mark = (f.tell(), 0)

    # -- writing (the `Pipeline` journal protocol) ----------------------------------------

    def write_many(self, inputs: Iterable[Input]) -> None:
        assert self._file is not None, "SegmentedJournal.open() first"
        for inp in inputs:
            self._file.write(encode_input(inp) + b"\n")
            self._blocks += isinstance(inp, Block)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def position(self) -> int:
        """Where the open segment ends (to `truncate` back to if the group fails)."""
        assert self._file is not None
        self._file.flush()
        self._mark = (self._file.tell(), self._blocks)
        return self._mark[0]

    def truncate(self, size: int) -> None:
        assert self._file is not None
        self._file.flush()
        self._file.truncate(size)
        self._file.seek(size)
        if self._mark[0] == size:
            self._blocks = self._mark[1]

    async def committed(self, seq: int, state: bytes) -> None:
        """After the commit of inputs up to `seq` landed (its effects added to `digest`):
        rotate when the open segment is full, chaining the digest (then compress the closed
        segment and apply retention, in a worker thread)."""
        self.committed_seq = seq
        assert self._file is not None and self._segment is not None
        full_bytes = self._file.tell() >= self.spec.segment_bytes
        if not (full_bytes or self._blocks >= self.spec.segment_blocks):
            return
        old_file, old = self._file, self._segment
        try:
            old_file.flush()
            os.fsync(old_file.fileno())
            self._start(seq + 1, state, self.digest.hexdigest())
        except OSError as exc:  # the open segment stays open; the next commit tries again
            log.error(
                "journal_rotation_failed",
                segment=old.path.name,
                error=f"{type(exc).__name__}: {exc}",
                hint="check the disk under SEQ_JOURNAL_DIR; journaling goes on in the segment",
            )
            return
        self.digest.next_segment()
        old_file.close()
        log.info("journal_rotated", closed=old.path.name, opened=segment_name(seq + 1))
        await anyio.to_thread.run_sync(self._after_rotation)

    def _after_rotation(self) -> None:
        try:
            self._compress_closed()
            self._retain()
        except OSError as exc:
            log.error(
                "journal_maintenance_failed",
                journal_dir=str(self.spec.path),
                error=f"{type(exc).__name__}: {exc}",
                hint="closed segments stay uncompressed (they are still read); check the disk",
            )

    def _compress_closed(self) -> None:
        for seg in list_segments(self.spec.path):
            if not seg.compressed and self._segment is not None and seg != self._segment:
                compress_segment(seg)

    def _retain(self, now: float | None = None) -> None:
        """Delete the oldest closed segments beyond the age or the total size; never the
        open one, so the inputs after the last commit (and its state) are always kept."""
        now = time.time() if now is None else now
        segs = list_segments(self.spec.path)
        sizes = {s.path: s.path.stat().st_size for s in segs}
        total = sum(sizes.values())
        for seg in segs:
            if self._segment is not None and seg.base_seq >= self._segment.base_seq:
                break
            age = now - seg.path.stat().st_mtime
            if age <= self.spec.retain_s and total <= self.spec.retain_bytes:
                break
            seg.path.unlink()
            total -= sizes[seg.path]
            log.info(
                "journal_segment_deleted",
                segment=seg.path.name,
                age_days=round(age / DAY_S, 2),
                total_bytes=total,
            )
        _fsync_dir(self.spec.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def compress_segment(seg: Segment) -> Segment:
    """`seg-N.jsonl` -> `seg-N.jsonl.zst` (via a fsynced `.tmp`, renamed, dir fsynced)."""
    target = seg.path.with_name(seg.path.name + ".zst")
    tmp = seg.path.with_name(seg.path.name + ".zst.tmp")
    with seg.path.open("rb") as src, tmp.open("wb") as dst:
        zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).copy_stream(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, target)
    _fsync_dir(seg.path.parent)
    seg.path.unlink()
    return Segment(target, seg.base_seq, True)

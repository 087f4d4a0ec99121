"""Journals (inputs) and effect streams, one JSON object per line.

A journal is a header line (format, version, the `CoreConfig`) followed by one core input
per line. An effects stream is one effect per line; its sha256 is the run's digest, so two
versions of the collector can be compared on the same journal with `diff` or the digest.
`run` journals by default into a directory of such journals, rotated and compressed
(`journal_dir`); `run --record FILE` writes one file (`JournalWriter`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

import msgspec

from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import Effect
from seqcollector.core.inputs import Input
from seqcollector.errors import SettingsError

FORMAT = "seqcollector-journal"
VERSION = 1


class JournalHeader(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: str = FORMAT
    version: int = VERSION
    config: CoreConfig
    meta: dict[str, str] = {}


class JournalError(SettingsError):
    """A journal that cannot be read; the message names the file and line (exit code 2)."""


_encoder = msgspec.json.Encoder()
_input_decoder = msgspec.json.Decoder(Input)
_header_decoder = msgspec.json.Decoder(JournalHeader)


def encode_input(inp: Input) -> bytes:
    return _encoder.encode(inp)


def encode_effect(effect: Effect) -> bytes:
    return _encoder.encode(effect)


class InputJournal(Protocol):
    """What `Pipeline` journals into: one file (`JournalWriter`, `run --record FILE`) or a
    directory of segments (`journal_dir.SegmentedJournal`, SEQ_JOURNAL_DIR)."""

    def write_many(self, inputs: Iterable[Input]) -> None: ...
    def flush(self) -> None: ...
    def position(self) -> int: ...
    def truncate(self, size: int) -> None: ...
    async def committed(self, seq: int, state: bytes) -> None: ...
    def close(self) -> None: ...


class JournalWriter:
    """Appends inputs to a journal file, flushed line by line (a crash loses no full line)."""

    def __init__(self, path: str | Path, header: JournalHeader, append: bool = False) -> None:
        self.path = Path(path)
        exists = append and self.path.exists() and self.path.stat().st_size > 0
        self._file: IO[bytes] = self.path.open("ab" if exists else "wb")
        if not exists:
            self._file.write(_encoder.encode(header) + b"\n")

    def write(self, inp: Input) -> None:
        self._file.write(_encoder.encode(inp) + b"\n")

    def write_many(self, inputs: Iterable[Input]) -> None:
        self._file.writelines(_encoder.encode(i) + b"\n" for i in inputs)

    def flush(self) -> None:
        self._file.flush()

    def position(self) -> int:
        """The journal's size in bytes, flushed (to `truncate` back to if a group fails)."""
        self._file.flush()
        return self.path.stat().st_size

    async def committed(self, seq: int, state: bytes) -> None:
        """The commit of inputs up to `seq` landed (a single file has nothing to rotate)."""

    def truncate(self, size: int) -> None:
        """Drop everything after byte `size` (inputs whose commit failed)."""
        self._file.flush()
        self._file.truncate(size)
        self._file.seek(size)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_header(path: str | Path) -> JournalHeader:
    try:
        with Path(path).open("rb") as f:
            line = f.readline()
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the journal: {exc.strerror or exc}") from None
    return _parse_header(path, line)


def _parse_header(path: str | Path, line: bytes) -> JournalHeader:
    if not line.strip():
        raise JournalError(f"{path}:1: empty journal (no header line)")
    try:
        header = _header_decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise JournalError(
            f"{path}:1: bad journal header: {exc}; fix the header line or regenerate the journal"
        ) from None
    except msgspec.DecodeError as exc:
        raise JournalError(f"{path}:1: header is not JSON: {exc}") from None
    if header.format != FORMAT or header.version != VERSION:
        raise JournalError(
            f"{path}:1: journal format {header.format} v{header.version}, "
            f"this build reads {FORMAT} v{VERSION}"
        )
    return header


def read_inputs(path: str | Path) -> Iterator[tuple[int, int, Input]]:
    """(line number, byte offset after the line, input) for each input line of a journal."""
    with Path(path).open("rb") as f:
        offset = 0
        for lineno, line in enumerate(f, start=1):
            offset += len(line)
            if lineno == 1 or not line.strip():
                continue
            try:
                yield lineno, offset, _input_decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise JournalError(f"{path}:{lineno}: not a valid input: {exc}") from None


COMMITTED_MARKER = "committed"  # in a journal directory


def committed_marker(journal: Path, is_dir: bool) -> Path:
    """The file that says a step of this journal landed in the store (written once, after the
    first commit that lands). A journal with inputs beside an empty store is Redis having
    lost its data only if it exists: without it, the inputs were never committed (a crash
    before the first commit), and the run starts afresh."""
    if is_dir:
        return journal / COMMITTED_MARKER
    return journal.with_name(journal.name + ".committed")


def write_marker(path: Path) -> None:
    """Create `path` (empty) durably: fsynced, and its directory too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class EffectsDigest:
    """sha256 over the canonical effects stream (one JSON line each); optionally writes it."""

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self._sha = hashlib.sha256()
        self._out = out
        self.count = 0

    def add(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            line = _encoder.encode(effect) + b"\n"
            self._sha.update(line)
            if self._out is not None:
                self._out.write(line)
            self.count += 1

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

"""Catch-up progress: a bar with blocks/s on a terminal, a log line every 10 s elsewhere."""

from __future__ import annotations

import time
from types import TracebackType

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

log = structlog.get_logger(__name__)

SHOWN_FROM_BEHIND = 20  # blocks behind the head before progress is worth showing
LOG_EVERY_S = 10.0


class CatchUpProgress:
    """Call `update(head, chain_head, blocks_per_s)` after each applied group."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._start: int | None = None
        self._last_log = 0.0

    def update(self, head: int, chain_head: int | None, rate: float) -> None:
        if chain_head is None:
            return
        if self._start is None:
            if chain_head - head < SHOWN_FROM_BEHIND:
                return
            self._start = head
        total, done = max(chain_head - self._start, 1), head - self._start
        if not self._console.is_terminal:
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY_S or head >= chain_head:
                self._last_log = now
                log.info("catch_up", block=head, chain_head=chain_head, blocks_per_s=round(rate))
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("catch-up"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:,.0f} blocks/s"),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("catch-up", total=total, rate=rate)
        assert self._task is not None
        self._bar.update(self._task, total=total, completed=done, rate=rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> CatchUpProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

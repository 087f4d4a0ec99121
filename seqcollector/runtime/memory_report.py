"""MEMORY_PROFILING_INTERVAL: a memory report in the log at that interval (minutes, as Go).

Each report is one `memory_report` log line: the process's resident set (RSS) now and at
its peak, what tracemalloc traces, and the top allocation sites by size. Nothing is written
into the working directory (Go writes a `memory_profile_<time>.pprof` there every interval
and never deletes it). 0 turns the reports off (Go panics), and tracemalloc with them: it
is started only when reports are on, with one frame per trace to keep its cost low.
"""

from __future__ import annotations

import resource
import sys
import tracemalloc
from pathlib import Path

import anyio
import structlog

log = structlog.get_logger(__name__)

TOP = 10  # allocation sites per report


def rss_mb() -> float:
    """The resident set now (Linux /proc), else the peak (getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS


def report() -> dict[str, object]:
    """One report's fields (tracemalloc must be tracing for the allocation sites)."""
    fields: dict[str, object] = {
        "rss_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        current, peak = tracemalloc.get_traced_memory()
        fields["traced_mb"] = round(current / 2**20, 1)
        fields["traced_peak_mb"] = round(peak / 2**20, 1)
        fields["top"] = [
            f"{stat.traceback[0].filename}:{stat.traceback[0].lineno} "
            f"{stat.size / 2**10:,.0f} KiB in {stat.count:,} blocks"
            for stat in snapshot.statistics("lineno")[:TOP]
        ]
    return fields


async def memory_reports(interval_min: float) -> None:
    """Log a memory report every `interval_min` minutes until cancelled (0: return at once)."""
    if interval_min <= 0:
        return
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(1)
    try:
        while True:
            await anyio.sleep(interval_min * 60)
            fields = await anyio.to_thread.run_sync(report)
            log.info("memory_report", interval_min=interval_min, **fields)
    finally:
        if started:
            tracemalloc.stop()

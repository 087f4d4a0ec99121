"""MEMORY_PROFILING_INTERVAL: a memory report in the log at that interval (minutes, as Go).

Each report is one `memory_report` log line: the process's resident set (RSS) now and at
its peak, and the top allocation sites by size of what was allocated (and is still held)
in the window before the report. Nothing is written into the working directory (Go writes
a `memory_profile_<time>.pprof` there every interval and never deletes it). 0 turns the
reports off (Go panics).

tracemalloc slows every allocation while it traces, so it traces only the last
`TRACE_WINDOW` of each interval (a tenth of it, at most a minute), with one frame per
trace: on the default 15 minutes, 1 minute in 15.
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
TRACE_WINDOW_MAX_S = 60.0


def trace_window_s(interval_s: float) -> float:
    """How long before each report tracemalloc traces."""
    return min(TRACE_WINDOW_MAX_S, interval_s / 10)


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
    interval_s = interval_min * 60
    window_s = trace_window_s(interval_s)
    while True:
        await anyio.sleep(interval_s - window_s)
        ours = not tracemalloc.is_tracing()  # (someone else's tracing is left alone)
        if ours:
            tracemalloc.start(1)
        try:
            await anyio.sleep(window_s)
            fields = await anyio.to_thread.run_sync(report)
        finally:
            if ours:
                tracemalloc.stop()
        log.info("memory_report", interval_min=interval_min, traced_s=window_s, **fields)

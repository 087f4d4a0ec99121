"""MEMORY_PROFILING_INTERVAL: reports in the log at the interval, nothing in the working
directory (Go writes a .pprof file there every interval), 0 is off (Go panics)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from seqcollector.runtime.memory_report import memory_reports

pytestmark = pytest.mark.anyio


async def test_reports_at_the_interval_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    kept = [bytearray(1000) for _ in range(2000)]  # something to find among the allocations
    with capture_logs() as logs, anyio.move_on_after(1.0):
        await memory_reports(0.1 / 60)  # every 0.1 s
    reports = [e for e in logs if e["event"] == "memory_report"]
    assert 3 <= len(reports) <= 12
    first = reports[0]
    assert first["rss_mb"] > 0 and first["peak_rss_mb"] >= first["rss_mb"] * 0.5
    assert first["traced_mb"] >= 0 and first["top"] and " KiB in " in first["top"][0]
    assert os.listdir(tmp_path) == []
    assert not tracemalloc.is_tracing()  # stopped with the reports
    assert kept


async def test_zero_is_off() -> None:
    with capture_logs() as logs:
        with anyio.fail_after(1.0):
            await memory_reports(0)
    assert logs == [] and not tracemalloc.is_tracing()


async def test_tracemalloc_traces_only_the_window_before_each_report() -> None:
    """Tracing slows every allocation: on for the last tenth of each interval only."""
    seen: list[bool] = []

    async def watch() -> None:
        for _ in range(40):
            await anyio.sleep(0.05)
            seen.append(tracemalloc.is_tracing())

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            with anyio.move_on_after(2.0):
                await memory_reports(1 / 60)  # every second, traced for the last 0.1 s
            tg.cancel_scope.cancel()
    reports = [e for e in logs if e["event"] == "memory_report"]
    assert reports and reports[0]["traced_s"] == pytest.approx(0.1)
    assert sum(seen) <= len(seen) // 2  # tracing a small share of the time (0.1 s in 1 s)

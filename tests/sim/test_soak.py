"""The soak (`make soak`, `python -m sim.soak`): a short run end to end, and its growth rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim.soak import Sample, growth

SOAK = [sys.executable, "-m", "sim.soak"]


def _samples(rss: list[float], fds: list[int] | None = None) -> list[Sample]:
    fds = fds or [10] * len(rss)
    return [
        Sample(i, i, 1000 * i, r, f, 1, 1.0) for i, (r, f) in enumerate(zip(rss, fds, strict=True))
    ]


def test_flat_memory_passes_and_growth_is_named() -> None:
    assert growth(_samples([100, 104, 101, 103, 102, 104]), 40) == []
    grew = growth(_samples([100, 110, 130, 160, 190, 220]), 40)
    assert len(grew) == 1 and "memory grew" in grew[0] and "MiB" in grew[0]
    leak = growth(_samples([100] * 6, fds=[10, 10, 10, 11, 12, 13]), 40)
    assert leak == ["fds grew: 13 after the last segment, at most 10 in the first half"]


def test_short_soak_runs_every_fault_and_reports(tmp_path: Path) -> None:
    out = subprocess.run(
        [*SOAK, "--blocks", "500", "--epochs", "25", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    segments = [line for line in lines if line.startswith("segment")]
    assert len(segments) >= 2 and all("invariants ok" in line for line in segments)
    assert any(line.startswith("soak: ") and "every fault kind" in line for line in lines)
    assert any(line.startswith("RSS MiB: first") for line in lines)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [*SOAK, "--blocks", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--blocks" in out.stderr

"""The journal's cost at the head: per-step latency (p50/p99) with and without it.

One step is `Pipeline.apply` of one block and its logs, with the core's queries answered
from Redis (the synthetic dequeuer's submission sets), as at the head: one block per
commit, committed into a private redis-server. Modes, each on a fresh database, in
alternating rounds so the machine's drift falls on all of them:

- none: no journal (SEQ_JOURNAL_DIR=off)
- file: `run --record FILE` (one file, flushed per group)
- dir: SEQ_JOURNAL_DIR at its defaults (64 MB / 100,000-block segments: no rotation here)
- dir+rotate: segments of 100 blocks, so rotations (fsync, zstd, retention) fall inside

    python -m bench.journal_cost [--blocks N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from seqcollector.journal_dir import JournalDirSpec
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.pipeline import Pipeline
from sim.redis_server import RedisServer
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec

MODES = ("none", "file", "dir", "dir+rotate")


def _journal(mode: str, tmp: Path) -> Path | JournalDirSpec | None:
    if mode == "file":
        return tmp / "run.jsonl"
    if mode == "dir":
        return JournalDirSpec(tmp / "dir")
    if mode == "dir+rotate":
        return JournalDirSpec(tmp / "rot", segment_blocks=100)
    return None


async def _one(url: str, mode: str, blocks: int) -> list[float]:
    redis = aioredis.Redis.from_url(url)
    await redis.flushdb()
    world = SyntheticWorld(WorldSpec(seed=2, markets=2, blocks=blocks, projects=20, slots=50))
    config = world.core_config(batch_size=10, max_reorg_depth=64)
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="journal-cost-") as tmp:
        pipeline = Pipeline(
            RedisExecutor(redis, "bench"), config, journal=_journal(mode, Path(tmp))
        )
        await pipeline.open()
        async for unit in SyntheticSource(world, redis).units():
            started = time.perf_counter()
            await pipeline.apply(unit)
            times.append(time.perf_counter() - started)
        await pipeline.close()
    await redis.aclose()
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run(url: str, blocks: int = 2000, rounds: int = 3) -> dict[str, Any]:
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            samples[mode].extend(anyio.run(_one, url, mode, blocks))
    out: dict[str, Any] = {"steps": len(samples["none"])}
    for mode in MODES:
        out[f"{mode} p50 ms"] = _pct(samples[mode], 0.50)
        out[f"{mode} p99 ms"] = _pct(samples[mode], 0.99)
        out[f"{mode} mean ms"] = statistics.fmean(samples[mode]) * 1000
    for mode in MODES[1:]:
        out[f"{mode} p50 overhead ms"] = out[f"{mode} p50 ms"] - out["none p50 ms"]
        out[f"{mode} p99 overhead ms"] = out[f"{mode} p99 ms"] - out["none p99 ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with RedisServer() as server:
        figures = run(server.url, args.blocks, args.rounds)
    for name, value in figures.items():
        print(f"{name:28} {value:10.3f}" if isinstance(value, float) else f"{name:28} {value}")


if __name__ == "__main__":
    main()

"""The soak: many simulated blocks with every fault kind, in one process, watching for growth.

`python -m sim.soak --blocks 1000000` (`make soak`) runs fast-mode simulations one after
another in this process, each with a new seed and every fault kind (`--faults all`), each
checked whole (every invariant of `sim.invariants`, and the twin digest: the same world
without process faults gives the same effects), until the blocks simulated reach
`--blocks`. After each segment it samples this process's resident memory (VmRSS), its open
file descriptors and its asyncio tasks, and at the end it compares the second half of the
run with the first: memory must be flat (the median RSS of the last half within
`--rss-slack-mb` of the first half's), no fd or task growth (the last sample no higher than
the highest of the first half). Any invariant failure or growth exits 3 with the segment's
seed, so the run can be repeated with `seqcollector sim --fast --seed N --faults all`.

Why segments and not one 1,000,000-block chain: the harness keeps every effect of a run to
check it at the end (`sim.timeline`), so a single run's checker grows with its length by
design; segments keep each check whole and still run every long-lived part of the process
(imports, registries, the event loop, the HTTP client pool of each collector, the Redis
server) through a million blocks. The core's own bounded state over long chains is checked
by the retention properties (tests/property/test_retention.py).

Each segment runs against a private `redis-server` when one is on PATH (flushed between
segments), else the embedded store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import redis.asyncio as aioredis

from sim.faults import KINDS
from sim.harness import run_simulation
from sim.redis_server import RedisServer, RedisServerMissing
from sim.spec import SimFailed, SimSpec

EXIT_FAILED = 3


@dataclass(frozen=True)
class Sample:
    segment: int
    seed: int
    blocks: int  # total simulated so far
    rss_mb: float
    fds: int
    tasks: int
    seconds: float  # this segment's wall time


def rss_mb() -> float:
    """This process's resident set (VmRSS of /proc/self/status), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS missing from /proc/self/status (Linux only)")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def growth(samples: list[Sample], rss_slack_mb: float) -> list[str]:
    """What grew between the first and the second half of the run (empty: nothing)."""
    if len(samples) < 4:
        return []
    half = len(samples) // 2
    first, last = samples[:half], samples[half:]
    problems = []
    before = statistics.median(s.rss_mb for s in first)
    after = statistics.median(s.rss_mb for s in last)
    if after - before > rss_slack_mb:
        problems.append(
            f"memory grew: median RSS {before:.0f} MiB in the first half, {after:.0f} MiB in "
            f"the second (more than --rss-slack-mb {rss_slack_mb:g})"
        )
    for name in ("fds", "tasks"):
        ceiling = max(getattr(s, name) for s in first)
        if getattr(samples[-1], name) > ceiling:
            problems.append(
                f"{name} grew: {getattr(samples[-1], name)} after the last segment, at most "
                f"{ceiling} in the first half"
            )
    return problems


async def soak(
    total_blocks: int,
    epochs: int,
    markets: int,
    first_seed: int,
    out: Path,
    rss_slack_mb: float,
    redis_url: str | None,
    lockstep: bool = False,
) -> list[Sample]:
    samples: list[Sample] = []
    done, seed, segment = 0, first_seed, 0
    started = time.monotonic()
    while done < total_blocks:
        segment += 1
        spec = SimSpec(
            seed=seed,
            epochs=epochs,
            markets=markets,
            projects=4,
            slots=4,
            faults=frozenset(KINDS),
            fast=True,
            lockstep=lockstep,
        )
        if redis_url is not None:
            client = aioredis.Redis.from_url(redis_url)
            await client.flushdb()
            await client.aclose()
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            try:
                record = await run_simulation(spec, Path(tmp), redis_url)
            except SimFailed as exc:
                print(f"soak FAILED in segment {segment}: {exc}", flush=True)
                raise
            except Exception as exc:  # not an invariant: the run itself broke
                message = (
                    f"segment {segment} (seed {seed}, --epochs {epochs} --markets {markets}): "
                    f"{type(exc).__name__}: {exc}"
                )
                print(f"soak FAILED in {message}", flush=True)
                raise SimFailed(message) from exc
        done += int(record.summary.get("blocks", 0))
        samples.append(
            Sample(
                segment,
                seed,
                done,
                rss_mb(),
                open_fds(),
                len(asyncio.all_tasks()),
                time.monotonic() - t0,
            )
        )
        s = samples[-1]
        rate = done / max(time.monotonic() - started, 1e-9)
        print(
            f"segment {segment:4d} seed {seed:6d}: {done:>9,} / {total_blocks:,} blocks "
            f"({rate:,.0f} blocks/s), RSS {s.rss_mb:6.1f} MiB, fds {s.fds}, tasks {s.tasks}, "
            f"{s.seconds:.1f} s, faults {len(record.faults)}, invariants ok",
            flush=True,
        )
        seed += 1
    return samples


def report(samples: list[Sample], elapsed: float) -> str:
    rss = [s.rss_mb for s in samples]
    lines = [
        f"soak: {samples[-1].blocks:,} blocks in {len(samples)} segments, {elapsed:.0f} s "
        f"({samples[-1].blocks / max(elapsed, 1e-9):,.0f} blocks/s), every fault kind "
        f"({', '.join(KINDS)}), every invariant and the twin digest checked per segment",
        f"RSS MiB: first {rss[0]:.1f}, min {min(rss):.1f}, median {statistics.median(rss):.1f}, "
        f"max {max(rss):.1f}, last {rss[-1]:.1f}",
        f"fds: first {samples[0].fds}, max {max(s.fds for s in samples)}, last {samples[-1].fds}",
        f"asyncio tasks: first {samples[0].tasks}, max {max(s.tasks for s in samples)}, "
        f"last {samples[-1].tasks}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=1_000_000, help="blocks in all")
    parser.add_argument("--epochs", type=int, default=500, help="epochs per market per segment")
    parser.add_argument("--markets", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="first segment's seed")
    parser.add_argument("--rss-slack-mb", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=Path("out/soak"))
    parser.add_argument(
        "--embedded", action="store_true", help="the embedded store, even with redis-server"
    )
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.epochs < 1 or args.markets < 1:
        parser.error("--blocks, --epochs and --markets must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SEQ_LOG_LEVEL", "error")
    from seqcollector.cli import _logs_from_env

    log_file = (args.out / "soak.log").open("a")
    _logs_from_env(log_file)
    server: RedisServer | None = None
    url = None
    if not args.embedded:
        try:
            server = RedisServer()
            url = server.start()
        except RedisServerMissing:
            print("redis-server not on PATH: the soak runs on the embedded store", flush=True)
            server = None
    started = time.monotonic()
    try:
        samples = anyio.run(
            soak,
            args.blocks,
            args.epochs,
            args.markets,
            args.seed,
            args.out,
            args.rss_slack_mb,
            url,
        )
    except SimFailed:
        return EXIT_FAILED
    finally:
        if server is not None:
            server.stop()
        log_file.close()
    print(report(samples, time.monotonic() - started), flush=True)
    problems = growth(samples, args.rss_slack_mb)
    for problem in problems:
        print(f"soak FAILED: {problem}", flush=True)
    return EXIT_FAILED if problems else 0


if __name__ == "__main__":
    sys.exit(main())

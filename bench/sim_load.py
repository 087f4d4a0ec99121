"""Benchmark (e): load (figures, not tests).

1. The fast simulation at 10 markets x 200 projects x 100 slots, 500 epochs per market
   (5,000 epochs), against a real redis-server, laid out as in production: the collector in
   one process (with the relayer's HTTP server thread and, after the run, the checks), the
   world (chain and dequeuer) and the finalizer in processes of their own. Epochs/s over the
   run, and the peak RSS of the collector's process (a child of this one, to isolate it).
2. A replay of a 1,000,000-block journal into a real redis-server, in a process of its own:
   RSS sampled at every 10% of the journal, to show that memory stays flat (the core keeps
   a bounded history).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from seqcollector.journal import JournalHeader, JournalWriter
from sim.redis_server import RedisServer
from sim.synthetic import SyntheticWorld, WorldSpec, drive

PAGE = os.sysconf("SC_PAGE_SIZE")


def peak_rss_mb() -> float:
    """VmHWM of this process image (ru_maxrss would include the parent's before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def sim_load(
    epochs: int = 500, markets: int = 10, projects: int = 200, slots: int = 100
) -> dict[str, float]:
    """Runs in a child process; returns its figures."""
    args = [
        sys.executable,
        "-m",
        "bench.sim_load",
        "--child",
        str(epochs),
        str(markets),
        str(projects),
        str(slots),
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=1800)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _child(epochs: int, markets: int, projects: int, slots: int) -> None:
    from seqcollector.logs import configure_logging
    from sim.harness import SimSpec, run_simulation

    configure_logging("auto", "warning")  # stderr: stdout's last line is the figures
    spec = SimSpec(
        seed=1,
        epochs=epochs,
        markets=markets,
        projects=projects,
        slots=slots,
        batch_size=50,
        submission_values=False,
        lockstep=False,  # the collector commits what piled up, as in a catch-up
        processes=True,  # world and finalizer in processes of their own, as in production
    )
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        record = anyio.run(run_simulation, spec, Path(tmp), server.url)
        wall = time.monotonic() - started
    print(
        json.dumps(
            {
                "epochs": record.summary["epochs batched"],
                "run s": record.summary["seconds"],
                "epochs/s": record.summary["epochs/s"],
                "wall s (with checks)": round(wall, 1),
                "collector busy s": record.summary["collector busy s"],
                "collector epochs/s": round(
                    float(record.summary["epochs batched"])
                    / float(record.summary["collector busy s"]),
                    1,
                ),
                "peak RSS MB": peak_rss_mb(),
                "invariants ok": all(i.ok for i in record.invariants),
            }
        )
    )


def replay_memory(blocks: int = 1_000_000) -> dict[str, object]:
    """Generate the journal in one child process, replay it in another (its RSS is the
    replay's alone, not what generating it or earlier benchmarks left behind)."""
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        path = Path(tmp) / "long.jsonl"
        started = time.monotonic()
        _run_child("--generate", str(path), str(blocks))
        generated = time.monotonic() - started
        figures = json.loads(_run_child("--replay", str(path), server.url))
    return {
        "blocks": blocks,
        "journal MB": figures["MB"],
        "generate s": round(generated),
        "replay s": round(figures["seconds"], 1),
        "blocks/s": round(blocks / figures["seconds"]),
        "RSS MB at each 10%": figures["samples"],
    }


def _run_child(*args: str) -> str:
    command = [sys.executable, "-m", "bench.sim_load", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed (exit {out.returncode}):\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def _generate(path: Path, blocks: int) -> None:
    world = SyntheticWorld(
        WorldSpec(seed=3, markets=1, blocks=blocks, projects=2, slots=2, noise_logs=False)
    )
    config = world.core_config(batch_size=50)
    with JournalWriter(path, JournalHeader(config=config)) as writer:
        writer.write_many(drive(world, config))
    print("{}")


def _replay(path: Path, redis_url: str) -> None:
    from seqcollector.runtime.executor import redis_client
    from seqcollector.runtime.replay import replay_journal

    size = path.stat().st_size
    samples: list[float] = []
    marks = [size * k // 10 for k in range(1, 11)]

    def progress(done: int) -> None:
        while marks and done >= marks[0]:
            marks.pop(0)
            samples.append(round(rss_mb(), 1))

    async def go() -> float:
        client = redis_client(redis_url)
        t0 = time.monotonic()
        await replay_journal(path, client, "bench", on_progress=progress)
        await client.aclose()
        return time.monotonic() - t0

    seconds = anyio.run(go)
    print(json.dumps({"seconds": seconds, "samples": samples, "MB": round(size / 2**20)}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*(int(a) for a in sys.argv[2:6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--generate":
        _generate(Path(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--replay":
        _replay(Path(sys.argv[2]), sys.argv[3])
    else:
        print(sim_load())
        print(replay_memory())

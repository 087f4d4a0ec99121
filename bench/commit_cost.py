"""Cost of one commit of a realistic step, the commit script against the MULTI/EXEC before it.

The step: 100 IncrementBy (with TTL), 10 ListPush, 20 SetValue, 2 outbox entries and a
50 KB state. Both executors commit the same steps to the same private redis-server (and to
the embedded store), in alternating rounds, in one run. The baseline is the executor of
commit `BASELINE_REV` (WATCH, then MULTI ... EXEC with the counters in one EVAL), loaded
from git. Figures per commit: Redis round trips, client CPU (this process), wall time, and
the server's CPU (INFO cpu).

    python -m bench.commit_cost [--commits N] [--rounds N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import redis.asyncio as aioredis

from seqcollector.core.effects import Effect, IncrementBy, ListPush, RelayerCall, SetValue
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.roundtrips import counting_embedded_redis, counting_redis
from sim.redis_server import RedisServer

BASELINE_REV = "9bb8626"  # the last executor that committed with MULTI/EXEC
ROOT = Path(__file__).resolve().parent.parent


def baseline_module() -> ModuleType:
    """The executor module as of BASELINE_REV (git show), importable beside the new one."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE_REV}:seqcollector/runtime/executor.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("bench_baseline_executor", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{BASELINE_REV}:executor.py", "exec"), module.__dict__)
    return module


def step_effects(n: int) -> list[Effect]:
    """The effects of step `n`: a closed window of one market, as the core writes them."""
    lc = "0x" + "ab" * 20
    out: list[Effect] = [
        SetValue(f"BlockHashByNumberKey.{n}.{i}", "0x" + f"{i:064x}", ttl_s=1800) for i in range(10)
    ]
    for b in range(10):
        item = f'{{"epochId":{n},"batchId":{b},"x":"{"y" * 200}"}}'
        out.append(ListPush("finalizerQueue", item))
        out.append(SetValue(f"BatchSubmissionsKey.{lc}.{n}.{b}", '["' + "s" * 300 + '"]', 3600))
    out += [IncrementBy(f"SlotSubmissionsKey.{lc}.1.{s}", 1 + s % 3, 86400) for s in range(100)]
    out += [
        RelayerCall(id=f"submitBatchSize:{n}", path="/submitBatchSize", body={"epochID": n}),
        RelayerCall(id=f"submitBatchSize:{n}:b", path="/submitBatchSize", body={"epochID": n}),
    ]
    assert sum(isinstance(e, SetValue) for e in out) == 20
    return out


async def server_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(
    make: Any,
    client: aioredis.Redis,
    trips: Any,
    namespace: str,
    first: int,
    commits: int,
    url_is_real: bool,
) -> dict[str, float]:
    executor = make(client, namespace)
    await executor.load()
    state = b"S" * 50_000
    steps = [step_effects(first + i) for i in range(commits)]
    await executor.commit(first, None, steps[0], state)  # warm-up: script load, connection
    trips.reset()
    real = url_is_real
    server_before = await server_cpu_s(client) if real else 0.0
    trips.reset()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(1, commits):
        assert await executor.commit(first + i, None, steps[i], state)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n_trips = trips.count
    server = (await server_cpu_s(client) - server_before) if real else 0.0
    n = commits - 1
    return {
        "round trips": n_trips / n,
        "client cpu us": cpu / n * 1e6,
        "wall us": wall / n * 1e6,
        "server cpu us": server / n * 1e6,
    }


async def compare(url: str | None, commits: int, rounds: int) -> dict[str, dict[str, float]]:
    old = baseline_module()
    makers = {"MULTI/EXEC (baseline)": old.RedisExecutor, "commit script": RedisExecutor}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
    server = None
    for r in range(rounds):
        for j, (name, make) in enumerate(makers.items()):
            if url is not None:
                client, trips = counting_redis(url)
            else:
                client, trips = counting_embedded_redis(server)
            first = 1 + (r * len(makers) + j) * (commits + 1)
            figures = await measure(
                make, client, trips, f"bench:{j}", first, commits, url is not None
            )
            results[name].append(figures)
            await client.aclose()
    return {
        name: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        for name, runs in results.items()
    }


def run(url: str, commits: int = 200, rounds: int = 5) -> dict[str, dict[str, dict[str, float]]]:
    return {
        "real Redis": anyio.run(compare, url, commits, rounds),
        "embedded": anyio.run(compare, None, max(commits // 4, 10), rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200, help="commits per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, median")
    args = parser.parse_args()
    with RedisServer() as server:
        figures = run(server.url, args.commits, args.rounds)
    print("per commit: 100 IncrementBy, 10 ListPush, 20 SetValue, 2 outbox entries, 50 KB state")
    print(
        f"{'store':<11} {'executor':<22} {'trips':>6} {'client CPU us':>14} {'wall us':>9} "
        f"{'server CPU us':>14}"
    )
    for store, by_name in figures.items():
        for name, f in by_name.items():
            print(
                f"{store:<11} {name:<22} {f['round trips']:>6.2f} {f['client cpu us']:>14,.0f} "
                f"{f['wall us']:>9,.0f} {f['server cpu us']:>14,.0f}"
            )


if __name__ == "__main__":
    main()

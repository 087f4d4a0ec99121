"""(g) The read API under load: 50 concurrent clients on loopback against `/batchCount` and
`/totalSubmissions` (pastDays 7), served by `seqcollector api` (Litestar under uvicorn, in
a process of its own), beside the same load against a minimal aiohttp.web handler reading
the same keys (`bench.api_baseline`, also a process of its own), same redis-server, same run.

The load generator is Python (aiohttp, one keep-alive connection per client), in this
process; each run is bounded by `REQUESTS` requests and `SECONDS` seconds, after a short
warm-up. Figures per target and path: p50 and p99 latency (ms), requests/s, and the ratios
ours / baseline. The machine has 2 cores shared by the generator, the server and Redis:
read the ratios, not the absolute numbers.

    python -m bench.api_load [--clients 50] [--seconds 10] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import redis

from sim.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
MARKET = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c"
LC = MARKET.lower()
TOKEN = "bench-token"
DAY = 30
BODIES = {
    "/batchCount": {"token": TOKEN, "dataMarketAddress": MARKET, "epochID": 1234},
    "/totalSubmissions": {"token": TOKEN, "dataMarketAddress": MARKET, "slotID": 7, "pastDays": 7},
}


def seed(url: str) -> None:
    with redis.Redis.from_url(url) as r:
        r.set(f"CurrentDayKey.{LC}", str(DAY))
        r.set(f"BatchCountKey.{LC}.1234", "12")
        for day in range(DAY - 6, DAY + 1):
            r.set(f"EligibleSlotSubmissionsKey.{LC}.{day}.7", str(day * 3))
            r.set(f"SlotSubmissionsKey.{LC}.{day}.7", str(day * 4))


@contextmanager
def server(args: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not listen within 60 s")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _load(
    url: str, body: dict[str, Any], clients: int, seconds: float, requests: int
) -> dict[str, float]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    sent = 0

    async def client(session: aiohttp.ClientSession, until: float, record: bool) -> None:
        nonlocal errors, sent
        while time.perf_counter() < until and (not record or sent < requests):
            if record:
                sent += 1
            start = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as r:
                await r.read()
                ok = r.status == 200
            if record:
                latencies.append(time.perf_counter() - start)
                errors += not ok

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with anyio.create_task_group() as tg:  # warm-up: connections, caches
            for _ in range(clients):
                tg.start_soon(client, session, time.perf_counter() + 1.0, False)
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(client, session, began + seconds, True)
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "req/s": len(latencies) / elapsed,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


Figures = dict[tuple[str, str], dict[str, float]]


def run(
    redis_url: str, clients: int = 50, seconds: float = 10.0, requests: int = 20_000
) -> Figures:
    """Figures for both targets and both paths, and the ratios ours / baseline."""
    seed(redis_url)
    ours_port, base_port = free_port(), free_port()
    targets = {
        "seqcollector": (
            ["seqcollector", "api", "--host", "127.0.0.1", "--port", str(ours_port)],
            ours_port,
            {"AUTH_READ_TOKEN": TOKEN, "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
             "SEQ_REDIS_URL": redis_url},
        ),
        "aiohttp baseline": (
            ["bench.api_baseline", "--port", str(base_port), "--redis", redis_url,
             "--token", TOKEN, "--market", MARKET],
            base_port,
            {},
        ),
    }  # fmt: skip
    out: Figures = {}
    for name, (args, port, env) in targets.items():
        with server(args, port, env):
            for path, body in BODIES.items():
                url = f"http://127.0.0.1:{port}{path}"
                out[(name, path)] = anyio.run(_load, url, body, clients, seconds, requests)
    for path in BODIES:
        ours, base = out[("seqcollector", path)], out[("aiohttp baseline", path)]
        out[("ratio", path)] = {
            "req/s": ours["req/s"] / base["req/s"],
            "p50": ours["p50 ms"] / base["p50 ms"],
            "p99": ours["p99 ms"] / base["p99 ms"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    with RedisServer() as redis_server:
        found = run(redis_server.url, args.clients, args.seconds, args.requests)
    for (name, path), fig in found.items():
        if name == "ratio":
            print(
                f"{'ours/baseline':>17} {path:<18} req/s x{fig['req/s']:.2f}  "
                f"p50 x{fig['p50']:.2f}  p99 x{fig['p99']:.2f}"
            )
        else:
            print(
                f"{name:>17} {path:<18} {fig['requests']:>6.0f} requests "
                f"({fig['errors']:.0f} not 200)  {fig['req/s']:>7,.0f} req/s  "
                f"p50 {fig['p50 ms']:6.1f} ms  p99 {fig['p99 ms']:6.1f} ms"
            )


if __name__ == "__main__":
    main()

"""Active/standby takeover drills (issue 11 §6): two real `seqcollector run` processes on
one namespace, anvil mining a block every 100 ms, a private redis-server and the recording
relayer (figures, not tests).

Each drill pauses the active (SIGSTOP), waits for the standby's first commit (the
checkpoint moving while the lease holds another value), then resumes the paused one
(SIGCONT: it is fenced out and stands by). The two swap roles from drill to drill. An epoch
per market is released (with submissions) before every drill, so windows are open across
each takeover.

Figures: takeover time, from the active's pause to the standby's first commit, p50 and
max; commits lost to failover: the epochs not batched or batched more than once, plus the
epochs whose `submitBatchSize` was not sent exactly once (must be 0).

    python -m bench.takeover [--drills 20] [--lease-s 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import redis
from web3 import AsyncHTTPProvider, AsyncWeb3

from seqcollector.core.addresses import checksum
from sim.anvil import Anvil
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.redis_server import RedisServer
from sim.relayer import Relayer

MARKETS = ["0x" + "c3" * 20, "0x" + "d4" * 20]
WINDOW_S = 4
NAMESPACE = "seqcollector"
LEASE_KEY, CHECKPOINT_KEY = f"{NAMESPACE}:lease", f"{NAMESPACE}:checkpoint"


class Miner:
    """Mines a block every `every_s` (anvil's clock moves 1 s per block) until stopped."""

    def __init__(self, node: Anvil, every_s: float = 0.1) -> None:
        self.node, self.every_s = node, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.node.mine(1, 1)

    def __enter__(self) -> Miner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def collector(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "seqcollector", "run"], env=env, stdout=out, stderr=out
        )


def wait(what: str, check: Any, timeout_s: float = 30.0, every_s: float = 0.002) -> float:
    """Poll `check` until true -> the time it became true (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(every_s)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


async def _setup(node: Anvil) -> tuple[str, int]:
    w3 = AsyncWeb3(AsyncHTTPProvider(node.url))
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    for market in MARKETS:
        await contract.create_data_market(market)
        await contract.set_snapshot_submission_window(market, WINDOW_S)
        await contract.set_epochs_in_a_day(market, 1000)
    ready = await w3.eth.block_number
    await w3.provider.disconnect()
    return address, ready


async def _release(node: Anvil, address: str, r: redis.Redis) -> list[Any]:
    """An epoch per market, with submissions under the latest block (as the dequeuer)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(node.url))
    contract = ProtocolStateClient(w3, address)
    released = []
    for market in MARKETS:
        await contract.release_epoch(market, 1, 2)
        epoch = (await contract.read_market_params(market))["currentEpoch"]
        block = await w3.eth.get_block("latest")
        key = f"SnapshotCollector.{market}.{epoch}.{block['hash'].to_0x_hex()}"
        r.sadd(key, *(f"{market}.{epoch}.project{s % 3}.{s}" for s in range(1, 6)))
        r.expire(key, 1200)
        released.append((market, epoch))
    await w3.provider.disconnect()
    return released


def run(drills: int = 20, lease_s: float = 1.0) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Anvil(timestamp=1_800_000_000) as node,
        RedisServer() as server,
        Relayer() as relayer,
    ):
        r = redis.Redis.from_url(server.url, decode_responses=True)
        address, ready = anyio.run(_setup, node)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "RPC_NODES": json.dumps([node.url]),
            "PROTOCOL_STATE_CONTRACT": address,
            "DATA_MARKET_ADDRESSES": json.dumps([checksum(m) for m in MARKETS]),
            "SEQ_REDIS_URL": server.url,
            "TX_RELAYER_URL": relayer.url,
            "TX_RELAYER_AUTH_WRITE_TOKEN": "t",
            "BATCH_SIZE": "2",
            "BLOCK_TIME": "0.2",
            "SEQ_START_BLOCK": str(ready + 1),
            "SEQ_HA_LEASE_S": str(lease_s),
            "SEQ_API_ENABLED": "false",
            "SEQ_LOG_LEVEL": "warning",
        }
        procs = [collector(env, Path(tmp) / f"{n}.log") for n in "ab"]
        released: list[Any] = []
        takeovers: list[float] = []
        try:
            with Miner(node):
                wait("a first commit", lambda: r.get(CHECKPOINT_KEY) is not None)
                for _ in range(drills):
                    released += anyio.run(_release, node, address, r)
                    holder = r.get(LEASE_KEY)
                    assert holder is not None
                    pid = int(holder.split(":")[-3])
                    active = next(p for p in procs if p.pid == pid)
                    before = r.get(CHECKPOINT_KEY)
                    active.send_signal(signal.SIGSTOP)
                    paused = time.monotonic()
                    taken = wait(
                        "the standby's first commit",
                        lambda h=holder, b=before: (
                            r.get(LEASE_KEY) not in (None, h) and r.get(CHECKPOINT_KEY) != b
                        ),
                    )
                    takeovers.append(taken - paused)
                    active.send_signal(signal.SIGCONT)
                    time.sleep(0.3)  # it wakes, finds the lease another's, stands by
                released += anyio.run(_release, node, address, r)
                last = released[-2:]
                wait(
                    "the last epochs batched",
                    lambda: all(r.exists(f"BatchCountKey.{m}.{e}") for m, e in last),
                    timeout_s=60,
                )
                wait(
                    "the last relayer calls",
                    lambda: len(relayer.bodies("/submitBatchSize")) >= len(released),
                    timeout_s=60,
                )
                time.sleep(0.5)
        finally:
            for p in procs:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        lost = _lost(r, relayer, released)
        r.close()
    return {
        "drills": drills,
        "lease s": lease_s,
        "takeover p50 s": statistics.median(takeovers),
        "takeover max s": max(takeovers),
        "epochs": len(released),
        "commits lost to failover": lost,
    }


def _lost(r: redis.Redis, relayer: Relayer, released: list[Any]) -> int:
    """Epochs not batched or batched twice, and epochs without exactly one call."""
    queue = [json.loads(i) for i in r.lrange("finalizerQueue", 0, -1)]
    calls = relayer.bodies("/submitBatchSize")
    lost = 0
    for market, epoch in released:
        items = [
            i for i in queue if i["DataMarketAddress"] == checksum(market) and i["EpochID"] == epoch
        ]
        ids = sorted(i["BatchID"] for i in items)
        count = r.get(f"BatchCountKey.{market}.{epoch}")
        if count is None or ids != list(range(1, int(count) + 1)):
            lost += 1
            continue
        mine = [
            c for c in calls if c["dataMarketAddress"] == checksum(market) and c["epochID"] == epoch
        ]
        if len(mine) != 1:
            lost += 1
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drills", type=int, default=20)
    parser.add_argument("--lease-s", type=float, default=1.0)
    args = parser.parse_args()
    for name, value in run(args.drills, args.lease_s).items():
        print(f"{name:>28}: {value:.3f}" if isinstance(value, float) else f"{name:>28}: {value}")


if __name__ == "__main__":
    main()

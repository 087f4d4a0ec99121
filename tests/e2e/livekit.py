"""A live world for end-to-end tests: anvil with the ProtocolState fixture, Redis written as
the dequeuer writes it, a recording relayer, and `seqcollector run` as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis
from web3 import AsyncHTTPProvider, AsyncWeb3

from seqcollector.core.addresses import checksum
from sim.anvil import Anvil, rpc
from sim.contract import ProtocolStateClient, deploy_protocol_state

MARKETS = ["0x" + "a1" * 20, "0x" + "b2" * 20]
WINDOW_S = 10
TOKEN = "relayer-token"
# `run` serves its API on 0.0.0.0:8080 by default; tests run in parallel: any free loopback
# port, found in the `api_listening` log line (`CollectorProcess.api_url`).
LOOPBACK_API = {"SEQ_API_HOST": "127.0.0.1", "SEQ_API_PORT": "0"}


class LiveWorld:
    """The chain and the upstream components around the collector under test."""

    def __init__(self, anvil: Anvil, redis_url: str) -> None:
        self.anvil = anvil
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.w3 = AsyncWeb3(AsyncHTTPProvider(anvil.url))
        self.address = ""
        self.contract: ProtocolStateClient | None = None
        self.submitted: dict[tuple[str, int], set[str]] = {}
        self.days: dict[tuple[str, int], int] = {}  # (market, epoch) -> dayCounter at release
        self.ready_block = 0  # the block after which the contract and its markets are set up

    async def deploy(self, epochs_in_a_day: int = 3) -> None:
        self.address = await deploy_protocol_state(self.w3)
        self.contract = ProtocolStateClient(self.w3, self.address)
        for market in MARKETS:
            await self.contract.create_data_market(market)
            await self.contract.set_snapshot_submission_window(market, WINDOW_S)
            await self.contract.set_epochs_in_a_day(market, epochs_in_a_day)
        self.ready_block = self.head()

    def head(self) -> int:
        return int(str(rpc(self.anvil.url, "eth_blockNumber")), 16)

    async def release(self, market: str) -> int:
        assert self.contract is not None
        await self.contract.release_epoch(market, 1, 2)
        params = await self.contract.read_market_params(market)
        self.days[(market, params["currentEpoch"])] = params["dayCounter"]
        return params["currentEpoch"]

    def expected_slot_counts(self) -> dict[str, int]:
        """`SlotSubmissionsKey.<lc>.<day>.<slot>` -> count, from what was submitted and the
        day the chain had when each epoch was released."""
        counts: dict[str, int] = {}
        for (market, epoch), members in self.submitted.items():
            day = self.days[(market, epoch)]
            for member in members:
                key = f"SlotSubmissionsKey.{market}.{day}.{member.rsplit('.', 1)[1]}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def head_hash(self) -> str:
        block: Any = rpc(self.anvil.url, "eth_getBlockByNumber", ["latest", False])
        return str(block["hash"])

    def submit(
        self, market: str, epoch: int, project: str, slot: int, expected: bool = True
    ) -> None:
        """Write a submission as the dequeuer does: header = the latest block's hash."""
        member = f"{market}.{epoch}.{project}.{slot}"
        key = f"SnapshotCollector.{market}.{epoch}.{self.head_hash()}"
        self.redis.sadd(key, member)
        self.redis.expire(key, 1200)
        if expected:
            self.submitted.setdefault((market, epoch), set()).add(member)

    def advance(self, seconds: int = WINDOW_S + 4, per_block: int = 2) -> None:
        self.anvil.mine(seconds // per_block, per_block)

    def expected_queue(self, market: str, epoch: int, batch_size: int) -> list[dict[str, Any]]:
        by_project: dict[str, list[str]] = {}
        for member in sorted(self.submitted.get((market, epoch), set())):
            by_project.setdefault(member.split(".")[2], []).append(member)
        projects = sorted(by_project)
        return [
            {
                "DataMarketAddress": checksum(market),
                "EpochID": epoch,
                "BatchID": i // batch_size + 1,
                "Batch": {p: by_project[p] for p in projects[i : i + batch_size]},
            }
            for i in range(0, len(projects), batch_size)
        ]

    def queue(self) -> list[dict[str, Any]]:
        return [json.loads(i) for i in reversed(self.redis.lrange("finalizerQueue", 0, -1))]

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def batched(self, market: str, epoch: int) -> bool:
        return self.redis.exists(f"BatchCountKey.{market}.{epoch}") == 1


@asynccontextmanager
async def deployed_world(
    anvil: Anvil, redis_url: str, epochs_in_a_day: int = 3
) -> AsyncIterator[LiveWorld]:
    """A `LiveWorld` with the contract and its markets deployed; closed on leaving."""
    world = LiveWorld(anvil, redis_url)
    try:
        await world.deploy(epochs_in_a_day=epochs_in_a_day)
        yield world
    finally:
        await world.w3.provider.disconnect()
        world.redis.close()


class CollectorProcess:
    """`seqcollector run` in a subprocess, with the Go collector's environment."""

    def __init__(
        self,
        world: LiveWorld,
        relayer_url: str,
        log_path: Path,
        rpc_nodes: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        record: Path | None = None,
    ) -> None:
        # SEQ_START_BLOCK defaults to the block after the set-up: the market parameters are
        # read as of the block before the first processed, where they must exist.
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "RPC_NODES": json.dumps(rpc_nodes or [world.anvil.url]),
            "PROTOCOL_STATE_CONTRACT": world.address,
            "DATA_MARKET_ADDRESSES": json.dumps([checksum(m) for m in MARKETS]),
            "SEQ_REDIS_URL": world.redis_url,
            "TX_RELAYER_URL": relayer_url,
            "TX_RELAYER_AUTH_WRITE_TOKEN": TOKEN,
            "BATCH_SIZE": "2",
            "BLOCK_TIME": "0.2",
            "SEQ_START_BLOCK": str(world.ready_block + 1),
            # a restart after kill -9 waits for the dead process's lease to expire
            "SEQ_HA_LEASE_S": "3",
            **LOOPBACK_API,
            "SEQ_JOURNAL_DIR": str(log_path.parent / "journal"),
            **(extra_env or {}),
        }
        self.args = [sys.executable, "-m", "seqcollector", "run"]
        if record is not None:
            self.args += ["--record", str(record)]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, within_s: float = 10.0) -> float:
        """SIGTERM; returns how long the collector took to exit (must be < within_s)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"collector did not stop within {within_s}s: {self.log()}"
            ) from None
        assert code == 0, f"collector exited with {code}: {self.log()}"
        return time.monotonic() - started

    def pause(self) -> None:
        """SIGSTOP: the process stops where it is (nothing runs, nothing is released)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def wait(self, timeout_s: float = 60.0) -> int:
        """Wait for the collector to exit by itself -> its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api_url(self, timeout_s: float = 30.0) -> str:
        """http://127.0.0.1:<port> of the running collector's API (from its log)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if "api_listening" in line:
                    found = re.search(r"port\W+(\d+)", line)
                    if found:
                        return f"http://127.0.0.1:{found.group(1)}"
            if not self.alive():
                raise AssertionError(f"collector exited before serving its API: {self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"no api_listening line within {timeout_s}s: {self.log()}")

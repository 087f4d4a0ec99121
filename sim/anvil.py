"""A private anvil dev node on a free loopback port (from the npm package @foundry-rs/anvil).

`make setup` installs the package; its platform binary lives under
`node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil`. `ANVIL_BIN` overrides the lookup.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from sim.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 20.0


class AnvilMissing(RuntimeError):
    """No anvil binary: run `make setup` (npm install)."""


def anvil_binary() -> str:
    """Path of the anvil binary: $ANVIL_BIN, the npm platform package, or PATH."""
    if os.environ.get("ANVIL_BIN"):
        return os.environ["ANVIL_BIN"]
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    candidate = ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilMissing(
        f"anvil not found at {candidate} nor on PATH: run `make setup` (npm install)"
    )


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 5.0) -> object:
    """One JSON-RPC call over HTTP (for set-up and test control: mining, snapshots)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method} failed on {url}: {reply['error']}")
    return reply["result"]


class Anvil:
    """`with Anvil() as node: node.url, node.ws_url` -> a fresh chain (chain id 31337).

    Blocks are mined on demand (`mine()`) unless `block_time` is given; `timestamp` pins the
    genesis time so that block timestamps are reproducible.
    """

    def __init__(
        self,
        block_time: float | None = None,
        timestamp: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._binary = anvil_binary()
        self._block_time = block_time
        self._timestamp = timestamp
        self._extra = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = self.ws_url = ""

    def start(self) -> Anvil:
        for _ in range(3):
            port = free_port()
            args = [
                self._binary,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--silent",
                "--chain-id",
                "31337",
                *self._extra,
            ]
            if self._block_time is not None:
                args += ["--block-time", str(self._block_time)]
            if self._timestamp is not None:
                args += ["--timestamp", str(self._timestamp)]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}"
            if self._wait(proc, url):
                self._proc, self.port, self.url = proc, port, url
                self.ws_url = f"ws://127.0.0.1:{port}"
                return self
            proc.kill()
            proc.wait()
        raise RuntimeError("anvil did not start after 3 tries")

    def _wait(self, proc: subprocess.Popen[bytes], url: str) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                rpc(url, "eth_chainId", timeout=0.5)
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def mine(self, blocks: int = 1, interval_s: int | None = None) -> None:
        params: list[object] = [hex(blocks)] + ([hex(interval_s)] if interval_s else [])
        rpc(self.url, "anvil_mine", params)

    def snapshot(self) -> str:
        return str(rpc(self.url, "evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if rpc(self.url, "evm_revert", [snapshot_id]) is not True:
            raise RuntimeError(f"evm_revert({snapshot_id}) refused on {self.url}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

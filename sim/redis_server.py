"""A private `redis-server` on a free loopback port: for tests, benchmarks and simulations.

Persistence off, working directory in a temporary folder, stopped on exit. Hermetic and
parallel-safe: every instance has its own port and directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
START_TIMEOUT_S = 10.0


class RedisServerMissing(RuntimeError):
    """No `redis-server` binary on PATH."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """`with RedisServer() as server: server.url` -> `redis://127.0.0.1:<port>/0`."""

    def __init__(self, workdir: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing(
                "redis-server is not on PATH: install it (apt-get install -y redis-server)"
            )
        self._binary = binary
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory()
        self.workdir = workdir if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self._proc: subprocess.Popen[bytes] | None = None
        self._extra_args = extra_args  # e.g. ("--replicaof", "127.0.0.1", "6379")
        self.url = ""

    def start(self, port: int | None = None) -> str:
        """Start the server on a free port, or on `port` (e.g. again after `halt()`)."""
        log_path = self.workdir / "redis.log"
        for _ in range(START_ATTEMPTS if port is None else 1):
            port_now = free_port() if port is None else port
            url = f"redis://127.0.0.1:{port_now}/0"
            args = [
                self._binary,
                "--port",
                str(port_now),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(log_path),
                *self._extra_args,
            ]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if _wait_for_ping(proc, url):
                self._proc, self.url = proc, url
                return url
            _stop(proc)
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        tries = START_ATTEMPTS if port is None else 1
        raise RuntimeError(f"redis-server did not start after {tries} tries:\n{tail}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def halt(self) -> None:
        """Stop the server process only (an outage): `start(port=self.port)` brings it back
        on the same port, empty (persistence is off)."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, nothing flushed to its replicas)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_for_ping(proc: subprocess.Popen[bytes], url: str) -> bool:
    """True once the server answers PING; False if it exited or did not answer in time."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

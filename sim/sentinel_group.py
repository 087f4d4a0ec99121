"""A private Redis Sentinel group on loopback: one master, its replicas and Sentinels, each a
real process (`redis-server`, `redis-sentinel` from Debian's packages), for the failover
tests and drills.

`with SentinelGroup(replicas=2, sentinels=3) as group: group.url` is the
`redis+sentinel://` URL of the group's master; `group.kill_master()` SIGKILLs the master and
`group.wait_for_failover()` returns once the Sentinels name another master. Fast failover:
a master is down after `down_after_ms` without answers (1 s by default).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from sim.redis_server import RedisServer, RedisServerMissing, free_port

MASTER_NAME = "mymaster"
FAILOVER_TIMEOUT_S = 30.0
# A replica's first sync starts at once, not after Redis's default 5 s of waiting for others.
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class SentinelMissing(RedisServerMissing):
    """No `redis-sentinel` binary on PATH."""


class SentinelGroup:
    def __init__(self, replicas: int = 2, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise SentinelMissing(
                "redis-sentinel is not on PATH: install it (apt-get install -y redis-sentinel)"
            )
        self._sentinel_binary = binary
        self._tmp = tempfile.TemporaryDirectory()
        self._dir = Path(self._tmp.name)
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self._down_after_ms = down_after_ms
        self.servers: list[RedisServer] = []
        self.sentinel_ports: list[int] = []
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelGroup:
        master = RedisServer(self._dir / "master", _FAST_SYNC)
        (self._dir / "master").mkdir()
        master.start()
        self.servers.append(master)
        for i in range(self._replica_count):
            workdir = self._dir / f"replica{i}"
            workdir.mkdir()
            replica = RedisServer(
                workdir, (*_FAST_SYNC, "--replicaof", "127.0.0.1", str(master.port))
            )
            replica.start()
            self.servers.append(replica)
        self._wait_replicas(master)
        quorum = self._sentinel_count // 2 + 1
        for i in range(self._sentinel_count):
            port = free_port()
            conf = self._dir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self._dir}\n"
                f"logfile {self._dir / f'sentinel{i}.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self._down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            proc = subprocess.Popen(
                [self._sentinel_binary, str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._sentinels.append(proc)
            self.sentinel_ports.append(port)
        for port in self.sentinel_ports:
            self._wait_sentinel(port)
        return self

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
                host_port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                client.close()
                if host_port:
                    return int(host_port[1])
            except redis.ConnectionError:
                continue
        raise RuntimeError("no Sentinel of the group answers")

    def master(self) -> RedisServer:
        port = self.master_port()
        return next(s for s in self.servers if s.url and s.port == port)

    def kill_master(self) -> int:
        """SIGKILL the current master -> its port."""
        server = self.master()
        port = server.port
        server.kill()
        return port

    def wait_for_failover(self, old_port: int, timeout_s: float = FAILOVER_TIMEOUT_S) -> int:
        """Wait until every Sentinel names a master other than `old_port` and it answers as
        master -> the new master's port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ports = set()
            for port in self.sentinel_ports:
                try:
                    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
                    addr = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    client.close()
                    ports.add(int(addr[1]) if addr else 0)
                except redis.ConnectionError:
                    ports.add(0)
            if len(ports) == 1 and old_port not in ports and 0 not in ports:
                new = ports.pop()
                role = redis.Redis(port=new, socket_timeout=1).info("replication")["role"]
                if role == "master":
                    return new
            time.sleep(0.1)
        raise AssertionError(f"the Sentinels did not promote a replica within {timeout_s} s")

    def _wait_replicas(self, master: RedisServer) -> None:
        client = redis.Redis(port=master.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = client.info("replication")
            online = [
                v
                for k, v in info.items()
                if k.startswith("slave") and k[5:].isdigit()
                if isinstance(v, dict) and v.get("state") == "online"
            ]
            if len(online) >= self._replica_count:
                client.close()
                return
            time.sleep(0.05)
        raise RuntimeError("the replicas did not sync with the master within 20 s")

    def _wait_sentinel(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
                addr = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                client.close()
                if addr:
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-sentinel on port {port} did not answer within 20 s")

    def stop(self) -> None:
        for proc in self._sentinels:
            proc.terminate()
        for proc in self._sentinels:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._sentinels.clear()
        for server in self.servers:
            server.stop()
        self._tmp.cleanup()

    def __enter__(self) -> SentinelGroup:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

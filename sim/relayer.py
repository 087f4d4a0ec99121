"""A tx relayer (and alert sink) served over HTTP on loopback: records calls, can fail.

`with Relayer() as relayer:` -> `relayer.url`; `relayer.requests` holds every POST (path,
content type, JSON body). `fail_next` answers the next N requests under `fail_path` with 500;
`stall_s` holds every answer that long (released at exit); `fail_rate` with a seed fails at
random, reproducibly.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import redis.asyncio as aioredis

from seqcollector.runtime.outbox import OutboxDispatcher
from sim.loopback import LoopbackHTTPServer, ServesOnLoopback


@dataclass
class Recorded:
    path: str
    content_type: str
    body: dict[str, Any]
    ok: bool = True  # answered 200 (a 500 was injected otherwise)


@dataclass
class Relayer(ServesOnLoopback):
    """What the HTTP server received, and how it should misbehave."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    fail_next: int = 0
    fail_path: str = "/"
    fail_rate: float = 0.0
    seed: int = 0
    stall_s: float = 0.0
    failures: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._http = LoopbackHTTPServer(_handler(self), "relayer")
        self.url = self._http.url

    def dispatcher(
        self, redis: aioredis.Redis, namespace: str = "seqcollector"
    ) -> OutboxDispatcher:
        """An outbox dispatcher delivering to this relayer (and its /alerts), quick to retry."""
        return OutboxDispatcher(
            redis,
            namespace,
            self.url,
            "sim-token",
            self.url + "/alerts",
            http_timeout_s=2.0,
            max_attempts=2,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
        )

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r.body for r in self.requests if r.path == path]

    def answered(self, path: str) -> list[tuple[dict[str, Any], bool]]:
        """(body, answered 200) for each request to `path`."""
        with self.lock:
            return [(r.body, r.ok) for r in self.requests if r.path == path]

    def _should_fail(self, path: str) -> bool:
        with self.lock:
            if self.fail_next > 0 and path.startswith(self.fail_path):
                self.fail_next -= 1
                fail = True
            else:
                fail = self._rng.random() < self.fail_rate
            self.failures += fail
            return fail

    def close(self) -> None:
        self.released.set()  # stalled answers go out first
        self._http.close()


def _handler(relayer: Relayer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection (and thread) per client
        disable_nagle_algorithm = True  # headers and body are two writes

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            fail = relayer._should_fail(self.path)
            with relayer.lock:
                relayer.requests.append(
                    Recorded(self.path, self.headers.get("Content-Type", ""), body, not fail)
                )
                stall = relayer.stall_s
            if stall:
                relayer.released.wait(stall)
            status = 500 if fail else 200
            reply = b'{"error":"injected"}' if fail else b'{"success":true}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a stalled request

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler

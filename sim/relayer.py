"""A tx relayer (and alert sink) served over HTTP on loopback: records calls, can fail.

`with Relayer() as relayer:` -> `relayer.url`; `relayer.requests` holds every POST (path,
content type, JSON body, status). `fail_next` answers the next N requests under `fail_path`
with 500; `stall_s` holds every answer that long (released at exit); `fail_rate` with a seed
fails at random, reproducibly.

`POST /submitUpdateRewards` bodies are validated (`sim.reward_updates`): an invalid one (and
a body that is not JSON, on any path) is answered 400 and recorded in `violations`, which
the invariants expect empty. With `auth_token` set, a relayer call (`/submit...`) whose
`authToken` differs is answered 401 and recorded there too. In EVM mode the world puts the
accepted reward updates on chain with `submit_rewards(client)` at a point of its choosing
(after the outbox drained, so the chain does not depend on delivery timing).
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from seqcollector.runtime.compose import Delivery
from sim.loopback import LoopbackHTTPServer, ServesOnLoopback
from sim.reward_updates import (
    UPDATE_REWARDS_PATH,
    OnChainRewards,
    problem_with_auth,
    problem_with_update_rewards,
)

if TYPE_CHECKING:
    from sim.contract import ProtocolStateClient

DISPATCHER_TOKEN = "sim-token"  # what `Relayer.delivery()` sends as authToken


@dataclass
class Recorded:
    path: str
    content_type: str
    body: Any  # the decoded JSON (a dict for every well-formed call), None if not JSON
    ok: bool = True  # answered 200
    status: int = 200  # 500 injected, 400 invalid body, 401 wrong token
    problem: str = ""  # why it was refused (400, 401): a protocol violation


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
    auth_token: str | None = None  # None: tokens are not checked
    failures: int = 0
    on_chain: OnChainRewards = field(default_factory=OnChainRewards)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._http = LoopbackHTTPServer(_handler(self), "relayer")
        self.url = self._http.url

    def delivery(self) -> Delivery:
        """Where an outbox dispatcher delivers to this relayer (and its /alerts), quick to
        retry (`runtime.compose.Delivery`)."""
        return Delivery(
            self.url,
            DISPATCHER_TOKEN,
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

    def reward_updates(self) -> list[dict[str, Any]]:
        """Every `submitUpdateRewards` body answered 200, in arrival order (repeats kept:
        the outbox delivers at least once)."""
        return [body for body, ok in self.answered(UPDATE_REWARDS_PATH) if ok]

    def violations(self) -> list[str]:
        """One line per request refused as a protocol violation (400, 401): path, reason."""
        with self.lock:
            return [f"POST {r.path}: {r.problem}" for r in self.requests if r.problem]

    def chain_violations(self) -> list[str]:
        """One line per accepted reward update the chain refused (a reverted updateRewards)."""
        return [f"updateRewards {k} reverted: {m}" for k, m in self.on_chain.refused.items()]

    async def submit_rewards(self, client: ProtocolStateClient) -> int:
        """Put the accepted reward updates on chain through `client` (ProtocolState's owner):
        each distinct body once, in a canonical order, again if a reorg replaced its block ->
        how many transactions were sent (see `sim.reward_updates.OnChainRewards`)."""
        return await self.on_chain.submit(client, self.reward_updates())

    def _problem(self, path: str, body: Any) -> tuple[int, str]:
        """(status, reason) for a request refused before any injected failure, else (0, "")."""
        if path == UPDATE_REWARDS_PATH:
            problem = problem_with_update_rewards(body)
            if problem is not None:
                return 400, problem
        if path.startswith("/submit") and isinstance(body, dict):
            problem = problem_with_auth(body, self.auth_token)
            if problem is not None:
                return 401, problem
        return 0, ""

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
            content_type = self.headers.get("Content-Type", "")
            try:
                body = json.loads(self.rfile.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                body, status, problem = None, 400, f"body is not JSON ({exc})"
            else:
                status, problem = relayer._problem(self.path, body)
            if status:
                with relayer.lock:
                    relayer.requests.append(
                        Recorded(self.path, content_type, body, False, status, problem)
                    )
                self._answer(status, json.dumps({"error": problem}).encode())
                return
            fail = relayer._should_fail(self.path)
            status = 500 if fail else 200
            with relayer.lock:
                relayer.requests.append(Recorded(self.path, content_type, body, not fail, status))
                stall = relayer.stall_s
            if stall:
                relayer.released.wait(stall)
            self._answer(status, b'{"error":"injected"}' if fail else b'{"success":true}')

        def _answer(self, status: int, reply: bytes) -> None:
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

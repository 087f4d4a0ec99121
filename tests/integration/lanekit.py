"""A relayer on loopback for the outbox lane tests: per-path failures, a delay per answer, and
what it saw (every request's entry, the most requests it had in flight at once).

`hold_until` makes the server hold each request until that many are in flight (or
`hold_max_s` passed); once reached, the hold is released for good (`hold_until` back to 0),
so a concurrency bound is observed without depending on speed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from seqcollector.core.effects import Effect, RelayerCall
from seqcollector.runtime.executor import RedisExecutor
from sim.loopback import LoopbackHTTPServer, ServesOnLoopback

MARKET = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c"


@dataclass
class LaneRelayer(ServesOnLoopback):
    failing_paths: set[str] = field(default_factory=set)
    delay_s: float = 0.0
    hold_until: int = 0
    hold_max_s: float = 2.0
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (path, key, status)
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)
        self._http = LoopbackHTTPServer(_handler(self), "lane-relayer")
        self.url = self._http.url

    def answered_200(self, path: str) -> Counter[str]:
        with self.lock:
            return Counter(key for p, key, status in self.seen if p == path and status == 200)

    def requests(self, path: str) -> list[str]:
        with self.lock:
            return [key for p, key, _ in self.seen if p == path]


def _key(path: str, body: dict[str, Any]) -> str:
    if path == "/submitBatchSize":
        return f"epoch:{body['epochID']}"
    if path == "/submitUpdateRewards":
        first = body["slotIDs"][0] if body["slotIDs"] else "recheck"  # P2: {[], [], X, n}
        return f"chunk:{body['day']}:{first}"
    return str(body.get("error_msg", ""))


def _handler(relayer: LaneRelayer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with relayer.changed:
                relayer.in_flight += 1
                relayer.peak_in_flight = max(relayer.peak_in_flight, relayer.in_flight)
                relayer.changed.notify_all()
                if relayer.hold_until:
                    end = time.monotonic() + relayer.hold_max_s
                    while relayer.in_flight < relayer.hold_until and time.monotonic() < end:
                        relayer.changed.wait(end - time.monotonic())
                    if relayer.in_flight >= relayer.hold_until:
                        relayer.hold_until = 0  # reached: release every held request
            if relayer.delay_s:
                time.sleep(relayer.delay_s)
            status = 500 if self.path in relayer.failing_paths else 200
            with relayer.changed:
                relayer.in_flight -= 1
                relayer.seen.append((self.path, _key(self.path, body), status))
                relayer.changed.notify_all()
            reply = b'{"ok":true}' if status == 200 else b'{"error":"injected"}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def batch_size(epoch: int) -> RelayerCall:
    body: dict[str, object] = {"dataMarketAddress": MARKET, "epochID": epoch, "batchSize": 1}
    return RelayerCall(f"submitBatchSize:{epoch}", "/submitBatchSize", body)


def reward_chunk(day: int, first_slot: int) -> RelayerCall:
    body: dict[str, object] = {
        "dataMarketAddress": MARKET,
        "slotIDs": [first_slot, first_slot + 1],
        "submissionsList": [3, 4],
        "day": day,
        "eligibleNodes": 0,
    }
    return RelayerCall(f"submitUpdateRewards:{day}:{first_slot}", "/submitUpdateRewards", body)


async def commit(executor: RedisExecutor, steps: list[list[Effect]]) -> None:
    """Commit `steps` after what the executor already holds."""
    _, checkpoint = await executor.load()
    seq = 0 if checkpoint is None else checkpoint.seq
    for effects in steps:
        seq += 1
        assert await executor.commit(seq, seq, effects, b"state")

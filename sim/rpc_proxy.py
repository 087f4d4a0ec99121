"""A fault-injecting JSON-RPC proxy on loopback, in front of a real node (anvil).

Faults, all from one seeded RNG: HTTP 500s, stalls (the client times out), a lagging head
(`eth_blockNumber` answers `lag_blocks` behind; newer blocks are unknown), and a
`eth_getLogs` range limit answered with a provider-style hint. Counts every HTTP request and
every JSON-RPC call by method. Batch requests (a JSON array) are forwarded as one request.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from sim.loopback import LoopbackHTTPServer, ServesOnLoopback


class RpcProxy(ServesOnLoopback):
    """`with RpcProxy(upstream_url, seed=1) as proxy: proxy.url` (set faults any time)."""

    def __init__(self, upstream: str, seed: int = 0) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.error_rate = 0.0
        self.stall_rate = 0.0
        self.stall_s = 0.0
        self.lag_blocks = 0
        self.max_logs_range: int | None = None
        self.http_requests = 0
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._http = LoopbackHTTPServer(self._handler(), "rpc-proxy")
        self.url = self._http.url

    # -- what a request meets ------------------------------------------------------------

    def _draw(self) -> tuple[bool, bool]:
        with self._lock:
            self.http_requests += 1
            return self.rng.random() < self.error_rate, self.rng.random() < self.stall_rate

    def handle(self, body: Any) -> tuple[int, Any]:
        """(HTTP status, JSON reply) for one HTTP request body (a call or a batch)."""
        fail, stall = self._draw()
        calls = body if isinstance(body, list) else [body]
        with self._lock:
            self.calls.update(str(c.get("method")) for c in calls if isinstance(c, dict))
        if stall:
            self.faults["stall"] += 1
            time.sleep(self.stall_s)
        if fail:
            self.faults["http_500"] += 1
            return 500, {"error": "injected fault"}
        replies = [self._call(c) for c in calls]
        return 200, replies if isinstance(body, list) else replies[0]

    def _call(self, call: dict[str, Any]) -> Any:
        method, params = call.get("method"), call.get("params") or []
        limit = self.max_logs_range
        if method == "eth_getLogs" and limit is not None and params:
            span = int(params[0]["toBlock"], 16) - int(params[0]["fromBlock"], 16) + 1
            if span > limit:
                self.faults["logs_range"] += 1
                message = f"query exceeds max block range {limit}"
                return {
                    "jsonrpc": "2.0",
                    "id": call.get("id"),
                    "error": {"code": -32005, "message": message},
                }
        reply = self._forward(call)
        if self.lag_blocks and "result" in reply:
            reply = self._lagged(method, params, reply)
        return reply

    def _lagged(self, method: Any, params: list[Any], reply: dict[str, Any]) -> dict[str, Any]:
        if method == "eth_blockNumber":
            reply["result"] = hex(max(int(reply["result"], 16) - self.lag_blocks, 0))
        elif (
            method == "eth_getBlockByNumber"
            and isinstance(params[0], str)
            and params[0].startswith("0x")
        ):
            head = int(
                self._forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})["result"],
                16,
            )
            if int(params[0], 16) > head - self.lag_blocks:
                self.faults["lagging_block"] += 1
                reply["result"] = None
        return reply

    def _forward(self, call: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.upstream, json.dumps(call).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            reply: dict[str, Any] = json.loads(resp.read())
            return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    status, reply = proxy.handle(json.loads(self.rfile.read(length)))
                except (OSError, ValueError) as exc:
                    status, reply = 502, {"error": f"proxy: {exc}"}
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a stall it timed out on)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

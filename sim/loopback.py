"""A threading HTTP server on a free loopback port, served from a daemon thread: the one
piece the simulation's HTTP actors (relayer, faulty RPC proxy, eth-tester RPC) share."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackHTTPServer:
    def __init__(
        self, handler: type[BaseHTTPRequestHandler], name: str, poll_interval_s: float = 0.05
    ) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": poll_interval_s},
            name=f"{name}-{self.port}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        """Stop accepting and serving (open keep-alive connections stay until `close`)."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.shutdown()
        self.server.server_close()


class ServesOnLoopback:
    """For an actor holding a `LoopbackHTTPServer` as `_http`: `with` serves, leaving (or
    `close()`, which an actor may extend) stops it."""

    _http: LoopbackHTTPServer

    def __enter__(self) -> Self:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

"""`serve`: the app under uvicorn, inside the caller's anyio task group.

The socket is bound here (so a busy port is an `OperatorError`, not uvicorn's
`sys.exit`, and port 0 works: `task_status.started(port)` gives the port bound); uvicorn
installs no signal handlers (the caller's task group owns shutdown: cancelling the task
stops accepting, lets in-flight answers finish within `GRACEFUL_S`, runs the app's
shutdown). uvicorn's access log is off; its own log lines go to structlog.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus

from seqcollector.errors import OperatorError

GRACEFUL_S = 5.0
log = structlog.get_logger("seqcollector.api.server")


class _ToStructlog(logging.Handler):
    """uvicorn's stdlib log records as structlog events (logger name kept)."""

    def emit(self, record: logging.LogRecord) -> None:
        event = record.getMessage()
        kw: dict[str, Any] = {"logger_name": record.name}
        if record.exc_info:
            kw["exc_info"] = record.exc_info
        log.log(record.levelno, event, **kw)


def _route_uvicorn_logs() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
            logger.addHandler(_ToStructlog())
        logger.propagate = False
        logger.setLevel(logging.INFO)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); `OperatorError` if it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise OperatorError(
            f"read API: cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "set SEQ_API_HOST / SEQ_API_PORT (or --host / --port) to a free address"
        ) from None
    sock.set_inheritable(True)
    return sock


async def serve(
    app: Any,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled; `task_status.started(port bound)`."""
    _route_uvicorn_logs()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=int(GRACEFUL_S),
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = bind(host, port)
    try:
        await server.startup(sockets=[sock])
        bound = sock.getsockname()[1]
        log.info("api_listening", host=host, port=bound)
        task_status.started(bound)
        await server.main_loop()
    finally:
        server.should_exit = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(GRACEFUL_S + 1):
            if server.started:
                await server.shutdown(sockets=[sock])
        sock.close()

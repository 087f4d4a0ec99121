"""A loopback TCP forwarder whose open connections can be cut (to break a WebSocket).

async with anyio.create_task_group() as tg:
    cutter = TcpCutter(upstream_port)
    await tg.start(cutter.serve)
    ... f"ws://127.0.0.1:{cutter.port}" ...
    cutter.cut()  # every open connection is closed, new ones are accepted
    tg.cancel_scope.cancel()
"""

from __future__ import annotations

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskStatus


class TcpCutter:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self._scopes: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._forward)

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def _forward(self, client: ByteStream) -> None:
        self.connections += 1
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
                async with client, upstream, anyio.create_task_group() as tg:
                    tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                    tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)
            finally:
                self._scopes.discard(scope)

    @staticmethod
    async def _pipe(source: ByteStream, sink: ByteStream, scope: anyio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()

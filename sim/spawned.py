"""A simulation actor in a spawned process of its own, talking to the harness over a pipe.

Spawned, not forked: the child is a fresh interpreter (no copy of the parent's event loop or
connections), so a script that runs the simulation needs an `if __name__ == '__main__':`
guard. `target(*args, conn)` runs in the child; the harness uses `conn` and `receive()`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable
from typing import Any


class Spawned:
    def __init__(self, name: str, target: Callable[..., None], *args: object) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, self._child = context.Pipe()
        self._process = context.Process(
            target=target, args=(*args, self._child), name=f"sim-{name}", daemon=True
        )

    def __enter__(self) -> Any:
        self._process.start()
        self._child.close()  # the child has its own end: ours would hide its exit (EOF)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)

    def send(self, message: object) -> None:
        with contextlib.suppress(OSError):  # the child is gone: `receive` says how
            self.conn.send(message)

    def receive(self, timeout_s: float) -> Any:
        """The child's next message; a clear error if it died or went silent."""
        if not self.conn.poll(timeout_s):
            state = "running" if self._process.is_alive() else f"exit {self._process.exitcode}"
            raise TimeoutError(
                f"the {self.name} process sent nothing for {timeout_s} s ({state}); its "
                "error, if any, is above"
            )
        try:
            return self.conn.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise RuntimeError(
                f"the {self.name} process exited (code {self._process.exitcode}); its error is "
                "above. A script that runs the simulation needs an "
                "`if __name__ == '__main__':` guard (the process is spawned)"
            ) from None

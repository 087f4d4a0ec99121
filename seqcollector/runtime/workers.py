"""Worker pools: bounded anyio semaphores whose acquisition times out (seed section 6.2).

A worker that cannot be had within `acquisition_timeout` is a `WorkerUnavailable` error
naming the pool and the work, instead of a silent pile-up; the time spent waiting for
workers is kept (`wait_s`, `acquired`) for metrics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class WorkerUnavailable(TimeoutError):
    """No worker became free in time."""


class WorkerPool:
    def __init__(self, name: str, size: int, acquisition_timeout_s: float) -> None:
        if size < 1:
            raise ValueError(f"worker pool {name!r}: size must be >= 1, got {size}")
        self.name = name
        self.acquisition_timeout_s = acquisition_timeout_s
        self.size = size
        # A semaphore, not a CapacityLimiter: one task may hold several workers (it starts
        # sub-tasks), which a CapacityLimiter refuses.
        self._workers = anyio.Semaphore(size, max_value=size)
        self.acquired = 0
        self.wait_s = 0.0

    @property
    def busy(self) -> int:
        return self.size - self._workers.value

    @asynccontextmanager
    async def worker(self, work: str) -> AsyncIterator[None]:
        """Hold one worker for the block; raises WorkerUnavailable after the timeout."""
        started = time.monotonic()
        try:
            with anyio.fail_after(self.acquisition_timeout_s):
                await self._workers.acquire()
        except TimeoutError:
            raise WorkerUnavailable(
                f"worker pool {self.name!r} ({self.size} workers, all busy): no worker for "
                f"{work} within {self.acquisition_timeout_s}s; raise WORKER_POOL_SIZE or "
                "WORKER_POOL_ACQUISITION_TIMEOUT, or look for stuck work"
            ) from None
        self.wait_s += time.monotonic() - started
        self.acquired += 1
        try:
            yield
        finally:
            self._workers.release()

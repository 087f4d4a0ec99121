"""Worker pools: bounded anyio semaphores whose acquisition times out (seed section 6.2).

A worker that cannot be had within `acquisition_timeout` is a `WorkerUnavailable` error
naming the pool and the work, instead of a silent pile-up; the time spent waiting for
workers is kept (`wait_s`, `acquired`) and, once `attach_metrics` gave it a `Metrics`,
recorded there (wait time, busy workers, utilisation, timeouts).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from seqcollector.runtime.metrics import Metrics


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
        self.metrics: Metrics | None = None

    def attach_metrics(self, metrics: Metrics | None) -> None:
        """Record this pool's waits and use in `metrics` from now on (None: stop)."""
        self.metrics = metrics
        if metrics is not None:
            metrics.workers(self.name, self.busy, self.size)

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
            if self.metrics is not None:
                self.metrics.worker_timed_out(self.name)
            raise WorkerUnavailable(
                f"worker pool {self.name!r} ({self.size} workers, all busy): no worker for "
                f"{work} within {self.acquisition_timeout_s}s; raise WORKER_POOL_SIZE or "
                "WORKER_POOL_ACQUISITION_TIMEOUT, or look for stuck work"
            ) from None
        waited = time.monotonic() - started
        self.wait_s += waited
        self.acquired += 1
        if self.metrics is not None:
            self.metrics.worker_acquired(self.name, waited, self.busy, self.size)
        try:
            yield
        finally:
            self._workers.release()
            if self.metrics is not None:
                self.metrics.workers(self.name, self.busy, self.size)

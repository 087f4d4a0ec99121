"""The live runtime: source -> bounded stream -> core -> executor, and the outbox dispatcher.

One anyio task group holds the tasks; cancelling it (SIGINT/SIGTERM, or `stop()`) stops
everything, while a commit in flight is shielded so that the last step lands whole. A group
of inputs that fails is retried with jittered backoff until it succeeds: nothing is skipped.

With `metrics` and/or `health`, every failure is counted (by operation and exception type),
each landed group tells `health` its block, a heartbeat task (every `heartbeat_s`)
refreshes the liveness heartbeat, the chain head, the head lag and the outbox backlog, and
`health.run` (the error-rate alarm) runs in the same task group.

With a `lease` (active/standby, `runtime.lease`), a task renews it every third of its TTL;
when it is lost (a renewal finds another holder, Redis stays unreachable past the TTL, or
a fenced commit or delivery is refused), the whole group stops, outbox included, and `run`
raises `LeaseLost`: the caller goes back to standby.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, Protocol

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from seqcollector.core import Block, Input, Log, Rewind
from seqcollector.runtime.executor import ConcurrentWriterError, RedisDataLost, RedisLostSteps
from seqcollector.runtime.failures import Failure, FailureReporter
from seqcollector.runtime.lease import Lease, LeaseLost, keep_renewed
from seqcollector.runtime.outbox import OutboxDispatcher
from seqcollector.runtime.pipeline import CoreStepError, Pipeline, ResumeError

if TYPE_CHECKING:
    from seqcollector.runtime.health import Health
    from seqcollector.runtime.metrics import Metrics

log = structlog.get_logger(__name__)

GROUP_MAX_INPUTS = 500  # inputs committed together when the source is ahead (catch-up)
STREAM_BUFFER = 2000
FINAL_DELIVERY_S = 2.0  # on stop, relayer calls still pending get this long (stop is <= 10 s)
HEARTBEAT_S = 1.0
DEEP_REORGS = "reorg_too_deep"  # the core's counter of reorgs it could not undo whole


class InputSource(Protocol):
    """Where inputs come from: a chain follower, a synthetic chain, a journal.

    `units()` yields the inputs in units that are committed whole: `[Rewind]` or
    `[Block, *its logs]`, so that a block is never applied without its logs.
    """

    @property
    def chain_head(self) -> int | None: ...

    def units(self) -> AsyncGenerator[Sequence[Input], None]: ...


def _fatal(exc: BaseException) -> bool:
    """Not worth a retry: a misconfiguration, a second writer, Redis having lost our data,
    or no Exception at all (cancellation, KeyboardInterrupt, a simulated crash)."""
    return not isinstance(exc, Exception) or isinstance(
        exc, ConcurrentWriterError | RedisDataLost | RedisLostSteps | ResumeError | LeaseLost
    )


class Collector:
    def __init__(
        self,
        pipeline: Pipeline,
        source: InputSource,
        dispatcher: OutboxDispatcher | None = None,
        reporter: FailureReporter | None = None,
        dispatch_interval_s: float = 0.2,
        on_progress: Callable[[int, int | None, float], None] | None = None,
        stop_when: Callable[[Pipeline], bool] | None = None,
        handle_signals: bool = True,
        group_max: int = GROUP_MAX_INPUTS,
        retry_first_s: float = 0.2,
        retry_max_s: float = 30.0,
        metrics: Metrics | None = None,
        health: Health | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        lease: Lease | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.dispatcher = dispatcher
        self.reporter = reporter or FailureReporter()
        self.dispatch_interval_s = dispatch_interval_s
        self.on_progress = on_progress
        self.stop_when = stop_when
        self.handle_signals = handle_signals
        self.group_max = group_max
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self.blocks_applied = 0
        self.metrics = metrics
        self.health = health
        self.heartbeat_s = heartbeat_s
        self.lease = lease
        self._scope = anyio.CancelScope()

    @property
    def stopped(self) -> bool:
        return self._scope.cancel_called

    def stop(self) -> None:
        """Stop `run` (now, or as soon as it starts: a stop is never lost)."""
        self._scope.cancel()

    async def run(self) -> None:
        """Run until stopped. Returns after a clean stop; fatal errors propagate."""
        if self.health is not None:
            head = self.pipeline.committed_head
            deep = self.pipeline.state.counters.get(DEEP_REORGS, 0)
            self.health.started(head.number if head else None, deep)
        try:
            with self._scope:
                await self._run()
        except BaseExceptionGroup as group:  # a lost lease stops the group: raise it as itself
            lost, rest = group.split(LeaseLost)
            if lost is None or rest is not None:  # anything else beside it comes first
                raise
            raise _first_leaf(lost) from group
        finally:
            if self.health is not None:
                self.health.stopped()
        if self.lease is not None and self.lease.value is None:
            return  # not ours any more: the holder delivers
        if self.dispatcher is not None:  # a last, bounded pass: what is left waits in Redis
            try:
                with anyio.move_on_after(FINAL_DELIVERY_S):
                    await self.dispatcher.deliver_pending()
            except (RedisError, OSError, LeaseLost) as exc:  # e.g. Redis closed on a restart
                log.warning(
                    "final_delivery_skipped",
                    error=f"{type(exc).__name__}: {exc}",
                    action="nothing is lost: the pending entries wait in Redis for the next run",
                )

    async def _run(self) -> None:
        await self._retrying("resume_pending_queries", None, self.pipeline.resume_queries)
        send, receive = anyio.create_memory_object_stream[Sequence[Input]](STREAM_BUFFER)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce, send)
            tg.start_soon(self._consume, receive)
            if self.dispatcher is not None:
                tg.start_soon(self.dispatcher.run, self.dispatch_interval_s)
            if self.handle_signals:
                tg.start_soon(self._signals)
            if self.metrics is not None or self.health is not None:
                tg.start_soon(self._heartbeat)
            if self.health is not None:
                tg.start_soon(self.health.run)  # the error-rate alarm, one interval at a time
            if self.lease is not None:
                tg.start_soon(keep_renewed, self.lease)

    async def _heartbeat(self) -> None:
        while True:
            self._observe()
            await anyio.sleep(self.heartbeat_s)

    def _observe(self) -> None:
        """Heartbeat, chain head and lag, outbox backlog -> health and metrics."""
        head = self.pipeline.committed_head
        committed = head.number if head is not None else None
        backlog = self.dispatcher.backlog() if self.dispatcher is not None else {}
        chain_head = self.source.chain_head
        if self.health is not None:
            self.health.beat()
            self.health.observe(chain_head, backlog)
        if self.metrics is not None:
            self.metrics.heads(chain_head, committed)
            self.metrics.outbox_backlog(backlog)

    async def _produce(self, send: MemoryObjectSendStream[Sequence[Input]]) -> None:
        """Units into the stream. While there is room, without yielding to the loop: a source
        that has a range in hand (catch-up) hands it over whole, so the consumer commits it
        in a few large groups instead of a group per unit."""
        async with send, aclosing(self.source.units()) as units:
            async for unit in units:
                try:
                    send.send_nowait(unit)
                except anyio.WouldBlock:
                    await send.send(unit)
                except anyio.BrokenResourceError:
                    return  # the consumer has stopped (or failed: its error propagates)

    async def _consume(self, receive: MemoryObjectReceiveStream[Sequence[Input]]) -> None:
        started, blocks_at_start = time.monotonic(), self.blocks_applied
        async with receive:
            async for first in receive:
                group = list(first)
                while len(group) < self.group_max:  # units already waiting join the group
                    try:
                        group.extend(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._retrying("apply", group, partial(self.pipeline.apply, group))
                self.blocks_applied += sum(isinstance(i, Block) for i in group)
                if self.health is not None or self.metrics is not None:
                    self._landed()
                if self.on_progress is not None:
                    head = self.pipeline.state.head
                    rate = (self.blocks_applied - blocks_at_start) / max(
                        time.monotonic() - started, 1e-9
                    )
                    self.on_progress(head.number if head else -1, self.source.chain_head, rate)
                if self.stop_when is not None and self.stop_when(self.pipeline):
                    self.stop()
                    return
        log.info("source_exhausted", seq=self.pipeline.seq)
        self.stop()  # a finite source (journal, synthetic chain) has been applied whole

    def _landed(self) -> None:
        head = self.pipeline.committed_head
        committed = head.number if head is not None else None
        if self.health is not None:
            deep = self.pipeline.state.counters.get(DEEP_REORGS, 0)
            self.health.committed(committed, deep)
            self.health.observe(self.source.chain_head)
        if self.metrics is not None:
            self.metrics.heads(self.source.chain_head, committed)

    async def _retrying(
        self, operation: str, group: Sequence[Input] | None, fn: Callable[[], Awaitable[None]]
    ) -> None:
        """Run `fn` until it succeeds, reporting every failure; fatal errors are reported
        (always alerted, whatever the rate limit) and propagate."""
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(
                multiplier=self.retry_first_s, max=self.retry_max_s, jitter=self.retry_first_s
            ),
            retry=retry_if_exception(lambda e: not _fatal(e)),
            sleep=anyio.sleep,
            reraise=True,
        ):
            with attempt:
                try:
                    await fn()
                except Exception as exc:
                    if self.metrics is not None:
                        self.metrics.error(operation, type(exc).__name__)
                    if self.health is not None:
                        self.health.failed()
                    failure = _failure(operation, group, exc)
                    if isinstance(exc, LeaseLost):
                        failure = msgspec.structs.replace(
                            failure, action="stopped; standing by while another process is active"
                        )
                    elif _fatal(exc):
                        failure = msgspec.structs.replace(failure, action="stopped, not retried")
                    await self.reporter.report(failure, always=_fatal(exc))
                    raise

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping", signal=signal.Signals(signum).name)
                self.stop()
                return


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _failure(operation: str, group: Sequence[Input] | None, exc: BaseException) -> Failure:
    if isinstance(exc, CoreStepError):  # names its input: the one the core raised on
        return Failure(
            "core_step",
            str(exc),
            block=exc.block,
            market=exc.market,
            epoch=exc.epoch,
            action="retrying with backoff; a fixed version must run for it to pass",
        )
    blocks = [i.number for i in group or () if isinstance(i, Block)]
    blocks += [i.block_number for i in group or () if isinstance(i, Log)]
    blocks += [i.to_block for i in group or () if isinstance(i, Rewind)]
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Failure(operation, error, block=min(blocks) if blocks else None)

"""Follow a chain as the core's inputs: `Block`s, ProtocolState `Log`s and `Rewind`s.

`ChainFollower(pool, protocol_state).inputs()` yields, in chain order, for each block n from
the start: `Block(n)`, then the logs of `protocol_state` with one of the four collected
topic0s in block n, by log index. Only blocks up to `head - confirmations` are processed.

- Start: the block after the last of `known` (the recent canonical (number, hash) pairs the
  core holds), else `start_block`, else the confirmed head.
- Ranges: up to `range_blocks` blocks at a time: headers by JSON-RPC batches, logs by
  `eth_getLogs` over adaptive ranges (`blocks.LogRanges`). At the head, it waits for the head
  to move (`heads.HeadWatcher`: newHeads on a WebSocket endpoint, else polling).
- Reorgs: every header's parent hash must be the hash of the block yielded before it (or of
  `known`). On a mismatch it walks back to the highest block whose canonical hash is still
  the one it has, `a`, yields `Rewind(a)` and continues from a+1. When the head drops below
  the last block yielded, the canonical hash at the new confirmed head is checked the same
  way. Logs whose block hash is not the header's (the chain moved between the two calls)
  make it read the range again.
- Deeper than the history (no match within `max_reorg_depth` blocks, or the head dropped
  below every block it remembers, seen on two head reads in a row): it checks the
  `anchors` (sparse older blocks, `core.history`: the core's, passed at start like `known`,
  then kept by the same rule from the blocks it yields) from newest to oldest against the
  canonical chain (one header each) and yields `Rewind(anchor)` for the newest that still
  matches; the core keeps that anchor as its head, so the next block links to it. If none
  matches (another chain, a reset to genesis) it yields `Rewind(-1)` ("nothing in common":
  the core forgets its blocks and takes the next one as a new base) and resumes from the
  first block it processed (the oldest anchor), or from the confirmed head if the chain is
  now shorter than that. Both are logged as errors and counted (`deep_rewinds`,
  `chain_resets`); the core alerts with what could not be undone.
- Waiting: when the next block is beyond the confirmed head by more than one block (a
  `start_block` in the future), it logs `waiting_for_chain` (block, head) at once and then
  every `wait_log_s`, instead of waiting in silence.
- Failures: every RPC operation is retried forever with jittered exponential backoff, each
  failure logged as a structured error (`retrying.py`). Nothing is skipped.

`chain_head` is the latest head seen, `next_block` the next block to process (for progress).
With `metrics`, every failed attempt of a chain read is counted
(`seqcollector_errors_total{operation="source_<operation>"}`) and each new head is recorded
as `seqcollector_chain_head_block`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import anyio
import structlog

from seqcollector.core.abi import (
    BATCH_SUBMISSIONS_COMPLETED,
    DAY_STARTED,
    EPOCH_RELEASED,
    SNAPSHOT_BATCH_SUBMITTED,
)
from seqcollector.core.history import push_anchor
from seqcollector.core.inputs import Block, Log, Rewind
from seqcollector.core.state import BlockRef
from seqcollector.sources.blocks import LogRanges, fetch_headers
from seqcollector.sources.errors import FetchTimedOut
from seqcollector.sources.heads import HeadWatcher
from seqcollector.sources.retrying import Backoff, retry_forever
from seqcollector.sources.rpc import RpcPool, SourceError

if TYPE_CHECKING:
    from seqcollector.runtime.metrics import Metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_BACKOFF = Backoff()
TOPICS0 = (EPOCH_RELEASED, SNAPSHOT_BATCH_SUBMITTED, BATCH_SUBMISSIONS_COMPLETED, DAY_STARTED)


class InconsistentRange(SourceError):
    """Headers and logs of a range came from different forks; read the range again."""


def blocks_context(first: int | None, last: int | None) -> dict[str, int]:
    """The blocks a chain read is about, bound to every line logged while it runs (the
    pool's demotions, retries): `block` (the first), `to_block` for a range."""
    if first is None:
        return {}
    return {"block": first} if last in (None, first) else {"block": first, "to_block": last}


def linked_prefix(headers: list[Block]) -> list[Block]:
    """The longest prefix of `headers` in which each block's parent is the one before it."""
    for i in range(1, len(headers)):
        if headers[i].parent_hash != headers[i - 1].hash:
            return headers[:i]
    return headers


class ChainFollower:
    """Blocks, ProtocolState logs and rewinds of one chain, from a pool of endpoints."""

    def __init__(
        self,
        pool: RpcPool,
        protocol_state: str,
        confirmations: int = 0,
        max_reorg_depth: int = 64,
        known: Sequence[tuple[int, str]] = (),
        start_block: int | None = None,
        poll_interval_s: float = 1.0,
        range_blocks: int = 500,
        retry: Backoff = DEFAULT_BACKOFF,
        subscribe: bool = True,
        log_ranges: LogRanges | None = None,
        topics0: Sequence[str] = TOPICS0,
        anchors: Sequence[tuple[int, str]] = (),
        wait_log_s: float = 30.0,
        attempt_timeout_s: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if confirmations < 0 or max_reorg_depth < 1 or range_blocks < 1:
            raise ValueError("confirmations >= 0, max_reorg_depth >= 1, range_blocks >= 1")
        self._pool = pool
        self.protocol_state = protocol_state.lower()
        self.confirmations = confirmations
        self.max_reorg_depth = max_reorg_depth
        self.start_block = start_block
        self.range_blocks = range_blocks
        self.retry = retry
        self.topics0 = [t.lower() for t in topics0]
        self.log_ranges = log_ranges or LogRanges()
        self.watcher = HeadWatcher(pool, poll_interval_s, subscribe=subscribe)
        self._recent: dict[int, str] = {n: h.lower() for n, h in sorted(known)}
        self._trim()
        # sparse older blocks (number, hash), oldest first; the first is the first block
        # processed (`core.history`): what a reorg deeper than `_recent` rewinds to
        self._anchors: list[BlockRef] = []
        self._origin: BlockRef | None = None
        for number, block_hash in sorted({*anchors, *known}):
            ref = BlockRef(number, block_hash.lower(), 0)
            if self._origin is None:
                self._origin = ref
            push_anchor(self._anchors, ref)
        self.wait_log_s = wait_log_s
        # BLOCK_FETCH_TIMEOUT: one attempt of a chain read (not the wait for a new head)
        self.attempt_timeout_s = attempt_timeout_s
        self._wait_logged: tuple[int, float] | None = None  # (block, when) last logged
        self.chain_head: int | None = None  # None until the first head is seen
        self.next_block = -1  # set from the head, `known` or `start_block` when iterating
        self.rewinds = 0
        self.deep_rewinds = 0
        self.chain_resets = 0  # deep rewinds that found no anchor: Rewind(-1)
        self.refetches = 0
        self.metrics = metrics

    async def inputs(self) -> AsyncIterator[Block | Log | Rewind]:
        """The inputs one by one, in chain order (see `units`)."""
        async with aclosing(self.units()) as units:  # stopping early closes it now
            async for unit in units:
                for inp in unit:
                    yield inp

    async def units(self) -> AsyncGenerator[list[Block | Log | Rewind], None]:
        """Forever (until the consumer stops iterating): `[Rewind]`, or `[Block, *its logs]`,
        each to be committed whole (a block is never applied without its logs). Iterate
        once per follower: a restart builds a new one with the core's `known` blocks."""
        try:
            head = self.chain_head = await self._retry("head", self._pool.head)
            self.next_block = self._first_block(head)
            while True:
                first, head = self.next_block, self.chain_head
                assert head is not None
                target = head - self.confirmations
                if first > target:
                    rewind = await self._check_below_head(target)
                    if rewind is not None:
                        yield [rewind]
                        continue
                    far = self._log_waiting(first, head)
                    wait = partial(self._wait_for_head, head, far)
                    self.chain_head = await self._retry("wait_for_head", wait)
                    continue
                if target - first >= self.range_blocks:
                    await self.watcher.pause()  # catching up: no notifications to pile up
                last = min(target, first + self.range_blocks - 1)
                read = partial(self._read_range, first, last)
                headers, logs = await self._retry("read_range", read, first, last)
                if logs is None:
                    rewind = await self._rewind(first - 1)
                    if rewind is not None:
                        yield [rewind]
                    continue
                by_block: dict[int, list[Log]] = {}
                for entry in logs:
                    by_block.setdefault(entry.block_number, []).append(entry)
                for header in headers:
                    yield [header, *by_block.get(header.number, ())]
                    self._remember(header)  # done once its logs are out
                    self.next_block = header.number + 1
        finally:
            await self.watcher.aclose()

    # -- steps -----------------------------------------------------------------------------

    def _first_block(self, head: int) -> int:
        if self._recent:
            return max(self._recent) + 1
        if self.start_block is not None:
            return self.start_block
        return max(head - self.confirmations, 0)

    async def _read_range(self, first: int, last: int) -> tuple[list[Block], list[Log] | None]:
        """Headers first..last (the linked prefix) and their logs; logs None when the first
        header does not link to the block yielded before it (a reorg)."""
        headers = linked_prefix(await fetch_headers(self._pool, first, last))
        parent = self._recent.get(first - 1)
        if parent is not None and headers[0].parent_hash != parent:
            return headers, None
        last = headers[-1].number
        logs = await self.log_ranges.fetch_logs(
            self._pool, self.protocol_state, self.topics0, first, last
        )
        hashes = {header.number: header.hash for header in headers}
        stale = sorted({e.block_number for e in logs if hashes[e.block_number] != e.block_hash})
        if stale:
            self.refetches += 1
            raise InconsistentRange(
                f"logs of blocks {stale[:5]} are not from the fetched headers' fork"
            )
        return headers, logs

    async def _check_below_head(self, target: int) -> Rewind | None:
        """When the confirmed head is below the last block yielded: is our block there still
        canonical? -> the rewind if not. Below every block remembered: a deep reorg, once a
        second head read agrees (one lagging answer is not a chain reset)."""
        if target >= self.next_block - 1:
            return None
        if target not in self._recent:
            if any(n <= target for n in self._recent) or not self._recent:
                return None  # a gap in `known` (or nothing known): read on from next_block
            await anyio.sleep(self.retry.first_s)
            head = self.chain_head = await self._retry("head", self._pool.head)
            target = head - self.confirmations
            if target >= min(self._recent):
                return None  # it came back: the normal path checks the parent links
            return await self._deep_rewind(target, target + 1)
        check = partial(fetch_headers, self._pool, target, target)
        (header,) = await self._retry("check_canonical", check, target, target)
        if header.hash == self._recent[target]:
            return None
        return await self._rewind(target)

    async def _rewind(self, top: int) -> Rewind | None:
        """Our block `top` looked replaced: find the common ancestor -> Rewind; None when
        `top` turns out to be canonical after all (endpoints disagreeing: read again)."""
        lo = max(top - self.max_reorg_depth + 1, min(n for n in self._recent if n <= top))
        find = partial(self._common_ancestor, lo, top)
        ancestor = await self._retry("find_common_ancestor", find, lo, top)
        if ancestor == top:
            log.warning("reorg_not_confirmed", block=top, retry_in_s=self.retry.first_s)
            await anyio.sleep(self.retry.first_s)
            return None
        self.rewinds += 1
        if ancestor < lo:
            assert self.chain_head is not None
            return await self._deep_rewind(self.chain_head - self.confirmations, lo, top)
        log.warning("reorg", last_block=top, common_ancestor=ancestor, depth=top - ancestor)
        for number in [n for n in self._recent if n > ancestor]:
            del self._recent[number]
        self._drop_anchors_above(ancestor)
        self.next_block = ancestor + 1
        return Rewind(ancestor)

    async def _deep_rewind(
        self, target: int, oldest_checked: int, top: int | None = None
    ) -> Rewind:
        """No common block in the contiguous history (blocks >= oldest_checked): rewind to
        the newest anchor still canonical, else to -1 (nothing in common)."""
        last = max(self._recent) if self._recent else self.next_block - 1
        find = partial(self._matching_anchor, oldest_checked)
        anchor = await self._retry("check_anchors", find)
        self.deep_rewinds += 1
        if top is None:
            self.rewinds += 1
        self._recent.clear()
        if anchor is not None:
            log.error(
                "reorg_deeper_than_history",
                last_block=last,
                oldest_checked=oldest_checked,
                rewind_to=anchor.number,
                depth=last - anchor.number,
                anchors=len(self._anchors),
                max_reorg_depth=self.max_reorg_depth,
            )
            self._drop_anchors_above(anchor.number)
            self._recent[anchor.number] = anchor.hash  # the next block must link to it
            self.next_block = anchor.number + 1
            return Rewind(anchor.number)
        self.chain_resets += 1
        origin = self._origin.number if self._origin is not None else self.start_block
        resume = max(0, min(origin if origin is not None else target, target))
        log.error(
            "chain_replaced",
            last_block=last,
            anchors_checked=len(self._anchors),
            resume_from=resume,
            confirmed_head=target,
            detail="no block the collector processed is on the chain any more: it follows "
            "the new chain from resume_from; check RPC_NODES point at the intended chain",
        )
        self._anchors.clear()
        self._origin = None
        self.next_block = resume
        return Rewind(-1)

    async def _matching_anchor(self, below: int) -> BlockRef | None:
        """The newest anchor below block `below` whose canonical hash is still ours."""
        head = self.chain_head = await self._pool.head()
        candidates = [a for a in self._anchors if a.number < below and a.number <= head]
        if self._origin is not None and self._origin.number < below:
            candidates.append(self._origin)
        for anchor in sorted(candidates, key=lambda a: -a.number):
            (header,) = await fetch_headers(self._pool, anchor.number, anchor.number)
            if header.hash == anchor.hash:
                return anchor
        return None

    async def _common_ancestor(self, lo: int, top: int) -> int:
        """Highest block in lo..top whose canonical hash is ours; lo - 1 if none is."""
        head = await self._pool.head()
        self.chain_head = head
        headers = await fetch_headers(self._pool, lo, min(top, head))
        for header in reversed(headers):
            if self._recent.get(header.number) == header.hash:
                return header.number
        return lo - 1

    # -- helpers ---------------------------------------------------------------------------

    def _remember(self, header: Block) -> None:
        self._recent[header.number] = header.hash
        self._trim()
        ref = BlockRef(header.number, header.hash, header.timestamp)
        if self._origin is None:
            self._origin = ref
        push_anchor(self._anchors, ref)

    def _drop_anchors_above(self, number: int) -> None:
        while self._anchors and self._anchors[-1].number > number:
            self._anchors.pop()
        if self._origin is not None and self._origin.number > number:
            self._origin = None

    async def _wait_for_head(self, head: int, far: bool) -> int:
        """The next head; when waiting for a far block, `head` again after `wait_log_s`
        (to say again what it is waiting for)."""
        if not far:
            return await self.watcher.wait(head)
        with anyio.move_on_after(self.wait_log_s):
            return await self.watcher.wait(head)
        return head

    def _log_waiting(self, block: int, head: int) -> bool:
        """Waiting for more than the next block (a start block in the future): say so, at
        once and then every `wait_log_s` -> whether it is such a wait."""
        target = head - self.confirmations
        if block <= target + 1:
            return False
        now = anyio.current_time()
        last = self._wait_logged
        if last is not None and last[0] == block and now - last[1] < self.wait_log_s * 0.9:
            return True
        self._wait_logged = (block, now)
        log.info(
            "waiting_for_chain",
            detail=f"waiting for the chain to reach block {block}, head {head}",
            block=block,
            head=head,
            confirmations=self.confirmations,
        )
        return True

    def _trim(self) -> None:
        while len(self._recent) > self.max_reorg_depth + 1:
            del self._recent[next(iter(self._recent))]

    async def _retry(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        first: int | None = None,
        last: int | None = None,
    ) -> T:
        if self.attempt_timeout_s is not None and operation != "wait_for_head":
            fn = partial(self._bounded, operation, fn, self.attempt_timeout_s, first, last)
        if self.metrics is not None:
            fn = partial(self._counted, operation, fn)
        with structlog.contextvars.bound_contextvars(**blocks_context(first, last)):
            result = await retry_forever(operation, fn, self.retry, self._pool, first, last)
        if self.metrics is not None and self.chain_head is not None:
            self.metrics.chain_head.set(self.chain_head)
        return result

    async def _counted(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()`, its failure counted in the metrics (then retried by `retry_forever`)."""
        try:
            return await fn()
        except SourceError as exc:
            if self.metrics is not None:
                self.metrics.error(f"source_{operation}", type(exc).__name__)
            raise

    @staticmethod
    async def _bounded(
        operation: str,
        fn: Callable[[], Awaitable[T]],
        timeout_s: float,
        first: int | None,
        last: int | None,
    ) -> T:
        """`fn()` within BLOCK_FETCH_TIMEOUT, else FetchTimedOut (retried)."""
        try:
            with anyio.fail_after(timeout_s):
                return await fn()
        except TimeoutError:
            blocks = f" of blocks {first}..{last}" if first is not None else ""
            raise FetchTimedOut(
                f"{operation}{blocks} took longer than BLOCK_FETCH_TIMEOUT ({timeout_s:g} s)"
            ) from None

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
  the one it has, `a`, yields `Rewind(a)` and continues from a+1. With no match within
  `max_reorg_depth` blocks of its history, it yields `Rewind(oldest_checked - 1)` anyway (the
  core alerts on and counts too-deep reorgs) and trusts the chain from there. When the head
  drops below the last block yielded, the canonical hash at the new confirmed head is
  checked the same way. Logs whose block hash is not the header's (the chain moved between
  the two calls) make it read the range again.
- Failures: every RPC operation is retried forever with jittered exponential backoff, each
  failure logged as a structured error (`retrying.py`). Nothing is skipped.

`chain_head` is the latest head seen, `next_block` the next block to process (for progress).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from functools import partial
from typing import TypeVar

import anyio
import structlog

from seqcollector.core.abi import (
    BATCH_SUBMISSIONS_COMPLETED,
    DAY_STARTED,
    EPOCH_RELEASED,
    SNAPSHOT_BATCH_SUBMITTED,
)
from seqcollector.core.inputs import Block, Log, Rewind
from seqcollector.sources.blocks import LogRanges, fetch_headers
from seqcollector.sources.heads import HeadWatcher
from seqcollector.sources.retrying import Backoff, retry_forever
from seqcollector.sources.rpc import RpcPool, SourceError

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_BACKOFF = Backoff()
TOPICS0 = (EPOCH_RELEASED, SNAPSHOT_BATCH_SUBMITTED, BATCH_SUBMISSIONS_COMPLETED, DAY_STARTED)


class InconsistentRange(SourceError):
    """Headers and logs of a range came from different forks; read the range again."""


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
        self.chain_head: int | None = None  # None until the first head is seen
        self.next_block = -1  # set from the head, `known` or `start_block` when iterating
        self.rewinds = 0
        self.deep_rewinds = 0
        self.refetches = 0

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
                    wait = partial(self.watcher.wait, head)
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
        canonical? -> the rewind if not."""
        if target >= self.next_block - 1 or target not in self._recent:
            return None
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
            self.deep_rewinds += 1
            log.error(
                "reorg_deeper_than_history",
                last_block=top,
                oldest_checked=lo,
                rewind_to=ancestor,
                max_reorg_depth=self.max_reorg_depth,
            )
            self._recent.clear()  # nothing left to compare with: trust the chain from here
        else:
            log.warning("reorg", last_block=top, common_ancestor=ancestor, depth=top - ancestor)
            for number in [n for n in self._recent if n > ancestor]:
                del self._recent[number]
        self.next_block = ancestor + 1
        return Rewind(ancestor)

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
        return await retry_forever(operation, fn, self.retry, self._pool, first, last)

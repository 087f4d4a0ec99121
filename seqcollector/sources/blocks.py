"""Block headers and logs over ranges, as the core's `Block` and `Log` inputs.

- `fetch_headers(pool, start, end)`: `eth_getBlockByNumber(n, false)` for every block of the
  range, in JSON-RPC batches of `chunk` calls (a few batches in flight).
- `LogRanges().fetch_logs(pool, address, topics0, start, end)`: `eth_getLogs` for one address
  and any of the topic0s over adaptive sub-ranges: a refusal about the range shrinks it (to
  the provider's hint when there is one, else by half), each success grows it (x2, up to
  `max_span`, and never above a hard limit a provider stated).

Every hash and hex string is returned 0x-prefixed lowercase; numbers are ints. A reply that
does not fit (a missing block, a wrong number, a malformed field) is rejected as unusable, so
the pool demotes that endpoint and asks the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import structlog

from seqcollector.core.inputs import Block, Log
from seqcollector.sources.gather import gather
from seqcollector.sources.range_hints import range_hint
from seqcollector.sources.rpc import RpcError, RpcPool, TransportError, quantity

log = structlog.get_logger(__name__)

HEADERS_PER_BATCH = 100
BATCHES_IN_FLIGHT = 4


def hex_string(value: Any) -> str:
    """A 0x-hex string (any case) or bytes -> 0x-prefixed lowercase hex."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        return value.lower()
    raise ValueError(f"not hex data: {value!r:.80}")


def decode_header(raw: Any, number: int) -> Block:
    """An `eth_getBlockByNumber` result for block `number` -> Block (ValueError if unusable)."""
    if raw is None:
        raise ValueError(f"block {number} is not available")
    if not isinstance(raw, dict):
        raise ValueError(f"block {number}: result is {raw!r:.80}")
    got = quantity(raw["number"])
    if got != number:
        raise ValueError(f"asked for block {number}, got block {got}")
    return Block(
        number=got,
        hash=hex_string(raw["hash"]),
        parent_hash=hex_string(raw["parentHash"]),
        timestamp=quantity(raw["timestamp"]),
    )


def decode_log(raw: Any) -> Log:
    """One `eth_getLogs` entry -> Log (ValueError/KeyError if unusable)."""
    if not isinstance(raw, dict):
        raise ValueError(f"log entry is {raw!r:.80}")
    if raw.get("removed"):
        raise ValueError("eth_getLogs returned a removed log")
    return Log(
        address=hex_string(raw["address"]),
        topics=[hex_string(t) for t in raw["topics"]],
        data=hex_string(raw["data"]),
        block_number=quantity(raw["blockNumber"]),
        block_hash=hex_string(raw["blockHash"]),
        log_index=quantity(raw["logIndex"]),
        tx_hash=hex_string(raw["transactionHash"]) if raw.get("transactionHash") else "",
    )


def _decode_headers(first: int, results: Any) -> list[Block]:
    return [decode_header(raw, first + i) for i, raw in enumerate(results)]


def _decode_logs(first: int, last: int, results: Any) -> list[Log]:
    if not isinstance(results, list):
        raise ValueError(f"eth_getLogs result is {results!r:.80}")
    logs = [decode_log(raw) for raw in results]
    for entry in logs:
        if not first <= entry.block_number <= last:
            raise ValueError(f"log of block {entry.block_number} outside [{first}, {last}]")
    return logs


async def _header_chunk(pool: RpcPool, first: int, last: int) -> list[Block]:
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(first, last + 1)]
    blocks: list[Block] = await pool.batch(
        calls, min_block=last, decode=partial(_decode_headers, first)
    )
    return blocks


async def fetch_headers(
    pool: RpcPool, start: int, end: int, chunk: int = HEADERS_PER_BATCH
) -> list[Block]:
    """Headers of blocks start..end (inclusive), in order. Raises `RpcError` on failure."""
    if end < start:
        return []
    chunks = [(a, min(a + chunk - 1, end)) for a in range(start, end + 1, chunk)]
    parts = await gather(
        [partial(_header_chunk, pool, a, b) for a, b in chunks], limit=BATCHES_IN_FLIGHT
    )
    return [block for part in parts for block in part]


class LogRanges:
    """Adaptive `eth_getLogs` ranges; keep one per source so that what was learnt lasts.

    `span` is the number of blocks of the next request; `ceiling` a hard limit a provider
    stated (None until then); `shrinks` counts refusals that shrank the range.
    """

    def __init__(self, span: int = 2000, max_span: int = 10_000) -> None:
        self.span = max(1, min(span, max_span))
        self.max_span = max_span
        self.ceiling: int | None = None
        self.shrinks = 0

    async def fetch_logs(
        self, pool: RpcPool, address: str, topics0: Sequence[str], start: int, end: int
    ) -> list[Log]:
        """Logs of `address` with any of `topics0` in blocks start..end, sorted by
        (block_number, log_index). Raises `RpcError` for refusals that are not about the
        range, or when a single block is refused."""
        found: list[Log] = []
        first = start
        while first <= end:
            last = min(end, first + self.span - 1)
            query = {
                "address": address.lower(),
                "topics": [[t.lower() for t in topics0]],
                "fromBlock": hex(first),
                "toBlock": hex(last),
            }
            try:
                logs: list[Log] = await pool.request(
                    "eth_getLogs",
                    [query],
                    min_block=last,
                    decode=partial(_decode_logs, first, last),
                )
            except TransportError:
                raise
            except RpcError as exc:
                self._shrink(exc, first, last)
                continue
            found.extend(logs)
            first = last + 1
            self.span = min(self.span * 2, self.max_span, self.ceiling or self.max_span)
        found.sort(key=lambda entry: (entry.block_number, entry.log_index))
        return found

    def _shrink(self, exc: RpcError, first: int, last: int) -> None:
        hint = range_hint(exc.message)
        blocks = last - first + 1
        if hint is None or blocks == 1:
            raise exc
        if hint.max_blocks is not None:
            self.ceiling = min(hint.max_blocks, self.ceiling or hint.max_blocks)
            span = hint.max_blocks
        elif hint.suggested_blocks is not None:
            span = hint.suggested_blocks
        else:
            span = blocks // 2
        self.span = max(1, min(span, blocks - 1))
        self.shrinks += 1
        log.info(
            "get_logs_range_shrunk",
            endpoint=exc.endpoint,
            first_block=first,
            last_block=last,
            new_span=self.span,
            reason=exc.message[:200],
        )

"""Recovery after Redis lost its data: rebuild the collector's keys from the local journal.

`seqcollector run --recover` (with the journal the runs recorded) replays the journal
through the core into a private embedded store, exactly as `seqcollector replay` does, and
copies what it built into the empty namespace of the real Redis, in one MULTI/EXEC with the
checkpoint last, so that the collector carries on from the journal's last input. What
already left the collector is not repeated:

- relayer calls and alerts that the delivery ledger (`delivery_ledger.py`) lists as
  delivered are not put back in the outbox; the others are, and go out once;
- items of the queues other components consume (`finalizerQueue`, `attestorQueue`) are not
  pushed again: the finalizer may have taken them before Redis lost them. The alert names
  how many items of which queues were not restored, with the epochs' range.

What cannot be rebuilt is named in the recovery's High alert: those queue items; the
submission sets of windows still open at the journal's end (upstream writes them; the
collector has only read what its closed windows held); keys whose TTL ran out after the
replay (the rebuilt keys get the TTLs the replay gives them, counted from now).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
import structlog

from seqcollector.errors import OperatorError
from seqcollector.runtime.delivery_ledger import delivered_ids
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.layout import StoreLayout, decode_record
from seqcollector.runtime.replay import replay_journal

log = structlog.get_logger(__name__)

CONSUMED_QUEUES = ("finalizerQueue", "attestorQueue")
_EPOCH_ID = re.compile(rb'"EpochID":\s*(\d+)')
_COPY_BATCH = 1000  # keys per SCAN page


class RecoveryRefused(OperatorError):
    """`--recover` on a namespace that still holds a checkpoint, or without a journal."""


@dataclass
class RecoveryReport:
    inputs: int
    seq: int
    block: int | None
    keys: int  # keys written into Redis
    requeued: int  # outbox entries put back (not delivered before the loss)
    delivered: int  # outbox entries the ledger lists as delivered: not put back
    skipped_queues: dict[str, tuple[int, int | None, int | None]] = field(default_factory=dict)
    open_windows: int = 0

    def not_rebuilt(self) -> list[str]:
        out = []
        for queue, (items, low, high) in sorted(self.skipped_queues.items()):
            epochs = f" (epochs {low}..{high})" if low is not None else ""
            out.append(
                f"{items} item(s) of {queue}{epochs} not pushed again: the consumer may have "
                "taken them before the loss; check its progress and rewind the epochs it "
                "lacks (`seqcollector rewind`)"
            )
        if self.open_windows:
            out.append(
                f"the submission sets of {self.open_windows} window(s) open at the journal's "
                "end are upstream's; those windows are batched with what Redis holds now"
            )
        out.append("TTLs of rebuilt keys count from now, not from their first write")
        return out

    def message(self) -> str:
        return (
            f"Redis lost the collector's data; rebuilt from the journal ({self.inputs} inputs "
            f"up to seq {self.seq}, block {self.block}): {self.keys} keys, "
            f"{self.requeued} undelivered outbox entries put back, {self.delivered} "
            f"delivered ones not repeated. Not rebuilt: {'; '.join(self.not_rebuilt())}"
        )


async def recover(
    journal: Path, ledger: Path, redis: aioredis.Redis, namespace: str, redis_timeout_s: float
) -> RecoveryReport:
    """Rebuild `namespace` in `redis` from `journal`, skipping what `ledger` lists as
    delivered. Refuses (nothing written) when the namespace still holds a checkpoint."""
    keys = StoreLayout(namespace)
    with anyio.fail_after(redis_timeout_s):
        stored = cast(bytes | None, await redis.get(keys.checkpoint))
    checkpoint = decode_record(stored)
    if checkpoint is not None:
        raise RecoveryRefused(
            f"namespace {namespace!r}: Redis holds checkpoint seq {checkpoint.seq} (block "
            f"{checkpoint.block}): nothing to recover; run without --recover"
        )
    if not journal.exists():
        raise RecoveryRefused(
            f"--recover: journal {journal} does not exist: give the journal the collector "
            "recorded (--record FILE)"
        )
    scratch = embedded_redis()
    try:
        result = await replay_journal(journal, scratch, namespace)
        done = delivered_ids(ledger)
        report = RecoveryReport(
            result.inputs,
            result.inputs,
            result.state.head.number if result.state.head else None,
            0,
            0,
            0,
            open_windows=sum(len(m.windows) for m in result.state.domain.markets.values()),
        )
        await _copy(scratch, redis, keys, done, report, redis_timeout_s)
    finally:
        await scratch.aclose()
    log.warning("redis_recovered", namespace=namespace, message=report.message())
    return report


async def _copy(
    scratch: Any,  # aioredis.Redis; its replies are typed as unions redis-py cannot narrow
    redis: aioredis.Redis,
    keys: StoreLayout,
    delivered: set[str],
    report: RecoveryReport,
    redis_timeout_s: float,
) -> None:
    """Every key of `scratch` into `redis` in one transaction, the checkpoint last."""
    pipe: Any = redis.pipeline(transaction=True)
    checkpoint = await scratch.get(keys.checkpoint)
    assert checkpoint is not None, "the replay commits a checkpoint"
    async for raw_key in scratch.scan_iter(count=_COPY_BATCH):
        key = raw_key.decode()
        if key == keys.checkpoint:
            continue
        kind = (await scratch.type(raw_key)).decode()
        ttl_ms = await scratch.pttl(raw_key)
        if kind == "list":
            items = await scratch.lrange(raw_key, 0, -1)
            if key in CONSUMED_QUEUES:
                epochs = [int(m.group(1)) for i in items if (m := _EPOCH_ID.search(i))]
                low, high = (min(epochs), max(epochs)) if epochs else (None, None)
                report.skipped_queues[key] = (len(items), low, high)
                continue
            pipe.rpush(raw_key, *items)
        elif kind == "string":
            pipe.set(raw_key, await scratch.get(raw_key))
        elif kind == "hash":
            fields = await scratch.hgetall(raw_key)
            if key == keys.outbox:
                kept = {f: v for f, v in fields.items() if f.decode() not in delivered}
                report.delivered += len(fields) - len(kept)
                report.requeued += len(kept)
                fields = kept
            if fields:
                pipe.hset(raw_key, mapping=fields)
        elif kind == "set":
            pipe.sadd(raw_key, *await scratch.smembers(raw_key))
        elif kind == "zset":
            rows = await scratch.zrange(raw_key, 0, -1, withscores=True)
            if key == keys.outbox_pending:
                rows = [(m, s) for m, s in rows if m.decode() not in delivered]
            if rows:
                pipe.zadd(raw_key, dict(rows))
        else:  # the core writes no other type
            raise AssertionError(f"recovery: key {key} of type {kind}")
        if ttl_ms > 0:
            pipe.pexpire(raw_key, ttl_ms)
        report.keys += 1
    pipe.set(keys.checkpoint, checkpoint)
    report.keys += 1
    with anyio.fail_after(max(redis_timeout_s, 60.0)):
        await pipe.execute()

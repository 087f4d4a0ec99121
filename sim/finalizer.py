"""The finalizer actor: consumes `finalizerQueue` and writes the eligibility keys of the
reference (what the real finalizer does with the collector's batches).

Per batch item: every submission key counts for its slot on the market's current day
(`EligibleSlotSubmissionsKey.<lc>.<day>.<slot>`, TTL 3 days), per epoch
(`EligibleSlotSubmissionByEpochKey.<lc>.<day>.<epoch>` hash slot -> count), and a slot that
reaches the daily quota joins `EligibleNodeByDayKey.<lc>.<day>`. On an EVM chain, a
`on_batch(item)` callback puts the batch on chain.

What it consumed is kept as digests (item digests, per-epoch batch ids and a multiset digest
of the keys), so a long run's checks do not hold every batch in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import anyio
import redis.asyncio as aioredis

from seqcollector.core.batching import parse_member
from seqcollector.runtime.executor import redis_client
from sim.keysum import KeySum, item_digest
from sim.spawned import Spawned

ELIGIBLE_TTL_S = 3 * 24 * 3600
DRAIN_COUNT = 500
OnBatch = Callable[[dict[str, Any]], Awaitable[None]]
Epoch = tuple[str, int]


class Finalizer:
    def __init__(
        self, redis: aioredis.Redis, daily_quota: int = 1000, on_batch: OnBatch | None = None
    ) -> None:
        self.redis = redis
        self.daily_quota = daily_quota
        self.on_batch = on_batch
        self.consumed: Counter[str] = Counter()  # item digests
        self.batch_ids: dict[Epoch, list[int]] = {}
        self.keys: dict[Epoch, KeySum] = {}
        self.misplaced: list[str] = []  # keys under the wrong project, or unsorted
        self._ttl_set: set[tuple[str, int, int]] = set()

    async def drain(self) -> int:
        """Consume everything queued now (FIFO: the collector LPUSHes, we RPOP), `DRAIN_COUNT`
        items at a time: each lot's eligibility counts are written in one pipeline."""
        consumed = 0
        while raws := await self.redis.rpop("finalizerQueue", DRAIN_COUNT):
            items = [self.record(r.decode() if isinstance(r, bytes) else str(r)) for r in raws]
            await self._count(items)
            if self.on_batch is not None:
                for item in items:
                    await self.on_batch(item)
            consumed += len(items)
        return consumed

    def record(self, text: str) -> dict[str, Any]:
        """Note an item (consumed, or found still queued at the end) -> the item."""
        item: dict[str, Any] = json.loads(text)
        epoch = (str(item["DataMarketAddress"]).lower(), int(item["EpochID"]))
        self.consumed[item_digest(text)] += 1
        self.batch_ids.setdefault(epoch, []).append(int(item["BatchID"]))
        keys = self.keys.setdefault(epoch, KeySum())
        for project, members in item["Batch"].items():
            if members != sorted(members) or any(
                (parse_member(m) or ("", 0))[0] != project for m in members
            ):
                self.misplaced.append(f"epoch {epoch[1]} project {project}")
            for member in members:
                keys.add(member)
        return item

    async def _count(self, items: list[dict[str, Any]]) -> None:
        per_slot: Counter[tuple[str, int, int]] = Counter()  # (market, day, slot)
        per_epoch: dict[tuple[str, int, int], Counter[str]] = {}  # (market, day, epoch)
        days: dict[str, int] = {}
        for item in items:
            market, epoch = str(item["DataMarketAddress"]).lower(), int(item["EpochID"])
            if market not in days:
                raw = await self.redis.get(f"CurrentDayKey.{market}")
                days[market] = int(raw) if raw is not None else 1
            day = days[market]
            for keys in item["Batch"].values():
                for key in keys:
                    slot = int(key.split(".")[3])
                    per_slot[(market, day, slot)] += 1
                    per_epoch.setdefault((market, day, epoch), Counter())[str(slot)] += 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for (market, day, slot), n in per_slot.items():
                pipe.incrby(f"EligibleSlotSubmissionsKey.{market}.{day}.{slot}", n)
            for (market, day, epoch), counts in per_epoch.items():
                pipe.hset(
                    f"EligibleSlotSubmissionByEpochKey.{market}.{day}.{epoch}", mapping=dict(counts)
                )
            totals = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for (market, day, slot), total in zip(per_slot, totals, strict=False):
                key = f"EligibleSlotSubmissionsKey.{market}.{day}.{slot}"
                if (market, day, slot) not in self._ttl_set:  # a TTL once per key is enough
                    self._ttl_set.add((market, day, slot))
                    pipe.expire(key, ELIGIBLE_TTL_S)
                if int(total) >= self.daily_quota:
                    pipe.sadd(f"EligibleNodeByDayKey.{market}.{day}", slot)
            await pipe.execute()


class FinalizerProcess(Spawned):
    """The finalizer in a process of its own, as in production (load runs, a real Redis):
    it drains the queue every `interval_s` while the collector runs; `finish()` drains what
    is left, stops it and returns a `Finalizer` holding what it consumed, for the checks."""

    def __init__(self, redis_url: str, daily_quota: int = 1000, interval_s: float = 0.01):
        super().__init__("finalizer", _finalizer_main, redis_url, daily_quota, interval_s)
        self._daily_quota = daily_quota

    def finish(self, redis: aioredis.Redis, timeout_s: float = 120.0) -> Finalizer:
        """Stop the child once it has drained the queue -> what it consumed."""
        self.send("finish")
        done = Finalizer(redis, self._daily_quota)
        done.consumed, done.batch_ids, done.keys, done.misplaced = self.receive(timeout_s)
        return done


def _finalizer_main(redis_url: str, daily_quota: int, interval_s: float, conn: Connection) -> None:
    async def run() -> None:
        redis = redis_client(redis_url)
        finalizer = Finalizer(redis, daily_quota)
        while not conn.poll():
            if not await finalizer.drain():
                await anyio.sleep(interval_s)
        await finalizer.drain()
        await redis.aclose()
        conn.send((finalizer.consumed, finalizer.batch_ids, finalizer.keys, finalizer.misplaced))

    anyio.run(run)

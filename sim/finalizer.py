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
from typing import Any

import redis.asyncio as aioredis

from seqcollector.core.batching import parse_member
from sim.keysum import KeySum, item_digest

ELIGIBLE_TTL_S = 3 * 24 * 3600
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

    async def drain(self) -> int:
        """Consume everything queued now (FIFO: the collector LPUSHes, we RPOP)."""
        n = 0
        while (raw := await self.redis.rpop("finalizerQueue")) is not None:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            self.record(text)
            await self._finalize(json.loads(text))
            n += 1
        return n

    def record(self, text: str) -> None:
        """Note an item (consumed, or found still queued at the end)."""
        item = json.loads(text)
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

    async def _finalize(self, item: dict[str, Any]) -> None:
        market = str(item["DataMarketAddress"]).lower()
        epoch = int(item["EpochID"])
        day_raw = await self.redis.get(f"CurrentDayKey.{market}")
        day = int(day_raw) if day_raw is not None else 1
        slots = [int(k.split(".")[3]) for keys in item["Batch"].values() for k in keys]
        async with self.redis.pipeline(transaction=False) as pipe:
            for slot in slots:
                pipe.incr(f"EligibleSlotSubmissionsKey.{market}.{day}.{slot}")
                pipe.expire(f"EligibleSlotSubmissionsKey.{market}.{day}.{slot}", ELIGIBLE_TTL_S)
                pipe.hincrby(
                    f"EligibleSlotSubmissionByEpochKey.{market}.{day}.{epoch}", str(slot), 1
                )
            counts = await pipe.execute()
        reached = [
            s for s, c in zip(slots, counts[0::3], strict=True) if int(c) >= self.daily_quota
        ]
        if reached:
            await self.redis.sadd(f"EligibleNodeByDayKey.{market}.{day}", *reached)
        if self.on_batch is not None:
            await self.on_batch(item)

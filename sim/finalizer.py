"""The finalizer actor: consumes `finalizerQueue` and writes the eligibility keys of the
reference (what the real finalizer does with the collector's batches).

Per batch item: every submission key counts for its slot on the market's current day
(`EligibleSlotSubmissionsKey.<lc>.<day>.<slot>`, TTL 3 days), per epoch
(`EligibleSlotSubmissionByEpochKey.<lc>.<day>.<epoch>` hash slot -> count), and a slot that
reaches the daily quota joins `EligibleNodeByDayKey.<lc>.<day>`. On an EVM chain, a
`submit(market, epoch, cid)` callback puts the batch on chain.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

ELIGIBLE_TTL_S = 3 * 24 * 3600
OnBatch = Callable[[dict[str, Any]], Awaitable[None]]


class Finalizer:
    def __init__(
        self, redis: aioredis.Redis, daily_quota: int = 1000, on_batch: OnBatch | None = None
    ):
        self.redis = redis
        self.daily_quota = daily_quota
        self.on_batch = on_batch
        self.consumed: list[str] = []  # every item, in consumption order

    async def drain(self) -> int:
        """Consume everything queued now (FIFO: the collector LPUSHes, we RPOP)."""
        n = 0
        while (raw := await self.redis.rpop("finalizerQueue")) is not None:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            self.consumed.append(text)
            await self._finalize(json.loads(text))
            n += 1
        return n

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

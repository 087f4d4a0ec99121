"""The finalizer actor: consumes `finalizerQueue` and writes the eligibility keys as the
production finalizer does with the collector's batches (powerloom-interfaces.md, "Redis
written by the finalizer").

Per batch item, per project, the submissions are judged by their snapshot CID (read from the
value under each submission key, one MGET per lot): the project's most frequent CID (ties:
the smallest) is chosen when at least two submissions agree on it, and the submissions with
another CID are discarded (`DiscardedSubmissionKey.<lc>.<day>.<epoch>`, hash project -> JSON
{MostFrequentSnapshotCID, DiscardedSubmissionCount, DiscardedSubmissions{slot: [cid]}}). With
no agreement, or no readable value (the simulation's snapshotters mostly sign distinct CIDs,
load runs write no values), every submission is kept. Each kept submission counts for its
slot on the market's day: `EligibleSlotSubmissionsKey.<lc>.<day>.<slot>` (INCRBY),
`EligibleSlotSubmissionByEpochKey.<lc>.<day>.<epoch>` (HINCRBY slot), and a slot whose count
reaches the daily quota joins `EligibleNodeByDayKey.<lc>.<day>`; every key with a TTL of 3
days. The day is the production finalizer's FetchCurrentDay, when the batch is finalized:
`CurrentDayKey.<lc>`, else `day_of(market)` (the contract's dayCounter in EVM mode), else 1.
On an EVM chain, a `on_batch(item)` callback puts the batch on chain.

What it consumed is kept as digests (item digests, per-epoch batch ids and a multiset digest
of the keys), so a long run's checks do not hold every batch in memory; what it counted is
kept per (market, day) for the rewards oracle: `counted` (slot -> kept submissions) and
`eligible` (the slots that reached the quota).
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
DayOf = Callable[[str], Awaitable[int]]  # lowercase market -> its current day
Epoch = tuple[str, int]
MarketDay = tuple[str, int]  # (lowercase market, day)
# what a finalizer in its own process sends back for the checks
FINDINGS = ("consumed", "batch_ids", "keys", "misplaced", "counted", "eligible", "discarded")


def snapshot_cid(value: bytes | str | None) -> str | None:
    """The snapshot CID of a stored submission `<uuid>.<protobuf JSON>` (under `request`, as
    the dequeuer writes it, or at the top level, as the simulation does); None if absent or
    unreadable."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    _, _, data = text.partition(".")
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    request = parsed.get("request")
    cid = request.get("snapshotCid") if isinstance(request, dict) else None
    cid = cid if isinstance(cid, str) else parsed.get("snapshotCid")
    return cid if isinstance(cid, str) and cid else None


def judge(keys: list[str], cids: dict[str, str | None]) -> tuple[str | None, list[str]]:
    """(chosen CID or None, discarded keys) for one project's submission keys in a batch."""
    votes = Counter(cid for key in keys if (cid := cids.get(key)) is not None)
    if not votes:
        return None, []
    chosen, n = min(votes.items(), key=lambda vote: (-vote[1], vote[0]))
    if n < 2:
        return None, []
    return chosen, [k for k in keys if cids.get(k) not in (None, chosen)]


class Finalizer:
    def __init__(
        self,
        redis: aioredis.Redis,
        daily_quota: int = 1000,
        on_batch: OnBatch | None = None,
        day_of: DayOf | None = None,
    ) -> None:
        self.redis = redis
        self.daily_quota = daily_quota
        self.on_batch = on_batch
        self.day_of = day_of
        self.consumed: Counter[str] = Counter()  # item digests
        self.batch_ids: dict[Epoch, list[int]] = {}
        self.keys: dict[Epoch, KeySum] = {}
        self.misplaced: list[str] = []  # keys under the wrong project, or unsorted
        self.counted: dict[MarketDay, Counter[int]] = {}  # slot -> kept submissions
        self.eligible: dict[MarketDay, set[int]] = {}  # slots that reached the quota
        self.discarded: Counter[MarketDay] = Counter()  # submissions discarded
        self._expiring: set[str] = set()  # keys given their TTL (once per key is enough)

    async def drain(self) -> int:
        """Consume everything queued now (FIFO: the collector LPUSHes, we RPOP), `DRAIN_COUNT`
        items at a time: each lot's eligibility keys are written in two pipelines."""
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

    async def current_day(self, market: str) -> int:
        """FetchCurrentDay: `CurrentDayKey.<lc>`, else `day_of(market)`, else 1."""
        raw = await self.redis.get(f"CurrentDayKey.{market}")
        if raw is not None:
            return int(raw)
        return await self.day_of(market) if self.day_of is not None else 1

    async def _cids(self, items: list[dict[str, Any]]) -> dict[str, str | None]:
        keys = [k for item in items for ks in item["Batch"].values() for k in ks]
        values = await self.redis.mget(keys) if keys else []
        return {key: snapshot_cid(value) for key, value in zip(keys, values, strict=True)}

    async def _count(self, items: list[dict[str, Any]]) -> None:
        per_slot: Counter[tuple[str, int, int]] = Counter()  # (market, day, slot)
        per_epoch: dict[tuple[str, int, int], Counter[str]] = {}  # (market, day, epoch)
        discards: dict[tuple[str, int, int], dict[str, str]] = {}  # -> project -> JSON
        days: dict[str, int] = {}
        cids = await self._cids(items)
        for item in items:
            market, epoch = str(item["DataMarketAddress"]).lower(), int(item["EpochID"])
            if market not in days:
                days[market] = await self.current_day(market)
            day = days[market]
            for project, keys in sorted(item["Batch"].items()):
                chosen, dropped = judge(keys, cids)
                if dropped:
                    discards.setdefault((market, day, epoch), {})[project] = _discard_entry(
                        chosen, dropped, cids
                    )
                    self.discarded[(market, day)] += len(dropped)
                for key in keys:
                    if key in dropped:
                        continue
                    slot = int(key.split(".")[3])
                    per_slot[(market, day, slot)] += 1
                    per_epoch.setdefault((market, day, epoch), Counter())[str(slot)] += 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for (market, day, slot), n in per_slot.items():
                pipe.incrby(f"EligibleSlotSubmissionsKey.{market}.{day}.{slot}", n)
            for (market, day, epoch), counts in per_epoch.items():
                key = f"EligibleSlotSubmissionByEpochKey.{market}.{day}.{epoch}"
                for slot_field, n in counts.items():
                    pipe.hincrby(key, slot_field, n)
            for (market, day, epoch), entries in discards.items():
                for project, entry in entries.items():
                    pipe.hset(f"DiscardedSubmissionKey.{market}.{day}.{epoch}", project, entry)
            totals = (await pipe.execute())[: len(per_slot)]
        touched = [f"EligibleSlotSubmissionsKey.{m}.{d}.{s}" for m, d, s in per_slot]
        touched += [f"EligibleSlotSubmissionByEpochKey.{m}.{d}.{e}" for m, d, e in per_epoch]
        touched += [f"DiscardedSubmissionKey.{m}.{d}.{e}" for m, d, e in discards]
        async with self.redis.pipeline(transaction=False) as pipe:
            for (market, day, slot), total in zip(per_slot, totals, strict=True):
                self.counted.setdefault((market, day), Counter())[slot] += per_slot[
                    (market, day, slot)
                ]
                if int(total) >= self.daily_quota:
                    key = f"EligibleNodeByDayKey.{market}.{day}"
                    pipe.sadd(key, slot)
                    touched.append(key)
                    self.eligible.setdefault((market, day), set()).add(slot)
            for key in touched:
                if key not in self._expiring:
                    self._expiring.add(key)
                    pipe.expire(key, ELIGIBLE_TTL_S)
            await pipe.execute()


def _discard_entry(chosen: str | None, dropped: list[str], cids: dict[str, str | None]) -> str:
    """The finalizer's JSON for a project's discarded submissions (Go field names)."""
    by_slot: dict[str, list[str]] = {}
    for key in dropped:
        by_slot.setdefault(key.split(".")[3], []).append(str(cids[key]))
    return json.dumps(
        {
            "MostFrequentSnapshotCID": chosen,
            "DiscardedSubmissionCount": len(dropped),
            "DiscardedSubmissions": by_slot,
        },
        separators=(",", ":"),
    )


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
        for name, value in zip(FINDINGS, self.receive(timeout_s), strict=True):
            setattr(done, name, value)
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
        conn.send(tuple(getattr(finalizer, name) for name in FINDINGS))

    anyio.run(run)

"""The read API's Redis reads, each in one round trip (Go: one GET per day and per key, in
goroutines), decoded by `stored`.

Redis alone answers (no chain): where Go falls back to the ProtocolState contract on a
cache miss (A5: `FetchCurrentDay` -> `dayCounter`, `EligibleSlotSubmissionsKey` ->
`slotSubmissionCount`), a missing current day is Go's 400 "Failed to fetch current day" and
a missing eligible count is 0 (what Go answers when its chain call fails). The collector
writes `CurrentDayKey.<lc>` at every batch preparation (`core/days.py`), as Go does.

A Redis error (a key of another type: WRONGTYPE) is a 500 naming the key; Redis not
answering within TIMEOUT_REDIS_OPERATION is a 503.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seqcollector.api import stored
from seqcollector.api.errors import ApiError
from seqcollector.api.models import (
    DailySubmissions,
    DiscardedSubmissionByDayResponse,
    DiscardedSubmissionDetailsResponse,
    EligibleNodes,
    EligibleSubmissionCounts,
    SubmissionDetails,
)
from seqcollector.core import keys

T = TypeVar("T")
MGET_CHUNK = 1_000  # keys per MGET, so a long pastDays stays in bounded replies
DISCARDED_BY_EPOCH_LIMIT = 50  # Go's cap on /discardedSubmissionsByEpoch


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def slot_sort_key(slot: str) -> tuple[int, int, str]:
    """Slot IDs in numeric order, anything not a number after them in text order."""
    return (0, int(slot), "") if slot.isascii() and slot.isdigit() else (1, 0, slot)


class Reader:
    """Reads for one market-independent Redis client; `timeout` bounds each round trip."""

    def __init__(self, redis: aioredis.Redis, timeout: float) -> None:
        self.redis = redis
        self.timeout = timeout

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        try:
            yield
        except ResponseError as exc:
            raise ApiError(500, f"Internal Server Error: Redis refused {what}: {exc}") from None
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise ApiError(
                503,
                f"Redis unavailable while reading {what}: {type(exc).__name__}: {exc}; "
                "retry once Redis answers",
            ) from None
        except RedisError as exc:
            raise ApiError(500, f"Internal Server Error: Redis: {exc} ({what})") from None

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        with self._failures(what):
            with anyio.fail_after(self.timeout):
                return await fn()

    async def _pipeline(self, what: str, build: Callable[[Any], None]) -> list[Any]:
        async def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            return list(await pipe.execute())

        return await self._call(what, run)

    async def get(self, key: str) -> bytes | None:
        return _bytes(await self._call(key, lambda: self.redis.get(key)))

    async def mget(self, names: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for start in range(0, len(names), MGET_CHUNK):
            chunk = list(names[start : start + MGET_CHUNK])
            values: list[Any] = await self._call(
                f"{chunk[0]} and others", functools.partial(self.redis.mget, chunk)
            )
            out.extend(_bytes(v) for v in values)
        return out

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        found = await self._call(key, lambda: self.redis.hgetall(key))
        return {_bytes(k) or b"": _bytes(v) or b"" for k, v in found.items()}

    # ---------------------------------------------------------------------- per path

    async def current_day(self, lc: str) -> int:
        key = keys.current_day(lc)
        day = stored.stored_int(key, await self.get(key))
        if day is None:
            raise ApiError(400, "Failed to fetch current day")
        return day

    async def daily_submissions(
        self, lc: str, slot: int, days: Sequence[int]
    ) -> list[DailySubmissions]:
        eligible = [keys.eligible_slot_submissions(lc, d, slot) for d in days]
        total = [keys.slot_submissions(lc, d, slot) for d in days]
        values = await self.mget([*eligible, *total])
        n = len(days)
        return [
            DailySubmissions(
                day=d,
                eligibleSubmissions=stored.stored_int(eligible[i], values[i]) or 0,
                totalSubmissions=stored.stored_int(total[i], values[n + i]) or 0,
            )
            for i, d in enumerate(days)
        ]

    async def eligible_nodes(
        self, lc: str, days: Sequence[int], with_slots: bool
    ) -> list[EligibleNodes]:
        names = [keys.eligible_nodes_by_day(lc, d) for d in days]

        def build(pipe: Any) -> None:
            for name in names:
                (pipe.smembers if with_slots else pipe.scard)(name)

        found = await self._pipeline(f"{names[0]} and others" if names else "", build)
        out = []
        for day, value in zip(days, found, strict=True):
            if with_slots:
                slots = sorted((_text(v) for v in value), key=slot_sort_key)
                out.append(EligibleNodes(day=day, eligibleNodesCount=len(slots), slotIDs=slots))
            else:
                out.append(EligibleNodes(day=day, eligibleNodesCount=int(value), slotIDs=[]))
        return out

    async def batch_count(self, lc: str, epoch: int) -> int | None:
        key = keys.batch_count(lc, epoch)
        return stored.stored_int(key, await self.get(key))

    async def epoch_submissions(self, lc: str, epoch: int) -> list[SubmissionDetails]:
        found = await self.hgetall(keys.epoch_submissions(lc, epoch))
        out = []
        for sid in sorted(found):  # bytewise, as Go's sort of the IDs
            data = stored.epoch_submission(found[sid])
            if data is not None:
                out.append(SubmissionDetails(submissionID=_text(sid), submissionData=data))
        return out

    async def eligible_slot_counts(
        self, lc: str, day: int, epoch: int
    ) -> list[EligibleSubmissionCounts]:
        key = keys.eligible_slot_submissions_by_epoch(lc, day, epoch)
        counts = []
        for slot, count in (await self.hgetall(key)).items():
            try:  # Go skips an entry whose slot or count is no integer: so do we
                pair = (stored.stored_int(key, slot), stored.stored_int(key, count))
            except ApiError:
                continue
            counts.append(EligibleSubmissionCounts(slotID=pair[0] or 0, count=pair[1] or 0))
        return sorted(counts, key=lambda c: c.slotID)

    async def discarded_by_epoch(
        self, lc: str, day: int, epoch: int
    ) -> list[DiscardedSubmissionDetailsResponse]:
        found = await self.hgetall(keys.discarded_submissions_by_epoch(lc, day, epoch))
        out = []
        for project in sorted(found):
            details = stored.discarded_by_epoch(found[project])
            if details is not None:
                out.append(DiscardedSubmissionDetailsResponse(_text(project), details))
                if len(out) == DISCARDED_BY_EPOCH_LIMIT:
                    break
        return out

    async def discarded_by_day(
        self, lc: str, day: int, slot: int
    ) -> tuple[bool, list[DiscardedSubmissionByDayResponse] | None]:
        """Whether the day's hash has entries, and the slot's projects (None: no entry)."""
        key = keys.discarded_submissions_by_day(lc, day)
        found = await self.hgetall(key)
        if not found:
            return False, None
        raw = found.get(str(slot).encode())
        if not raw:
            return True, None
        return True, stored.discarded_by_day(key, str(slot), raw)

    async def timestamp_and_version(self, key: str, lc: str, slot: int) -> tuple[int | None, str]:
        ts_raw, version = await self.mget([key, keys.node_version(lc, slot)])
        return stored.stored_int(key, ts_raw), _text(version) if version else "v0.0.0"

    async def active_nodes(self, lc: str, epoch: int) -> int:
        key = keys.active_snapshotters(lc, epoch)
        return int(await self._call(key, lambda: self.redis.scard(key)))

    async def node_version(self, lc: str, slot: int) -> str | None:
        value = await self.get(keys.node_version(lc, slot))
        return _text(value) if value else None

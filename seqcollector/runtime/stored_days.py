"""At start: what Redis holds of each market's days (`LastKnownDayKey`, the rollover markers
and their details), as `StoredDays` inputs for the core. On a switch from the Go collector
this carries its last known day and its unfired markers over, so no day loses its final
reward update; the core ignores them for a market it already keeps a day record of.

One pipeline for the days and marker sets, one for the markers' details."""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog

from seqcollector.core import keys
from seqcollector.core.inputs import StoredDays

log = structlog.get_logger(__name__)


def _int(value: object) -> int | None:
    try:
        return int(str(value.decode() if isinstance(value, bytes) else value), 10)
    except (TypeError, ValueError):
        return None


async def read_stored_days(redis: aioredis.Redis, markets: Sequence[str]) -> list[StoredDays]:
    """One `StoredDays` per market (lowercase addresses); a marker whose details are
    missing or malformed is logged and left out."""
    async with redis.pipeline(transaction=False) as pipe:
        for lc in markets:
            pipe.get(keys.last_known_day(lc))
            pipe.smembers(keys.rollover_marker_set(lc))
        replies = await pipe.execute()
    members: list[tuple[str, int]] = []
    days: dict[str, int | None] = {}
    for i, lc in enumerate(markets):
        days[lc] = _int(replies[2 * i])
        for raw in replies[2 * i + 1]:
            epoch = _int(raw)
            if epoch is not None:
                members.append((lc, epoch))
    async with redis.pipeline(transaction=False) as pipe:
        for lc, epoch in members:
            pipe.get(keys.rollover_marker_details(lc, epoch))
        details = await pipe.execute() if members else []
    markers: dict[str, list[tuple[int, int, int]]] = {lc: [] for lc in markets}
    for (lc, epoch), raw in zip(members, details, strict=True):
        try:
            doc = json.loads(raw)
            marker = (int(doc["LastKnownDay"]), int(doc["CurrentEpoch"]), int(doc["BufferEpoch"]))
        except (TypeError, ValueError, KeyError):
            log.warning("stored_marker_unreadable", market=lc, epoch=epoch, details=str(raw)[:120])
            continue
        markers[lc].append(marker)
    found = [StoredDays(lc, days[lc], sorted(markers[lc])) for lc in markets]
    for s in found:
        if s.last_known_day is not None or s.markers:
            log.info(
                "stored_days_read",
                market=s.market,
                last_known_day=s.last_known_day,
                markers=len(s.markers),
            )
    return found

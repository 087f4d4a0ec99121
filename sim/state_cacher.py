"""The production state cacher's keys that the collector's rewards read, written by the world.

In production a protocol-state cacher copies contract state into Redis
(powerloom-interfaces.md, "Redis written upstream"): the global `TotalNodesCount` (number of
registered slots; P1 sends slots 1..N), `ProtocolState.<EIP55>.EpochsInADay` and the field
`<EIP55>` of the hash `DailySnapshotQuotaTableKey`. The simulation has no cacher: the world
calls `write_state_cache` once after deploying (before the collector starts).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis

from seqcollector.core.addresses import checksum

TOTAL_NODES_KEY = "TotalNodesCount"
DAILY_QUOTA_TABLE_KEY = "DailySnapshotQuotaTableKey"


def epochs_in_a_day_key(market: str) -> str:
    return f"ProtocolState.{checksum(market)}.EpochsInADay"


async def write_state_cache(
    redis: aioredis.Redis,
    total_nodes: int,
    epochs_in_a_day: Mapping[str, int] | None = None,
    daily_quota: Mapping[str, int] | None = None,
) -> None:
    """SET `TotalNodesCount` = `total_nodes` (the slots registered: 1..total_nodes), and for
    each market given (any case) its EpochsInADay key and DailySnapshotQuotaTableKey field,
    in one round trip. Like the cacher's, these keys have no TTL."""
    if total_nodes < 0:
        raise ValueError(f"TotalNodesCount must be >= 0, got {total_nodes}")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(TOTAL_NODES_KEY, total_nodes)
        for market, epochs in (epochs_in_a_day or {}).items():
            pipe.set(epochs_in_a_day_key(market), epochs)
        for market, quota in (daily_quota or {}).items():
            pipe.hset(DAILY_QUOTA_TABLE_KEY, checksum(market), quota)
        await pipe.execute()

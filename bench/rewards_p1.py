"""P1, the periodic reward update, for 10,000 slots: the reads it needs, seqcollector's
pipelined `EligibilityReader` beside the Go pattern (GET TotalNodesCount, then one GET per
slot, each awaited), same redis-server, same keys, same run. Figures: Redis round trips
and wall time (median of `repeats`), and that both read the same counts.

    python -m bench.rewards_p1 [--slots N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
import redis.asyncio as aioredis

from seqcollector.core.effects import QueryNodeCounts
from seqcollector.runtime.reward_answers import EligibilityReader
from seqcollector.runtime.roundtrips import RoundTripCounter, counting_redis
from sim.redis_server import RedisServer

LC = "0x0c2e22fe7526faef28e7a58c84f8723defce200c"
DAY = 3


async def _seed(url: str, slots: int) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await client.set("TotalNodesCount", str(slots))
    async with client.pipeline(transaction=False) as pipe:
        for slot in range(1, slots + 1):
            if slot % 4:  # a quarter of the slots have no count that day
                pipe.set(f"EligibleSlotSubmissionsKey.{LC}.{DAY}.{slot}", str(slot % 97))
        await pipe.execute()
    await client.aclose()


async def _go_pattern(client: aioredis.Redis) -> tuple[list[int], list[int]]:
    """As the Go collector: N = GET TotalNodesCount, then GET each slot's count in turn."""
    total = int(await client.get("TotalNodesCount"))
    slots, counts = [], []
    for slot in range(1, total + 1):
        value = await client.get(f"EligibleSlotSubmissionsKey.{LC}.{DAY}.{slot}")
        if value is not None:
            slots.append(slot)
            counts.append(int(value))
    return slots, counts


async def _measure(url: str, repeats: int) -> dict[str, float]:
    ours_client, ours_trips = counting_redis(url)
    go_client, go_trips = counting_redis(url)
    reader = EligibilityReader(ours_client)
    query = QueryNodeCounts(1, LC, 50, DAY)

    async def timed(
        counter: RoundTripCounter, run: object
    ) -> tuple[float, int, tuple[list[int], list[int]]]:
        times, trips, result = [], 0, ([], [])
        for _ in range(repeats):
            counter.reset()
            started = time.perf_counter()
            result = await run()  # type: ignore[operator]
            times.append(time.perf_counter() - started)
            trips = counter.count
        return statistics.median(times) * 1000, trips, result

    async def ours() -> tuple[list[int], list[int]]:
        answer = await reader.answer(query)
        return answer.slots, answer.counts  # type: ignore[union-attr]

    ours_ms, ours_rt, ours_result = await timed(ours_trips, ours)
    go_ms, go_rt, go_result = await timed(go_trips, lambda: _go_pattern(go_client))
    await ours_client.aclose()
    await go_client.aclose()
    assert ours_result == go_result, "the two read different counts"
    return {
        "slots with a count": float(len(ours_result[0])),
        "seqcollector ms": ours_ms,
        "seqcollector round trips": float(ours_rt),
        "go-pattern ms": go_ms,
        "go-pattern round trips": float(go_rt),
        "speed-up x": go_ms / ours_ms,
    }


def run(url: str, slots: int = 10_000, repeats: int = 5) -> dict[str, float]:
    async def main() -> dict[str, float]:
        await _seed(url, slots)
        return await _measure(url, repeats)

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with RedisServer() as server:
        figures = run(server.url, args.slots, args.repeats)
    for name, value in figures.items():
        print(f"{name:>28}: {value:,.1f}")


if __name__ == "__main__":
    main()

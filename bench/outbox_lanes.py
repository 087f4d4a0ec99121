"""Delivery of reward updates: one at a time against CONCURRENT_SUBMISSION_COUNT_UPDATES in
flight (the outbox's `/submitUpdateRewards` lane), same run, same relayer.

1,000 `submitUpdateRewards` entries are committed to a private redis-server, then delivered
to a loopback relayer that takes 20 ms per answer (`sim.relayer.Relayer(stall_s=0.02)`),
with the lane's concurrency 1 and then N. Figures: wall time and entries per second.

    python -m bench.outbox_lanes [--entries N] [--concurrency N] [--delay-ms MS]
"""

from __future__ import annotations

import argparse
import time

import anyio

from seqcollector.core.effects import Effect, RelayerCall
from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.outbox import OutboxDispatcher
from sim.redis_server import RedisServer
from sim.relayer import Relayer

NS = "bench"


def chunk(i: int) -> RelayerCall:
    body: dict[str, object] = {
        "dataMarketAddress": "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c",
        "slotIDs": list(range(50 * i + 1, 50 * i + 51)),
        "submissionsList": [5] * 50,
        "day": 1,
        "eligibleNodes": 0,
    }
    return RelayerCall(f"submitUpdateRewards:1:{i}", "/submitUpdateRewards", body)


async def deliver(url: str, relayer: Relayer, entries: int, concurrency: int) -> float:
    """Commit `entries` chunks, deliver them all -> seconds taken by the delivery."""
    client = redis_client(url)
    try:
        await client.flushall()
        executor = RedisExecutor(client, NS)
        await executor.load()
        effects: list[Effect] = [chunk(i) for i in range(entries)]
        for seq, start in enumerate(range(0, entries, 100), start=1):
            assert await executor.commit(seq, seq, effects[start : start + 100], b"s")
        dispatcher = OutboxDispatcher(
            client, NS, relayer.url, "t", "", reward_concurrency=concurrency
        )
        async with dispatcher:
            started = time.perf_counter()
            delivered = 0
            while delivered < entries:
                delivered += await dispatcher.deliver_pending(limit=entries)
            return time.perf_counter() - started
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    with RedisServer() as server, Relayer(stall_s=args.delay_ms / 1000) as relayer:
        for concurrency in (1, args.concurrency):
            took = anyio.run(deliver, server.url, relayer, args.entries, concurrency)
            print(
                f"{args.entries} reward entries, relayer {args.delay_ms:g} ms per answer, "
                f"{concurrency} in flight: {took:.2f} s ({args.entries / took:,.0f} entries/s)"
            )


if __name__ == "__main__":
    main()

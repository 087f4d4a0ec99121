"""Benchmark (b): one epoch's batch preparation against a real Redis (figures, not a test).

10,000 submission keys over 1,000 projects and 500 slots, spread over the sets of a window
of 10 block hashes. seqcollector: one pipelined read of the sets, the core's batching, one
commit (one EVALSHA of the commit script). Baseline, in the same run on the same server: what the Go
collector does, a round trip per block hash, per set, per submission INCR, per batch push.
"""

from __future__ import annotations

import statistics
import time

import anyio
import redis.asyncio as aioredis

from seqcollector.core import Block, CoreConfig, Log, MarketParams, new_state, step
from seqcollector.core import keys as K
from seqcollector.core.abi import EPOCH_RELEASED
from seqcollector.core.addresses import checksum
from seqcollector.core.batching import finalizer_item, go_json, parse_member, plan_batches
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.core.state import dump_state
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.roundtrips import counting_redis

PS = "0x" + "aa" * 20
MARKET = "0x" + "c3" * 20
WINDOW_BLOCKS = 10
N_KEYS, N_PROJECTS, N_SLOTS, BATCH_SIZE = 10_000, 1_000, 500, 50


def members(epoch: int) -> list[str]:
    out = []
    for i in range(N_KEYS):  # distinct (project, slot) pairs
        project, slot = i % N_PROJECTS, (i // N_PROJECTS) * 50 + i % 50 + 1
        out.append(f"{MARKET}.{epoch}.project{project:04d}.{slot}")
    assert len({(m.split(".")[2], m.split(".")[3]) for m in out}) == N_KEYS
    assert len({m.split(".")[3] for m in out}) == N_SLOTS
    return out


def block_hash(epoch: int, n: int) -> str:
    return "0x" + f"{epoch:08x}{n:056x}"


async def seed(client: aioredis.Redis, epoch: int, first: int) -> list[str]:
    """Write the window's block hashes and the submission sets as the dequeuer does."""
    headers = [block_hash(epoch, first + i) for i in range(WINDOW_BLOCKS)]
    async with client.pipeline(transaction=False) as pipe:
        for i, h in enumerate(headers):
            pipe.set(K.block_hash(first + i), h, ex=1800)
        for j, m in enumerate(members(epoch)):
            pipe.sadd(K.submission_set(MARKET, epoch, headers[j % WINDOW_BLOCKS]), m)
        await pipe.execute()
    return headers


def closed_window(epoch: int, first: int) -> tuple[object, QuerySubmissionSets]:
    """A core state whose window for `epoch` just closed (not timed)."""
    config = CoreConfig(protocol_state=PS, markets=[MARKET], batch_size=BATCH_SIZE)
    state = new_state(config)
    step(state, MarketParams(MARKET, WINDOW_BLOCKS * 2 - 1, 864_000_000, 1000, 10, 1))
    query = None
    for i in range(WINDOW_BLOCKS + 1):
        n = first + i
        parent = block_hash(epoch, n - 1)
        _, effects = step(state, Block(n, block_hash(epoch, n), parent, 1_000_000 + 2 * i))
        if i == 0:
            topics = [EPOCH_RELEASED, "0x" + "00" * 12 + MARKET[2:], "0x" + f"{epoch:064x}"]
            step(state, Log(PS, topics, "0x" + "00" * 96, n, block_hash(epoch, n), 0))
        query = next((e for e in effects if isinstance(e, QuerySubmissionSets)), query)
    assert query is not None and len(query.keys) == WINDOW_BLOCKS
    return state, query


async def ours(url: str, epoch: int, first: int) -> tuple[float, int]:
    client, trips = counting_redis(url)
    await seed(client, epoch, first)
    state, query = closed_window(epoch, first)
    executor = RedisExecutor(client, f"bench:{epoch}")
    await executor.load()
    trips.reset()
    t0 = time.perf_counter()
    answer = await SubmissionSetReader(client).answer(query)
    _, effects = step(state, answer)  # type: ignore[arg-type]
    await executor.commit(1, first + WINDOW_BLOCKS, effects, dump_state(state))  # type: ignore[arg-type]
    elapsed, round_trips = time.perf_counter() - t0, trips.count
    assert await client.llen(K.FINALIZER_QUEUE) >= N_PROJECTS // BATCH_SIZE
    await client.aclose()
    return elapsed, round_trips


async def go_baseline(url: str, epoch: int, first: int) -> tuple[float, int]:
    """The Go collector's pattern: every key its own round trip."""
    client, trips = counting_redis(url)
    await seed(client, epoch, first)
    await client.ping()
    trips.reset()
    t0 = time.perf_counter()
    headers = []
    for n in range(first, first + WINDOW_BLOCKS):
        headers.append((await client.get(K.block_hash(n))).decode())
    found: set[str] = set()
    for h in headers:
        found |= {m.decode() for m in await client.smembers(K.submission_set(MARKET, epoch, h))}
    plan = plan_batches(sorted(found), BATCH_SIZE)
    for key in found:
        parsed = parse_member(key)
        assert parsed is not None
        await client.incr(K.slot_submissions(MARKET, 1, parsed[1]))
    eip55 = checksum(MARKET)
    for batch_id, batch in enumerate(plan.batches, start=1):
        await client.lpush(K.FINALIZER_QUEUE, finalizer_item(eip55, epoch, batch_id, batch))
        await client.set(K.batch_submissions(MARKET, epoch, batch_id), go_json(batch))
    await client.set(K.batch_count(MARKET, epoch), str(len(plan.batches)))
    elapsed, round_trips = time.perf_counter() - t0, trips.count
    await client.aclose()
    return elapsed, round_trips


def run(url: str, repeats: int = 5) -> dict[str, float]:
    async def main() -> dict[str, float]:
        o_t, o_rt, b_t, b_rt = [], [], [], []
        for r in range(repeats):
            t, rt = await ours(url, 100 + r, 10_000 + 100 * r)
            o_t.append(t)
            o_rt.append(rt)
            t, rt = await go_baseline(url, 200 + r, 20_000 + 100 * r)
            b_t.append(t)
            b_rt.append(rt)
        ours_s, base_s = statistics.median(o_t), statistics.median(b_t)
        return {
            "seqcollector ms": ours_s * 1e3,
            "seqcollector round trips": statistics.median(o_rt),
            "go-style baseline ms": base_s * 1e3,
            "go-style round trips": statistics.median(b_rt),
            "speed-up x": base_s / ours_s,
        }

    return anyio.run(main)


if __name__ == "__main__":
    import sys

    from sim.redis_server import RedisServer

    with RedisServer() as server:
        for k, v in run(server.url, int(sys.argv[1]) if len(sys.argv) > 1 else 5).items():
            print(f"{k:26} {v:,.1f}")

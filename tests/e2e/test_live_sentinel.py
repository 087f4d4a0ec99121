"""`seqcollector run` on anvil against a Sentinel group of real processes (a master, two
replicas, three `redis-sentinel`s): the master is killed mid-run, the Sentinels promote a
replica, and the collector follows it (`SEQ_REDIS_URL=redis+sentinel://...`,
`SEQ_REDIS_MIN_REPLICAS=1`). Every epoch is batched exactly once on the new master, and no
relayer call went out for an epoch the new master does not have.

The collector may lose its last commits with the old master (replication is asynchronous):
it then meets `RedisLostSteps`, takes over again from the older checkpoint and redoes them
from the chain, in process (it must never commit on top of the older checkpoint). Should it
exit, the test restarts it as a service manager would, at most 3 times.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import redis
from livekit import MARKETS, CollectorProcess, LiveWorld
from redis.sentinel import Sentinel

from seqcollector.core.addresses import checksum
from sim.anvil import Anvil
from sim.relayer import Relayer
from sim.sentinel_group import MASTER_NAME, SentinelGroup

pytestmark = pytest.mark.anyio
BATCH_SIZE = 2


@pytest.fixture
async def sentinel_world(anvil: Anvil, sentinel_group: SentinelGroup) -> AsyncIterator[LiveWorld]:
    w = LiveWorld(anvil, f"redis://127.0.0.1:{sentinel_group.master_port()}/0")
    w.redis.close()
    sentinel = Sentinel(
        [("127.0.0.1", p) for p in sentinel_group.sentinel_ports],
        socket_timeout=5,
        decode_responses=True,
    )
    w.redis = sentinel.master_for(MASTER_NAME, socket_timeout=5, decode_responses=True)
    await w.deploy(epochs_in_a_day=3)
    yield w
    await w.w3.provider.disconnect()
    w.redis.close()


def _retrying(fn, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    """The dequeuer's side of a failover: retry a write until the new master takes it."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _replicated(world: LiveWorld) -> None:
    replicas = int(world.redis.info("replication")["connected_slaves"])
    assert world.redis.wait(replicas, 1000) >= replicas


async def _release(world: LiveWorld, rounds: int) -> list[tuple[str, int]]:
    released = []
    for _ in range(rounds):
        for market in MARKETS:
            epoch = await world.release(market)
            for slot in range(1, 5):
                _retrying(lambda m=market, e=epoch, s=slot: world.submit(m, e, f"p{s % 2}", s))
            released.append((market, epoch))
        _retrying(lambda: _replicated(world))  # the replicas have the submissions
        world.advance()
    return released


async def test_master_killed_mid_run_every_epoch_once_no_call_for_a_lost_epoch(
    sentinel_world: LiveWorld, sentinel_group: SentinelGroup, relayer: Relayer, tmp_path: Path
) -> None:
    world = sentinel_world
    env = {"SEQ_REDIS_URL": sentinel_group.url, "SEQ_REDIS_MIN_REPLICAS": "1", "BATCH_SIZE": "2"}
    log = tmp_path / "c.log"
    collector = CollectorProcess(world, relayer.url, log, extra_env=env).start()
    restarts = 0
    try:
        released = await _release(world, 2)
        world.wait_for("first epochs", lambda: all(world.batched(m, e) for m, e in released))
        old = sentinel_group.kill_master()  # mid-run: the collector is following the head
        released += await _release(world, 1)  # blocks go on while the Sentinels decide
        new = await anyio.to_thread.run_sync(sentinel_group.wait_for_failover, old)
        assert new != old
        released += await _release(world, 2)

        def all_batched() -> bool:
            nonlocal collector, restarts
            if not collector.alive():  # RedisLostSteps: restarted, as systemd would
                assert "RedisLostSteps" in collector.log() or "behind the seq" in collector.log(), (
                    collector.log()
                )
                restarts += 1
                assert restarts <= 3, collector.log()
                collector = CollectorProcess(world, relayer.url, log, extra_env=env).start()
            return all(_retrying(lambda m=m, e=e: world.batched(m, e)) for m, e in released)

        world.wait_for("every epoch batched after the failover", all_batched, 120)
        world.wait_for(
            "relayer calls",
            lambda: len(relayer.bodies("/submitBatchSize")) >= len(released),
            60,
        )
    finally:
        if collector.alive():
            collector.stop(within_s=20)
    queue = world.queue()
    for market, epoch in released:
        mine = [
            i for i in queue if i["DataMarketAddress"] == checksum(market) and i["EpochID"] == epoch
        ]
        assert mine == world.expected_queue(market, epoch, BATCH_SIZE), (market, epoch)
        assert int(world.redis.get(f"BatchCountKey.{market}.{epoch}")) == len(mine)
    calls = relayer.bodies("/submitBatchSize")
    for call in calls:  # no call for an epoch the new master does not have
        key = f"BatchCountKey.{call['dataMarketAddress'].lower()}.{call['epochID']}"
        assert world.redis.get(key) is not None, call
    for market, epoch in released:
        mine = [
            c for c in calls if c["dataMarketAddress"] == checksum(market) and c["epochID"] == epoch
        ]
        assert len({json.dumps(c, sort_keys=True) for c in mine}) == 1, (market, epoch, mine)


async def test_lost_steps_are_redone_in_process(
    world: LiveWorld, redis_url: str, relayer: Relayer, tmp_path: Path
) -> None:
    """What a failover that lost the last steps leaves (an older checkpoint and state), made
    by hand: the running collector refuses to commit on top (`RedisLostSteps`), gives the
    lease back, takes over again from the older checkpoint and redoes the steps: it keeps
    running and every epoch is batched."""
    collector = CollectorProcess(world, relayer.url, tmp_path / "c.log").start()
    try:
        released = await _release(world, 1)
        world.wait_for("first epochs", lambda: all(world.batched(m, e) for m, e in released))
        store = redis.Redis.from_url(redis_url)  # bytes: the state is binary
        raw = store.mget(["seqcollector:state", "seqcollector:checkpoint"])
        world.advance()  # more steps land on top of the copy
        cp = raw[1]
        world.wait_for("later steps", lambda: store.get("seqcollector:checkpoint") != cp)
        store.mset({"seqcollector:state": raw[0], "seqcollector:checkpoint": raw[1]})
        store.close()
        released += await _release(world, 2)
        world.wait_for(
            "batched after the lost steps",
            lambda: all(world.batched(m, e) for m, e in released),
            60,
        )
        assert collector.alive(), collector.log()
        assert "redis_lost_steps" in collector.log()
    finally:
        collector.stop(within_s=20)

"""Redis Sentinel and replication with real processes: a master, two replicas and three
`redis-sentinel`s on loopback (`sim.sentinel_group`).

- the collector's client (`redis_client` of a `redis+sentinel://` URL) follows a failover;
- the outbox delivers only what SEQ_REDIS_MIN_REPLICAS replicas acknowledged (WAIT): with
  too few replicas nothing is sent, and a failover cannot lose a step whose relayer call
  went out.
"""

from __future__ import annotations

import anyio
import pytest
import redis
from lanekit import LaneRelayer, batch_size, commit

from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.outbox import OutboxDispatcher, ReplicasBehind
from sim.sentinel_group import SentinelGroup

pytestmark = pytest.mark.anyio


async def _retry(what: str, op, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout_s):
        while True:
            try:
                return await op()
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                if isinstance(exc, redis.ResponseError) and "READONLY" not in str(exc):
                    raise
                await anyio.sleep(0.1)


async def test_the_client_follows_a_failover(sentinel_group: SentinelGroup) -> None:
    client = redis_client(sentinel_group.url)
    try:
        await client.set("before", "1")
        await client.wait(2, 5000)  # both replicas have it
        old = sentinel_group.kill_master()
        new = await anyio.to_thread.run_sync(sentinel_group.wait_for_failover, old)
        assert new != old
        await _retry("write after the failover", lambda: client.set("after", "2"))
        assert await client.get("before") == b"1"
        assert await client.get("after") == b"2"
        info = await client.info("server")
        assert int(info["tcp_port"]) == new
    finally:
        await client.aclose()


async def test_the_outbox_delivers_what_replicas_acknowledged(
    sentinel_group: SentinelGroup,
) -> None:
    client = redis_client(sentinel_group.url)
    relayer = LaneRelayer().__enter__()
    try:
        executor = RedisExecutor(client, "ns")
        await commit(executor, [[batch_size(1)], [batch_size(2)]])
        async with OutboxDispatcher(
            client, "ns", relayer.url, "tok", "", http_timeout_s=2, min_replicas=2
        ) as outbox:
            assert await outbox.deliver_pending() == 2
        assert relayer.requests("/submitBatchSize") == ["epoch:1", "epoch:2"]

        # One replica gone: two are wanted, one acknowledges: nothing goes out.
        sentinel_group.servers[1].kill()
        await commit(executor, [[batch_size(3)]])
        async with OutboxDispatcher(
            client,
            "ns",
            relayer.url,
            "tok",
            "",
            http_timeout_s=2,
            min_replicas=2,
            redis_timeout_s=1.0,
        ) as outbox:
            with pytest.raises(ReplicasBehind, match="SEQ_REDIS_MIN_REPLICAS=2"):
                await outbox.deliver_pending()
        assert relayer.requests("/submitBatchSize") == ["epoch:1", "epoch:2"]
        # One is enough: it goes out.
        async with OutboxDispatcher(
            client, "ns", relayer.url, "tok", "", http_timeout_s=2, min_replicas=1
        ) as outbox:
            assert await outbox.deliver_pending() == 1
        assert relayer.requests("/submitBatchSize") == ["epoch:1", "epoch:2", "epoch:3"]
    finally:
        relayer.close()
        await client.aclose()


async def test_min_replicas_zero_sends_no_wait(redis_server: str) -> None:
    """SEQ_REDIS_MIN_REPLICAS=0 (the default): a single server with no replica delivers."""
    client = redis_client(redis_server)
    relayer = LaneRelayer().__enter__()
    try:
        await client.flushdb()
        executor = RedisExecutor(client, "ns0")
        await commit(executor, [[batch_size(7)]])
        async with OutboxDispatcher(client, "ns0", relayer.url, "tok", "") as outbox:
            assert await outbox.deliver_pending() == 1
        assert not await client.exists("ns0:outbox:replicated")
    finally:
        relayer.close()
        await client.aclose()

"""The fenced lease (runtime.lease) and the commit fence, on a real redis-server and on
fakeredis (the embedded store): acquire, renew, release, expiry, fencing tokens, and a
commit refused with nothing written once the lease is another's."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from seqcollector.core.effects import ListPush, RelayerCall, SetValue
from seqcollector.runtime.executor import LeaseLost, RedisExecutor
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.lease import Lease, LeaseHolder, holder_id, read_lease

pytestmark = pytest.mark.anyio

NS = "lease-test"
KEYS = StoreLayout(NS)


async def test_acquire_is_exclusive_and_tokens_increase(redis_backend: Any) -> None:
    client = redis_backend.client()
    a, b = Lease(client, NS, 5, holder="host:1:aa"), Lease(client, NS, 5, holder="host:2:bb")
    got = await a.acquire()
    assert got == LeaseHolder("host:1:aa", 1) and a.value == "host:1:aa:1" and a.token == 1
    seen = await b.acquire()
    assert b.value is None and seen == LeaseHolder("host:1:aa", 1)
    assert await client.get(KEYS.lease) == b"host:1:aa:1"
    assert 0 < await client.pttl(KEYS.lease) <= 5000
    await a.release()
    assert await client.get(KEYS.lease) is None and a.value is None
    assert (await b.acquire()).token == 2 and b.value == "host:2:bb:2"
    held, ttl = await read_lease(client, NS)
    assert held == LeaseHolder("host:2:bb", 2) and 0 < ttl <= 5000


async def test_renew_only_while_ours(redis_backend: Any) -> None:
    client = redis_backend.client()
    a, b = Lease(client, NS, 5), Lease(client, NS, 5)
    await a.acquire()
    await client.pexpire(KEYS.lease, 100)
    assert await a.renew() is True
    assert await client.pttl(KEYS.lease) > 1000
    await client.delete(KEYS.lease)  # expired under it
    await b.acquire()
    assert await a.renew() is False and a.value is None
    assert await client.get(KEYS.lease) == (b.value or "").encode()
    await a.release()  # not ours: leaves b's alone
    assert await client.get(KEYS.lease) == (b.value or "").encode()


async def test_lease_expires_by_its_ttl(redis_backend: Any) -> None:
    client = redis_backend.client()
    a, b = Lease(client, NS, 0.2), Lease(client, NS, 0.2)
    await a.acquire()
    assert (await b.acquire()).holder == a.holder and b.value is None
    await anyio.sleep(0.35)
    assert (await b.acquire()).holder == b.holder and b.token == 2
    with pytest.raises(LeaseLost, match=r"lease lost .* now held by .*, token 2"):
        await a.verify("delivering")


def test_holder_id_names_host_and_pid() -> None:
    import os
    import socket

    first, second = holder_id(), holder_id()
    assert first.startswith(f"{socket.gethostname()}:{os.getpid()}:") and first != second
    parsed = LeaseHolder.parse(f"{first}:17")
    assert parsed == LeaseHolder(first, 17) and parsed.value == f"{first}:17"
    assert LeaseHolder.parse(b"garbage").token is None


async def test_fenced_commit_lands_while_ours(redis_backend: Any) -> None:
    client = redis_backend.client()
    lease = Lease(client, NS, 5)
    await lease.acquire()
    executor = RedisExecutor(client, NS, lease=lease)
    await executor.load()
    call = RelayerCall("r:1", "/submitBatchSize", {"n": 1})
    assert await executor.commit(1, 10, [ListPush("q", "a"), call], b"s1") is True
    assert await client.lrange("q", 0, -1) == [b"a"]
    assert await client.zcard(KEYS.outbox_pending) == 1


async def test_commit_after_lease_loss_writes_nothing(redis_backend: Any) -> None:
    client = redis_backend.client()
    old = Lease(client, NS, 5, holder="old:1:aa")
    await old.acquire()
    executor = RedisExecutor(client, NS, lease=old)
    await executor.load()
    assert await executor.commit(1, 10, [SetValue("k", "1")], b"s1") is True
    await client.delete(KEYS.lease)  # expired while `old` was paused
    new = Lease(client, NS, 5, holder="new:2:bb")
    await new.acquire()
    before = {k: await client.dump(k) for k in await client.keys("*")}
    call = RelayerCall("r:2", "/submitBatchSize", {"n": 2})
    with pytest.raises(LeaseLost) as lost:
        await executor.commit(2, 11, [SetValue("k", "2"), ListPush("q", "x"), call], b"s2")
    assert "now held by new:2:bb, token 2" in str(lost.value)
    assert "old:1:aa:1" in str(lost.value) and "standby" in str(lost.value)
    after = {k: await client.dump(k) for k in await client.keys("*")}
    assert after == before  # nothing written: no key, no outbox entry, same checkpoint
    assert old.value is None
    # and the next attempt is refused before anything is sent
    with pytest.raises(LeaseLost):
        await executor.commit(2, 11, [SetValue("k", "2")], b"s2")
    # the new holder commits on from the checkpoint
    successor = RedisExecutor(client, NS, lease=new)
    await successor.load()
    assert await successor.commit(2, 11, [SetValue("k", "2")], b"s2") is True
    assert await client.get("k") == b"2"


async def test_commit_with_a_lost_reply_and_the_lease_gone_is_refused(
    redis_backend: Any,
) -> None:
    """A free (expired, nobody took it) lease also fences: the value must be ours."""
    client = redis_backend.client()
    lease = Lease(client, NS, 5)
    await lease.acquire()
    executor = RedisExecutor(client, NS, lease=lease)
    await executor.load()
    await client.delete(KEYS.lease)
    with pytest.raises(LeaseLost, match="free"):
        await executor.commit(1, 10, [SetValue("k", "1")], b"s1")
    assert await client.get("k") is None and await client.get(KEYS.checkpoint) is None


async def test_unfenced_executor_ignores_the_lease(redis_backend: Any) -> None:
    """Replay and the simulations without the failover fault commit without a lease."""
    client = redis_backend.client()
    other = Lease(client, NS, 5)
    await other.acquire()
    executor = RedisExecutor(client, NS)
    await executor.load()
    assert await executor.commit(1, 10, [SetValue("k", "1")], b"s1") is True


async def test_renew_reclaims_a_free_lease_nobody_took(redis_backend: Any) -> None:
    """Expired while this process was paused, and no standby took it: the token counter
    still holds our token, so nobody committed meanwhile; the renewal takes it back."""
    client = redis_backend.client()
    a = Lease(client, NS, 5, holder="a:1:x")
    await a.acquire()
    await client.delete(KEYS.lease)
    assert await a.renew() is True and a.value == "a:1:x:1"
    assert await client.get(KEYS.lease) == b"a:1:x:1"
    # Redis lost everything (restart without persistence): taken back, the counter restored
    await client.delete(KEYS.lease, KEYS.lease_token)
    assert await a.renew() is True
    assert await client.get(KEYS.lease_token) == b"1"
    # someone took it and let it go: the counter moved, not ours any more
    await client.delete(KEYS.lease)
    b = Lease(client, NS, 5, holder="b:2:y")
    await b.acquire()
    await b.release()
    assert await a.renew() is False and a.value is None
    assert await client.get(KEYS.lease) is None


async def test_renewal_gives_up_after_a_ttl_without_redis_and_cancels_the_work(
    redis_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis unreachable for a whole TTL: the lease may be another's by now; the work held
    under it (`while_held`) is cancelled with `LeaseLost`."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from seqcollector.runtime.lease import while_held

    client = redis_backend.client()
    lease = Lease(client, NS, 0.3)
    await lease.acquire()

    async def down() -> bool:
        raise RedisConnectionError("injected: Redis unreachable")

    monkeypatch.setattr(lease, "renew", down)
    finished: list[bool] = []

    async def work() -> None:
        await anyio.sleep(5)
        finished.append(True)

    with anyio.fail_after(3), pytest.raises(LeaseLost, match="Redis unreachable for its TTL"):
        await while_held(lease, work)
    assert finished == [] and lease.value is None


async def test_while_held_returns_the_work_and_propagates_its_errors(redis_backend: Any) -> None:
    from seqcollector.runtime.lease import while_held

    client = redis_backend.client()
    lease = Lease(client, NS, 0.3)
    await lease.acquire()

    async def slow() -> int:
        await anyio.sleep(0.5)  # past the TTL: renewed meanwhile
        return 7

    assert await while_held(lease, slow) == 7
    assert await client.get(KEYS.lease) == (lease.value or "").encode()

    async def broken() -> int:
        raise ValueError("the work's own error")

    with pytest.raises(ValueError, match="the work's own error"):
        await while_held(lease, broken)


async def test_lease_and_checkpoint_gone_together_is_redis_losing_data(
    redis_backend: Any,
) -> None:
    """FLUSHALL (or a restart without persistence) under a fenced executor: not a lost
    lease (which would send it to standby) but `RedisDataLost`, as without a lease."""
    from seqcollector.runtime.executor import RedisDataLost

    client = redis_backend.client()
    lease = Lease(client, NS, 5)
    await lease.acquire()
    executor = RedisExecutor(client, NS, lease=lease)
    await executor.load()
    assert await executor.commit(1, 10, [SetValue("k", "1")], b"s1") is True
    await client.flushall()
    with pytest.raises(RedisDataLost, match="vanished"):
        await executor.commit(2, 11, [SetValue("k", "2")], b"s2")
    assert await client.keys("*") == []


class _AcquiredDuringTheCheck(Lease):
    """A check whose GET returns after the lease was acquired again on this object (in the
    simulation the standby takes over the paused active's `Lease`)."""

    async def current(self) -> LeaseHolder | None:
        now = await super().current()
        self.holder = "host:9:standby"
        await self.acquire()
        return now


async def test_a_stale_check_does_not_forget_a_newer_acquisition(redis_backend: Any) -> None:
    """Found by the soak (segment 19): the paused active's outbox check, answered after the
    standby's acquisition, set the shared lease's value to None, and the standby's next
    commit was refused. The check still refuses its own delivery."""
    client = redis_backend.client()
    lease = _AcquiredDuringTheCheck(client, NS, 5, holder="host:1:aa")
    await lease.acquire()
    await client.delete(KEYS.lease)  # expired under the paused active
    with pytest.raises(LeaseLost):
        await lease.verify("delivering an entry")
    assert lease.value == "host:9:standby:2"  # the standby's acquisition is kept
    executor = RedisExecutor(client, NS, lease=lease)
    assert await executor.commit(1, 1, [SetValue("k", "v")], b"s")

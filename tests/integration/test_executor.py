"""Contract tests of RedisExecutor, each run on a real redis-server and on fakeredis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    Effect,
    HashSet,
    IncrementBy,
    ListPush,
    QuerySubmissionSets,
    Rejected,
    RelayerCall,
    SetValue,
)
from seqcollector.runtime.executor import (
    _COMMIT,
    Checkpoint,
    CommitRefused,
    ConcurrentWriterError,
    RedisDataLost,
    RedisExecutor,
    RedisLostSteps,
    embedded_redis,
)
from seqcollector.runtime.layout import StoreLayout, decode_entry

pytestmark = pytest.mark.anyio

NS = "test"
KEYS = StoreLayout(NS)


async def user_keys(client: aioredis.Redis) -> set[str]:
    """Every key outside the executor's namespace."""
    keys = {k.decode() if isinstance(k, bytes) else k for k in await client.keys("*")}
    return {k for k in keys if not k.startswith(f"{NS}:")}


async def test_redis_effects_are_applied_exactly(redis_backend: Any) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    effects: list[Effect] = [
        SetValue("plain", "v1"),
        SetValue("expiring", "v2", ttl_s=600),
        SetValue("doomed", "x"),
        DeleteKeys(["doomed", "never-existed"]),
        DeleteKeys([]),
        ListPush("queue", "first"),
        ListPush("queue", "second"),
        IncrementBy("counter", 3),
        IncrementBy("counter", 4, ttl_s=3600),
        HashSet("table", "0xAbC", "42"),
        QuerySubmissionSets(query_id=1, market="0xabc", epoch=7, keys=["ignored"]),
        Rejected(reason="bad_log", detail="ignored", block=5),
    ]

    assert await executor.commit(1, 100, effects, b"state-1") is True

    assert await user_keys(client) == {"plain", "expiring", "queue", "counter", "table"}
    assert await client.get("plain") == b"v1"
    assert await client.ttl("plain") == -1
    assert await client.get("expiring") == b"v2"
    assert 590 <= await client.ttl("expiring") <= 600
    assert await client.lrange("queue", 0, -1) == [b"second", b"first"]  # LPUSH order
    assert await client.get("counter") == b"7"
    assert 3590 <= await client.ttl("counter") <= 3600
    assert await client.hgetall("table") == {b"0xAbC": b"42"}


async def test_same_seq_twice_changes_nothing(redis_backend: Any) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    step: list[Effect] = [ListPush("queue", "item"), IncrementBy("counter", 5)]

    assert await executor.commit(1, 10, step, b"s1") is True
    assert await executor.commit(1, 10, step, b"s1") is False
    assert await executor.commit(0, 9, step, b"s0") is False

    assert await client.lrange("queue", 0, -1) == [b"item"]
    assert await client.get("counter") == b"5"
    assert await executor.load() == (b"s1", Checkpoint(seq=1, block=10))


async def test_state_and_checkpoint_round_trip(redis_backend: Any) -> None:
    executor = RedisExecutor(redis_backend.client(), NS)
    assert await executor.load() == (None, None)

    state = bytes(range(256)) * 40
    assert await executor.commit(5, None, [], state) is True
    assert await executor.load() == (state, Checkpoint(seq=5, block=None))
    assert await executor.commit(6, 1234, [], b"next") is True

    restarted = RedisExecutor(redis_backend.client(), NS)
    assert await restarted.load() == (b"next", Checkpoint(seq=6, block=1234))


async def test_restarted_executor_refuses_old_seqs(redis_backend: Any) -> None:
    first = RedisExecutor(redis_backend.client(), NS)
    for seq in (1, 2, 3):
        assert await first.commit(seq, 100 + seq, [ListPush("q", str(seq))], b"s%d" % seq)

    restarted = RedisExecutor(redis_backend.client(), NS)
    assert await restarted.load() == (b"s3", Checkpoint(seq=3, block=103))
    assert await restarted.commit(3, 103, [ListPush("q", "3")], b"s3") is False
    assert await restarted.commit(2, 102, [ListPush("q", "2")], b"s2") is False
    assert await restarted.commit(4, 104, [ListPush("q", "4")], b"s4") is True

    # Without load() the checkpoint is read inside the WATCH before deciding.
    unloaded = RedisExecutor(redis_backend.client(), NS)
    assert await unloaded.commit(4, 104, [ListPush("q", "4")], b"s4") is False
    client = redis_backend.client()
    assert await client.lrange("q", 0, -1) == [b"4", b"3", b"2", b"1"]


async def test_outbox_entries_are_stored_in_emission_order(redis_backend: Any) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    call_a = RelayerCall(id="r:a", path="/submitBatchSize", body={"epochID": 1, "batchSize": 2})
    alert = Alert(id="alert:1", step="BatchPreparation", message="boom", severity="High")
    call_b = RelayerCall(id="r:b", path="/submitBatchSize", body={"epochID": 2, "batchSize": 1})
    call_c = RelayerCall(id="r:c", path="/submitUpdateRewards", body={"day": 3})

    assert await executor.commit(1, 1, [call_b, ListPush("q", "x"), alert], b"s1")
    assert await executor.commit(2, 2, [call_a, call_c], b"s2")
    # Restarted executor continues the scores after the stored ones.
    restarted = RedisExecutor(redis_backend.client(), NS)
    await restarted.load()
    call_d = RelayerCall(id="r:d", path="/submitBatchSize", body={})
    assert await restarted.commit(3, 3, [call_d], b"s3")

    pending = await client.zrange(KEYS.outbox_pending, 0, -1)
    assert [p.decode() for p in pending] == ["r:b", "alert:1", "r:a", "r:c", "r:d"]
    stored = await client.hgetall(KEYS.outbox)
    assert {k.decode(): decode_entry(v) for k, v in stored.items()} == {
        "r:a": call_a,
        "r:b": call_b,
        "r:c": call_c,
        "r:d": call_d,
        "alert:1": alert,
    }


async def test_ten_thousand_effects_cost_one_round_trip(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    assert await executor.commit(1, 1, [], b"warm-up")  # the script is loaded on first use
    effects: list[Effect] = []
    for i in range(2_000):
        effects += [
            ListPush("finalizerQueue", f"batch-{i}"),
            IncrementBy(f"SlotSubmissionsKey.m.1.{i % 500}", 1, ttl_s=86400),
            HashSet("BatchCount", str(i), str(i)),
            SetValue(f"BlockHashByNumberKey.{i}", f"0x{i:064x}", ttl_s=1800),
            RelayerCall(id=f"r:{i}", path="/submitBatchSize", body={"epochID": i}),
        ]
    assert len(effects) == 10_000
    trips.reset()

    assert await executor.commit(2, 2, effects, b"state") is True

    assert trips.count == 1  # one EVALSHA of the commit script
    assert await client.llen("finalizerQueue") == 2_000
    assert await client.get("SlotSubmissionsKey.m.1.7") == b"4"
    assert await client.zcard(KEYS.outbox_pending) == 2_000


async def test_first_use_of_the_script_loads_it(redis_backend: Any) -> None:
    """After SCRIPT FLUSH (or a server restart) EVALSHA answers NOSCRIPT: the script is
    loaded and the commit goes through, once."""
    client, trips = redis_backend.counting_client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    await client.script_flush()
    trips.reset()
    assert await executor.commit(1, 1, [ListPush("q", "x")], b"s") is True
    assert trips.count == 3  # EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA
    assert await client.lrange("q", 0, -1) == [b"x"]


async def test_commit_without_load_costs_two_round_trips(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    await client.script_load(_COMMIT)
    trips.reset()
    executor = RedisExecutor(client, NS)
    assert await executor.commit(1, 1, [ListPush("q", "x")] * 100, b"s") is True
    assert trips.count == 2  # GET checkpoint, EVALSHA
    trips.reset()
    assert await executor.commit(2, 2, [ListPush("q", "y")] * 100, b"s") is True
    assert trips.count == 1


def around_script(
    executor: RedisExecutor,
    before: Callable[[], Awaitable[object]] | None = None,
    runs: int = 1,
    then_raise: BaseException | None = None,
) -> None:
    """Wrap the executor's next commit script call: run `before` (another writer) first,
    send the script `runs` times (a resend after a dropped connection), then raise
    `then_raise` instead of answering (a lost reply)."""
    original = executor._script
    armed = [True]

    async def call(**kwargs: Any) -> Any:
        if not armed[0]:
            return await original(**kwargs)
        armed[0] = False
        if before is not None:
            await before()
        for _ in range(runs):
            reply = await original(**kwargs)
        if then_raise is not None:
            raise then_raise
        return reply

    executor._script = call  # type: ignore[assignment]


async def test_writer_between_read_and_script_is_refused(redis_backend: Any) -> None:
    ours = RedisExecutor(redis_backend.client(), NS)  # not loaded: reads the checkpoint first
    theirs = RedisExecutor(redis_backend.client(), NS)
    await theirs.load()
    around_script(ours, before=lambda: theirs.commit(1, 1, [ListPush("q", "t")], b"t"))

    with pytest.raises(ConcurrentWriterError, match="namespace 'test'") as info:
        await ours.commit(1, 1, [ListPush("q", "o")], b"o")
    assert info.value.found == Checkpoint(1, 1) and info.value.expected is None

    client = redis_backend.client()
    assert await client.lrange("q", 0, -1) == [b"t"]
    assert await RedisExecutor(client, NS).load() == (b"t", Checkpoint(1, 1))


async def test_stale_cache_is_refused_before_anything_is_written(redis_backend: Any) -> None:
    """A writer that landed before our commit (our cached checkpoint is stale) is caught in
    the script, before our step is written: nothing is written on top of it."""
    client = redis_backend.client()
    ours = RedisExecutor(redis_backend.client(), NS)
    theirs = RedisExecutor(redis_backend.client(), NS)
    await ours.load()
    await theirs.load()
    assert await theirs.commit(1, 1, [ListPush("q", "t")], b"t")

    with pytest.raises(ConcurrentWriterError, match="this step was not written") as info:
        await ours.commit(1, 1, [ListPush("q", "o")], b"o")
    assert info.value.found == Checkpoint(1, 1)
    assert await client.lrange("q", 0, -1) == [b"t"]
    assert await RedisExecutor(client, NS).load() == (b"t", Checkpoint(1, 1))
    # The cache was dropped: the next attempt reads the checkpoint and refuses an old seq.
    assert await ours.commit(1, 1, [], b"o") is False


async def test_resent_script_applies_the_step_once(redis_backend: Any) -> None:
    """redis-py resends a command after a dropped connection: the second run of the script
    finds the step stored (checkpoint and state) and writes nothing."""
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    call = RelayerCall(id="r:1", path="/submitBatchSize", body={"epochID": 1})
    around_script(executor, runs=2)

    effects: list[Effect] = [ListPush("q", "x"), IncrementBy("n", 2), call]
    assert await executor.commit(1, 1, effects, b"s1") is True
    assert await client.lrange("q", 0, -1) == [b"x"]
    assert await client.get("n") == b"2"
    assert await client.zrange(KEYS.outbox_pending, 0, -1, withscores=True) == [(b"r:1", 0.0)]
    assert await executor.commit(2, 2, [ListPush("q", "y")], b"s2") is True
    assert await client.lrange("q", 0, -1) == [b"y", b"x"]


async def test_lost_reply_counts_as_applied_once(redis_backend: Any) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    around_script(executor, then_raise=RedisConnectionError("reply lost"))

    with pytest.raises(RedisConnectionError):
        await executor.commit(1, 1, [ListPush("q", "x")], b"s1")
    # The outcome was unknown: the retry reads the checkpoint, finds the step stored.
    assert await executor.commit(1, 1, [ListPush("q", "x")], b"s1") is False
    assert await client.lrange("q", 0, -1) == [b"x"]
    assert await executor.commit(2, 2, [], b"s2") is True


async def test_effect_redis_would_refuse_changes_nothing(redis_backend: Any) -> None:
    """It used to commit the step without the refused LPUSH (CommitPartlyRejected, after
    the checkpoint had moved): the item was lost for good."""
    client = redis_backend.client()
    await client.set("not-a-list", "string")
    executor = RedisExecutor(client, NS)
    effects: list[Effect] = [ListPush("not-a-list", "x"), ListPush("q", "y")]

    with pytest.raises(CommitRefused, match="seq=1 block=7") as info:
        await executor.commit(1, 7, effects, b"s")
    assert "not-a-list is a string, LPUSH needs a list" in str(info.value)
    assert [p.key for p in info.value.problems] == ["not-a-list"]
    assert await client.exists("q") == 0
    assert await executor.load() == (None, None)

    await client.delete("not-a-list")
    assert await executor.commit(1, 7, effects, b"s") is True
    assert await client.lrange("not-a-list", 0, -1) == [b"x"]
    assert await client.lrange("q", 0, -1) == [b"y"]
    assert await executor.load() == (b"s", Checkpoint(1, 7))


async def test_counter_of_another_type_refuses_the_step_and_order_is_kept_once_fixed(
    redis_backend: Any,
) -> None:
    client = redis_backend.client()
    await client.set("SlotSubmissionsKey.m.1.2", "not a number")
    executor = RedisExecutor(client, NS)
    effects: list[Effect] = [
        IncrementBy("SlotSubmissionsKey.m.1.1", 2, ttl_s=600),
        IncrementBy("SlotSubmissionsKey.m.1.2", 1),
        IncrementBy("SlotSubmissionsKey.m.1.3", 5),
        ListPush("q", "between"),
        IncrementBy("SlotSubmissionsKey.m.1.1", 1),
        DeleteKeys(["SlotSubmissionsKey.m.1.3"]),
        IncrementBy("SlotSubmissionsKey.m.1.3", 4),
    ]
    with pytest.raises(CommitRefused, match="seq=1 block=3") as info:
        await executor.commit(1, 3, effects, b"s")
    assert [str(p) for p in info.value.problems] == [
        'SlotSubmissionsKey.m.1.2 is a string (holding "not a number"), '
        "INCRBY needs an integer string"
    ]
    assert sorted(await user_keys(client)) == ["SlotSubmissionsKey.m.1.2"]

    await client.set("SlotSubmissionsKey.m.1.2", "10")
    assert await executor.commit(1, 3, effects, b"s") is True
    assert await client.get("SlotSubmissionsKey.m.1.1") == b"3"
    assert 590 <= await client.ttl("SlotSubmissionsKey.m.1.1") <= 600
    assert await client.get("SlotSubmissionsKey.m.1.2") == b"11"
    assert await client.get("SlotSubmissionsKey.m.1.3") == b"4"  # order kept around the DEL
    assert await client.lrange("q", 0, -1) == [b"between"]


async def test_flushall_is_reported_as_lost_data_not_another_writer(redis_backend: Any) -> None:
    """It used to raise ConcurrentWriterError ("another writer") at the next commit."""
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    assert await executor.commit(1, 41, [ListPush("q", "x")], b"s1")
    await client.flushall()

    with pytest.raises(RedisDataLost, match=r"checkpoint \(seq 1, block 41\) and the state vani"):
        await executor.commit(2, 42, [ListPush("q", "y")], b"s2")
    assert await client.keys("*") == []  # nothing written on the empty store
    # The cache is dropped, but the executor still knows a checkpoint existed.
    with pytest.raises(RedisDataLost, match="Redis lost data"):
        await executor.commit(2, 42, [ListPush("q", "y")], b"s2")
    assert await client.keys("*") == []


async def test_lost_checkpoint_after_load_is_reported(redis_backend: Any) -> None:
    client = redis_backend.client()
    assert await RedisExecutor(client, NS).commit(1, 9, [], b"s1")
    restarted = RedisExecutor(redis_backend.client(), NS)
    assert await restarted.load() == (b"s1", Checkpoint(1, 9))
    await client.delete(KEYS.checkpoint)  # e.g. evicted

    with pytest.raises(RedisDataLost, match="vanished \\(the state is still there\\)") as info:
        await restarted.commit(2, 10, [ListPush("q", "y")], b"s2")
    assert info.value.expected == Checkpoint(1, 9) and not info.value.state_gone
    assert await client.exists("q") == 0
    assert not isinstance(info.value, ConcurrentWriterError)


async def test_a_checkpoint_behind_ours_is_lost_steps_not_a_base(redis_backend: Any) -> None:
    """A failover to a replica that had not received the last steps leaves Redis with an
    older checkpoint. Committing on top of it (what a re-read of the checkpoint did) would
    drop those steps' effects for good; the executor refuses, with nothing written, both
    from its cache and after a re-read."""
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    assert await executor.commit(1, 41, [ListPush("q", "1")], b"s1")
    old_state, old_checkpoint = await client.mget([KEYS.state, KEYS.checkpoint])
    assert await executor.commit(2, 42, [ListPush("q", "2")], b"s2")
    assert await executor.commit(3, 43, [ListPush("q", "3")], b"s3")
    # What the promoted replica holds: step 1 only.
    await client.mset({KEYS.state: old_state, KEYS.checkpoint: old_checkpoint})
    await client.delete("q")
    await client.rpush("q", "1")

    with pytest.raises(RedisLostSteps, match=r"seq 1 \(block 41\), behind the seq 3") as info:
        await executor.commit(4, 44, [ListPush("q", "4")], b"s4")
    assert (info.value.found, info.value.expected) == (Checkpoint(1, 41), Checkpoint(3, 43))
    assert not isinstance(info.value, ConcurrentWriterError)
    # The cache was dropped: the re-read finds the old checkpoint and still refuses.
    with pytest.raises(RedisLostSteps, match="redoes the chain from block 41"):
        await executor.commit(4, 44, [ListPush("q", "4")], b"s4")
    assert await client.lrange("q", 0, -1) == [b"1"]
    # A collector that reloads redoes steps 2 and 3 on the stored base.
    restarted = RedisExecutor(redis_backend.client(), NS)
    assert await restarted.load() == (b"s1", Checkpoint(1, 41))
    assert await restarted.commit(2, 42, [ListPush("q", "2")], b"s2")


async def test_ttl_or_amount_redis_would_refuse_sends_nothing(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    trips.reset()
    for bad in (-5, 10**13):
        with pytest.raises(ValueError, match=f"effect on k: ttl_s={bad}"):
            await executor.commit(1, 1, [ListPush("q", "x"), SetValue("k", "v", bad)], b"s")
    for amount in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError, match=f"effect on n: INCRBY amount {amount} is outside"):
            await executor.commit(1, 1, [IncrementBy("n", amount)], b"s")
    assert trips.count == 0
    assert await executor.commit(1, 1, [SetValue("k", "v", 10**12)], b"s")


async def test_decoding_client_is_refused() -> None:
    client = aioredis.Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisExecutor(client, NS)
    await client.aclose()


def test_checkpoint_record_decodes_as_checkpoint() -> None:
    raw = b'{"seq":3,"block":9,"outbox_next":12}'
    assert msgspec.json.decode(raw, type=Checkpoint) == Checkpoint(3, 9)


@pytest.mark.redis
async def test_out_of_memory_refuses_the_commit_before_any_write(redis_url: str) -> None:
    """Redis decides OOM when a script starts and refuses its first write: nothing lands."""
    client = aioredis.Redis.from_url(redis_url)
    executor = RedisExecutor(client, NS)
    assert await executor.commit(1, 1, [ListPush("q", "a")], b"s1")
    before = {k: await client.dump(k) for k in await client.keys("*")}
    await client.config_set("maxmemory", "1")
    try:
        with pytest.raises(ResponseError, match="command not allowed when used memory"):
            await executor.commit(2, 2, [ListPush("q", "b"), IncrementBy("n", 1)], b"s2")
        assert {k: await client.dump(k) for k in await client.keys("*")} == before
    finally:
        await client.config_set("maxmemory", "0")
    assert await executor.commit(2, 2, [ListPush("q", "b"), IncrementBy("n", 1)], b"s2")
    assert await client.lrange("q", 0, -1) == [b"b", b"a"]
    await client.aclose()


async def test_embedded_stores_are_freed_with_their_clients() -> None:
    """fakeredis keeps every server it makes itself in a class-wide map for good: a store
    per simulation, each with all its data, stayed in memory (the soak's RSS grew by a few
    MB per segment). `embedded_redis()` makes its own server, private and collectable."""
    import gc
    import weakref

    import fakeredis

    before = dict(fakeredis.FakeServer._servers_map)
    client = embedded_redis()
    await client.set("k", "v")
    other = embedded_redis()
    assert await other.get("k") is None  # each call: a fresh, empty store
    server = weakref.ref(client.connection_pool.connection_kwargs["server"])
    await client.aclose()
    await other.aclose()
    del client, other
    gc.collect()
    assert fakeredis.FakeServer._servers_map == before
    assert server() is None

"""Contract tests of RedisExecutor, each run on a real redis-server and on fakeredis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

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
    Checkpoint,
    CommitPartlyRejected,
    ConcurrentWriterError,
    RedisExecutor,
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


async def test_ten_thousand_effects_cost_two_round_trips(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    executor = RedisExecutor(client, NS)
    await executor.load()
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

    assert await executor.commit(1, 1, effects, b"state") is True

    assert trips.count <= 3
    assert trips.count == 2  # WATCH, then MULTI ... EXEC in one write
    assert await client.llen("finalizerQueue") == 2_000
    assert await client.get("SlotSubmissionsKey.m.1.7") == b"4"
    assert await client.zcard(KEYS.outbox_pending) == 2_000


async def test_commit_without_load_costs_three_round_trips(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    await client.ping()
    trips.reset()
    executor = RedisExecutor(client, NS)
    assert await executor.commit(1, 1, [ListPush("q", "x")] * 100, b"s") is True
    assert trips.count == 3  # WATCH, GET checkpoint, MULTI ... EXEC
    trips.reset()
    assert await executor.commit(2, 2, [ListPush("q", "y")] * 100, b"s") is True
    assert trips.count == 2


async def test_read_submission_sets_is_one_round_trip(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    keys = [f"SnapshotCollector.0xabc.7.0x{h:064x}" for h in range(50)]
    for i, key in enumerate(keys):
        await client.sadd(key, f"0xabc.7.project{i % 7}.{i % 11}", "0xabc.7.shared.1")
    executor = RedisExecutor(client, NS)
    members = {f"0xabc.7.project{i % 7}.{i % 11}" for i in range(50)} | {"0xabc.7.shared.1"}
    trips.reset()

    union = await executor.read_submission_sets([*keys, "SnapshotCollector.missing"])
    assert union == sorted(members)
    assert trips.count == 1
    assert await executor.read_submission_sets([]) == []
    assert trips.count == 1


def interfere_after_watch(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[], Awaitable[object]]
) -> None:
    """Run `action` (another writer) once, right after the executor's next WATCH."""
    original = Pipeline.watch
    armed = [True]

    async def watch(self: Pipeline, *names: Any) -> Any:
        result = await original(self, *names)
        if armed[0]:
            armed[0] = False
            await action()
        return result

    monkeypatch.setattr(Pipeline, "watch", watch)


async def test_writer_between_watch_and_exec_is_refused(
    redis_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = RedisExecutor(redis_backend.client(), NS)
    theirs = RedisExecutor(redis_backend.client(), NS)
    await ours.load()
    await theirs.load()
    interfere_after_watch(monkeypatch, lambda: theirs.commit(1, 1, [ListPush("q", "t")], b"t"))

    with pytest.raises(ConcurrentWriterError, match="namespace 'test'"):
        await ours.commit(1, 1, [ListPush("q", "o")], b"o")

    client = redis_backend.client()
    assert await client.lrange("q", 0, -1) == [b"t"]
    assert await RedisExecutor(client, NS).load() == (b"t", Checkpoint(1, 1))


async def test_writer_before_watch_is_detected(redis_backend: Any) -> None:
    ours = RedisExecutor(redis_backend.client(), NS)
    theirs = RedisExecutor(redis_backend.client(), NS)
    await ours.load()
    await theirs.load()
    assert await theirs.commit(1, 1, [], b"t")

    # Our cache is stale: WATCH cannot see the earlier write, the swapped checkpoint does.
    with pytest.raises(ConcurrentWriterError, match="written on top") as info:
        await ours.commit(1, 1, [], b"o")
    assert info.value.found == Checkpoint(1, 1)
    # The cache was dropped: the next attempt reads the checkpoint and refuses an old seq.
    assert await ours.commit(1, 1, [], b"o") is False


async def test_spurious_watch_error_is_retried(
    redis_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    assert await executor.commit(1, 1, [], b"s1")
    stored = await client.get(KEYS.checkpoint)
    # Rewriting the same bytes trips the WATCH but changes nothing: retry, apply once.
    interfere_after_watch(monkeypatch, lambda: client.set(KEYS.checkpoint, stored))

    assert await executor.commit(2, 2, [ListPush("q", "x")], b"s2") is True
    assert await client.lrange("q", 0, -1) == [b"x"]


async def test_lost_exec_reply_counts_as_applied_once(
    redis_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    original = Pipeline.execute

    async def execute_then_drop_reply(self: Pipeline, raise_on_error: bool = True) -> Any:
        await original(self, raise_on_error)
        raise WatchError("A ConnectionError occurred while watching one or more keys")

    monkeypatch.setattr(Pipeline, "execute", execute_then_drop_reply)
    assert await executor.commit(1, 1, [ListPush("q", "x")], b"s1") is True
    monkeypatch.undo()

    assert await client.lrange("q", 0, -1) == [b"x"]
    assert await executor.commit(1, 1, [ListPush("q", "x")], b"s1") is False
    assert await executor.commit(2, 2, [], b"s2") is True


async def test_effect_rejected_by_redis_still_commits_the_step(redis_backend: Any) -> None:
    client = redis_backend.client()
    await client.set("not-a-list", "string")
    executor = RedisExecutor(client, NS)

    with pytest.raises(CommitPartlyRejected, match="seq=1 block=7") as info:
        await executor.commit(1, 7, [ListPush("not-a-list", "x"), ListPush("q", "y")], b"s")
    assert "WRONGTYPE" in info.value.errors[0]
    assert await client.lrange("q", 0, -1) == [b"y"]
    assert await executor.commit(1, 7, [], b"s") is False
    assert await executor.load() == (b"s", Checkpoint(1, 7))


async def test_counter_of_another_type_is_reported_and_the_others_still_count(
    redis_backend: Any,
) -> None:
    """Increments go out as one script per run; one bad key does not stop the rest."""
    client = redis_backend.client()
    await client.set("SlotSubmissionsKey.m.1.2", "not a number")
    executor = RedisExecutor(client, NS)
    effects: list[Effect] = [
        IncrementBy("SlotSubmissionsKey.m.1.1", 2, ttl_s=600),
        IncrementBy("SlotSubmissionsKey.m.1.2", 1),
        IncrementBy("SlotSubmissionsKey.m.1.3", 5),
        ListPush("q", "between"),  # ends the run: the next increments are a second script
        IncrementBy("SlotSubmissionsKey.m.1.1", 1),
        DeleteKeys(["SlotSubmissionsKey.m.1.3"]),
        IncrementBy("SlotSubmissionsKey.m.1.3", 4),
    ]
    with pytest.raises(CommitPartlyRejected, match="seq=1 block=3") as info:
        await executor.commit(1, 3, effects, b"s")
    assert len(info.value.errors) == 1
    assert "SlotSubmissionsKey.m.1.2" in info.value.errors[0]
    assert await client.get("SlotSubmissionsKey.m.1.1") == b"3"
    assert 590 <= await client.ttl("SlotSubmissionsKey.m.1.1") <= 600
    assert await client.get("SlotSubmissionsKey.m.1.3") == b"4"  # order kept around the DEL
    assert await client.lrange("q", 0, -1) == [b"between"]


async def test_decoding_client_is_refused() -> None:
    client = aioredis.Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisExecutor(client, NS)
    await client.aclose()


def test_checkpoint_record_decodes_as_checkpoint() -> None:
    raw = b'{"seq":3,"block":9,"outbox_next":12}'
    assert msgspec.json.decode(raw, type=Checkpoint) == Checkpoint(3, 9)

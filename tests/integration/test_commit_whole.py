"""A commit lands whole or not at all (issue 8, part 2), on a real redis-server and fakeredis.

For every effect kind and every key the collector writes, a key of another type makes the
commit raise `CommitRefused` naming the key, its type and the command, and change nothing
(a DUMP of the whole store is compared); once the key is fixed the same commit lands
whole. The old executor committed such a step without the refused commands.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from seqcollector.core import keys as K
from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    Effect,
    HashSet,
    IncrementBy,
    ListPush,
    RelayerCall,
    SetValue,
)
from seqcollector.runtime.executor import Checkpoint, CommitRefused, RedisExecutor
from seqcollector.runtime.layout import StoreLayout

pytestmark = pytest.mark.anyio

NS = "whole"
NSK = StoreLayout(NS)
LC = "0x" + "ab" * 20
EIP55 = "0x" + "AB" * 20
SLOT_1, SLOT_2 = K.slot_submissions(LC, 1, 1), K.slot_submissions(LC, 1, 2)
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
TYPES = ("string", "list", "hash", "set", "zset")

FIRST_STEP: list[Effect] = [
    SetValue(K.block_hash(99), "0x" + "99" * 32, ttl_s=1800),
    ListPush(K.FINALIZER_QUEUE, "older-batch"),
    IncrementBy(SLOT_1, 1, ttl_s=86400),
    RelayerCall(id="submitBatchSize:6", path="/submitBatchSize", body={"epochID": 6}),
]
CALL = RelayerCall(id="submitBatchSize:7", path="/submitBatchSize", body={"epochID": 7})
ALERT = Alert(id="alert:7", step="BatchPreparation", message="x", severity="Medium")
# A step as the core writes it when a window closes (every key kind the collector writes).
STEP: list[Effect] = [
    SetValue(K.block_hash(101), "0x" + "11" * 32, ttl_s=1800),
    ListPush(K.FINALIZER_QUEUE, "batch-7-0"),
    SetValue(K.batch_submissions(LC, 7, 0), '["a"]', ttl_s=3600),
    ListPush(K.FINALIZER_QUEUE, "batch-7-1"),
    SetValue(K.batch_submissions(LC, 7, 1), '["b"]', ttl_s=3600),
    SetValue(K.batch_count(LC, 7), "2", ttl_s=3600),
    IncrementBy(SLOT_1, 3, ttl_s=86400),
    IncrementBy(SLOT_2, 1, ttl_s=86400),
    ListPush(K.ATTESTOR_QUEUE, "attest-7"),
    HashSet(K.SUBMISSION_LIMIT_TABLE, EIP55, "10"),
    HashSet(K.DAY_SIZE_TABLE, EIP55, "720"),
    HashSet(K.DAILY_SNAPSHOT_QUOTA_TABLE, EIP55, "100"),
    SetValue(K.current_day(LC), "1"),
    DeleteKeys([K.block_hash(99)]),
    CALL,
    ALERT,
]

# (key, the type it needs, the command that needs it)
EFFECT_KEYS = [
    (K.FINALIZER_QUEUE, "list", "LPUSH"),
    (K.ATTESTOR_QUEUE, "list", "LPUSH"),
    (K.SUBMISSION_LIMIT_TABLE, "hash", "HSET"),
    (K.DAY_SIZE_TABLE, "hash", "HSET"),
    (K.DAILY_SNAPSHOT_QUOTA_TABLE, "hash", "HSET"),
    (SLOT_1, "string", "INCRBY"),
    (SLOT_2, "string", "INCRBY"),
    (NSK.outbox, "hash", "HSET"),
    (NSK.outbox_pending, "zset", "ZADD"),
]
NAMESPACE_KEYS = [(NSK.state, "string", "SET"), (NSK.checkpoint, "string", "GET")]


def wrong_types(cases: list[tuple[str, str, str]]) -> list[Any]:
    return [
        pytest.param(key, wrong, command, id=f"{key}-as-{wrong}")
        for key, right, command in cases
        for wrong in TYPES
        if wrong != right
    ]


async def create(client: aioredis.Redis, key: str, kind: str) -> None:
    await client.delete(key)
    if kind == "string":
        await client.set(key, "x")
    elif kind == "list":
        await client.rpush(key, "x")
    elif kind == "hash":
        await client.hset(key, "f", "x")
    elif kind == "set":
        await client.sadd(key, "x")
    else:
        await client.zadd(key, {"x": 1})


async def snapshot(client: aioredis.Redis) -> dict[bytes, tuple[bytes, bool]]:
    """Every key of the store: its DUMP and whether it has a TTL."""
    return {
        key: (await client.dump(key), await client.pttl(key) > 0)
        for key in sorted(await client.keys("*"))
    }


async def assert_step_landed(client: aioredis.Redis, first_step: bool) -> None:
    """Every effect of STEP is in the store (after FIRST_STEP when `first_step`)."""
    queue = [b"batch-7-1", b"batch-7-0"] + ([b"older-batch"] if first_step else [])
    assert await client.lrange(K.FINALIZER_QUEUE, 0, -1) == queue
    assert await client.lrange(K.ATTESTOR_QUEUE, 0, -1) == [b"attest-7"]
    assert await client.get(K.batch_submissions(LC, 7, 0)) == b'["a"]'
    assert await client.get(K.batch_submissions(LC, 7, 1)) == b'["b"]'
    assert await client.get(K.batch_count(LC, 7)) == b"2"
    assert 3590 <= await client.ttl(K.batch_count(LC, 7)) <= 3600
    assert await client.get(SLOT_1) in (b"3", b"4")  # 4 if FIRST_STEP's 1 was kept
    assert await client.get(SLOT_2) == b"1"
    assert 86390 <= await client.ttl(SLOT_2) <= 86400
    for table, value in (
        (K.SUBMISSION_LIMIT_TABLE, b"10"),
        (K.DAY_SIZE_TABLE, b"720"),
        (K.DAILY_SNAPSHOT_QUOTA_TABLE, b"100"),
    ):
        assert await client.hget(table, EIP55) == value
    assert await client.get(K.current_day(LC)) == b"1"
    assert await client.exists(K.block_hash(99)) == 0
    assert await client.get(K.block_hash(101)) == b"0x" + b"11" * 32
    pending = [m.decode() for m in await client.zrange(NSK.outbox_pending, 0, -1)]
    assert pending[-2:] == [CALL.id, ALERT.id]
    assert await client.hexists(NSK.outbox, CALL.id) and await client.hexists(NSK.outbox, ALERT.id)


@pytest.mark.parametrize(("key", "wrong", "command"), wrong_types(EFFECT_KEYS))
async def test_a_key_of_another_type_refuses_the_step_then_it_lands_whole(
    redis_backend: Any, key: str, wrong: str, command: str
) -> None:
    client = redis_backend.client()
    executor = RedisExecutor(client, NS)
    await executor.load()
    assert await executor.commit(1, 100, FIRST_STEP, b"state-1")
    await create(client, key, wrong)
    before = await snapshot(client)

    with pytest.raises(CommitRefused) as info:
        await executor.commit(2, 101, STEP, b"state-2" * 7000)  # a 50 KB state

    message = str(info.value)
    assert f"{key} is a {wrong}" in message and f"{command} needs" in message
    assert "fix or delete the key(s); the step is retried until then" in message
    assert "seq=2 block=101" in message
    assert [p.key for p in info.value.problems] == [key]
    assert await snapshot(client) == before  # nothing changed, not even a TTL
    assert await RedisExecutor(client, NS).load() == (b"state-1", Checkpoint(1, 100))

    await client.delete(key)  # the operator's fix
    assert await executor.commit(2, 101, STEP, b"state-2" * 7000) is True
    await assert_step_landed(client, first_step=key != K.FINALIZER_QUEUE)
    assert await RedisExecutor(client, NS).load() == (b"state-2" * 7000, Checkpoint(2, 101))


@pytest.mark.parametrize(("key", "wrong", "command"), wrong_types(NAMESPACE_KEYS))
async def test_namespace_keys_of_another_type_refuse_the_step(
    redis_backend: Any, key: str, wrong: str, command: str
) -> None:
    client = redis_backend.client()
    await create(client, key, wrong)
    await client.lpush(K.FINALIZER_QUEUE, "older-batch")
    before = await snapshot(client)
    executor = RedisExecutor(client, NS)

    with pytest.raises(CommitRefused, match=f"{key} is a {wrong} .*, {command} needs a string"):
        await executor.commit(1, 101, STEP, b"state")  # not loaded: reads the checkpoint
    assert await snapshot(client) == before
    loaded = RedisExecutor(client, NS)
    assert await loaded.load() == (None, None)  # MGET: another type reads as missing
    with pytest.raises(CommitRefused, match=f"{key} is a {wrong}"):
        await loaded.commit(1, 101, STEP, b"state")
    assert await snapshot(client) == before

    await client.delete(key)
    assert await executor.commit(1, 101, STEP, b"state") is True
    await assert_step_landed(client, first_step=True)


@pytest.mark.parametrize("kind", TYPES)
async def test_set_overwrites_and_del_deletes_keys_of_any_type(
    redis_backend: Any, kind: str
) -> None:
    """SET replaces a key of any type and DEL removes any key, as Redis does: no refusal."""
    client = redis_backend.client()
    for key in (K.batch_count(LC, 7), K.block_hash(99), K.current_day(LC)):
        await create(client, key, kind)
    assert await RedisExecutor(client, NS).commit(1, 101, STEP, b"state") is True
    await assert_step_landed(client, first_step=False)
    assert await client.type(K.current_day(LC)) == b"string"


async def test_types_are_checked_as_the_steps_own_commands_leave_them(
    redis_backend: Any,
) -> None:
    client = redis_backend.client()
    await client.set("was-a-string", "x")
    executor = RedisExecutor(client, NS)
    refused: list[Effect] = [
        SetValue("k1", "v"),
        ListPush("k1", "a"),  # k1 is a string by now
        ListPush("k2", "a"),
        HashSet("k2", "f", "v"),  # k2 is a list by now
        SetValue("k3", "abc"),
        IncrementBy("k3", 1),  # k3 holds "abc"
        DeleteKeys(["was-a-string"]),
        ListPush("was-a-string", "fine after the DEL"),
        SetValue("k4", "41"),
        IncrementBy("k4", 1),  # fine: 42
    ]
    with pytest.raises(CommitRefused) as info:
        await executor.commit(1, 1, refused, b"s")
    assert [str(p) for p in info.value.problems] == [
        "k1 is a string (made so earlier in this step), LPUSH needs a list",
        "k2 is a list (made so earlier in this step), HSET needs a hash",
        'k3 is a string (holding "abc"), INCRBY needs an integer string',
    ]
    assert await client.keys("*") == [b"was-a-string"]

    fine = [e for i, e in enumerate(refused) if i not in (1, 3, 5)]
    assert await executor.commit(1, 1, fine, b"s") is True
    assert await client.lrange("was-a-string", 0, -1) == [b"fine after the DEL"]
    assert await client.get("k4") == b"42"


# Values Redis's INCRBY refuses, and ones it takes: the check must be exactly as strict.
NOT_INTEGERS = [
    "abc",
    "007",
    "+5",
    " 5",
    "5 ",
    "1.5",
    "",
    "-0",
    "1e3",
    "0x10",
    "99999999999999999999",
]
INTEGERS = ["0", "-5", "12", str(INT64_MAX - 1), str(INT64_MIN), str(INT64_MIN + 1)]


@pytest.mark.parametrize("value", NOT_INTEGERS + INTEGERS)
async def test_incrby_check_is_as_strict_as_redis(redis_backend: Any, value: str) -> None:
    client = redis_backend.client()
    await client.set(SLOT_1, value)
    executor = RedisExecutor(client, NS)
    if redis_backend.kind == "redis":  # what the real server says of INCRBY 1 on it
        await client.set("probe", value)
        try:
            await client.incrby("probe", 1)
            redis_takes = True
        except ResponseError:
            redis_takes = False
        await client.delete("probe")
        assert redis_takes == (value in INTEGERS)
    if value in INTEGERS:
        assert await executor.commit(1, 1, [IncrementBy(SLOT_1, 1)], b"s") is True
        assert await client.get(SLOT_1) == str(int(value) + 1).encode()
    else:
        with pytest.raises(CommitRefused, match=f"{SLOT_1} is a string .*INCRBY needs"):
            await executor.commit(1, 1, [IncrementBy(SLOT_1, 1)], b"s")
        assert await client.get(SLOT_1) == value.encode()


@pytest.mark.parametrize(
    ("start", "amounts"),
    [
        (INT64_MAX, [1]),
        (INT64_MIN, [-1]),
        (INT64_MAX - 1, [5, -10]),  # the final sum fits, the first INCRBY does not
        (0, [INT64_MAX, 1]),
        (-1, [INT64_MIN]),
    ],
)
async def test_incrby_overflow_refuses_the_step(
    redis_backend: Any, start: int, amounts: list[int]
) -> None:
    client = redis_backend.client()
    await client.set(SLOT_1, str(start))
    effects: list[Effect] = [IncrementBy(SLOT_1, a) for a in amounts]
    with pytest.raises(CommitRefused, match=f"{SLOT_1} is a string .*INCRBY needs"):
        await RedisExecutor(client, NS).commit(1, 1, [ListPush("q", "x"), *effects], b"s")
    assert await client.get(SLOT_1) == str(start).encode()
    assert await client.exists("q") == 0


async def test_incrby_sums_are_exact_across_int64(redis_backend: Any) -> None:
    """The script adds decimal strings (Lua numbers are doubles): 300 keys, chains of up to
    four increments per key (every partial sum within int64), values across the whole
    int64 range, against Python."""
    rng = random.Random(8)
    client = redis_backend.client()
    effects: list[Effect] = []
    expected: dict[str, int] = {}
    for i in range(300):
        key = f"counter.{i}"
        bound = rng.choice([10, 10**9, 10**15, 10**17, 2**62, INT64_MAX])
        value = rng.randint(-bound, bound)
        await client.set(key, str(value))
        for _ in range(rng.randint(1, 4)):
            amount = rng.randint(-bound, bound)
            if INT64_MIN <= value + amount <= INT64_MAX:
                effects.append(IncrementBy(key, amount))
                value += amount
        expected[key] = value

    assert await RedisExecutor(client, NS).commit(1, 1, effects, b"s") is True
    for key, value in expected.items():
        assert await client.get(key) == str(value).encode(), key


async def test_many_refused_keys_are_all_listed_and_the_message_stays_short(
    redis_backend: Any,
) -> None:
    client = redis_backend.client()
    effects: list[Effect] = []
    for i in range(2_000):
        await client.set(f"q.{i}", "string")
        effects.append(ListPush(f"q.{i}", "x"))
    with pytest.raises(CommitRefused, match="and 1995 more key") as info:
        await RedisExecutor(client, NS).commit(1, 1, effects, b"s")
    assert len(info.value.problems) == 2_000
    assert len(str(info.value)) < 600

"""Issue 8, part 1: whatever upstream writes into the submission sets, nothing stops.

The window read path (`SubmissionSetReader`) and the core, on a real Redis and on fakeredis:
keys of every Redis type, members that are not UTF-8, slots above 2^64-1 or of thousands of
digits, members of any length. Each used to make the step raise, and the group was retried
forever while every market waited.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqcollector.core import Input, dump_state, load_state, new_state, step
from seqcollector.core.batching import classify_member
from seqcollector.core.effects import Alert, Effect, ListPush, QuerySubmissionSets, Rejected
from seqcollector.core.inputs import Block, SubmissionSets
from seqcollector.core.state import State
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.failures import Failure, FailureReporter
from seqcollector.runtime.pipeline import Pipeline
from sim.synthetic import SyntheticSource, SyntheticWorld, WorldSpec, drive

pytestmark = pytest.mark.anyio

MARKET = "0x" + "c3" * 20
EPOCH = 9
KEYS = [f"SnapshotCollector.{MARKET}.{EPOCH}.0x{n:064x}" for n in range(1, 9)]


def member(project: str, slot: object) -> str:
    return f"{MARKET}.{EPOCH}.{project}.{slot}"


async def write_every_type(r: aioredis.Redis) -> None:
    """KEYS[0..1] sets with good and bad members; KEYS[2..7] every other Redis type."""
    await r.sadd(KEYS[0], member("p1", 1), member("p2", 2), b"\xff\xfe" + b"z" * 300)
    await r.sadd(KEYS[1], member("p1", 3), member("p3", 2**64), member("p3", "7" * 5000))
    await r.set(KEYS[2], "a string")
    await r.rpush(KEYS[3], member("p9", 9))
    await r.hset(KEYS[4], "f", "v")
    await r.zadd(KEYS[5], {"m": 1.0})
    await r.xadd(KEYS[6], {"f": "v"})
    # KEYS[7]: absent (an empty set, as the dequeuer leaves a header nobody submitted at)


def query() -> QuerySubmissionSets:
    return QuerySubmissionSets(1, MARKET, EPOCH, KEYS)


async def test_every_key_type_and_bad_member_is_skipped_with_its_key(redis_backend: Any) -> None:
    client = redis_backend.client()
    await write_every_type(client)
    answer = await SubmissionSetReader(client).answer(query())
    assert answer.members == sorted([member("p1", 1), member("p2", 2), member("p1", 3)])
    got = sorted((s.reason, s.key) for s in answer.skipped)
    assert got == sorted(
        [("not_utf8", KEYS[0]), ("slot_out_of_range", KEYS[1]), ("slot_out_of_range", KEYS[1])]
        + [("wrong_type_key", k) for k in KEYS[2:7]]
    )
    assert sum(s.reason == "slot_out_of_range" for s in answer.skipped) == 2
    types = {s.key: s.detail for s in answer.skipped if s.reason == "wrong_type_key"}
    assert types[KEYS[2]] == "a string, not a set" and types[KEYS[6]] == "a stream, not a set"
    for s in answer.skipped:
        assert len(s.detail) < 200  # shortened
    msgspec.json.encode(answer)  # journaled as it is


async def test_a_window_with_poison_is_batched_and_alerted_once_naming_key_and_member(
    redis_backend: Any,
) -> None:
    client = redis_backend.client()
    await write_every_type(client)
    state, q = closed_window()
    answer = await SubmissionSetReader(client).answer(q)
    _, effects = step(state, answer)
    assert len([e for e in effects if isinstance(e, ListPush)]) == 1  # p1 p2 (p3: all bad)
    [alert] = [e for e in effects if isinstance(e, Alert)]
    assert f"epoch {EPOCH}" in alert.message and "skipped 8 entries" in alert.message
    assert KEYS[0] in alert.message  # named: the set holding the first example (not_utf8)
    assert "b'\\xff\\xfe" in alert.message
    assert state.counters["wrong_type_key"] == 5 and state.counters["not_utf8"] == 1
    load_state(dump_state(state))


def closed_window(keys: list[str] = KEYS) -> tuple[State, QuerySubmissionSets]:
    """A core state with the window of (MARKET, EPOCH) closed on `keys`' headers."""
    from seqcollector.core import CoreConfig, MarketParams
    from seqcollector.core.abi import EPOCH_RELEASED
    from seqcollector.core.inputs import Log

    ps = "0x" + "aa" * 20
    state = new_state(CoreConfig(protocol_state=ps, markets=[MARKET], batch_size=2))
    step(state, MarketParams(MARKET, 4, 86400, 10, 10, 1))
    headers = [k.rsplit(".", 1)[1] for k in keys]
    parent = "0x" + "00" * 32
    for n, h in enumerate(headers, start=1):
        step(state, Block(n, h, parent, 1000 + (n - 1) // 2))  # two blocks a second
        parent = h
        if n == 1:
            topics = [EPOCH_RELEASED, "0x" + "00" * 12 + MARKET[2:], f"0x{EPOCH:064x}"]
            step(state, Log(ps, topics, "0x" + "00" * 96, 1, h, 0))
    _, effects = step(state, Block(len(headers) + 1, "0x" + "ee" * 32, parent, 1010))
    [q] = [e for e in effects if isinstance(e, QuerySubmissionSets)]
    assert q.keys == keys
    return state, q


# -- arbitrary members and key types through the live read path and the core ---------------

_TYPES = ("set", "string", "list", "hash", "zset", "stream", "none")
_members = st.lists(
    st.binary(max_size=64)
    | st.text(max_size=40).map(str.encode)
    | st.builds(
        lambda p, s: member(p, s).encode(),
        st.text(max_size=6),
        st.integers(-5, 2**70) | st.text(max_size=8),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(_TYPES), _members), min_size=1, max_size=5))
def test_arbitrary_members_and_key_types_never_raise_or_stall(
    redis_server: str, keys_and_members: list[tuple[str, list[bytes]]]
) -> None:
    """Any bytes, any key type: the read answers, the core batches every well-formed member
    exactly once, counts the rest, and the state and effects can be stored and sent."""
    keys = KEYS[: len(keys_and_members)]

    async def go() -> tuple[SubmissionSets, list[Effect], State]:
        client = aioredis.Redis.from_url(redis_server)
        try:
            await client.flushall()
            for key, (kind, members) in zip(keys, keys_and_members, strict=True):
                await write_as(client, key, kind, members)
            state, q = closed_window(keys)
            answer = await SubmissionSetReader(client).answer(q)
            return answer, step(state, answer)[1], state
        finally:
            await client.aclose()

    _, effects, state = anyio.run(go)
    expected = set()
    for kind, members in keys_and_members:
        if kind == "set":
            for m in members:
                text = m.decode(errors="replace")
                if m == text.encode() and not isinstance(classify_member(text), str):
                    expected.add(text)
    batched = set()
    for e in effects:
        if isinstance(e, ListPush):
            for items in msgspec.json.decode(e.value)["Batch"].values():
                batched.update(items)
    assert batched == expected
    assert not [e for e in effects if isinstance(e, Rejected)]
    assert 9 in state.emitted[MARKET].epochs  # batched: the window did not stall
    msgspec.json.encode(effects)
    load_state(dump_state(state))


async def write_as(r: aioredis.Redis, key: str, kind: str, members: list[bytes]) -> None:
    values = members or [b"x"]
    if kind == "set" and members:
        await r.sadd(key, *members)
    elif kind == "string":
        await r.set(key, values[0])
    elif kind == "list":
        await r.rpush(key, *values)
    elif kind == "hash":
        await r.hset(key, mapping={v: b"1" for v in values})
    elif kind == "zset":
        await r.zadd(key, {v: 1.0 for v in values})
    elif kind == "stream":
        await r.xadd(key, {b"f": values[0]})


# -- the collector: other markets never wait --------------------------------------------------


class PoisonedSource:
    """The synthetic chain, with upstream writing garbage into one market's sets of every
    block as it is yielded: a string where a set belongs (at headers nobody else writes),
    bytes that are not UTF-8, a slot above 2^64-1 and a 10,000-character member."""

    def __init__(self, source: SyntheticSource, redis: aioredis.Redis, market: str) -> None:
        self.source, self.redis, self.market = source, redis, market

    @property
    def chain_head(self) -> int | None:
        return self.source.chain_head

    async def units(self) -> AsyncGenerator[Sequence[Input], None]:
        async with aclosing(self.source.units()) as units:
            async for unit in units:
                for inp in unit:
                    if isinstance(inp, Block):
                        await self.poison(inp)
                yield unit

    async def poison(self, block: Block) -> None:
        for epoch in range(1, 30):
            key = f"SnapshotCollector.{self.market}.{epoch}.{block.hash}"
            if block.number % 3 == 0 and not await self.redis.exists(key):
                await self.redis.set(key, "not a set")
                continue
            bad = [b"\xc3\x28", f"{self.market}.{epoch}.p.{2**65}".encode(), b"x" * 10_000]
            await self.redis.sadd(key, *bad)


async def test_poison_in_one_market_never_holds_up_the_others(redis_url: str) -> None:
    """Every window of both markets is batched on the first attempt, as on a clean chain;
    no failure is reported."""
    spec = WorldSpec(seed=5, markets=2, blocks=120)
    world = SyntheticWorld(spec)
    config = world.core_config(batch_size=3)
    poisoned = config.markets[0]
    clean = [i for i in drive(SyntheticWorld(spec), config) if isinstance(i, SubmissionSets)]
    redis = aioredis.Redis.from_url(redis_url)
    reporter = FailureReporter()
    pipeline = Pipeline(RedisExecutor(redis, "poison"), config)
    await pipeline.open()
    source = PoisonedSource(SyntheticSource(world, redis), redis, poisoned)
    collector = Collector(pipeline, source, reporter=reporter, handle_signals=False)
    with anyio.fail_after(60):
        await collector.run()
    assert reporter.count == 0  # nothing failed, nothing was retried
    batched = {(lc, e) for lc, em in pipeline.state.emitted.items() for e in em.epochs}
    assert {(i.market, i.epoch) for i in clean} == batched
    for i in clean:  # the same batches as without the poison
        got = await redis.get(f"BatchCountKey.{i.market}.{i.epoch}")
        assert got is not None
    assert pipeline.state.counters["wrong_type_key"] > 0
    assert pipeline.state.counters["not_utf8"] > 0
    assert pipeline.state.counters["slot_out_of_range"] > 0
    await redis.aclose()


class RecordingReporter(FailureReporter):
    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Failure] = []

    async def report(self, failure: Failure, *args: Any, **kwargs: Any) -> None:
        self.failures.append(failure)
        await super().report(failure, *args, **kwargs)


async def test_a_core_that_raises_is_named_reported_every_attempt_and_nothing_is_skipped(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A core bug (simulated: the core cannot be made to raise otherwise) names the input
    and is reported at every attempt; nothing after it is applied until it passes."""
    import seqcollector.runtime.pipeline as pipeline_module

    world = SyntheticWorld(WorldSpec(seed=2, markets=1, blocks=60))
    config = world.core_config()
    real_step = pipeline_module.step
    raised: list[int] = []

    def buggy_step(state: State, inp: Input) -> tuple[State, list[Effect]]:
        if isinstance(inp, SubmissionSets) and inp.epoch == 3 and len(raised) < 3:
            raised.append(state.inputs_seen)
            raise KeyError("a bug")
        return real_step(state, inp)

    monkeypatch.setattr(pipeline_module, "step", buggy_step)
    redis = aioredis.Redis.from_url(redis_url)
    reporter = RecordingReporter()
    pipeline = Pipeline(RedisExecutor(redis, "bug"), config)
    await pipeline.open()
    collector = Collector(
        pipeline,
        SyntheticSource(world, redis),
        reporter=reporter,
        handle_signals=False,
        retry_first_s=0.01,
        retry_max_s=0.05,
    )
    with anyio.fail_after(60):
        await collector.run()
    assert len(raised) == 3 and [f.operation for f in reporter.failures] == ["core_step"] * 3
    failure = reporter.failures[0]
    assert failure.market == config.markets[0] and failure.epoch == 3
    assert "SubmissionSets" in failure.error and "KeyError" in failure.error
    assert "seq=" in failure.error and "bug in seqcollector" in failure.error
    assert 3 in pipeline.state.emitted[config.markets[0]].epochs  # then it landed, whole
    await redis.aclose()


async def test_a_damaged_stored_state_stops_the_start_with_a_message(redis_backend: Any) -> None:
    from seqcollector.runtime.pipeline import ResumeError

    client = redis_backend.client()
    world = SyntheticWorld(WorldSpec(blocks=4))
    executor = RedisExecutor(client, "damaged")
    await executor.commit(1, 1, [], b"\xc1 not msgpack")
    pipeline = Pipeline(executor, world.core_config())
    with pytest.raises(ResumeError, match="'damaged': the stored core state cannot be read"):
        await pipeline.open()


async def test_a_stored_state_of_another_format_stops_the_start_saying_what_to_do(
    redis_backend: Any,
) -> None:
    from seqcollector.core import dump_state, new_state
    from seqcollector.runtime.pipeline import ResumeError

    client = redis_backend.client()
    config = SyntheticWorld(WorldSpec(blocks=4)).core_config()
    old = msgspec.msgpack.decode(dump_state(new_state(config)))
    del old["format"]  # as the versions before the state format was recorded wrote it
    executor = RedisExecutor(client, "oldformat")
    await executor.commit(1, 1, [], msgspec.msgpack.encode(old))
    with pytest.raises(ResumeError) as raised:
        await Pipeline(executor, config).open()
    text = str(raised.value)
    assert text.startswith("namespace 'oldformat': the stored core state is format 1")
    assert "--namespace" in text and "seqcollector replay" in text and "\n" not in text


async def test_a_clean_window_is_read_in_one_round_trip(redis_backend: Any) -> None:
    client, trips = redis_backend.counting_client()
    keys = [f"SnapshotCollector.{MARKET}.7.0x{h:064x}" for h in range(50)]
    for i, key in enumerate(keys):
        await client.sadd(key, f"{MARKET}.7.project{i % 7}.{i % 11}", f"{MARKET}.7.shared.1")
    members = {f"{MARKET}.7.project{i % 7}.{i % 11}" for i in range(50)} | {f"{MARKET}.7.shared.1"}
    reader = SubmissionSetReader(client)
    trips.reset()
    missing = f"SnapshotCollector.{MARKET}.7.0x{99:064x}"
    answer = await reader.answer(QuerySubmissionSets(1, MARKET, 7, [*keys, missing]))
    assert answer.members == sorted(members) and answer.skipped == []
    assert trips.count == 1
    assert (await reader.answer(QuerySubmissionSets(2, MARKET, 7, []))).members == []
    assert trips.count == 1

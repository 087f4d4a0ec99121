"""Reward updates through the whole pipeline on a real redis-server: the eligibility keys
read from Redis, the calls in the outbox with the Go body, the rollover marker keys in Go
format (with TTLs) removed when the final update fires, a journal that replays to the same
effects byte for byte, and R5 end to end: with the relayer refusing `/submitUpdateRewards`
at first, every final chunk is delivered once and `/submitBatchSize` goes out meanwhile."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from eth_abi.abi import encode

from seqcollector.core import Block, CoreConfig, Input, Log, MarketParams
from seqcollector.core.abi import DAY_STARTED, EPOCH_RELEASED
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import Effect, QueryEligibleOnChain, RelayerCall
from seqcollector.core.inputs import EligibleOnChain
from seqcollector.runtime.compose import CollectorRoot, Delivery, compose_collector
from seqcollector.runtime.executor import RedisExecutor, embedded_redis, redis_client
from seqcollector.runtime.layout import StoreLayout, decode_entry
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.replay import replay_journal
from sim.relayer import DISPATCHER_TOKEN, Relayer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

# -- the chain (the few builders of tests/unit/corekit.py this needs) -----------------------

PS = "0x" + "aa" * 20
LC = "0x0c8ca0a1d4f56fd6a9f0e1b1b2a3b4c5d6e7f809"
EIP55 = checksum(LC)
T0 = 1_700_000_000
NS = "rewards"
REWARDS, BATCH_SIZE = "/submitUpdateRewards", "/submitBatchSize"
GO_FIELDS = ["dataMarketAddress", "slotIDs", "submissionsList", "day", "eligibleNodes"]


def h(n: int) -> str:
    return "0x" + hashlib.sha256(f"0:{n}".encode()).hexdigest()


def block(n: int) -> Block:
    return Block(n, h(n), h(n - 1), T0 + 2 * n)


def _topic(value: str | int) -> str:
    if isinstance(value, str):
        return "0x" + "00" * 12 + value[2:]
    return "0x" + value.to_bytes(32, "big").hex()


def epoch_released(n: int, epoch: int) -> Log:
    data = "0x" + encode(["uint256"] * 3, [1, 2, 3]).hex()
    return Log(PS, [EPOCH_RELEASED, _topic(LC), _topic(epoch)], data, n, h(n), 0)


def day_started(n: int, day: int) -> Log:
    data = "0x" + encode(["uint256", "uint256"], [day, 5]).hex()
    return Log(PS, [DAY_STARTED, _topic(LC)], data, n, h(n), 0)


def groups(first: int, last: int, days: dict[int, int]) -> list[list[Input]]:
    """One group per block: the block, its DayStartedEvent, an epoch released at every odd
    block (epoch (n - 99) // 2; window 6 s, 2 s blocks: batched 4 blocks later)."""
    out: list[list[Input]] = []
    for n in range(first, last + 1):
        group: list[Input] = [block(n)]
        if n in days:
            group.append(day_started(n, days[n]))
        if n % 2 == 1:
            group.append(epoch_released(n, (n - 99) // 2))
        out.append(group)
    return out


def core_config(**kw: Any) -> CoreConfig:
    base: dict[str, Any] = {
        "protocol_state": PS,
        "markets": [LC],
        "batch_size": 2,
        "rewards": True,
        "rewards_update_epoch_interval": 2,
        "rewards_update_batch_size": 2,
        "past_days_buffer": 1,
    }
    return CoreConfig(**(base | kw))


class OnChainCounts:
    """`eligibleNodesForDay(X)` from a dict (a day not in it: 0), every answer recorded."""

    def __init__(self, counts: dict[int, int]) -> None:
        self.counts = counts
        self.asked: list[QueryEligibleOnChain] = []

    async def answer(self, q: QueryEligibleOnChain) -> EligibleOnChain:
        self.asked.append(q)
        return EligibleOnChain(
            q.query_id, q.market, q.epoch, [self.counts.get(d, 0) for d in q.days]
        )


# the eligibility keys, as the finalizer writes them: day 1's set {1, 2, 4, 5, 6} (6 has no
# count), day 2's {3}; TotalNodesCount 5
DAY_SETS = {1: ["5", "1", "4", "2", "6"], 2: ["3"]}
COUNTS = {(1, 1): 11, (1, 2): 12, (1, 4): 14, (1, 5): 15, (2, 3): 23, (2, 1): 21}


async def write_eligibility(redis: aioredis.Redis, total_nodes: bool = True) -> None:
    if total_nodes:
        await redis.set("TotalNodesCount", "5")
    for day, members in DAY_SETS.items():
        await redis.sadd(f"EligibleNodeByDayKey.{LC}.{day}", *members)
    for (day, slot), n in COUNTS.items():
        await redis.set(f"EligibleSlotSubmissionsKey.{LC}.{day}.{slot}", str(n))


async def write_submissions(redis: aioredis.Redis, first: int, last: int) -> None:
    """Two snapshotters' submissions in the release block of every epoch."""
    for n in range(first, last + 1, 2):
        epoch = (n - 99) // 2
        members = [f"{LC}.{epoch}.p{slot}.{slot}" for slot in (1, 2)]
        await redis.sadd(f"SnapshotCollector.{LC}.{epoch}.{h(n)}", *members)


def root(
    redis: aioredis.Redis, config: CoreConfig, delivery: Delivery, **kw: Any
) -> tuple[CollectorRoot, OnChainCounts]:
    chain = OnChainCounts({2: 1})  # day 1: 0 on chain (P2 sends), day 2: already there
    made = compose_collector(
        RedisExecutor(redis, NS),
        config,
        delivery,
        answerers={QueryEligibleOnChain: chain},
        check_invariants=True,
        handle_signals=False,
        **kw,
    )
    return made, chain


async def start(made: CollectorRoot, seen: list[Effect]) -> Pipeline:
    pipeline = made.pipeline()
    pipeline.on_effects = seen.extend
    await pipeline.open()
    await pipeline.apply([MarketParams(LC, 6, 864_000_000, 1000, 10, 1)])
    await pipeline.apply([block(100)])
    return pipeline


async def outbox_entries(redis: aioredis.Redis) -> dict[str, bytes]:
    raw = await redis.hgetall(StoreLayout(NS).outbox)
    return {k.decode(): v for k, v in raw.items()}


async def pending(redis: aioredis.Redis) -> list[str]:
    return [i.decode() for i in await redis.zrange(StoreLayout(NS).outbox_pending, 0, -1)]


def reward_calls(effects: list[Effect], prefix: str = "rewards-") -> list[RelayerCall]:
    return [
        e
        for e in effects
        if isinstance(e, RelayerCall) and e.path == REWARDS and e.id.startswith(prefix)
    ]


@pytest.fixture
async def redis(redis_url: str) -> Any:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


# -- tests ----------------------------------------------------------------------------------


async def test_reward_calls_and_rollover_markers_in_redis_and_a_journal_that_replays(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Day 2 starts at block 111: epoch 5 (batched at block 113) leaves a marker for day 1
    with BufferEpoch 10; epoch 10 (batched at block 123) fires the final update of day 1."""
    await write_eligibility(redis)
    await write_submissions(redis, 101, 140)
    journal = tmp_path / "rewards.jsonl"
    made, chain = root(
        redis, core_config(), Delivery("http://127.0.0.1:9", "tok", ""), journal=journal
    )
    seen: list[Effect] = []
    pipeline = await start(made, seen)
    for group in groups(101, 118, days={111: 2}):
        await pipeline.apply(group)

    # the marker, in Go's format, with TTLs (Go: none)
    marker_set = f"DayRolloverEpochMarkerSetKey.{LC}"
    details_key = f"DayRolloverEpochMarkerDetailsKey.{LC}.5"
    assert await redis.smembers(marker_set) == {b"5"}
    assert await redis.get(details_key) == b'{"LastKnownDay":"1","CurrentEpoch":5,"BufferEpoch":10}'
    assert 0 < await redis.ttl(marker_set) <= 7 * 24 * 3600
    assert 0 < await redis.ttl(details_key) <= 7 * 24 * 3600
    assert await redis.get(f"LastKnownDayKey.{LC}") == b"2"
    assert await redis.get(f"CurrentDayKey.{LC}") == b"2"
    assert not reward_calls(seen, "rewards-final:")

    for group in groups(119, 140, days={}):
        await pipeline.apply(group)
    await pipeline.close()

    # the final update fired: marker gone, its chunks in the outbox with the Go body
    assert not await redis.exists(marker_set, details_key)
    entries = await outbox_entries(redis)
    waiting = await pending(redis)
    finals = reward_calls(seen, "rewards-final:")
    assert [c.id for c in finals] == [f"rewards-final:{LC}:1:{i}" for i in range(2)]
    assert [(c.body["slotIDs"], c.body["submissionsList"]) for c in finals] == [
        ([1, 2], [11, 12]),
        ([4, 5], [14, 15]),
    ]
    for call in reward_calls(seen):
        assert call.id in entries and call.id in waiting
        stored = json.loads(entries[call.id])
        assert stored["path"] == REWARDS and list(stored["body"]) == GO_FIELDS
        assert stored["body"]["dataMarketAddress"] == EIP55
        assert decode_entry(entries[call.id]) == call
    assert all(c.body["eligibleNodes"] == 5 and c.body["day"] == 1 for c in finals)
    # P1 at even epochs: slots 1..5 of the current day that have a count; eligibleNodes 0
    periodic = reward_calls(seen, "rewards-periodic:")
    assert periodic and all(c.body["eligibleNodes"] == 0 for c in periodic)
    assert {tuple(c.body["slotIDs"]) for c in periodic if c.body["day"] == 2} == {(1, 3)}
    # P2 for day 1 once its final fired, since the chain holds 0 for it: {[], [], 1, 5}
    rechecks = reward_calls(seen, "rewards-recheck:")
    assert rechecks and all(
        (c.body["slotIDs"], c.body["submissionsList"], c.body["day"], c.body["eligibleNodes"])
        == ([], [], 1, 5)
        for c in rechecks
    )
    first_final = seen.index(finals[0])
    assert all(seen.index(c) > first_final for c in rechecks)  # none while pending
    assert all(q.days == [1] for q in chain.asked)

    # the journal replays to the same effects digest, the reward calls byte for byte
    effects_out = io.BytesIO()
    store = embedded_redis()
    result = await replay_journal(journal, store, "replay", effects_out=effects_out)
    assert pipeline.digest is not None and result.digest == pipeline.digest.hexdigest()
    live = [msgspec.json.encode(e) for e in reward_calls(seen)]
    replayed = [line for line in effects_out.getvalue().splitlines() if REWARDS.encode() in line]
    assert replayed == live and len(live) > 5
    replay_outbox = {k.decode(): v for k, v in (await store.hgetall("replay:outbox")).items()}
    assert {i: replay_outbox[i] for i in entries} == entries
    await store.aclose()


async def test_r5_final_chunks_delivered_once_through_a_failing_relayer(
    redis: aioredis.Redis,
) -> None:
    """R5 end to end: Go removes the marker before any chunk is sent and never resends a
    failed one. Here the relayer refuses the first 20 `/submitUpdateRewards` requests (the
    final update's chunks are the only reward calls: no TotalNodesCount, no past-days
    buffer): the chunks stay in the outbox and are each delivered exactly once, while every
    `/submitBatchSize` goes out meanwhile."""
    await write_eligibility(redis, total_nodes=False)
    await write_submissions(redis, 101, 150)
    with Relayer(fail_next=20, fail_path=REWARDS, auth_token=DISPATCHER_TOKEN) as relayer:
        config = core_config(past_days_buffer=0, rewards_update_batch_size=2)
        made, _ = root(redis, config, relayer.delivery())
        seen: list[Effect] = []
        pipeline = await start(made, seen)
        held_back_while_sizes_went_out = 0
        async with made.dispatcher as dispatcher:
            for group in groups(101, 150, days={111: 2}):
                await pipeline.apply(group)
                await dispatcher.deliver_pending()
                left = await pending(redis)
                assert not [i for i in left if i.startswith("submitBatchSize:")]
                if any(i.startswith("rewards-final:") for i in left):
                    held_back_while_sizes_went_out += 1
            for _ in range(10):
                if not await pending(redis):
                    break
                await dispatcher.deliver_pending()
        await pipeline.close()

    assert held_back_while_sizes_went_out >= 3
    assert await pending(redis) == []
    assert relayer.failures == 20 and relayer.violations() == []
    finals = reward_calls(seen, "rewards-final:")
    assert [c.id for c in finals] == [f"rewards-final:{LC}:1:{i}" for i in range(2)]
    assert reward_calls(seen) == finals  # nothing else on the reward path
    by_body = {json.dumps(c.body | {"authToken": DISPATCHER_TOKEN}): c.id for c in finals}
    delivered = Counter(by_body[json.dumps(body)] for body in relayer.reward_updates())
    assert delivered == {c.id: 1 for c in finals}  # each chunk once, by its outbox id
    attempts = Counter(by_body[json.dumps(b)] for b in relayer.bodies(REWARDS))
    assert all(n > 1 for n in attempts.values())  # each was refused, then resent
    sizes = [b["epochID"] for b, ok in relayer.answered(BATCH_SIZE) if ok]
    batched = sorted(
        c.body["epochID"] for c in seen if isinstance(c, RelayerCall) and c.path == BATCH_SIZE
    )
    assert sizes == batched and len(sizes) > 20
    assert all(list(b) == [*GO_FIELDS, "authToken"] for b in relayer.bodies(REWARDS))

"""The reward queries' answerers on a real redis-server (pipelined: O(1) round trips for
10,000 slots), `eligibleNodesForDay` over JSON-RPC from an eth-tester chain pinned to a
block (a failing node is an answer, never a raise), and the commit script's SADD/SREM."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from seqcollector.core.effects import (
    QueryDaySet,
    QueryEligibleOnChain,
    QueryNodeCounts,
    QueryPastDays,
    SetAdd,
    SetRemove,
)
from seqcollector.runtime.executor import CommitRefused, RedisExecutor
from seqcollector.runtime.reward_answers import EligibilityReader, EligibleOnChainReader
from seqcollector.sources.rpc import RpcPool
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import deterministic_tester
from sim.relayer import DISPATCHER_TOKEN
from sim.reward_updates import OnChainRewards
from sim.rpc_server import TesterRpcServer

pytestmark = pytest.mark.anyio
LC = "0x0c2e22fe7526faef28e7a58c84f8723defce200c"


@pytest.mark.redis
async def test_periodic_counts_of_10000_slots_in_two_round_trips(redis_backend: Any) -> None:
    redis, counter = redis_backend.counting_client()
    await redis.set("TotalNodesCount", "10000")
    async with redis.pipeline(transaction=False) as pipe:
        for slot in range(1, 10_001, 3):
            pipe.set(f"EligibleSlotSubmissionsKey.{LC}.4.{slot}", str(slot % 7))
        pipe.set(f"EligibleSlotSubmissionsKey.{LC}.4.2", "not a number")
        await pipe.execute()
    counter.reset()
    answer = await EligibilityReader(redis).answer(QueryNodeCounts(1, LC, 50, 4))
    assert counter.count == 2  # Go: 10,001 GETs
    assert answer.total_nodes == 10_000
    assert answer.slots == list(range(1, 10_001, 3))
    assert answer.counts == [s % 7 for s in answer.slots]
    assert answer.malformed == 1


@pytest.mark.redis
async def test_missing_total_nodes_count_is_answered_as_none(redis_backend: Any) -> None:
    redis = redis_backend.client()
    answer = await EligibilityReader(redis).answer(QueryNodeCounts(1, LC, 50, 4))
    assert answer.total_nodes is None and answer.slots == []


@pytest.mark.redis
async def test_day_set_members_ascending_with_their_counts(redis_backend: Any) -> None:
    redis, counter = redis_backend.counting_client()
    await redis.sadd(f"EligibleNodeByDayKey.{LC}.3", "12", "3", "100", "x")
    for slot, n in ((3, 5), (100, 9)):
        await redis.set(f"EligibleSlotSubmissionsKey.{LC}.3.{slot}", str(n))
    counter.reset()
    answer = await EligibilityReader(redis).answer(QueryDaySet(2, LC, 60, 3, 55))
    assert counter.count == 2
    assert (answer.size, answer.slots, answer.counts) == (4, [3, 100], [5, 9])
    assert answer.malformed == 1  # "x"; 12 has no count: left out, not malformed


@pytest.mark.redis
async def test_past_days_sizes_and_current_members_in_one_round_trip(redis_backend: Any) -> None:
    redis, counter = redis_backend.counting_client()
    await redis.sadd(f"EligibleNodeByDayKey.{LC}.4", "1", "2")
    await redis.sadd(f"EligibleNodeByDayKey.{LC}.5", "9", "3")
    counter.reset()
    answer = await EligibilityReader(redis).answer(QueryPastDays(3, LC, 50, 10, [4, 3], 5))
    assert counter.count == 1
    assert (answer.sizes, answer.members) == ([2, 0], [3, 9])


@pytest.mark.redis
async def test_commit_adds_and_removes_marker_members_with_a_ttl(redis_backend: Any) -> None:
    redis = redis_backend.client()
    executor = RedisExecutor(redis, "ns")
    await executor.load()
    key = f"DayRolloverEpochMarkerSetKey.{LC}"
    await executor.commit(1, 1, [SetAdd(key, "7", 3600), SetAdd(key, "9", 3600)], b"s1")
    assert await redis.smembers(key) == {b"7", b"9"}
    assert 0 < await redis.ttl(key) <= 3600
    await executor.commit(2, 2, [SetRemove(key, "7")], b"s2")
    assert await redis.smembers(key) == {b"9"}
    await redis.set("not-a-set", "x")
    with pytest.raises(CommitRefused):
        await executor.commit(3, 3, [SetAdd("not-a-set", "1")], b"s3")


@pytest.mark.redis
async def test_eligible_nodes_for_day_read_at_the_block_over_json_rpc() -> None:
    tester = deterministic_tester(seed=4, genesis_timestamp=1_700_000_000, block_time=2)
    with TesterRpcServer(tester) as server:
        w3 = server.async_web3()
        client = ProtocolStateClient(w3, await deploy_protocol_state(w3))
        market = await client.create_data_market_contract()
        body = {
            "dataMarketAddress": market,
            "slotIDs": [],
            "submissionsList": [],
            "day": 2,
            "eligibleNodes": 7,
            "authToken": DISPATCHER_TOKEN,
        }
        before = tester.get_block_by_number("latest")["number"]
        assert await OnChainRewards().submit(client, [body]) == 1
        lc = market.lower()
        async with RpcPool([server.url]) as pool:
            reader = EligibleOnChainReader(pool.request, 5.0)
            old = await reader.answer(QueryEligibleOnChain(1, lc, 9, before, [2, 1], [7, 3]))
            new = await reader.answer(QueryEligibleOnChain(2, lc, 9, before + 1, [2, 1], [7, 3]))
        assert (old.counts, new.counts, new.error) == ([0, 0], [7, 0], "")


async def test_a_node_that_fails_is_an_answer_not_a_raise() -> None:
    async def down(method: str, params: list[Any]) -> Any:
        raise ConnectionError("node down")

    reader = EligibleOnChainReader(down, 1.0)
    market = to_checksum_address(LC).lower()
    answer = await reader.answer(QueryEligibleOnChain(1, market, 9, 100, [3, 2], [1, 1]))
    assert answer.counts == [None, None]
    assert "node down" in answer.error and "day 3" in answer.error


@pytest.mark.redis
async def test_stored_days_read_in_the_go_format(redis_backend: Any) -> None:
    from seqcollector.runtime.stored_days import read_stored_days

    redis = redis_backend.client()
    other = "0x" + "ab" * 20
    await redis.set(f"LastKnownDayKey.{LC}", "4")
    await redis.sadd(f"DayRolloverEpochMarkerSetKey.{LC}", "90", "120", "7")
    await redis.set(
        f"DayRolloverEpochMarkerDetailsKey.{LC}.90",
        '{"LastKnownDay":"2","CurrentEpoch":90,"BufferEpoch":95}',
    )
    await redis.set(
        f"DayRolloverEpochMarkerDetailsKey.{LC}.120",
        '{"LastKnownDay":"3","CurrentEpoch":120,"BufferEpoch":125}',
    )
    await redis.set(f"DayRolloverEpochMarkerDetailsKey.{LC}.7", "not json")
    found = await read_stored_days(redis, [LC, other])
    assert [(s.market, s.last_known_day, s.markers) for s in found] == [
        (LC, 4, [(2, 90, 95), (3, 120, 125)]),
        (other, None, []),
    ]

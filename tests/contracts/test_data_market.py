"""DataMarket deployed on eth-tester and on anvil, bound to a ProtocolState: updateRewards sent
to ProtocolState reaches the DataMarket at the market address (eligibleNodesForDay answers an
eth_call there), only the owner may send it, only ProtocolState may write to the market, and
short days roll over (epochsInADay 10)."""

from __future__ import annotations

from typing import Any

import pytest
from contractkit import MARKET_A, decoded
from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped]
from eth_utils.address import is_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError

from seqcollector.core.abi import DayStarted, EpochReleased
from sim.contract import (
    DataMarketClient,
    ProtocolStateClient,
    deploy_data_market,
    deploy_protocol_state,
)

pytestmark = pytest.mark.anyio
REVERTED = (ContractLogicError, TransactionFailed)  # anvil, eth-tester


async def _protocol_state(w3: AsyncWeb3[Any]) -> ProtocolStateClient:
    return ProtocolStateClient(w3, await deploy_protocol_state(w3))


async def _eligible_by_raw_call(w3: AsyncWeb3[Any], market: str, day: int) -> int:
    """`eligibleNodesForDay(day)` as the collector asks it: a bare eth_call at the market."""
    data = keccak(text="eligibleNodesForDay(uint256)")[:4] + day.to_bytes(32, "big")
    reply = await w3.eth.call({"to": market, "data": data})  # type: ignore[typeddict-item]
    return int.from_bytes(reply, "big")


async def test_data_market_contract_is_registered_with_the_defaults(
    chain: AsyncWeb3[Any],
) -> None:
    client = await _protocol_state(chain)
    market = await client.create_data_market_contract()
    assert is_checksum_address(market) and market != client.address
    assert await DataMarketClient(chain, market).protocol_state() == client.address
    assert await client.is_data_market_contract(market)
    assert not await client.is_data_market_contract(MARKET_A)
    params = await client.read_market_params(market)
    assert params["dayCounter"] == 1 and params["epochsInADay"] == 720
    assert params["dailySnapshotQuota"] == 1000 and params["currentEpoch"] == 0


async def test_update_rewards_through_protocol_state_reaches_the_data_market(
    chain: AsyncWeb3[Any],
) -> None:
    client = await _protocol_state(chain)
    market = await client.create_data_market_contract()
    other = await client.create_data_market_contract()
    data_market = DataMarketClient(chain, market)
    await client.update_rewards(market, [1, 2, 7], [10, 12, 9], 1, 0)  # P1: eligibleNodes 0
    assert await data_market.eligible_nodes_for_day(1) == 0
    receipt = await client.update_rewards(market, [], [], 1, 3)  # P2: {[], [], X, n}
    before = receipt["blockNumber"] - 1
    await client.update_rewards(market, [2], [13], 1, 5)  # the first non-zero count sticks
    assert await data_market.eligible_nodes_for_day(1) == 3
    assert await _eligible_by_raw_call(chain, market, 1) == 3
    assert await data_market.eligible_nodes_for_day(1, block=before) == 0  # as of a block
    assert await data_market.eligible_nodes_for_day(2) == 0
    counts = [await data_market.slot_submission_count(slot, 1) for slot in (1, 2, 7, 3)]
    assert counts == [10, 13, 9, 0]
    # ProtocolState's own views (read by the Go API) agree with the market's
    assert await client.eligible_nodes_for_day(market, 1) == 3
    assert [await client.slot_submission_count(market, s, 1) for s in (1, 2, 7)] == [10, 13, 9]
    assert await DataMarketClient(chain, other).eligible_nodes_for_day(1) == 0
    assert await _eligible_by_raw_call(chain, other, 1) == 0
    assert decoded(receipt) == []  # no event added: the collector's log stream is unchanged


async def test_only_the_owner_updates_rewards_and_only_protocol_state_writes_the_market(
    chain: AsyncWeb3[Any],
) -> None:
    client = await _protocol_state(chain)
    market = await client.create_data_market_contract()
    owner, stranger_account = (await chain.eth.accounts)[:2]
    stranger = ProtocolStateClient(chain, client.address, sender=stranger_account)
    with pytest.raises(REVERTED, match="not owner"):
        await stranger.update_rewards(market, [1], [5], 1, 1)
    data_market = DataMarketClient(chain, market).contract.functions
    for call in (
        data_market.updateEligibleNodesForDay(1, 9),
        data_market.updateRewards(1, 5, 1),
    ):
        with pytest.raises(REVERTED, match="only protocol state"):
            await call.transact({"from": owner})
    with pytest.raises(REVERTED, match="length mismatch"):
        await client.update_rewards(market, [1, 2], [5], 1, 1)
    assert await DataMarketClient(chain, market).eligible_nodes_for_day(1) == 0


async def test_a_data_market_of_another_protocol_state_is_refused(chain: AsyncWeb3[Any]) -> None:
    client = await _protocol_state(chain)
    elsewhere = await deploy_protocol_state(chain)
    foreign = await deploy_data_market(chain, elsewhere)
    with pytest.raises(REVERTED, match="data market of another protocol state"):
        await client.create_data_market(foreign)
    assert (await client.read_market_params(foreign))["dayCounter"] == 0  # not registered


async def test_short_days_roll_over_on_a_data_market_contract(chain: AsyncWeb3[Any]) -> None:
    client = await _protocol_state(chain)
    market = await client.create_data_market_contract()
    await client.set_epochs_in_a_day(market, 10)
    labels = []
    for epoch in range(1, 23):
        for event in decoded(await client.release_epoch(market, epoch, epoch)):
            assert isinstance(event, DayStarted | EpochReleased)
            assert event.market == market.lower()
            labels.append(f"day {event.day}" if isinstance(event, DayStarted) else epoch)
    # DayStartedEvent precedes EpochReleased when epochId % 10 == 1 and epochId > 1
    assert labels == [*range(1, 11), "day 2", *range(11, 21), "day 3", 21, 22]
    assert (await client.read_market_params(market))["dayCounter"] == 3

"""ProtocolState deployed on eth-tester and on anvil: defaults, the day-counter rule, batch
events as seqcollector decodes them, rewards storage, setters and the owner check."""

from __future__ import annotations

from typing import Any

import pytest
from contractkit import MARKET_A, MARKET_B, decoded
from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped]
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError

from seqcollector.core.abi import (
    BatchSubmissionsCompleted,
    DayStarted,
    EpochReleased,
    Event,
    SnapshotBatchSubmitted,
)
from sim.contract import ProtocolStateClient, deploy_protocol_state

pytestmark = pytest.mark.anyio
REVERTED = (ContractLogicError, TransactionFailed)  # anvil, eth-tester
DEFAULTS = {
    "snapshotSubmissionWindow": 20,
    "DAY_SIZE": 864_000_000,
    "dailySnapshotQuota": 1000,
    "epochsInADay": 720,
    "dayCounter": 1,
    "currentEpoch": 0,
}


async def _client(w3: AsyncWeb3[Any], *markets: str) -> ProtocolStateClient:
    client = ProtocolStateClient(w3, await deploy_protocol_state(w3))
    for market in markets:
        await client.create_data_market(market)
    return client


async def _block_time(w3: AsyncWeb3[Any], receipt: Any) -> int:
    block = await w3.eth.get_block(receipt["blockNumber"])
    return int(block["timestamp"])


def _labels(events: list[Event]) -> list[str]:
    return [f"day {e.day}" if isinstance(e, DayStarted) else f"epoch {e.epoch}" for e in events]


async def test_deploy_sets_owner_and_market_defaults(chain: AsyncWeb3[Any]) -> None:
    client = await _client(chain, MARKET_A, MARKET_B.upper().replace("0X", "0x"))
    assert await client.contract.functions.owner().call() == (await chain.eth.accounts)[0]
    for market in (MARKET_A, MARKET_B):
        assert await client.read_market_params(market) == DEFAULTS


async def test_day_counter_rule_on_two_markets(chain: AsyncWeb3[Any]) -> None:
    client = await _client(chain, MARKET_A, MARKET_B)
    await client.set_epochs_in_a_day(MARKET_A, 3)
    await client.set_epochs_in_a_day(MARKET_B, 4)
    seen: dict[str, list[Event]] = {MARKET_A: [], MARKET_B: []}
    for epoch in range(1, 9):
        for market in (MARKET_A, MARKET_B):
            receipt = await client.release_epoch(market, 10 * epoch + 1, 10 * epoch + 10)
            events = decoded(receipt)
            now = await _block_time(chain, receipt)
            assert events[-1] == EpochReleased(market, epoch, 10 * epoch + 1, 10 * epoch + 10, now)
            assert all(e.timestamp == now for e in events)
            seen[market].extend(events)
    # DayStartedEvent precedes EpochReleased, at epochs k * epochsInADay + 1 (k >= 1) only.
    epochs = [f"epoch {n}" for n in range(1, 9)]
    assert _labels(seen[MARKET_A]) == [*epochs[:3], "day 2", *epochs[3:6], "day 3", *epochs[6:]]
    assert _labels(seen[MARKET_B]) == [*epochs[:4], "day 2", *epochs[4:]]
    assert (await client.read_market_params(MARKET_A))["dayCounter"] == 3
    assert (await client.read_market_params(MARKET_B))["dayCounter"] == 2
    assert (await client.read_market_params(MARKET_B))["currentEpoch"] == 8


async def test_batch_events_decode(chain: AsyncWeb3[Any]) -> None:
    client = await _client(chain, MARKET_A)
    await client.release_epoch(MARKET_A, 1, 10)
    cid = "bafkreih5aznjvttude6c3wbvqeebb6rlx5wkbzyppv7garjiubll2ceym4"
    receipt = await client.submit_submission_batch(
        MARKET_A, cid, 1, ["project:a", "project:b"], ["cidA", "cidB"], b"\x11" * 32
    )
    now = await _block_time(chain, receipt)
    assert decoded(receipt) == [SnapshotBatchSubmitted(MARKET_A, cid, 1, now)]
    receipt = await client.end_batch_submissions(MARKET_A, 1)
    now = await _block_time(chain, receipt)
    assert decoded(receipt) == [BatchSubmissionsCompleted(MARKET_A, 1, now)]
    assert all(log["address"] == client.address for log in receipt["logs"])


async def test_update_rewards_stores_counts_and_first_eligible_count(
    chain: AsyncWeb3[Any],
) -> None:
    client = await _client(chain, MARKET_A, MARKET_B)
    await client.update_rewards(MARKET_A, [1, 2, 7], [1000, 12, 999], 1, 0)
    assert await client.eligible_nodes_for_day(MARKET_A, 1) == 0
    await client.update_rewards(MARKET_A, [2], [1001], 1, 2)
    await client.update_rewards(MARKET_A, [], [], 1, 5)  # the first non-zero count sticks
    counts = [await client.slot_submission_count(MARKET_A, slot, 1) for slot in (1, 2, 7, 3)]
    assert counts == [1000, 1001, 999, 0]
    assert await client.eligible_nodes_for_day(MARKET_A, 1) == 2
    assert await client.slot_submission_count(MARKET_B, 1, 1) == 0
    assert await client.eligible_nodes_for_day(MARKET_B, 1) == 0


async def test_setters(chain: AsyncWeb3[Any]) -> None:
    client = await _client(chain, MARKET_A, MARKET_B)
    await client.set_snapshot_submission_window(MARKET_A, 7)
    await client.set_day_size(MARKET_A, 86_400)
    await client.set_daily_snapshot_quota(MARKET_A, 3)
    await client.set_epochs_in_a_day(MARKET_A, 10)
    changed = {
        "snapshotSubmissionWindow": 7,
        "DAY_SIZE": 86_400,
        "dailySnapshotQuota": 3,
        "epochsInADay": 10,
    }
    assert await client.read_market_params(MARKET_A) == DEFAULTS | changed
    assert await client.read_market_params(MARKET_B) == DEFAULTS


async def test_reverts_for_strangers_and_unknown_markets(chain: AsyncWeb3[Any]) -> None:
    client = await _client(chain, MARKET_A)
    stranger = ProtocolStateClient(chain, client.address, sender=(await chain.eth.accounts)[1])
    with pytest.raises(REVERTED, match="not owner"):
        await stranger.release_epoch(MARKET_A, 1, 10)
    with pytest.raises(REVERTED, match="unknown data market"):
        await client.release_epoch(MARKET_B, 1, 10)
    with pytest.raises(REVERTED, match="data market exists"):
        await client.create_data_market(MARKET_A)
    with pytest.raises(REVERTED, match="zero epochsInADay"):
        await client.set_epochs_in_a_day(MARKET_A, 0)
    assert (await client.read_market_params(MARKET_A))["currentEpoch"] == 0

"""sim.ethtester: same seed, same calls -> identical block hashes; timestamps pinned."""

from __future__ import annotations

import pytest
from contractkit import GENESIS, MARKET_A, MARKET_B
from eth_tester.exceptions import ValidationError  # type: ignore[import-untyped]

from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine

BLOCK_TIME = 2


async def _scenario(seed: int) -> tuple[list[str], list[int]]:
    """Deploy, register two markets, release epochs, mine; every block's hash and timestamp."""
    tester = deterministic_tester(seed, GENESIS, BLOCK_TIME)
    w3 = async_web3(tester)
    client = ProtocolStateClient(w3, await deploy_protocol_state(w3))
    for market in (MARKET_A, MARKET_B):
        await client.create_data_market(market)
        await client.set_epochs_in_a_day(market, 2)
    for epoch in range(1, 4):
        for market in (MARKET_A, MARKET_B):
            await client.release_epoch(market, 10 * epoch + 1, 10 * epoch + 10)
        mine(tester, 2)
    blocks = [tester.get_block_by_number(n) for n in range(await w3.eth.block_number + 1)]
    return [b["hash"] for b in blocks], [b["timestamp"] for b in blocks]


@pytest.mark.anyio
async def test_same_seed_same_block_hashes() -> None:
    hashes, stamps = await _scenario(seed=7)
    again, stamps_again = await _scenario(seed=7)
    other, _ = await _scenario(seed=8)
    assert len(hashes) == 1 + 1 + 4 + 6 + 6  # genesis, deploy, markets, epochs, mined
    assert again == hashes and stamps_again == stamps
    assert other[0] == hashes[0]  # genesis has no random field
    assert all(a != b for a, b in zip(other[1:], hashes[1:], strict=True))
    assert stamps == [GENESIS + BLOCK_TIME * n for n in range(len(stamps))]


@pytest.mark.anyio
async def test_event_timestamp_is_the_pinned_block_time() -> None:
    tester = deterministic_tester(3, GENESIS, BLOCK_TIME)
    w3 = async_web3(tester)
    client = ProtocolStateClient(w3, await deploy_protocol_state(w3))
    await client.create_data_market(MARKET_A)
    receipt = await client.release_epoch(MARKET_A, 1, 10)
    data = receipt["logs"][0]["data"]
    assert int.from_bytes(data[64:96], "big") == GENESIS + BLOCK_TIME * receipt["blockNumber"]


def test_mine_time_travel_and_reset() -> None:
    tester = deterministic_tester(5, GENESIS, BLOCK_TIME)
    first = mine(tester, 3)
    assert tester.get_block_by_number("latest")["timestamp"] == GENESIS + 3 * BLOCK_TIME
    tester.time_travel(GENESIS + 100)
    assert tester.get_block_by_number("latest")["timestamp"] == GENESIS + 100
    with pytest.raises(ValidationError):
        tester.time_travel(GENESIS + 50)
    mine(tester)
    assert tester.get_block_by_number("latest")["timestamp"] == GENESIS + 100 + BLOCK_TIME
    tester.reset_to_genesis()
    assert mine(tester, 3) == first


def test_revert_replays_deterministically() -> None:
    """A snapshot/revert (a reorg) gives new hashes for the replaced heights, the same on
    every run with the same seed."""

    def run() -> tuple[list[str], list[str]]:
        tester = deterministic_tester(11, GENESIS, BLOCK_TIME)
        mine(tester, 2)
        snapshot = tester.take_snapshot()
        orphaned = mine(tester, 3)
        tester.revert_to_snapshot(snapshot)
        assert tester.get_block_by_number("latest")["number"] == 2
        return orphaned, mine(tester, 3)

    orphaned, replacement = run()
    assert run() == (orphaned, replacement)
    assert not set(orphaned) & set(replacement)


def test_rejects_block_time_below_one_second() -> None:
    with pytest.raises(ValueError, match="block_time"):
        deterministic_tester(1, GENESIS, 0)

"""`seqcollector run` under a chain reset deeper than its history (issue 8 part 3): anvil is
reset to a new genesis under the running collector, the fixture contract is deployed again
at the same address and releases the same epoch ids with other submissions.

Old code: `reorg_deeper_than_history`, one alert, then every block refused as out of order
(the core held the old block below the resume point) and silence; the old chain's
`BlockHashByNumberKey` values left in Redis. Now: the collector follows the new chain, its
block-hash keys are the new chain's (the rest deleted), every epoch of the new chain is
batched with exactly its window's submissions, and the reset is counted and alerted with
what could not be undone (the old chain's batches already pushed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from livekit import MARKETS, CollectorProcess, LiveWorld, deployed_world

from seqcollector.core.addresses import checksum
from seqcollector.core.state import load_state
from sim.anvil import Anvil, rpc
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio
BATCH_SIZE = 2


@pytest.fixture
async def world(anvil: Anvil, redis_url: str) -> AsyncIterator[LiveWorld]:
    async with deployed_world(
        anvil, redis_url, epochs_in_a_day=1000
    ) as w:  # one day throughout: days are not what is tested
        yield w


async def release(world: LiveWorld, projects: str) -> list[tuple[str, int]]:
    released = []
    for market in MARKETS:
        epoch = await world.release(market)
        for slot in range(1, 6):
            world.submit(market, epoch, f"{projects}{slot % 3}", slot)
        released.append((market, epoch))
    world.advance()
    return released


def items_of(world: LiveWorld, market: str, epoch: int) -> list[dict[str, Any]]:
    return [
        i
        for i in world.queue()
        if i["DataMarketAddress"] == checksum(market) and i["EpochID"] == epoch
    ]


def canonical_hash(world: LiveWorld, n: int) -> str:
    block: Any = rpc(world.anvil.url, "eth_getBlockByNumber", [hex(n), False])
    return str(block["hash"])


async def test_reset_to_a_new_genesis_under_a_running_collector(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    start = world.ready_block + 1
    collector = CollectorProcess(
        world,
        relayer.url,
        tmp_path / "collector.log",
        extra_env={"SLACK_REPORTING_URL": relayer.url + "/alerts", "SEQ_MAX_REORG_DEPTH": "8"},
    ).start()
    try:
        old = [*await release(world, "old"), *await release(world, "old")]
        world.anvil.mine(40, 2)  # a long old chain: the new one stays shorter
        old_head = world.head()
        world.wait_for(
            "old head seen",
            lambda: (
                world.redis.get(f"BlockHashByNumberKey.{old_head}")
                == canonical_hash(world, old_head)
            ),
        )
        assert all(world.batched(m, e) for m, e in old)
        old_items = {(m, e): items_of(world, m, e) for m, e in old}

        assert rpc(world.anvil.url, "anvil_reset", []) is None  # a new genesis, block 0
        address = world.address
        world.submitted = {}
        await world.deploy(epochs_in_a_day=1000)
        assert world.address == address  # same deployer nonce: same contract address
        new = [*await release(world, "new"), *await release(world, "new")]
        assert sorted(new) == sorted(old)  # the same epoch ids, released on the new chain
        world.anvil.mine(3, 2)
        new_head = world.head()
        assert new_head < old_head
        for market, epoch in new:
            want = world.expected_queue(market, epoch, BATCH_SIZE)
            world.wait_for(
                f"new chain's {market} epoch {epoch}",
                lambda m=market, e=epoch, w=want: items_of(world, m, e)[-len(w) :] == w,
            )
        world.wait_for(
            "new head seen",
            lambda: (
                world.redis.get(f"BlockHashByNumberKey.{new_head}")
                == canonical_hash(world, new_head)
            ),
        )
        world.wait_for("alert", lambda: len(relayer.bodies("/alerts")) >= 1)
        assert collector.alive()
    finally:
        collector.stop()
    # the old chain's batches stay pushed (they cannot be undone), the new ones follow
    for market, epoch in new:
        want = world.expected_queue(market, epoch, BATCH_SIZE)
        assert items_of(world, market, epoch) == old_items[(market, epoch)] + want
        count = world.redis.get(f"BatchCountKey.{market}.{epoch}")
        assert count is not None and int(count) == len(want)
        calls = [
            c
            for c in relayer.bodies("/submitBatchSize")
            if c["dataMarketAddress"] == checksum(market) and c["epochID"] == epoch
        ]
        assert calls[-1]["batchSize"] == len(want)
    # every block-hash key is the new chain's; the old chain's above the new head are gone
    for n in range(start, old_head + 1):
        value = world.redis.get(f"BlockHashByNumberKey.{n}")
        if n <= new_head:
            assert value == canonical_hash(world, n), n
        else:
            assert value is None, n
    state = load_state(redis.Redis.from_url(world.redis_url).get("seqcollector:state"))
    assert state.counters["reorg_too_deep"] == 1 and state.counters["unlinked_bases"] == 1
    assert state.counters["batches_not_undone"] == len(old)
    alerts = json.dumps(relayer.bodies("/alerts"))
    assert "cannot be undone" in alerts and "new base" in alerts
    assert "chain_replaced" in collector.log()

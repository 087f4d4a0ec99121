"""`seqcollector run` against anvil with the ProtocolState fixture, a real Redis and a real
relayer HTTP server: batches, block hashes and relayer calls checked exactly; kill -9 and
restart; a reorg; a faulty RPC endpoint in front of the node."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from livekit import MARKETS, TOKEN, CollectorProcess, LiveWorld

from seqcollector.core.addresses import checksum
from seqcollector.core.state import load_state
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.replay import replay_journal
from sim.anvil import Anvil, AnvilMissing, rpc
from sim.relayer import Relayer
from sim.rpc_proxy import RpcProxy

pytestmark = pytest.mark.anyio
BATCH_SIZE = 2


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    import os

    try:
        node = Anvil(timestamp=1_800_000_000)
    except AnvilMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with node:
        yield node


@pytest.fixture
def relayer() -> Iterator[Relayer]:
    with Relayer() as r:
        yield r


@pytest.fixture
async def world(anvil: Anvil, redis_url: str) -> AsyncIterator[LiveWorld]:
    w = LiveWorld(anvil, redis_url)
    await w.deploy(epochs_in_a_day=3)
    yield w
    await w.w3.provider.disconnect()
    w.redis.close()


async def release_with_submissions(world: LiveWorld, epoch_count: int) -> list[tuple[str, int]]:
    released = []
    for _ in range(epoch_count):
        for market in MARKETS:
            epoch = await world.release(market)
            for slot in range(1, 6):
                world.submit(market, epoch, f"project{slot % 3}", slot)
            released.append((market, epoch))
        world.advance()
    return released


def check_batches(world: LiveWorld, released: list[tuple[str, int]], relayer: Relayer) -> None:
    queue = world.queue()
    for market, epoch in released:
        mine = [
            i for i in queue if i["DataMarketAddress"] == checksum(market) and i["EpochID"] == epoch
        ]
        assert mine == world.expected_queue(market, epoch, BATCH_SIZE), (market, epoch)
        count = world.redis.get(f"BatchCountKey.{market}.{epoch}")
        assert count is not None and int(count) == len(mine)
    calls = relayer.bodies("/submitBatchSize")
    for market, epoch in released:
        mine = [
            c for c in calls if c["dataMarketAddress"] == checksum(market) and c["epochID"] == epoch
        ]
        assert len({json.dumps(c, sort_keys=True) for c in mine}) == 1, (market, epoch, mine)
        assert mine[0]["authToken"] == TOKEN
        assert mine[0]["batchSize"] == len(world.expected_queue(market, epoch, BATCH_SIZE))


def check_block_hashes(world: LiveWorld, upto: int) -> None:
    for n in range(0, upto + 1):
        block = rpc(world.anvil.url, "eth_getBlockByNumber", [hex(n), False])
        assert world.redis.get(f"BlockHashByNumberKey.{n}") == block["hash"], n  # type: ignore[index]


async def test_two_markets_batched_exactly_with_relayer_calls(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    collector = CollectorProcess(world, relayer.url, tmp_path / "collector.log").start()
    try:
        released = await release_with_submissions(world, 4)  # epoch 4 starts day 2
        for market, epoch in released:
            world.wait_for(f"{market} epoch {epoch}", lambda m=market, e=epoch: world.batched(m, e))
        world.wait_for("relayer calls", lambda: len(relayer.bodies("/submitBatchSize")) >= 8)
        head = int(str(rpc(world.anvil.url, "eth_blockNumber")), 16)
        world.wait_for(
            "head block hash", lambda: world.redis.exists(f"BlockHashByNumberKey.{head}") == 1
        )
    finally:
        assert collector.stop() < 10
    check_batches(world, released, relayer)
    check_block_hashes(world, head)
    for market in MARKETS:  # start-up tables, keyed EIP-55
        assert world.redis.hget("SubmissionLimitTable", checksum(market)) == "10"
        assert world.redis.get(f"CurrentDayKey.{market}") == "2"
    slots = world.redis.keys(f"SlotSubmissionsKey.{MARKETS[0]}.2.*")
    assert slots and all(world.redis.ttl(k) > 0 for k in slots)


async def test_kill_9_mid_window_then_restart_batches_every_epoch_once(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    journal = tmp_path / "run.jsonl"
    collector = CollectorProcess(world, relayer.url, tmp_path / "c.log", record=journal).start()
    released = []
    for _ in range(3):
        for market in MARKETS:
            epoch = await world.release(market)
            for slot in range(1, 5):
                world.submit(market, epoch, f"p{slot % 2}", slot)
            released.append((market, epoch))
        head = int(str(rpc(world.anvil.url, "eth_blockNumber")), 16)
        world.wait_for(
            "release seen", lambda h=head: world.redis.exists(f"BlockHashByNumberKey.{h}") == 1
        )
        collector.kill9()  # mid-window: the windows are open
        world.advance()  # they close while the collector is down
        collector = CollectorProcess(world, relayer.url, tmp_path / "c.log", record=journal).start()
    for market, epoch in released:
        world.wait_for(f"{market} epoch {epoch}", lambda m=market, e=epoch: world.batched(m, e))
    world.wait_for(
        "relayer calls", lambda: len(relayer.bodies("/submitBatchSize")) >= len(released)
    )
    collector.stop()
    check_batches(world, released, relayer)
    assert len(world.queue()) == sum(
        len(world.expected_queue(m, e, BATCH_SIZE)) for m, e in released
    )
    # the journal recorded across four processes replays to the digest of what they applied
    printed = [line for line in collector.log().splitlines() if line.startswith("digest ")]
    replayed = await replay_journal(journal, embedded_redis(), "replay")
    assert printed[-1] == f"digest {replayed.digest}"


async def test_reorg_converges_to_the_canonical_chain(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    collector = CollectorProcess(world, relayer.url, tmp_path / "c.log").start()
    try:
        base = world.anvil.snapshot()
        orphan_epoch = await world.release(MARKETS[0])
        world.submit(MARKETS[0], orphan_epoch, "lost", 1, expected=False)
        world.anvil.mine(3, 2)
        old_head = int(str(rpc(world.anvil.url, "eth_blockNumber")), 16)
        world.wait_for(
            "old branch seen", lambda: world.redis.exists(f"BlockHashByNumberKey.{old_head}") == 1
        )
        world.anvil.revert(base)
        world.anvil.mine(1, 5)  # another timestamp: another branch
        epoch = await world.release(MARKETS[0])
        assert epoch == orphan_epoch  # the same epoch id, released on the new branch
        world.submit(MARKETS[0], epoch, "kept", 2)
        world.advance(24)
        new_head = int(str(rpc(world.anvil.url, "eth_blockNumber")), 16)
        assert new_head > old_head
        world.wait_for("epoch batched", lambda: world.batched(MARKETS[0], epoch))
        world.wait_for("relayer call", lambda: len(relayer.bodies("/submitBatchSize")) >= 1)
        world.wait_for(
            "new head seen", lambda: world.redis.exists(f"BlockHashByNumberKey.{new_head}") == 1
        )
    finally:
        collector.stop()
    check_block_hashes(world, new_head)
    check_batches(world, [(MARKETS[0], epoch)], relayer)
    state = load_state(redis.Redis.from_url(world.redis_url).get("seqcollector:state"))
    assert state.counters.get("rewinds", 0) >= 1  # the collector saw the reorg and rewound


async def test_faulty_and_lagging_endpoints_fail_over_and_miss_nothing(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    with RpcProxy(world.anvil.url, seed=7) as faulty, RpcProxy(world.anvil.url, seed=8) as lagging:
        faulty.error_rate, faulty.stall_rate, faulty.stall_s = 0.3, 0.1, 3.0
        lagging.lag_blocks = 6
        collector = CollectorProcess(
            world,
            relayer.url,
            tmp_path / "c.log",
            rpc_nodes=[faulty.url, lagging.url],
            extra_env={"BLOCK_FETCH_TIMEOUT": "1", "RPC_REQUEST_TIMEOUT_S": "1"},
        ).start()
        try:
            released = await release_with_submissions(world, 3)
            world.advance()  # the lagging endpoint is 6 blocks behind: give the others a lead
            for market, epoch in released:
                world.wait_for(
                    f"{market} epoch {epoch}", lambda m=market, e=epoch: world.batched(m, e), 90
                )
            head = int(str(rpc(world.anvil.url, "eth_blockNumber")), 16)
            world.wait_for(
                "head", lambda: world.redis.exists(f"BlockHashByNumberKey.{head}") == 1, 90
            )
        finally:
            collector.stop()
        assert faulty.faults["http_500"] > 0 and faulty.faults["stall"] > 0
    check_batches(world, released, relayer)
    check_block_hashes(world, head)


async def test_start_up_errors_are_one_clear_line(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    no_code = "0x" + "99" * 20
    proc = CollectorProcess(
        world, relayer.url, tmp_path / "bad.log", extra_env={"PROTOCOL_STATE_CONTRACT": no_code}
    ).start()
    assert proc.proc is not None and proc.proc.wait(timeout=30) == 1
    assert "no contract code on this chain" in proc.log() and checksum(no_code) in proc.log()
    proc = CollectorProcess(
        world, relayer.url, tmp_path / "bad2.log", extra_env={"REWARDS_UPDATE_EPOCH_INTERVAL": "0"}
    ).start()
    assert proc.proc is not None and proc.proc.wait(timeout=30) == 2
    assert "REWARDS_UPDATE_EPOCH_INTERVAL" in proc.log()

"""`seqcollector run` against anvil with the ProtocolState fixture, a real Redis and a real
relayer HTTP server: batches, block hashes and relayer calls checked exactly; kill -9 and
restart; a reorg; a faulty RPC endpoint in front of the node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from livekit import LOOPBACK_API, MARKETS, TOKEN, CollectorProcess, LiveWorld

from seqcollector.core.addresses import checksum
from seqcollector.core.state import load_state
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.replay import replay_journal
from sim.anvil import Anvil, AnvilMissing, rpc
from sim.relayer import Relayer
from sim.rpc_proxy import RpcProxy

pytestmark = pytest.mark.anyio
BATCH_SIZE = 2


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
    for n in range(world.ready_block + 1, upto + 1):  # from SEQ_START_BLOCK
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
        world.anvil.mine(2, 1)  # the common ancestor: a block the collector has processed
        ancestor = world.head()
        world.wait_for(
            "ancestor seen", lambda: world.redis.exists(f"BlockHashByNumberKey.{ancestor}") == 1
        )
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


# -- days of past blocks (issue 8, part 4) ------------------------------------------------------


def slot_keys(world: LiveWorld) -> dict[str, int]:
    return {
        key: int(world.redis.get(key) or 0)
        for market in MARKETS
        for key in world.redis.keys(f"SlotSubmissionsKey.{market}.*")
    }


async def test_catch_up_across_a_day_rollover_counts_each_epoch_into_its_day(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    """Epochs of days 1, 2 and 3 released before the collector starts from a past block: the
    market parameters are read as of the block before SEQ_START_BLOCK, so every per-day key
    is the day the chain had (read at the head, day-1 epochs were counted into day 3)."""
    released = []
    for _ in range(7):  # 3 epochs a day: days 1, 1, 1, 2, 2, 2, 3
        for market in MARKETS:
            epoch = await world.release(market)
            for slot in range(1, 4 + epoch % 3):
                world.submit(market, epoch, f"project{slot % 2}", slot)
            world.submit(market, epoch, "project9", 1)  # slot 1 twice in an epoch
            released.append((market, epoch))
        world.advance()
    assert {world.days[k] for k in released} == {1, 2, 3}
    collector = CollectorProcess(world, relayer.url, tmp_path / "c.log").start()
    try:
        for market, epoch in released:
            world.wait_for(f"{market} epoch {epoch}", lambda m=market, e=epoch: world.batched(m, e))
    finally:
        collector.stop()
    check_batches(world, released, relayer)
    expected = world.expected_slot_counts()
    assert {key.split(".")[2] for key in expected} == {"1", "2", "3"}
    assert slot_keys(world) == expected  # every day, every slot, nothing else
    for market in MARKETS:
        assert world.redis.get(f"CurrentDayKey.{market}") == "3"
    output = collector.log_path.read_text().splitlines()  # stdout and stderr, all of it
    assert output[-1].startswith("digest ")  # stdout: the journal's digest, at the stop
    lines = [json.loads(x) for x in output[:-1]]
    starting = [line for line in lines if line["event"] == "starting"]
    assert [line["params_block"] for line in starting] == [world.ready_block]


async def test_start_before_the_contract_existed_is_refused(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    proc = CollectorProcess(
        world, relayer.url, tmp_path / "c.log", extra_env={"SEQ_START_BLOCK": "0"}
    ).start()
    assert proc.wait(30) == 2, proc.log()
    assert "SEQ_START_BLOCK" in proc.log() and "deployed later" in proc.log()


async def test_unknown_market_is_refused_in_one_line(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    stranger = "0x" + "c3" * 20
    markets = json.dumps([checksum(m) for m in [*MARKETS, stranger]])
    proc = CollectorProcess(
        world, relayer.url, tmp_path / "c.log", extra_env={"DATA_MARKET_ADDRESSES": markets}
    ).start()
    assert proc.wait(30) == 2, proc.log()
    assert checksum(stranger) in proc.log() and "not a data market" in proc.log()
    assert "Traceback" not in proc.log()


async def test_market_created_after_the_start_block_is_refused_with_the_fix(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    assert world.contract is not None
    late = "0x" + "d4" * 20
    await world.contract.create_data_market(late)
    await world.contract.set_epochs_in_a_day(late, 3)
    markets = json.dumps([checksum(m) for m in [*MARKETS, late]])
    proc = CollectorProcess(
        world, relayer.url, tmp_path / "c.log", extra_env={"DATA_MARKET_ADDRESSES": markets}
    ).start()
    assert proc.wait(30) == 2, proc.log()
    assert checksum(late) in proc.log() and "set SEQ_START_BLOCK after" in proc.log()


async def test_archive_rpc_nodes_serve_the_pinned_reads(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    """ARCHIVE_RPC_NODES is where the market parameters are read: unreachable, the start
    fails naming it (RPC_NODES being fine); reachable, the run goes on."""
    dead = '["http://127.0.0.1:1"]'
    proc = CollectorProcess(
        world,
        relayer.url,
        tmp_path / "c.log",
        extra_env={"ARCHIVE_RPC_NODES": dead, "SEQ_STARTUP_TIMEOUT_S": "1"},
    ).start()
    assert proc.wait(30) == 1, proc.log()
    errors = [line for line in proc.log().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ARCHIVE_RPC_NODES (http://127.0.0.1:1)" in errors[0], errors
    with RpcProxy(world.anvil.url, seed=1) as archive:
        collector = CollectorProcess(
            world,
            relayer.url,
            tmp_path / "c2.log",
            extra_env={"ARCHIVE_RPC_NODES": json.dumps([archive.url])},
        ).start()
        try:
            released = await release_with_submissions(world, 1)
            for market, epoch in released:
                world.wait_for(f"{market} {epoch}", lambda m=market, e=epoch: world.batched(m, e))
        finally:
            collector.stop()
        assert archive.calls["eth_call"] >= 5 * len(MARKETS), archive.calls


def test_pruned_node_says_to_set_archive_rpc_nodes(
    redis_url: str, relayer: Relayer, tmp_path: Path
) -> None:
    import anyio

    try:
        node = Anvil(timestamp=1_800_000_000, extra_args=("--prune-history", "1"))
    except AnvilMissing as exc:
        pytest.skip(str(exc))
    with node:
        world = LiveWorld(node, redis_url)
        anyio.run(world.deploy)
        node.mine(20, 1)  # the set-up's state is pruned
        proc = CollectorProcess(world, relayer.url, tmp_path / "c.log").start()
        assert proc.wait(30) == 1, proc.log()
        world.redis.close()
    line = [x for x in proc.log().splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "set ARCHIVE_RPC_NODES" in line[0], proc.log()
    assert f"block {world.ready_block}" in line[0]


# -- check-config --connect ------------------------------------------------------------------


def check_config_connect(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqcollector", "check-config", "--connect"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "COLUMNS": "200", **LOOPBACK_API, **env},
        timeout=60,
    )


async def test_check_config_connect_checks_every_dependency(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    env = CollectorProcess(world, relayer.url, tmp_path / "c.log").env
    proc = check_config_connect(env)
    assert proc.returncode == 0, proc.stderr
    ok = [line for line in proc.stdout.splitlines() if line.startswith("ok  ")]
    assert any(line.startswith("ok  Redis at") for line in ok), proc.stdout
    assert any("RPC_NODES node" in line and "chain id 31337" in line for line in ok)
    assert any("PROTOCOL_STATE_CONTRACT" in line for line in ok)
    for market in MARKETS:
        assert any(checksum(market) in line and "dayCounter 1" in line for line in ok)
    stranger = "0x" + "c3" * 20
    proc = check_config_connect(env | {"DATA_MARKET_ADDRESSES": json.dumps([stranger])})
    not_log = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert proc.returncode == 2 and len(not_log) == 1, proc.stderr  # stderr has the log too
    assert checksum(stranger) in proc.stderr
    proc = check_config_connect(env | {"PROTOCOL_STATE_CONTRACT": "0x" + "99" * 20})
    assert proc.returncode == 1 and "no contract code" in proc.stderr, proc.stderr

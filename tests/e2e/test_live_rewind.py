"""`seqcollector rewind` around a real `seqcollector run` on anvil: the running collector
keeps `<ns>:alive` (its pid, a TTL of 15 s) and the rewind is refused naming it; once the
collector stops (the mark deleted) the rewind goes back to block N, the restarted collector
resumes from N+1 over the same chain, and no epoch is batched or reported twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from livekit import MARKETS, CollectorProcess, LiveWorld
from test_cli_errors import cli, one_line

from seqcollector.core import Rewind
from seqcollector.core.addresses import checksum
from seqcollector.journal_dir import read_dir
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.replay import replay_journal
from sim.anvil import rpc
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio
BATCH_SIZE = 2
ALIVE = "seqcollector:alive"


async def release_and_batch(world: LiveWorld) -> tuple[list[tuple[str, int]], int]:
    """One epoch per market with submissions, its window closed and batched -> (the
    epochs, the chain head once the collector has committed it)."""
    released = []
    for market in MARKETS:
        epoch = await world.release(market)
        for slot in range(1, 6):
            world.submit(market, epoch, f"project{slot % 3}", slot)
        released.append((market, epoch))
    world.advance()
    for market, epoch in released:
        world.wait_for(f"{market} epoch {epoch}", lambda m=market, e=epoch: world.batched(m, e))
    head = world.head()
    world.wait_for("head committed", lambda: world.redis.exists(f"BlockHashByNumberKey.{head}"))
    return released, head


async def test_rewind_refused_while_run_holds_the_namespace_then_nothing_batched_twice(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    journal = log.parent / "journal"  # where CollectorProcess's `run` journals
    env = {"SEQ_REDIS_URL": world.redis_url, "COLUMNS": "200", "SEQ_JOURNAL_DIR": str(journal)}
    collector = CollectorProcess(world, relayer.url, log).start()
    try:
        first, to_block = await release_and_batch(world)
        second, head = await release_and_batch(world)  # released and batched above to_block
        world.wait_for("alive mark", lambda: world.redis.exists(ALIVE) == 1)
        assert collector.proc is not None
        mark = json.loads(world.redis.get(ALIVE) or "{}")
        assert mark["pid"] == collector.proc.pid and mark["host"] and mark["started"]
        assert 0 < world.redis.ttl(ALIVE) <= 15
        refused = cli(env, "rewind", "--to-block", str(to_block))
        one_line(refused, 1, "held by a running collector", f"pid {collector.proc.pid}")
    finally:
        collector.stop()
    assert world.redis.exists(ALIVE) == 0  # deleted on a clean exit

    done = cli(env, "rewind", "--to-block", str(to_block))
    assert done.returncode == 0, done.stderr
    assert (
        f"to block {to_block}" in done.stdout
        and f"resumes from block {to_block + 1}" in done.stdout
    )
    status = json.loads(cli(env, "status", "--json").stdout)
    assert status["committed_block"] == to_block < head
    assert world.redis.exists(f"BlockHashByNumberKey.{to_block + 1}") == 0

    collector = CollectorProcess(world, relayer.url, log).start()
    try:
        third, last = await release_and_batch(world)
    finally:
        collector.stop()
    # the rewind went into the run's journal directory, so the restart resumed it whole
    assert "journal_set_aside" not in log.read_text()
    ns_dir = journal / "seqcollector"
    assert any(isinstance(inp, Rewind) for _, inp in read_dir(ns_dir))
    replayed = await replay_journal(ns_dir, embedded_redis(), "r")
    assert log.read_text().splitlines()[-1] == f"digest {replayed.digest}"
    counters = json.loads(cli(env, "status", "--json").stdout)["counters"]
    assert counters["epoch_already_batched"] == len(second)  # released again, refused
    epochs = first + second + third
    queue = world.queue()
    ids = [(i["DataMarketAddress"], i["EpochID"], i["BatchID"]) for i in queue]
    assert len(ids) == len(set(ids))  # no batch pushed twice
    for market, epoch in epochs:
        mine = [
            i for i in queue if i["DataMarketAddress"] == checksum(market) and i["EpochID"] == epoch
        ]
        assert mine == world.expected_queue(market, epoch, BATCH_SIZE), (market, epoch)
    calls = relayer.bodies("/submitBatchSize")
    for market, epoch in epochs:  # each epoch's batch size reported once
        mine = [
            c for c in calls if c["dataMarketAddress"] == checksum(market) and c["epochID"] == epoch
        ]
        assert len(mine) == 1, (market, epoch, mine)
    for n in range(to_block + 1, last + 1):  # the keys of the rewound blocks, written anew
        block = rpc(world.anvil.url, "eth_getBlockByNumber", [hex(n), False])
        assert world.redis.get(f"BlockHashByNumberKey.{n}") == block["hash"], n  # type: ignore[index]

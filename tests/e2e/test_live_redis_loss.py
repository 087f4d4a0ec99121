"""Redis loses its data under `seqcollector run --record` (FLUSHALL, as a restart without
persistence leaves it): the collector notices at its next commit, stops committing and
alerts High; a restart refuses to start over from the head (the Go collector's behaviour:
an empty Redis is a fresh start, re-sending what the finalizer and relayer had); `run
--recover` rebuilds the namespace from the journal, alerts what it could not rebuild, does
not repeat a relayer call the delivery ledger lists as sent, and carries on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from livekit import MARKETS, CollectorProcess, LiveWorld

from seqcollector.core.addresses import checksum
from seqcollector.errors import EXIT_SETTINGS
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio


async def _release(world: LiveWorld, rounds: int) -> list[tuple[str, int]]:
    released = []
    for _ in range(rounds):
        for market in MARKETS:
            epoch = await world.release(market)
            for slot in range(1, 5):
                world.submit(market, epoch, f"p{slot % 2}", slot)
            released.append((market, epoch))
        world.advance()
    return released


def _calls(relayer: Relayer) -> list[tuple[str, int]]:
    return [
        (c["dataMarketAddress"].lower(), c["epochID"]) for c in relayer.bodies("/submitBatchSize")
    ]


@pytest.mark.parametrize("journal_kind", ["dir", "file"])
async def test_flushall_noticed_refused_then_recovered_without_repeats(
    world: LiveWorld, relayer: Relayer, tmp_path: Path, journal_kind: str
) -> None:
    """The journal: SEQ_JOURNAL_DIR (what `run` does by default), or `--record FILE`."""
    journal = tmp_path / "run.jsonl" if journal_kind == "file" else None
    env = {"SLACK_REPORTING_URL": relayer.url + "/alerts"}
    if journal is None:
        env["SEQ_JOURNAL_DIR"] = str(tmp_path / "journal")
    log = tmp_path / "c.log"

    def start(*extra: str) -> CollectorProcess:
        c = CollectorProcess(world, relayer.url, log, record=journal, extra_env=env)
        c.args += list(extra)
        return c.start()

    collector = start()
    before = await _release(world, 2)
    world.wait_for("batched", lambda: all(world.batched(m, e) for m, e in before))
    world.wait_for("relayer calls", lambda: len(_calls(relayer)) >= len(before))
    queued_before = len(world.queue())

    world.redis.flushall()  # Redis restarted empty
    world.advance()  # new blocks: the next commit finds its checkpoint gone
    assert collector.wait(60) != 0
    assert "RedisDataLost" in collector.log() or "Redis lost data" in collector.log()
    alerts = relayer.bodies("/alerts")
    assert any(a["severity"] == "High" and "lost data" in a["error_msg"] for a in alerts), alerts

    # A plain restart refuses: it would start over from the head on the empty store.
    refused = start()
    assert refused.wait(60) == EXIT_SETTINGS
    assert "--recover" in refused.log() and "Redis lost its data" in refused.log()
    # nothing written (a lease it took and gave back leaves its fencing counter, if any)
    assert set(world.redis.keys("*")) <= {"seqcollector:lease:token"}

    collector = start("--recover")
    try:
        world.wait_for("recovered", lambda: world.redis.exists("seqcollector:checkpoint") == 1, 60)
        after = await _release(world, 2)
        world.wait_for("batched after", lambda: all(world.batched(m, e) for m, e in after), 60)
        world.wait_for("calls after", lambda: len(_calls(relayer)) >= len(before) + len(after), 60)
    finally:
        collector.stop(within_s=20)
    # The rebuilt keys: the epochs batched before the loss are there again.
    for market, epoch in before:
        assert world.batched(market, epoch), (market, epoch)
    # No relayer call twice, none missing.
    calls = _calls(relayer)
    assert sorted(calls) == sorted(set(calls)), calls
    assert set(calls) == {(m, e) for m, e in before + after}
    # The finalizer's items before the loss are not pushed again (it may have had them).
    queue = world.queue()
    epochs_in_queue = {(i["DataMarketAddress"].lower(), i["EpochID"]) for i in queue}
    assert epochs_in_queue == {(m, e) for m, e in after}
    for market, epoch in after:
        mine = [
            i for i in queue if i["DataMarketAddress"] == checksum(market) and i["EpochID"] == epoch
        ]
        assert mine == world.expected_queue(market, epoch, 2)
    assert queued_before > 0
    recovery = [a for a in relayer.bodies("/alerts") if "redis_recovery" in a["process_name"]]
    assert len(recovery) == 1 and recovery[0]["severity"] == "High"
    assert "finalizerQueue" in recovery[0]["error_msg"]
    assert json.dumps(recovery[0])  # a body Slack takes

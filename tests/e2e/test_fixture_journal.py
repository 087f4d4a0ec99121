"""The shipped fixture journal: its digest and its finalizerQueue, on both stores."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from seqcollector.core import SubmissionSets
from seqcollector.core.addresses import checksum
from seqcollector.core.batching import parse_member
from seqcollector.journal import read_header, read_inputs
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.replay import ReplayConflict, replay_journal

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "journals" / "one-market.jsonl"
GOLDEN_QUEUE = ROOT / "fixtures" / "journals" / "one-market.finalizerQueue.jsonl"
DIGEST = "2a7bb94316c36e6766577915f8977ae6e840c89506fea5e9b6ee51823f1234aa"

pytestmark = pytest.mark.anyio


def expected_members() -> dict[int, set[str]]:
    """Per epoch, the well-formed keys the journal's query results carried (the oracle)."""
    found: dict[int, set[str]] = {}
    for _, _, inp in read_inputs(FIXTURE):
        if isinstance(inp, SubmissionSets):
            found[inp.epoch] = {m for m in inp.members if parse_member(m) is not None}
    return found


async def finalizer_queue(client: aioredis.Redis) -> list[str]:
    items = await client.lrange("finalizerQueue", 0, -1)
    return [i.decode() for i in reversed(items)]  # LPUSH: newest first


async def check_replay(client: aioredis.Redis) -> None:
    result = await replay_journal(FIXTURE, client, "seqcollector:replay")
    assert result.digest == DIGEST
    queue = await finalizer_queue(client)
    assert queue == GOLDEN_QUEUE.read_text().splitlines()

    market = read_header(FIXTURE).config.markets[0]
    batches: dict[int, list[dict]] = {}
    for raw in queue:
        item = json.loads(raw)
        assert list(item) == ["DataMarketAddress", "EpochID", "BatchID", "Batch"]
        assert item["DataMarketAddress"] == checksum(market)
        assert 1 <= len(item["Batch"]) <= 4
        batches.setdefault(item["EpochID"], []).append(item)
    members = expected_members()
    assert sorted(batches) == sorted(members) == list(range(1, 26))
    for epoch, items in batches.items():
        assert [i["BatchID"] for i in items] == list(range(1, len(items) + 1))
        got = [k for i in items for keys in i["Batch"].values() for k in keys]
        assert len(got) == len(set(got)) and set(got) == members[epoch]
        count = await client.get(f"BatchCountKey.{market}.{epoch}")
        assert int(count) == len(items)
    assert await client.get("BlockHashByNumberKey.1259") is not None


async def test_fixture_replay_on_embedded_store() -> None:
    client = embedded_redis()
    await check_replay(client)


async def test_fixture_replay_on_real_redis(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await check_replay(client)
        # replaying again into the same namespace is refused, or resumed without a change
        with pytest.raises(ReplayConflict):
            await replay_journal(FIXTURE, client, "seqcollector:replay")
        before = await finalizer_queue(client)
        again = await replay_journal(FIXTURE, client, "seqcollector:replay", resume=True)
        assert again.digest == DIGEST and again.commits == 0
        assert await finalizer_queue(client) == before
    finally:
        await client.aclose()


def test_cli_replay_prints_digest_last_and_writes_the_effects(tmp_path: Path) -> None:
    effects = tmp_path / "effects.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqcollector",
            "replay",
            str(FIXTURE),
            "-q",
            "--effects-out",
            str(effects),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines()[-1] == f"digest {DIGEST}"
    assert hashlib.sha256(effects.read_bytes()).hexdigest() == DIGEST
    kinds = {msgspec.json.decode(line)["type"] for line in effects.read_bytes().splitlines()}
    assert {"set", "lpush", "incrby", "relayer", "query", "del", "hset"} <= kinds


def test_cli_replay_names_a_bad_journal(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(FIXTURE.read_text().splitlines()[0] + '\n{"type":"block"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "seqcollector", "replay", str(bad), "-q"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{bad}:2" in proc.stderr and "not a valid input" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "seqcollector", "replay", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr

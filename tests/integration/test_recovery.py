"""`runtime.recovery`: rebuilding a namespace Redis lost, from the journal, on a real Redis."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from seqcollector.runtime.delivery_ledger import DeliveryLedger, delivered_ids
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.recovery import CONSUMED_QUEUES, RecoveryRefused, recover
from seqcollector.runtime.replay import replay_journal

pytestmark = pytest.mark.anyio
FIXTURE = Path(__file__).parents[2] / "fixtures" / "journals" / "one-market.jsonl"
NS = "seqcollector"


async def _dump(client: Any) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    async for key in client.scan_iter():
        kind = (await client.type(key)).decode()
        if kind == "string":
            out[key] = await client.get(key)
        elif kind == "hash":
            out[key] = await client.hgetall(key)
        elif kind == "set":
            out[key] = await client.smembers(key)
        elif kind == "zset":
            out[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = await client.lrange(key, 0, -1)
    return out


async def test_recovery_rebuilds_what_the_replay_builds_minus_consumed_and_delivered(
    redis_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "run.jsonl"
    shutil.copy(FIXTURE, journal)
    reference = embedded_redis()
    await replay_journal(journal, reference, NS)
    expected = await _dump(reference)
    keys = StoreLayout(NS)
    pending = [m for m, _ in expected.get(keys.outbox_pending.encode(), [])]
    assert pending, "the fixture leaves outbox entries (its relayer was never called)"
    sent, unsent = pending[: len(pending) // 2], pending[len(pending) // 2 :]
    ledger = DeliveryLedger(tmp_path / "run.jsonl.delivered")
    for entry_id in sent:
        ledger.add(entry_id.decode())
    ledger.close()

    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
        report = await recover(journal, ledger.path, client, NS, 5.0)
        got = await _dump(client)
        for queue in CONSUMED_QUEUES:
            expected.pop(queue.encode(), None)
        outbox = expected[keys.outbox.encode()]
        expected[keys.outbox.encode()] = {k: v for k, v in outbox.items() if k not in sent}
        expected[keys.outbox_pending.encode()] = [
            (m, s) for m, s in expected[keys.outbox_pending.encode()] if m in unsent
        ]
        assert got == expected
        assert (report.requeued, report.delivered) == (len(unsent), len(sent))
        assert report.skipped_queues["finalizerQueue"][0] > 0
        assert "finalizerQueue" in report.message()
        # TTLs: what the replay gave, counted from now.
        ttl_keys = [k async for k in client.scan_iter("SlotSubmissionsKey.*")]
        assert ttl_keys
        for key in ttl_keys:
            assert await client.ttl(key) > 0, key

        # Once rebuilt, a second --recover refuses: the namespace has a checkpoint again.
        with pytest.raises(RecoveryRefused, match="nothing to recover"):
            await recover(journal, ledger.path, client, NS, 5.0)
    finally:
        await client.flushdb()
        await client.aclose()
        await reference.aclose()


async def test_recovery_without_a_journal_is_refused(redis_url: str, tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
        with pytest.raises(RecoveryRefused, match="does not exist"):
            await recover(tmp_path / "none.jsonl", tmp_path / "l", client, NS, 5.0)
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


def test_ledger_torn_last_line_is_not_an_id(tmp_path: Path) -> None:
    ledger = DeliveryLedger(tmp_path / "d" / "ledger")
    ledger.add("submitBatchSize:0xabc:1")
    ledger.add("submitBatchSize:0xabc:2")
    ledger.close()
    with ledger.path.open("ab") as f:
        f.write(b"submitBatchSize:0xa")  # a crash while appending
    assert delivered_ids(ledger.path) == {"submitBatchSize:0xabc:1", "submitBatchSize:0xabc:2"}
    assert delivered_ids(tmp_path / "missing") == set()

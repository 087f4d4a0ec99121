"""`seqcollector status` on a real redis-server: what a namespace holds (windows, day
records, pending queries, the outbox by lane), `--json`, and one line (exit 2) for a
namespace nothing committed to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqcollector.core import dump_state, new_state, step
from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import Alert, RelayerCall
from seqcollector.core.inputs import Block, MarketParams
from seqcollector.runtime.executor import RedisExecutor, redis_client
from seqcollector.runtime.lease import Lease
from seqcollector.runtime.status import read_status

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
PS = "0x" + "aa" * 20
LC = "0x0c2e22fe7526faef28e7a58c84f8723defce200c"


def blockn(n: int) -> Block:
    return Block(n, "0x" + f"{n:064x}", "0x" + f"{n - 1:064x}", 1_700_000_000 + 2 * n)


async def stored(redis_url: str, namespace: str) -> None:
    state = new_state(CoreConfig(protocol_state=PS, markets=[LC], rewards=True))
    step(state, MarketParams(LC, 6, 86400, 10, 10, 3))
    for n in (100, 101):
        step(state, blockn(n))
    redis = redis_client(redis_url)
    executor = RedisExecutor(redis, namespace)
    await executor.load()
    effects = [
        RelayerCall("b:1", "/submitBatchSize", {"epochID": 1}),
        RelayerCall("r:1", "/submitUpdateRewards", {"day": 1}),
        RelayerCall("r:2", "/submitUpdateRewards", {"day": 1}),
        Alert("a:1", "Step", "msg", "High"),
    ]
    await executor.commit(3, 101, effects, dump_state(state))
    await redis.aclose()


async def test_status_of_a_namespace(redis_url: str) -> None:
    await stored(redis_url, "st")
    redis = redis_client(redis_url)
    found = await read_status(redis, "st", chain_head=110)
    await redis.aclose()
    assert (found.seq, found.committed_block, found.chain_head, found.lag_blocks) == (
        3,
        101,
        110,
        9,
    )
    assert found.outbox_pending == {
        "/submitBatchSize": 1,
        "/submitUpdateRewards": 2,
        "alerts": 1,
    }
    assert found.outbox_oldest_id == "b:1"
    [market] = found.markets
    assert market.day == 3 and market.open_windows == [] and market.pending_markers == []
    assert found.state_format == 3 and found.state_bytes > 0
    assert (found.lease_holder, found.lease_token, found.lease_ttl_ms) == (None, None, None)


async def test_status_shows_the_lease_holder_and_token(redis_url: str) -> None:
    await stored(redis_url, "st")
    redis = redis_client(redis_url)
    lease = Lease(redis, "st", ttl_s=30, holder="box:42:cafe")
    await lease.acquire()
    found = await read_status(redis, "st")
    await redis.aclose()
    assert (found.lease_holder, found.lease_token) == ("box:42:cafe", 1)
    assert found.lease_ttl_ms is not None and 0 < found.lease_ttl_ms <= 30_000


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "seqcollector", "status", *args],
        capture_output=True,
        text=True,
        env={**base, "SEQ_REDIS_URL": redis_url, "COLUMNS": "200"},
        cwd=Path(__file__).parents[2],
    )


async def test_status_command_json_and_one_line_without_state(redis_url: str) -> None:
    await stored(redis_url, "st2")
    proc = cli(redis_url, "--namespace", "st2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["seq"] == 3 and doc["outbox_pending"]["alerts"] == 1
    shown = cli(redis_url, "--namespace", "st2")
    assert shown.returncode == 0 and "committed block 101" in shown.stdout
    none = cli(redis_url, "--namespace", "nothing-here")
    assert none.returncode == 2
    assert none.stderr.strip().startswith("error: ") and "\n" not in none.stderr.strip()
    assert "holds no stored state" in none.stderr

"""`seqcollector rewind --to-block N [--dry-run]` in a subprocess against a real redis-server,
over a state the live pipeline stored from the synthetic chain: what it did (blocks, windows
per market, keys per family, the outbox, where `run` resumes), then `status` agrees; every
refusal is one line on stderr with its exit code (2: the block or the namespace to fix;
1: a running collector holds the namespace)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from test_cli_errors import cli, one_line

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))  # the stored-state kit
from rewindkit import HEAD, MAX_DEPTH, NS, TO, run, spec

from seqcollector.core import Rewind
from seqcollector.journal_dir import first_head, read_dir
from seqcollector.runtime.alive import alive_key
from seqcollector.runtime.layout import StoreLayout
from sim.synthetic import SyntheticWorld

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def stored(redis_url: str) -> bytes:
    """A namespace committed up to block HEAD -> its stored state."""
    redis = aioredis.Redis.from_url(redis_url)
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    raw = await redis.get(StoreLayout(NS).state)
    await redis.aclose()
    assert raw is not None
    return bytes(raw)


async def state_of(redis_url: str) -> bytes | None:
    redis = aioredis.Redis.from_url(redis_url)
    raw = await redis.get(StoreLayout(NS).state)
    await redis.aclose()
    return None if raw is None else bytes(raw)


def env(redis_url: str, journal: str = "off") -> dict[str, str]:
    return {"SEQ_REDIS_URL": redis_url, "COLUMNS": "250", "SEQ_JOURNAL_DIR": journal}


async def test_dry_run_then_rewind_then_status(redis_url: str, tmp_path: Path) -> None:
    before = await stored(redis_url)
    journaled = env(redis_url, str(tmp_path / "journal"))
    dry = cli(journaled, "rewind", "--to-block", str(TO), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    assert "(dry run: nothing written)" in out
    assert f"from block {HEAD} to block {TO} ({HEAD - TO} blocks)" in out
    assert f"keys it would delete: BlockHashByNumberKey {HEAD - TO}" in out
    assert "outbox: 0 entries would be cancelled" in out
    assert "delivered entries cannot be taken back" in out
    assert f"would resume from block {TO + 1}" in out
    assert await state_of(redis_url) == before
    assert not (tmp_path / "journal").exists()  # a dry run writes no journal either

    done = cli(journaled, "rewind", "--to-block", str(TO))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # journaled where `run` journals (SEQ_JOURNAL_DIR): a segment from the stored state,
    # then the rewind, so that `run` resumes the directory
    ns_dir = tmp_path / "journal" / NS.replace("/", "_")
    assert f"journal: appended the rewind to {ns_dir} (SEQ_JOURNAL_DIR)" in out
    ((seq, rewind),) = list(read_dir(ns_dir))
    assert isinstance(rewind, Rewind) and rewind.to_block == TO
    assert first_head(ns_dir).state == before and first_head(ns_dir).base_seq == seq
    assert f"keys deleted: BlockHashByNumberKey {HEAD - TO}" in out
    assert "outbox: 0 entries cancelled" in out and f"resumes from block {TO + 1}" in out
    assert f"batched above {TO}: stay batched" in out and "5, 6, 7" in out  # the kept epochs
    status = cli(env(redis_url), "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["committed_block"] == TO
    again = cli(env(redis_url), "rewind", "--to-block", str(TO))  # nothing left to rewind
    one_line(again, 2, f"block {TO} is not below the committed block {TO}")


async def test_refusals_are_one_line_with_their_exit_codes(redis_url: str) -> None:
    before = await stored(redis_url)
    oldest = HEAD - MAX_DEPTH
    beyond = cli(env(redis_url), "rewind", "--to-block", str(oldest - 1))
    line = one_line(beyond, 2, "beyond the retained history", "SEQ_MAX_REORG_DEPTH=32")
    assert f"the oldest block it can rewind to is {oldest}" in line
    above = cli(env(redis_url), "rewind", "--to-block", str(HEAD + 3), "--dry-run")
    one_line(above, 2, f"not below the committed block {HEAD}", f"rewind to is {oldest}")
    empty = cli(env(redis_url), "rewind", "--to-block", "5", "--namespace", "nothing-here")
    one_line(empty, 2, "namespace 'nothing-here' holds no stored state")
    missing = cli(env(redis_url), "rewind")
    one_line(missing, 2, "--to-block")

    redis = aioredis.Redis.from_url(redis_url)
    mark = {"host": "collector-7", "pid": 4242, "started": "2026-12-03T10:00:00+00:00"}
    await redis.set(alive_key(NS), json.dumps(mark), ex=60)
    held = cli(env(redis_url), "rewind", "--to-block", str(TO))
    one_line(held, 1, "held by a running collector", "pid 4242 on host collector-7", "SIGTERM")
    held_dry = cli(env(redis_url), "rewind", "--to-block", str(TO), "--dry-run")
    one_line(held_dry, 1, "pid 4242")
    await redis.aclose()
    assert await state_of(redis_url) == before

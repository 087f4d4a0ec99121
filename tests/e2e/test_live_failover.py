"""Active/standby live (issue 11 §5): two real `seqcollector run` processes on one namespace,
anvil with the ProtocolState fixture, a real redis-server and the recording relayer.

The active is paused (SIGSTOP) past its lease while windows are open; the standby takes
over from the checkpoint and batches them; the paused one is resumed (SIGCONT): it must
neither commit nor call the relayer, and goes back to standby. Every epoch is batched
exactly once, with exactly one submitBatchSize call each."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit import MARKETS, CollectorProcess, LiveWorld, deployed_world
from test_live_anvil import BATCH_SIZE, check_batches

from sim.anvil import Anvil
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio
LEASE_S = 1.5
ENV = {"SEQ_HA_LEASE_S": str(LEASE_S)}


@pytest.fixture
async def world(anvil: Anvil, redis_url: str) -> AsyncIterator[LiveWorld]:
    async with deployed_world(anvil, redis_url, epochs_in_a_day=50) as w:
        yield w


def events(proc: CollectorProcess, since: int = 0) -> list[dict[str, Any]]:
    out = []
    for line in proc.lines()[since:]:
        try:
            found = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            out.append(found)
    return out


def wait_event(proc: CollectorProcess, name: str, since: int = 0, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in events(proc, since)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {name!r} line within {timeout_s}s: {proc.log()}")


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def release(world: LiveWorld, rounds: int) -> list[tuple[str, int]]:
    """Release an epoch per market with submissions; leave the windows open."""
    released = []
    for _ in range(rounds):
        for market in MARKETS:
            epoch = await world.release(market)
            for slot in range(1, 6):
                world.submit(market, epoch, f"project{slot % 3}", slot)
            released.append((market, epoch))
    return released


async def test_paused_active_is_fenced_out_and_the_standby_takes_over(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    started = time.monotonic()
    a = CollectorProcess(world, relayer.url, tmp_path / "a.log", extra_env=ENV).start()
    b: CollectorProcess | None = None
    try:
        wait_event(a, "active")
        b = CollectorProcess(world, relayer.url, tmp_path / "b.log", extra_env=ENV).start()
        wait_event(b, "standby")
        standby = next(e for e in events(b) if e.get("event") == "standby")
        assert standby["message"].startswith("standby: lease held by ")
        assert standby["token"] == 1
        status, body = get(b.api_url() + "/ready")
        assert status == 503 and body["status"] == "standby", body
        assert get(b.api_url() + "/health")[0] == 200  # live while standing by

        released = await release(world, 1)  # A batches these
        world.advance()
        for market, epoch in released:
            world.wait_for(f"{market} {epoch} by A", lambda m=market, e=epoch: world.batched(m, e))
        world.wait_for("A's calls", lambda: len(relayer.bodies("/submitBatchSize")) >= 2)

        open_windows = await release(world, 1)  # open windows when A is paused
        mark_a = len(a.lines())
        a.pause()
        paused_at = time.monotonic()
        world.advance()  # the windows close while A is paused
        wait_event(b, "active", timeout_s=20)
        took_over_s = time.monotonic() - paused_at
        for market, epoch in open_windows:
            world.wait_for(f"{market} {epoch} by B", lambda m=market, e=epoch: world.batched(m, e))
        world.wait_for("B's calls", lambda: len(relayer.bodies("/submitBatchSize")) >= 4)
        calls_before = len(relayer.requests)

        a.resume()
        wait_event(a, "lease_lost", since=mark_a, timeout_s=20)
        wait_event(a, "standby", since=mark_a, timeout_s=20)
        after_wake = events(a, mark_a)
        assert not [e for e in after_wake if e.get("event") == "outbox_delivered"], after_wake
        assert len(relayer.requests) == calls_before  # A sent nothing once resumed

        more = await release(world, 1)  # B goes on; A stays standby
        world.advance()
        for market, epoch in more:
            world.wait_for(f"{market} {epoch} later", lambda m=market, e=epoch: world.batched(m, e))
        everything = released + open_windows + more
        world.wait_for(
            "every call", lambda: len(relayer.bodies("/submitBatchSize")) >= len(everything)
        )
        time.sleep(0.5)  # a late duplicate would show here
        check_batches(world, everything, relayer)
        assert len(relayer.bodies("/submitBatchSize")) == len(everything)
        assert len(world.queue()) == sum(
            len(world.expected_queue(m, e, BATCH_SIZE)) for m, e in everything
        )
        assert a.alive() and b.alive()
        assert took_over_s < LEASE_S + 8, took_over_s
        held = world.redis.get("seqcollector:lease")  # B's, token 2
        assert held is not None and held.endswith(":2")
        who, token = held.rsplit(":", 1)
        shown = subprocess.run(
            [sys.executable, "-m", "seqcollector", "status"],
            env=b.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"lease: held by {who}, token {token}" in shown.stdout, shown.stdout
    finally:
        a.resume()
        for proc in (a, b):
            if proc is not None and proc.alive():
                assert proc.stop() < 10
    assert time.monotonic() - started < 60

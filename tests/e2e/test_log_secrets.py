"""No secret in any line: `seqcollector check-config --connect` and a short `seqcollector run`
against anvil, a real Redis and a loopback relayer/alert sink, with every secret setting set
(AUTH_READ_TOKEN, TX_RELAYER_AUTH_WRITE_TOKEN, a SLACK_REPORTING_URL whose path is the
secret, an RPC URL with a password and an API key), SEQ_LOG_FORMAT=json and
SEQ_LOG_LEVEL=debug (the libraries' lines too). The run is made to log the secret-bearing
URLs: an alert is raised (a malformed submission), its first POST fails, then it is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from livekit import MARKETS, CollectorProcess, LiveWorld

from sim.relayer import Relayer

pytestmark = pytest.mark.anyio

READ_TOKEN = "read-token-e2e-5d1c9a"
WRITE_TOKEN = "write-token-e2e-a07f33"
SLACK_SECRET = "Zq8RtY2uI4oP6aS1dF3gH5jK"
RPC_PASSWORD = "rpc-password-e2e-91"
RPC_KEY = "rpc-apikey-e2e-0c4b"
SECRETS = [READ_TOKEN, WRITE_TOKEN, SLACK_SECRET, RPC_PASSWORD, RPC_KEY]
SLACK_PATH = f"/services/T0E2E1111/B0E2E2222/{SLACK_SECRET}"


@pytest.fixture
def sink() -> Iterator[Relayer]:
    """The relayer (checking the write token) and the alert sink, on one loopback server."""
    with Relayer(auth_token=WRITE_TOKEN) as r:
        yield r


def secret_rpc_url(anvil_url: str) -> str:
    """anvil's URL with a password and an API key in it (anvil ignores both)."""
    parts = urlsplit(anvil_url)
    netloc = f"rpcuser:{RPC_PASSWORD}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, "/", f"apikey={RPC_KEY}", ""))


def secret_env(world: LiveWorld, sink: Relayer) -> dict[str, str]:
    return {
        "RPC_NODES": json.dumps([secret_rpc_url(world.anvil.url)]),
        "AUTH_READ_TOKEN": READ_TOKEN,
        "TX_RELAYER_AUTH_WRITE_TOKEN": WRITE_TOKEN,
        "SLACK_REPORTING_URL": sink.url + SLACK_PATH,
        "SEQ_LOG_FORMAT": "json",
        "SEQ_LOG_LEVEL": "debug",
        "HTTP_TIMEOUT": "5",
    }


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows {secret!r}:\n{text[-3000:]}"


def json_lines(text: str, where: str) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{where} line {n} is not JSON: {line!r}") from None
    return out


async def test_check_config_shows_no_secret(world: LiveWorld, sink: Relayer) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PROTOCOL_STATE_CONTRACT": world.address,
        "DATA_MARKET_ADDRESSES": json.dumps(MARKETS),
        "SEQ_REDIS_URL": world.redis_url,
        "TX_RELAYER_URL": sink.url,
        **secret_env(world, sink),
    }
    done = subprocess.run(
        [sys.executable, "-m", "seqcollector", "check-config", "--connect"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_secret(done.stdout, "check-config's stdout")
    assert_no_secret(done.stderr, "check-config's stderr")
    json_lines(done.stderr, "check-config's stderr")  # its log lines; stdout is its table
    assert "AUTH_READ_TOKEN" in done.stdout and "re****" in done.stdout  # shown, masked
    assert "ok  " in done.stdout  # --connect reached Redis, the node and the contract


async def test_a_run_logs_json_lines_without_a_secret(
    world: LiveWorld, sink: Relayer, tmp_path: Path
) -> None:
    sink.fail_next, sink.fail_path = 1, "/services"  # the alert's first POST: 500
    log_path = tmp_path / "collector.log"  # stdout and stderr, as a container's log
    collector = CollectorProcess(
        world, sink.url, log_path, extra_env=secret_env(world, sink)
    ).start()
    try:
        market = MARKETS[0]
        epoch = await world.release(market)
        world.submit(market, epoch, "project1", 1)
        key = f"SnapshotCollector.{market}.{epoch}.{world.head_hash()}"
        world.redis.sadd(key, "not-a-submission")  # skipped, and alerted
        world.advance()
        world.wait_for("the epoch batched", lambda: world.batched(market, epoch))
        world.wait_for("the alert sent", lambda: len(sink.answered(SLACK_PATH)) >= 2)
        world.wait_for("the batch size sent", lambda: bool(sink.bodies("/submitBatchSize")))
    finally:
        collector.stop()
    text = log_path.read_text()
    assert_no_secret(text, "the run's output")
    digest = [line for line in text.splitlines() if line.startswith("digest ")]
    assert len(digest) == 1  # stdout: the journal's digest at stop (the one non-log line)
    lines = json_lines(
        "\n".join(x for x in text.splitlines() if not x.startswith("digest ")),
        "the run's output",
    )
    assert sink.violations() == []  # the relayer got the write token: it was used, unseen
    assert [ok for _, ok in sink.answered(SLACK_PATH)] == [False, True]

    assert {line["level"] for line in lines} >= {"debug", "info"}
    assert any(not line["logger"].startswith("seqcollector") for line in lines)  # libraries
    failed = [x for x in lines if x["event"] == "outbox_attempt_failed"]
    sent = [x for x in lines if x["event"] == "outbox_delivered" and x["id"].startswith("skip")]
    masked = urlsplit(sink.url)._replace(path="/se****").geturl()
    assert failed and failed[0]["url"] == masked  # the URL was logged: masked
    assert sent and sent[0]["url"] == masked
    assert (sent[0]["market"], sent[0]["epoch"]) == (market, epoch)
    start = next(i for i, x in enumerate(lines) if x["event"] == "starting")
    followed = [x for x in lines[start:] if x["event"] == "group_committed"]  # the chain's
    assert followed and all(isinstance(x["block"], int) for x in followed)
    reads = [x for x in lines if "eth_getLogs" in x["event"]]  # the follower's, by web3
    assert reads and all(isinstance(x["block"], int) for x in reads)

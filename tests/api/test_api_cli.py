"""`seqcollector api` as a real subprocess: it serves the read API from Redis alone, in
the process's time zone (Go's time.Local), stops on SIGTERM, and refuses to start, in one
line, without a read token or a market, with Redis unreachable or the port taken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from apikit import LC, MARKET, TOKEN

from sim.redis_server import free_port

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


def env_for(redis_url: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {
        **base,
        "COLUMNS": "200",
        "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
        "AUTH_READ_TOKEN": TOKEN,
        "SEQ_REDIS_URL": redis_url,
        **extra,
    }


def api_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqcollector", "api", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def one_line(proc: subprocess.CompletedProcess[str], code: int, *names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(lines) == 1 and proc.returncode == code, (proc.returncode, proc.stderr)
    for name in names:
        assert name in lines[0], (name, lines[0])


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("seqcollector api did not listen within 60 s")


def test_api_command_serves_and_stops_on_sigterm(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        r.set(f"LastSnapshotSubmissionKey.{LC}.3", "0")
        r.set(f"BatchCountKey.{LC}.9", "4")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqcollector", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env_for(redis_url, TZ="Asia/Kolkata"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}"
        body = {"token": TOKEN, "dataMarketAddress": MARKET, "slotID": 3, "epochID": 9}
        status, got = post(url + "/lastSnapshotSubmission", body)
        assert status == 200, got
        # Go formats in the process's zone: RFC 3339 with the offset
        assert got["info"]["response"] == {
            "timestamp": "1970-01-01T05:30:00+05:30",
            "nodeVersion": "v0.0.0",
        }
        assert post(url + "/batchCount", body)[1]["info"]["response"] == {"totalBatches": 4}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    assert "api_listening" in err  # the log is on stderr


def test_api_refuses_without_a_read_token(redis_url: str) -> None:
    one_line(api_cli(env_for(redis_url, AUTH_READ_TOKEN="")), 2, "AUTH_READ_TOKEN")


def test_api_refuses_without_markets(redis_url: str) -> None:
    one_line(api_cli(env_for(redis_url, DATA_MARKET_ADDRESSES="[]")), 2, "DATA_MARKET_ADDRESSES")


def test_api_redis_unreachable() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    one_line(api_cli(env_for(dead), "--port", str(free_port())), 1, "Redis", "127.0.0.1")


def test_api_port_taken(redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = api_cli(env_for(redis_url), "--host", "127.0.0.1", "--port", str(port))
    one_line(proc, 1, f"127.0.0.1:{port}", "SEQ_API_PORT")

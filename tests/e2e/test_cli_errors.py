"""Every failure of `run`, `replay`, `sim` and `check-config` is one line on stderr (beside
the log's JSON lines), naming the component or setting, with exit 2 for settings and
input, 1 for a dependency; never a traceback. The real `seqcollector` CLI in a subprocess,
against closed ports, loopback servers that accept and never answer, and a real
redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from silent import SilentServer

from sim.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "journals" / "one-market.jsonl"
PS = "0x" + "ab" * 20
MARKET = "0x" + "cd" * 20


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "seqcollector", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "80", "SEQ_API_HOST": "127.0.0.1", "SEQ_API_PORT": "0", **env},
        timeout=timeout,
        cwd=ROOT,
    )


def is_log_line(line: str) -> bool:
    """A log line (stderr carries the log too: JSON lines when it is not a terminal)."""
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def one_line(proc: subprocess.CompletedProcess[str], code: int, *names: str) -> str:
    """The failure is exactly one stderr line besides the log's, naming every one of
    `names`; exit `code`."""
    lines = [line for line in proc.stderr.strip().splitlines() if not is_log_line(line)]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def run_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "PROTOCOL_STATE_CONTRACT": PS,
        "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
        "SEQ_REDIS_URL": redis_url,
        "SEQ_STARTUP_TIMEOUT_S": "1",
        **extra,
    }


def closed_port() -> int:
    return free_port()  # nothing listens there


# ------------------------------------------------------------------------ RPC at start


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_run_rpc_unreachable(redis_url: str, scheme: str) -> None:
    node = f"{scheme}://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    proc = cli(run_env(redis_url, RPC_NODES=json.dumps([node])), "run")
    line = one_line(proc, 1, "RPC_NODES", "127.0.0.1")
    assert "SEQ_STARTUP_TIMEOUT_S=1" in line and "attempts" in line
    assert time.monotonic() - started < 20
    assert proc.stderr.count("startup_retry") >= 2  # each attempt logged (the log: stderr)


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_run_rpc_accepts_and_never_answers(redis_url: str, scheme: str) -> None:
    with SilentServer() as silent:
        node = f"{scheme}://127.0.0.1:{silent.port}"
        started = time.monotonic()
        proc = cli(run_env(redis_url, RPC_NODES=json.dumps([node])), "run")
        elapsed = time.monotonic() - started
    one_line(proc, 1, "RPC_NODES", f"127.0.0.1:{silent.port}")
    assert silent.accepted >= 1
    assert elapsed < 20, elapsed  # bounded by SEQ_STARTUP_TIMEOUT_S, not 30 s per request


# ------------------------------------------------------------------------------ Redis


def test_run_redis_db_out_of_range(redis_url: str) -> None:
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    env = run_env(redis_url, RPC_NODES='["http://127.0.0.1:1"]', REDIS_DB="99")
    del env["SEQ_REDIS_URL"]
    env |= {"REDIS_HOST": host, "REDIS_PORT": port}
    line = one_line(cli(env, "run"), 2, "REDIS_DB", "DB index is out of range")
    assert f"{host}:{port}/99" in line


def test_run_redis_never_answers() -> None:
    with SilentServer() as silent:
        env = run_env(f"redis://127.0.0.1:{silent.port}/0", RPC_NODES='["http://127.0.0.1:1"]')
        line = one_line(cli(env, "run"), 1, "Redis", f"127.0.0.1:{silent.port}")
    assert "no answer" in line


def test_run_redis_closed_port() -> None:
    env = run_env(f"redis://127.0.0.1:{closed_port()}/0", RPC_NODES='["http://127.0.0.1:1"]')
    one_line(cli(env, "run"), 1, "Redis", "start Redis")


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"TIMEOUT_REDIS_OPERATION": "1ms"}, "TIMEOUT_REDIS_OPERATION"),
        ({"BATCH_SIZE": str(10**30)}, "BATCH_SIZE"),
        ({"SEQ_STARTUP_TIMEOUT_S": "-1"}, "SEQ_STARTUP_TIMEOUT_S"),
        ({"DATA_MARKET_ADDRESSES": "[]"}, "DATA_MARKET_ADDRESSES"),
        ({"PROTOCOL_STATE_CONTRACT": ""}, "PROTOCOL_STATE_CONTRACT"),
        ({"RPC_NODES": ""}, "RPC_NODES"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_settings_refused_alike_by_run_and_check_config(
    command: str, extra: dict[str, str], name: str
) -> None:
    env = run_env("redis://127.0.0.1:1/0", RPC_NODES='["http://127.0.0.1:1"]') | extra
    line = one_line(cli(env, command), 2, name)
    if name in ("TIMEOUT_REDIS_OPERATION", "BATCH_SIZE"):
        assert "must be between" in line  # the range is given


def test_check_config_shows_the_startup_timeout() -> None:
    env = run_env("redis://127.0.0.1:1/0", RPC_NODES='["http://127.0.0.1:1"]')
    proc = cli({**env, "COLUMNS": "200"}, "check-config")
    assert proc.returncode == 0, proc.stderr
    assert "SEQ_STARTUP_TIMEOUT_S" in proc.stdout


# --------------------------------------------------------------------- check-config --connect


def test_check_config_connect_redis_db_out_of_range(redis_url: str) -> None:
    env = run_env(redis_url.rsplit("/", 1)[0] + "/99", RPC_NODES='["http://127.0.0.1:1"]')
    one_line(cli(env, "check-config", "--connect"), 2, "SEQ_REDIS_URL", "DB index")


def test_check_config_connect_rpc_unreachable(redis_url: str) -> None:
    node = f"http://127.0.0.1:{closed_port()}"
    env = run_env(redis_url, RPC_NODES=json.dumps([node]))
    proc = cli(env, "check-config", "--connect")
    one_line(proc, 1, "RPC_NODES node", node)
    assert "ok  Redis at" in proc.stdout  # Redis passed before the node failed


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_check_config_connect_rpc_never_answers(redis_url: str, scheme: str) -> None:
    with SilentServer() as silent:
        node = f"{scheme}://127.0.0.1:{silent.port}"
        started = time.monotonic()
        proc = cli(run_env(redis_url, RPC_NODES=json.dumps([node])), "check-config", "--connect")
        elapsed = time.monotonic() - started
    one_line(proc, 1, "RPC_NODES", f"127.0.0.1:{silent.port}")
    assert elapsed < 20, elapsed


def test_check_config_connect_redis_never_answers() -> None:
    with SilentServer() as silent:
        env = run_env(f"redis://127.0.0.1:{silent.port}/0", RPC_NODES='["http://127.0.0.1:1"]')
        one_line(cli(env, "check-config", "--connect"), 1, "Redis", "no answer")


# ------------------------------------------------------------------------------ replay


def test_replay_redis_not_a_url() -> None:
    one_line(cli({}, "replay", str(FIXTURE), "--redis", "notaurl"), 2, "--redis", "notaurl")


def test_replay_redis_never_answers() -> None:
    with SilentServer() as silent:
        env = {"SEQ_STARTUP_TIMEOUT_S": "1"}
        url = f"redis://127.0.0.1:{silent.port}/0"
        one_line(cli(env, "replay", str(FIXTURE), "--redis", url), 1, "Redis", "no answer")


def test_replay_redis_that_stops_answering_writes_mid_run(tmp_path: Path) -> None:
    """The start probe passes (PING, SELECT, the checkpoint read), then the commit script
    blocks (CLIENT PAUSE WRITE): the replay ends at its Redis deadline with one line naming
    Redis and what to do, instead of hanging."""
    import redis as redis_sync

    from sim.redis_server import RedisServer

    with RedisServer(tmp_path) as server, redis_sync.Redis.from_url(server.url) as admin:
        admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        try:
            env = {"SEQ_STARTUP_TIMEOUT_S": "1", "TIMEOUT_REDIS_OPERATION": "0.5"}
            proc = cli(env, "replay", str(FIXTURE), "--redis", server.url)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
    line = one_line(proc, 1, "Redis did not answer within 0.5 s", "TIMEOUT_REDIS_OPERATION")
    assert "committing inputs up to" in line and "--resume" in line
    assert "digest" not in proc.stdout


def test_replay_redis_db_out_of_range(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/99"
    one_line(cli({}, "replay", str(FIXTURE), "--redis", url), 2, "--redis", "DB index")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", -3),
        ("max_reorg_depth", 0),
        ("block_hash_ttl_s", 0),
        ("batch_ttl_s", -1),
        ("slot_submissions_ttl_s", 0),
        ("emitted_epochs_kept", 0),
        ("batch_size", 10**30),
    ],
)
def test_replay_journal_header_out_of_range(tmp_path: Path, field: str, value: int) -> None:
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["config"][field] = value
    journal = tmp_path / "bad.jsonl"
    journal.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))
    proc = cli({}, "replay", str(journal))
    one_line(proc, 2, f"{journal}:1", f"config.{field}")
    assert "digest" not in proc.stdout  # nothing replayed


def test_replay_journal_bad_input_line(tmp_path: Path) -> None:
    journal = tmp_path / "bad.jsonl"
    journal.write_bytes(FIXTURE.read_bytes().splitlines(keepends=True)[0] + b'{"type": "x"}\n')
    one_line(cli({}, "replay", str(journal)), 2, f"{journal}:2")


# --------------------------------------------------------------------------------- sim


def test_sim_redis_not_a_url(tmp_path: Path) -> None:
    proc = cli({}, "sim", "--redis", "notaurl", "--out", str(tmp_path))
    one_line(proc, 2, "--redis")


def test_sim_bad_faults(tmp_path: Path) -> None:
    one_line(cli({}, "sim", "--faults", "nope", "--out", str(tmp_path)), 2, "nope")


def test_usage_errors_are_one_line() -> None:
    one_line(cli({}, "replay"), 2, "JOURNAL")
    one_line(cli({}, "sim", "--seed", "x"), 2, "--seed")

"""Log rendering (`seqcollector.logs`): formats, levels, terminal detection, the libraries'
lines through the same processors, bound context, and secrets masked wherever they appear."""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog

from seqcollector.config import Settings
from seqcollector.logs import (
    SecretRedactor,
    configure_logging,
    reset_logging,
    secrets_of,
    url_secrets,
)

log = structlog.get_logger("seqcollector.test")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    """Every line of `buf` as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_timestamp_level_logger_event_and_fields() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", buf)
    log.info("window_closed", market="0xabc", epoch=7, sizes=[1, 2])
    (line,) = lines(buf)
    assert line["event"] == "window_closed"
    assert line["level"] == "info"
    assert line["logger"] == "seqcollector.test"
    assert (line["market"], line["epoch"], line["sizes"]) == ("0xabc", 7, [1, 2])
    stamp = datetime.fromisoformat(line["timestamp"])
    assert line["timestamp"].endswith("Z") and stamp.utcoffset() == timedelta(0)


def test_console_format_is_structlogs_renderer_without_colours_off_a_terminal() -> None:
    buf = io.StringIO()
    configure_logging("console", "info", buf)
    log.info("window_closed", epoch=7)
    text = buf.getvalue()
    assert "window_closed" in text and "epoch=7" in text and "[seqcollector.test]" in text
    assert "\x1b[" not in text  # no ANSI colours in a file
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_is_json_in_a_file_and_console_on_a_terminal() -> None:
    buf = io.StringIO()
    configure_logging("auto", "info", buf)
    log.info("to_a_file")
    assert lines(buf)[0]["event"] == "to_a_file"

    leader, follower = os.openpty()  # a real terminal: isatty() is the kernel's answer
    with os.fdopen(follower, "w") as tty:
        configure_logging("auto", "info", tty)
        log.info("to_a_terminal", n=1)
        tty.flush()
        shown = os.read(leader, 65536).decode()
    os.close(leader)
    assert "to_a_terminal" in shown and "\x1b[" in shown  # console, in colour
    assert not shown.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["d", "i", "w", "e", "lib_d", "lib_i", "lib_w", "lib_e"]),
        ("info", ["i", "w", "e", "lib_i", "lib_w", "lib_e"]),
        ("warning", ["w", "e", "lib_w", "lib_e"]),
        ("error", ["e", "lib_e"]),
    ],
)
def test_level_applies_to_our_lines_and_the_libraries(level: str, shown: list[str]) -> None:
    buf = io.StringIO()
    configure_logging("json", level, buf)
    lib = logging.getLogger("web3.providers.HTTPProvider")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    lib.debug("lib_d")
    lib.info("lib_i")
    lib.warning("lib_w")
    lib.error("lib_e")
    assert sorted(line["event"] for line in lines(buf)) == sorted(shown)


def test_stdlib_lines_are_rendered_like_ours() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", buf)
    logging.getLogger("aiohttp.client").warning("request to %s failed", "http://x")
    try:
        raise ConnectionResetError("peer reset")
    except ConnectionResetError:
        logging.getLogger("redis.asyncio").exception("connection lost")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
    first, second, third = lines(buf)
    assert first["event"] == "request to http://x failed"
    assert (first["level"], first["logger"]) == ("warning", "aiohttp.client")
    assert "timestamp" in first
    assert second["level"] == "error" and "ConnectionResetError: peer reset" in second["exception"]
    assert third["logger"] == "py.warnings" and "old api" in third["event"]


def test_bound_context_is_on_every_line_ours_and_the_libraries() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", buf)
    with structlog.contextvars.bound_contextvars(block=12, market="0xabc"):
        with structlog.contextvars.bound_contextvars(epoch=3):
            log.info("inner")
            logging.getLogger("aiohttp.client").warning("lib inner")
        log.info("outer", block=13)  # a field given explicitly wins
    log.info("after")
    inner, lib, outer, after = lines(buf)
    assert (inner["block"], inner["market"], inner["epoch"]) == (12, "0xabc", 3)
    assert (lib["block"], lib["market"], lib["epoch"]) == (12, "0xabc", 3)
    assert outer["block"] == 13 and "epoch" not in outer
    assert not {"block", "market", "epoch"} & set(after)


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", first)
    configure_logging("json", "info", second)
    log.info("once")
    logging.getLogger("x").warning("lib once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once", "lib once"]


def test_default_stream_is_stderr_at_the_time_of_writing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    log.info("to_stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["event"] == "to_stderr"


def test_unknown_format_or_level_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, console, json"):
        configure_logging("xml", "info", io.StringIO())
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        configure_logging("json", "verbose", io.StringIO())


# -- secrets -------------------------------------------------------------------------------

READ_TOKEN = "read-token-4f9a2c"
WRITE_TOKEN = "write-token-88e1d0"
SLACK_SECRET = "XyZ0aBcD1eFgH2iJkL3mNoP4"
SLACK = f"https://hooks.slack.test/services/T0AAA1111/B0BBB2222/{SLACK_SECRET}"
RPC_PASSWORD = "rpc-pass-6b21"
RPC_KEY = "0123456789abcdef0123456789abcdef"
RPC_QUERY = "qkey-7781aa"
RPC = f"https://user:{RPC_PASSWORD}@rpc.test/v3/{RPC_KEY}?apikey={RPC_QUERY}"
REDIS_PASSWORD = "redis-pw-55ab"
SECRETS = [READ_TOKEN, WRITE_TOKEN, SLACK_SECRET, RPC_PASSWORD, RPC_KEY, RPC_QUERY, REDIS_PASSWORD]


def settings() -> Settings:
    return Settings(
        rpc_nodes=(RPC,),
        archive_rpc_nodes=(f"https://archive.test/?key={RPC_QUERY}",),
        auth_read_token=READ_TOKEN,
        tx_relayer_auth_write_token=WRITE_TOKEN,
        slack_reporting_url=SLACK,
        tx_relayer_url="http://relayer.test:8080",
        redis_url_override=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    )


class HoldsASecret:
    def __repr__(self) -> str:
        return f"HoldsASecret(url={SLACK!r})"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_masked_in_keys_values_reprs_tracebacks_and_library_lines(fmt: str) -> None:
    buf = io.StringIO()
    configure_logging(fmt, "debug", buf, secrets_of(settings()))
    log.info("plain", token=READ_TOKEN, url=RPC, alert=SLACK)
    log.info("nested", calls=[{"authToken": WRITE_TOKEN}], **{f"key_{RPC_KEY}": 1})
    log.info(f"in the event {RPC_PASSWORD}", thing=HoldsASecret(), raw=RPC_QUERY.encode())
    log.info("quoted", text=f'he said "{REDIS_PASSWORD}"\n')
    try:
        raise ValueError(f"POST {SLACK} failed")
    except ValueError:
        log.exception("with_traceback")
    logging.getLogger("web3.providers.HTTPProvider").debug("Making request. URI: %s", RPC)
    out = buf.getvalue()
    for secret in SECRETS:
        assert secret not in out, (secret, out)
    assert "https://hooks.slack.test/se****" in out  # the masked forms say what was there
    assert "https://user:rp****@rpc.test/v3/01****?apikey=qk****" in out
    if fmt == "json":
        assert len(lines(buf)) == 6


def test_a_config_without_secrets_leaves_lines_as_they_are() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", buf, secrets_of(Settings()))
    log.info("hello", url="redis://localhost:6379/0", token="")
    assert lines(buf)[0]["url"] == "redis://localhost:6379/0"
    assert not SecretRedactor(secrets_of(Settings()))


def test_url_secrets_name_what_mask_url_hides() -> None:
    found = url_secrets(RPC)
    assert found[RPC] == "https://user:rp****@rpc.test/v3/01****?apikey=qk****"
    assert {RPC_PASSWORD, RPC_KEY, RPC_QUERY} <= set(found)
    assert "user" not in found and "v3" not in found  # not secrets: left readable
    slack = url_secrets(SLACK, mask_path=True)
    assert slack[SLACK] == "https://hooks.slack.test/se****"
    assert SLACK_SECRET in slack and SLACK.split("/", 3)[3] in slack
    assert url_secrets("http://127.0.0.1:8545") == {}
    token_as_user = url_secrets("https://abcdef123456@rpc.test/")
    assert "abcdef123456" in token_as_user


def test_short_values_are_not_searched_for_but_their_urls_are() -> None:
    redactor = SecretRedactor(url_secrets("redis://:pw@127.0.0.1:6379/0"))
    assert (
        redactor.redact("redis://:pw@127.0.0.1:6379/0 and pw")
        == "redis://:***@127.0.0.1:6379/0 and pw"
    )

"""Alerts through the one HTTP client (`runtime.http`, aiohttp) against a real HTTP server on
loopback: the runtime's failures (`FailureReporter`) and the core's `Alert` effects (the
outbox) send the same body (`runtime.alerts`, Go's `SequencerAlert`), byte for byte as built."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import anyio
import msgspec
import pytest

from seqcollector.core.effects import Alert
from seqcollector.logs import configure_logging, reset_logging
from seqcollector.runtime.alerts import alert_body
from seqcollector.runtime.executor import RedisExecutor, embedded_redis
from seqcollector.runtime.failures import Failure, FailureReporter
from seqcollector.runtime.http import client_session, post_json
from seqcollector.runtime.outbox import OutboxDispatcher
from sim.loopback import LoopbackHTTPServer

pytestmark = pytest.mark.anyio

GO_FIELDS = ["process_name", "error_msg", "timestamp", "severity"]


@dataclass
class Received:
    path: str
    content_type: str
    raw: bytes


@dataclass
class AlertSink:
    """Records every POST's raw body; answers `status`, after `stall_s` when set."""

    status: int = 200
    stall_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.received.append(Received(self.path, self.headers.get("Content-Type", ""), raw))
                if sink.stall_s:
                    sink.released.wait(sink.stall_s)
                reply = b'{"ok":true}'
                try:
                    self.send_response(sink.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def sink() -> Iterator[tuple[AlertSink, str]]:
    recorder = AlertSink()
    server = LoopbackHTTPServer(recorder.handler(), "alerts")
    server.start()
    yield recorder, server.url + "/services/T0/B0/alert-path"
    recorder.released.set()
    server.close()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("json", "info", buf)
    yield buf
    reset_logging()


def events(buf: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [x for x in map(json.loads, buf.getvalue().splitlines()) if x["event"] == name]


def go_alert(raw: bytes) -> dict[str, str]:
    body = json.loads(raw)
    assert list(body) == GO_FIELDS, body
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return dict(body)


async def test_a_failure_is_alerted_with_gos_body(sink: tuple[AlertSink, str]) -> None:
    recorder, url = sink
    failure = Failure("RedisCommit", "connection refused", block=12, market="0xabc", epoch=3)
    await FailureReporter(url, timeout_s=5.0).report(failure, severity="High")
    (got,) = recorder.received
    assert got.path == "/services/T0/B0/alert-path"
    assert got.content_type == "application/json"
    body = go_alert(got.raw)
    assert body["process_name"] == "SequencerEventCollector: RedisCommit"
    assert body["error_msg"] == failure.message()
    assert "market 0xabc, epoch 3, block 12" in body["error_msg"]
    assert body["severity"] == "High"
    at = datetime.fromisoformat(body["timestamp"])
    assert got.raw == alert_body("RedisCommit", failure.message(), "High", at)


async def test_the_outbox_sends_the_cores_alert_byte_identical_to_before(
    sink: tuple[AlertSink, str],
) -> None:
    recorder, url = sink
    alert = Alert(
        id="skipped:0xabc:7", step="BatchPreparation", message='m é "q"\n', severity="Medium"
    )
    redis = embedded_redis()
    executor = RedisExecutor(redis, "ns")
    await executor.load()
    assert await executor.commit(1, 1, [alert], b"state")
    async with OutboxDispatcher(redis, "ns", "", "", url, backoff_initial_s=0.01) as outbox:
        assert await outbox.deliver_pending() == 1
    (got,) = recorder.received
    body = go_alert(got.raw)
    before = msgspec.json.encode(  # how the outbox built it before runtime.alerts existed
        {
            "process_name": "SequencerEventCollector: " + alert.step,
            "error_msg": alert.message,
            "timestamp": body["timestamp"],
            "severity": alert.severity,
        }
    )
    assert got.raw == before
    at = datetime.fromisoformat(body["timestamp"])
    assert got.raw == alert_body(alert.step, alert.message, alert.severity, at)
    await redis.aclose()


async def test_alerts_are_rate_limited_per_operation_unless_always(
    sink: tuple[AlertSink, str],
) -> None:
    recorder, url = sink
    reporter = FailureReporter(url, alert_every_s=3600)
    await reporter.report(Failure("Fetch", "one"))
    await reporter.report(Failure("Fetch", "two"))  # within the hour: logged only
    await reporter.report(Failure("Commit", "three"))
    await reporter.report(Failure("Fetch", "stops"), always=True)
    sent = [json.loads(r.raw)["error_msg"] for r in recorder.received]
    assert [m.split(": ")[1].split(" (")[0] for m in sent] == ["one", "three", "stops"]
    assert reporter.count == 4


async def test_an_alert_refused_is_logged_with_its_status(
    sink: tuple[AlertSink, str], log_lines: io.StringIO
) -> None:
    recorder, url = sink
    recorder.status = 500
    await FailureReporter(url).report(Failure("Fetch", "down", block=5))
    assert len(recorder.received) == 1
    (line,) = events(log_lines, "alert_not_sent")
    assert (line["operation"], line["status"]) == ("Fetch", 500)
    (failure,) = events(log_lines, "failure")
    assert failure["block"] == 5 and "market" not in failure  # unset fields are not logged


async def test_an_unreachable_or_stalled_alert_endpoint_is_logged_not_raised(
    sink: tuple[AlertSink, str], log_lines: io.StringIO
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/alerts"
    await FailureReporter(closed).report(Failure("Fetch", "down"))
    recorder, url = sink
    recorder.stall_s = 30
    with anyio.fail_after(20):  # bounded by the reporter's timeout, not the stall
        await FailureReporter(url, timeout_s=0.2).report(Failure("Commit", "slow"))
    refused, stalled = events(log_lines, "alert_not_sent")
    assert refused["operation"] == "Fetch" and "127.0.0.1" in refused["error"]
    assert stalled["operation"] == "Commit" and "TimeoutError" in stalled["error"]


async def test_text_json_cannot_carry_is_escaped_not_a_crash(
    sink: tuple[AlertSink, str],
) -> None:
    recorder, url = sink
    await FailureReporter(url).report(Failure("Decode", "bad byte \udc80 in key"))
    body = go_alert(recorder.received[0].raw)
    assert "bad byte \\udc80 in key" in body["error_msg"]


async def test_post_json_returns_status_and_text_and_bounds_the_wait(
    sink: tuple[AlertSink, str],
) -> None:
    recorder, url = sink
    async with client_session() as session:
        assert await post_json(session, url, b"{}", 5.0) == (200, '{"ok":true}')
        recorder.status = 503
        assert (await post_json(session, url, b"{}", 5.0))[0] == 503
        recorder.stall_s = 30
        with anyio.fail_after(20), pytest.raises(TimeoutError):
            await post_json(session, url, b"{}", 0.2)
    assert [r.raw for r in recorder.received] == [b"{}"] * 3


def test_alert_body_is_gos_struct_in_field_order() -> None:
    at = datetime(2026, 12, 3, 14, 0, 0, 123456, tzinfo=UTC)
    assert alert_body("Step", "msg", "High", at) == (
        b'{"process_name":"SequencerEventCollector: Step","error_msg":"msg",'
        b'"timestamp":"2026-12-03T14:00:00.123456+00:00","severity":"High"}'
    )

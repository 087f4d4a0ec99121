"""OutboxDispatcher against a real HTTP server on loopback and Redis (real and fakeredis)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from seqcollector.core.effects import Alert, Effect, RelayerCall
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.outbox import OutboxDispatcher

pytestmark = pytest.mark.anyio

NS = "test"
TOKEN = "s3cret"


@dataclass
class Recorded:
    path: str
    content_type: str
    body: dict[str, Any]


@dataclass
class FakeEndpoints:
    """What the HTTP server received, and how it should misbehave.

    `fail_next`: answer the next N requests (whose path starts with `fail_path`) with 500.
    `stall_s`: wait this long before answering (cut short at teardown).
    """

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    fail_next: int = 0
    fail_path: str = "/"
    stall_s: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]


def _handler(endpoints: FakeEndpoints) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with endpoints.lock:
                endpoints.requests.append(
                    Recorded(self.path, self.headers.get("Content-Type", ""), body)
                )
                fail = endpoints.fail_next > 0 and self.path.startswith(endpoints.fail_path)
                if fail:
                    endpoints.fail_next -= 1
                stall = endpoints.stall_s
            if stall:
                endpoints.released.wait(stall)
            status = 500 if fail else 200
            reply = b'{"error":"injected"}' if fail else b'{"success":true}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a stalled request

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def endpoints() -> Iterator[FakeEndpoints]:
    state = FakeEndpoints()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def dispatcher(
    backend: Any, endpoints: FakeEndpoints, alert_url: str | None = None, **kwargs: Any
) -> OutboxDispatcher:
    settings: dict[str, Any] = {
        "max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.02, **kwargs
    }
    return OutboxDispatcher(
        backend.client(),
        NS,
        endpoints.url + "/",  # a trailing slash must not double up
        TOKEN,
        endpoints.url + "/alerts" if alert_url is None else alert_url,
        **settings,
    )


async def commit_steps(backend: Any, *steps: list[Effect]) -> None:
    executor = RedisExecutor(backend.client(), NS)
    await executor.load()
    for seq, effects in enumerate(steps, start=1):
        assert await executor.commit(seq, seq, effects, b"state")


async def pending_ids(backend: Any) -> list[str]:
    ids = await backend.client().zrange(StoreLayout(NS).outbox_pending, 0, -1)
    return [i.decode() for i in ids]


def batch_size_call(epoch: int) -> RelayerCall:
    body: dict[str, object] = {
        "dataMarketAddress": "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c",
        "epochID": epoch,
        "batchSize": 3,
    }
    return RelayerCall(id=f"batchsize:{epoch}", path="/submitBatchSize", body=body)


async def test_relayer_call_is_posted_with_auth_token(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    call = batch_size_call(7)
    await commit_steps(redis_backend, [call])

    async with dispatcher(redis_backend, endpoints) as outbox:
        assert await outbox.deliver_pending() == 1

    assert endpoints.requests == [
        Recorded("/submitBatchSize", "application/json", {**call.body, "authToken": TOKEN})
    ]
    assert await pending_ids(redis_backend) == []
    assert await redis_backend.client().hlen(StoreLayout(NS).outbox) == 0
    assert (outbox.delivered, outbox.failed_attempts) == (1, 0)


async def test_500_then_200_is_retried_and_marked_done(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    await commit_steps(redis_backend, [batch_size_call(1)])
    endpoints.fail_next = 1

    async with dispatcher(redis_backend, endpoints) as outbox:
        assert await outbox.deliver_pending() == 1
        assert await outbox.deliver_pending() == 0

    assert endpoints.paths() == ["/submitBatchSize", "/submitBatchSize"]
    assert endpoints.requests[0].body == endpoints.requests[1].body
    assert (outbox.delivered, outbox.failed_attempts) == (1, 1)
    assert await pending_ids(redis_backend) == []


async def test_failed_entry_stays_pending_until_a_later_pass(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    await commit_steps(redis_backend, [batch_size_call(1), batch_size_call(2)])
    endpoints.fail_next = 100

    async with dispatcher(redis_backend, endpoints, max_attempts=3) as outbox:
        assert await outbox.deliver_pending() == 0
        # Three attempts on the first call; the second waits behind it (order).
        assert [r.body["epochID"] for r in endpoints.requests] == [1, 1, 1]
        assert await pending_ids(redis_backend) == ["batchsize:1", "batchsize:2"]
        assert outbox.failed_attempts == 3

        endpoints.fail_next = 0
        assert await outbox.deliver_pending() == 2

    assert [r.body["epochID"] for r in endpoints.requests] == [1, 1, 1, 1, 2]
    assert await pending_ids(redis_backend) == []


async def test_stalled_endpoint_times_out_and_is_retried_later(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    await commit_steps(redis_backend, [batch_size_call(1)])
    endpoints.stall_s = 5.0

    async with dispatcher(redis_backend, endpoints, http_timeout_s=0.2, max_attempts=2) as outbox:
        with anyio.fail_after(3):
            assert await outbox.deliver_pending() == 0
        assert outbox.failed_attempts == 2
        assert await pending_ids(redis_backend) == ["batchsize:1"]

        endpoints.stall_s = 0.0
        assert await outbox.deliver_pending() == 1


async def test_alert_payload(redis_backend: Any, endpoints: FakeEndpoints) -> None:
    alert = Alert(id="a:1", step="BatchPreparation", message="epoch 9: 2 malformed keys",
                  severity="Medium")
    await commit_steps(redis_backend, [alert])

    async with dispatcher(redis_backend, endpoints) as outbox:
        assert await outbox.deliver_pending() == 1

    [request] = endpoints.requests
    assert request.path == "/alerts"
    assert set(request.body) == {"process_name", "error_msg", "timestamp", "severity"}
    assert request.body["process_name"] == "SequencerEventCollector: BatchPreparation"
    assert request.body["error_msg"] == "epoch 9: 2 malformed keys"
    assert request.body["severity"] == "Medium"
    assert isinstance(request.body["timestamp"], str)
    datetime.fromisoformat(request.body["timestamp"])
    assert "authToken" not in request.body


async def test_alert_without_url_is_marked_done_unsent(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    await commit_steps(redis_backend, [Alert(id="a:1", step="s", message="m", severity="High")])

    async with dispatcher(redis_backend, endpoints, alert_url="") as outbox:
        assert await outbox.deliver_pending() == 1

    assert endpoints.requests == []
    assert outbox.alerts_dropped == 1
    assert await pending_ids(redis_backend) == []


async def test_order_is_preserved_across_steps_and_passes(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    a1 = Alert(id="a:1", step="s", message="one", severity="High")
    await commit_steps(
        redis_backend,
        [batch_size_call(3), a1, batch_size_call(1)],
        [batch_size_call(2)],
        [Alert(id="a:2", step="s", message="two", severity="High"), batch_size_call(5)],
    )

    async with dispatcher(redis_backend, endpoints) as outbox:
        assert await outbox.deliver_pending(limit=2) == 2
        assert await outbox.deliver_pending(limit=2) == 2
        assert await outbox.deliver_pending(limit=2) == 2

    sent = [r.body.get("epochID", r.body.get("error_msg")) for r in endpoints.requests]
    assert sent == [3, "one", 1, 2, "two", 5]


async def test_failing_relayer_does_not_hold_back_alerts(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    await commit_steps(
        redis_backend,
        [batch_size_call(1), Alert(id="a:1", step="s", message="m", severity="High"),
         batch_size_call(2)],
    )
    endpoints.fail_next, endpoints.fail_path = 100, "/submit"

    async with dispatcher(redis_backend, endpoints, max_attempts=2) as outbox:
        assert await outbox.deliver_pending() == 1

    assert endpoints.paths() == ["/submitBatchSize", "/submitBatchSize", "/alerts"]
    assert await pending_ids(redis_backend) == ["batchsize:1", "batchsize:2"]


async def test_crash_before_marking_done_repeats_the_call(
    redis_backend: Any, endpoints: FakeEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    await commit_steps(redis_backend, [batch_size_call(1)])

    async with dispatcher(redis_backend, endpoints) as outbox:
        async def crash(entry_id: bytes) -> None:
            raise ConnectionError("redis went away")

        monkeypatch.setattr(outbox, "_remove", crash)
        with pytest.raises(ConnectionError):
            await outbox.deliver_pending()
        monkeypatch.undo()
        assert await outbox.deliver_pending() == 1

    assert endpoints.paths() == ["/submitBatchSize", "/submitBatchSize"]  # repeated, not lost
    assert await pending_ids(redis_backend) == []


async def test_run_delivers_until_cancelled(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    async with dispatcher(redis_backend, endpoints) as outbox, anyio.create_task_group() as tg:
        tg.start_soon(outbox.run, 0.01)
        await commit_steps(redis_backend, [batch_size_call(1)], [batch_size_call(2)])
        with anyio.fail_after(5):
            while outbox.delivered < 2:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()

    assert [r.body["epochID"] for r in endpoints.requests] == [1, 2]

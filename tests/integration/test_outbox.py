"""OutboxDispatcher against a real HTTP server on loopback and Redis (real and fakeredis)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import anyio
import pytest

from seqcollector.core.effects import Alert, Effect, RelayerCall
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.outbox import OutboxDispatcher
from sim.relayer import Recorded
from sim.relayer import Relayer as FakeEndpoints

pytestmark = pytest.mark.anyio

NS = "test"
TOKEN = "s3cret"


@pytest.fixture
def endpoints() -> Iterator[FakeEndpoints]:
    with FakeEndpoints() as relayer:
        yield relayer


def dispatcher(
    backend: Any, endpoints: FakeEndpoints, alert_url: str | None = None, **kwargs: Any
) -> OutboxDispatcher:
    settings: dict[str, Any] = {
        "max_attempts": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        **kwargs,
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
    alert = Alert(
        id="a:1", step="BatchPreparation", message="epoch 9: 2 malformed keys", severity="Medium"
    )
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


async def test_order_is_preserved_within_each_lane_across_steps_and_passes(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    """Batch sizes and alerts are two lanes: each keeps emission order, a pass delivers up
    to `limit` of each."""
    a1 = Alert(id="a:1", step="s", message="one", severity="High")
    await commit_steps(
        redis_backend,
        [batch_size_call(3), a1, batch_size_call(1)],
        [batch_size_call(2)],
        [Alert(id="a:2", step="s", message="two", severity="High"), batch_size_call(5)],
    )

    async with dispatcher(redis_backend, endpoints) as outbox:
        assert await outbox.deliver_pending(limit=2) == 4  # 3, 1 and "one", "two"
        assert await outbox.deliver_pending(limit=2) == 2  # 2, 5
        assert await outbox.deliver_pending(limit=2) == 0

    assert [r.body["epochID"] for r in endpoints.requests if "epochID" in r.body] == [3, 1, 2, 5]
    assert [r.body["error_msg"] for r in endpoints.requests if "error_msg" in r.body] == [
        "one",
        "two",
    ]


async def test_failing_relayer_does_not_hold_back_alerts(
    redis_backend: Any, endpoints: FakeEndpoints
) -> None:
    await commit_steps(
        redis_backend,
        [
            batch_size_call(1),
            Alert(id="a:1", step="s", message="m", severity="High"),
            batch_size_call(2),
        ],
    )
    endpoints.fail_next, endpoints.fail_path = 100, "/submit"

    async with dispatcher(redis_backend, endpoints, max_attempts=2) as outbox:
        assert await outbox.deliver_pending() == 1

    assert sorted(endpoints.paths()) == ["/alerts", "/submitBatchSize", "/submitBatchSize"]
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


async def test_run_delivers_until_cancelled(redis_backend: Any, endpoints: FakeEndpoints) -> None:
    async with dispatcher(redis_backend, endpoints) as outbox, anyio.create_task_group() as tg:
        tg.start_soon(outbox.run, 0.01)
        await commit_steps(redis_backend, [batch_size_call(1)], [batch_size_call(2)])
        with anyio.fail_after(5):
            while outbox.delivered < 2:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()

    assert [r.body["epochID"] for r in endpoints.requests] == [1, 2]


async def test_a_silent_redis_ends_the_pass_at_its_deadline_instead_of_hanging() -> None:
    """The collector's clients have no socket read timeout (`redis_client`): every Redis
    operation carries its own deadline. A server that accepts and never answers: the
    dispatcher's pass and the pipeline's start-up both give up at theirs."""
    from seqcollector.config import Timeouts
    from seqcollector.core import CoreConfig
    from seqcollector.runtime.executor import redis_client
    from seqcollector.runtime.pipeline import Pipeline

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = redis_client(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        outbox = OutboxDispatcher(client, NS, "http://127.0.0.1:9", TOKEN, "", redis_timeout_s=0.2)
        config = CoreConfig(protocol_state="0x" + "5e" * 20, markets=["0x" + "ab" * 20])
        pipeline = Pipeline(RedisExecutor(client, NS), config, Timeouts(redis_operation=0.2))
        with anyio.fail_after(10):
            with pytest.raises(TimeoutError):
                await outbox.deliver_pending()
            with pytest.raises(TimeoutError):
                await pipeline.open()
        await outbox.aclose()
        await client.aclose(close_connection_pool=True)

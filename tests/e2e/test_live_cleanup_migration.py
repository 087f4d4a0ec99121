"""`run` with ENABLE_MARKET_MIGRATION and INIT_CLEANUP_ENABLED, on eth-tester and a real Redis.

First start: the old market's keys are copied to the new (configured) market before the
start-up tables are written (so the contract's values win there), and an epoch is batched.
Second start: the migration is recorded, nothing is copied; the start-up cleanup, after the
stored state is loaded, deletes the batched epoch's sets and a fired rollover marker, and
keeps the sets of an epoch not reached yet.
"""

from __future__ import annotations

import json

import anyio
import pytest
import redis.asyncio as aioredis
from rich.console import Console

from seqcollector.config import load_settings
from seqcollector.core.addresses import checksum
from seqcollector.runtime.live import run_live
from seqcollector.runtime.migration import migrations_key
from seqcollector.runtime.pipeline import Pipeline
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.relayer import Relayer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
MARKET = "0x" + "c3" * 20
OLD = "0x" + "0e" * 20
NS = "ns"


async def test_migration_then_start_up_cleanup(redis_url: str) -> None:
    tester = deterministic_tester(seed=12, block_time=2)
    w3 = async_web3(tester)
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    await contract.create_data_market(MARKET)
    await contract.set_snapshot_submission_window(MARKET, 6)
    ready = tester.get_block_by_number("latest")["number"]
    redis = aioredis.Redis.from_url(redis_url)
    await redis.set("TotalNodesCount", 2)
    await redis.set(f"CurrentDayKey.{OLD}", 1, ex=600)
    await redis.set(f"EligibleSlotSubmissionsKey.{OLD}.1.1", 5, ex=3600)
    await redis.set(f"SlotSubmissionsKey.{OLD}.1.2", 3)
    await redis.hset("DaySizeTableKey", checksum(OLD), "1")
    batched: list[tuple[int, str]] = []

    with Relayer() as relayer:
        environ = {
            "SEQ_API_HOST": "127.0.0.1",
            "SEQ_API_PORT": "0",
            "SEQ_JOURNAL_DIR": "off",
            "PROTOCOL_STATE_CONTRACT": address,
            "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
            "SEQ_REDIS_URL": redis_url,
            "TX_RELAYER_URL": relayer.url,
            "BLOCK_TIME": "0.2",
            "SEQ_START_BLOCK": str(ready + 1),
            "ENABLE_MARKET_MIGRATION": "true",
            "MARKET_MIGRATION_MAPPINGS": f"{OLD}:{MARKET}",
            "INIT_CLEANUP_ENABLED": "true",
        }
        settings = load_settings(environ=environ)

        async def release_one() -> None:
            await contract.release_epoch(MARKET, 1, 2)
            epoch = (await contract.read_market_params(MARKET))["currentEpoch"]
            header = tester.get_block_by_number("latest")["hash"]
            key = f"SnapshotCollector.{MARKET}.{epoch}.{header}"
            await redis.sadd(key, f"{MARKET}.{epoch}.proj.1")
            batched.append((epoch, key))
            for _ in range(100):
                mine(tester, 1)
                await anyio.sleep(0.05)

        def epoch_batched(p: Pipeline) -> bool:
            em = p.state.emitted.get(MARKET)
            return bool(batched) and em is not None and batched[0][0] in em.epochs

        async def run(stop_when: object, activity: object) -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(activity)  # type: ignore[arg-type]
                with anyio.fail_after(60):
                    await run_live(
                        settings,
                        NS,
                        None,
                        Console(stderr=True, quiet=True),
                        providers=[w3.provider],
                        stop_when=stop_when,  # type: ignore[arg-type]
                        handle_signals=False,
                    )
                tg.cancel_scope.cancel()

        await run(epoch_batched, release_one)
        assert await redis.get(f"EligibleSlotSubmissionsKey.{MARKET}.1.1") == b"5"
        assert 3000 < await redis.ttl(f"EligibleSlotSubmissionsKey.{MARKET}.1.1") <= 3600
        assert await redis.get(f"SlotSubmissionsKey.{MARKET}.1.2") == b"3"
        assert await redis.get(f"CurrentDayKey.{MARKET}") is not None
        # the start-up tables were written after the migration: the contract's value wins
        assert await redis.hget("DaySizeTableKey", checksum(MARKET)) not in (None, b"1")
        record = json.loads(await redis.hget(migrations_key(NS), f"{OLD}:{MARKET}"))
        assert record["status"] == "done"

        epoch, stale_set = batched[0]
        await redis.sadd(stale_set, "x")  # the batched epoch's set, as the dequeuer left it
        future = f"SnapshotCollector.{MARKET}.{epoch + 1000}.0xbeef"
        await redis.sadd(future, "x")
        fired = f"DayRolloverEpochMarkerDetailsKey.{MARKET}.3"
        await redis.set(fired, '{"LastKnownDay":"1","CurrentEpoch":3,"BufferEpoch":8}')
        await redis.set(f"LastSnapshotSubmissionKey.{OLD}.1", 7)  # a 2nd migration would copy it

        async def keep_mining() -> None:
            for _ in range(200):
                mine(tester, 1)
                await anyio.sleep(0.05)

        await run(lambda p: True, keep_mining)
        assert not await redis.exists(stale_set) and not await redis.exists(fired)
        assert await redis.exists(future)
        assert not await redis.exists(f"LastSnapshotSubmissionKey.{MARKET}.1")  # migrated once
    await redis.aclose()

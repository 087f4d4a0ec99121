"""A switch from the Go collector, on eth-tester and a real Redis: Go left its last known day
and a rollover marker it never fired (its BufferEpoch already passed: Go's == test missed
it, R4). `run` reads them at start (`StoredDays`), fires the marker at its first batch
preparation and sends day 1's final reward update (the eligible set's slots, ascending, the
finalizer's counts), removing Go's marker keys; no new marker for a day already known."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from rich.console import Console

from seqcollector.config import load_settings
from seqcollector.core.addresses import checksum
from seqcollector.runtime.live import run_live
from seqcollector.runtime.pipeline import Pipeline
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.relayer import Relayer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
MARKET = "0x" + "c5" * 20
NS = "switch"


async def test_go_markers_are_adopted_and_fired(redis_url: str, tmp_path: Path) -> None:
    tester = deterministic_tester(seed=13, block_time=2)
    w3 = async_web3(tester)
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    await contract.create_data_market(MARKET)
    await contract.set_snapshot_submission_window(MARKET, 6)
    ready = tester.get_block_by_number("latest")["number"]
    redis = aioredis.Redis.from_url(redis_url)
    # what the Go collector and the finalizer left behind
    await redis.set(f"LastKnownDayKey.{MARKET}", "2")
    await redis.sadd(f"DayRolloverEpochMarkerSetKey.{MARKET}", "40")
    details = f"DayRolloverEpochMarkerDetailsKey.{MARKET}.40"
    await redis.set(details, '{"LastKnownDay":"1","CurrentEpoch":40,"BufferEpoch":1}')
    await redis.sadd(f"EligibleNodeByDayKey.{MARKET}.1", "12", "3")
    await redis.set(f"EligibleSlotSubmissionsKey.{MARKET}.1.3", "7")
    await redis.set(f"EligibleSlotSubmissionsKey.{MARKET}.1.12", "9")
    await redis.set("TotalNodesCount", "12")

    with Relayer() as relayer:
        settings = load_settings(
            environ={
                "SEQ_API_HOST": "127.0.0.1",
                "SEQ_API_PORT": "0",
                "SEQ_JOURNAL_DIR": str(tmp_path / "journal"),
                "PROTOCOL_STATE_CONTRACT": address,
                "DATA_MARKET_ADDRESSES": json.dumps([MARKET]),
                "SEQ_REDIS_URL": redis_url,
                "TX_RELAYER_URL": relayer.url,
                "BLOCK_TIME": "0.2",
                "SEQ_START_BLOCK": str(ready + 1),
            }
        )

        async def release_one() -> None:
            await contract.release_epoch(MARKET, 1, 2)
            for _ in range(200):
                mine(tester, 1)
                await anyio.sleep(0.05)

        def final_sent(p: Pipeline) -> bool:
            return bool(relayer.reward_updates())

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_one)
            with anyio.fail_after(60):
                await run_live(
                    settings,
                    NS,
                    None,
                    Console(stderr=True, quiet=True),
                    providers=[w3.provider],
                    stop_when=final_sent,
                    handle_signals=False,
                )
            tg.cancel_scope.cancel()
        updates = relayer.reward_updates()
    assert [{k: v for k, v in u.items() if k != "authToken"} for u in updates] == [
        {
            "dataMarketAddress": checksum(MARKET),
            "slotIDs": [3, 12],
            "submissionsList": [7, 9],
            "day": 1,
            "eligibleNodes": 2,
        }
    ]
    assert not await redis.sismember(f"DayRolloverEpochMarkerSetKey.{MARKET}", "40")
    assert not await redis.exists(details)
    assert not await redis.exists(f"DayRolloverEpochMarkerSetKey.{MARKET}")  # no new marker
    await redis.aclose()

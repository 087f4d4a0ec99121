"""The live runtime on an in-process eth-tester chain (py-evm) with the fixture deployed:
the same code path as a node over JSON-RPC, through web3's AsyncEthereumTesterProvider."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from rich.console import Console

from seqcollector.config import load_settings
from seqcollector.core.addresses import checksum
from seqcollector.journal_dir import list_segments
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.live import run_live
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.replay import replay_journal
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio
MARKETS = ["0x" + "c3" * 20, "0x" + "d4" * 20]


async def test_two_markets_on_eth_tester(redis_url: str, tmp_path: Path) -> None:
    tester = deterministic_tester(seed=11, block_time=2)
    w3 = async_web3(tester)
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    for market in MARKETS:
        await contract.create_data_market(market)
        await contract.set_snapshot_submission_window(market, 6)
    ready = tester.get_block_by_number("latest")["number"]  # parameters read as of this block
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    expected: dict[tuple[str, int], list[str]] = {}

    with Relayer() as relayer:
        settings = load_settings(
            environ={
                "SEQ_API_HOST": "127.0.0.1",
                "SEQ_API_PORT": "0",
                "SEQ_JOURNAL_DIR": str(tmp_path / "journal"),
                "SEQ_JOURNAL_SEGMENT_BLOCKS": "3",
                "PROTOCOL_STATE_CONTRACT": address,
                "DATA_MARKET_ADDRESSES": json.dumps(MARKETS),
                "SEQ_REDIS_URL": redis_url,
                "TX_RELAYER_URL": relayer.url,
                "BATCH_SIZE": "1",
                "BLOCK_TIME": "0.2",
                "SEQ_START_BLOCK": str(ready + 1),
            }
        )

        def all_batched(p: Pipeline) -> bool:
            done = {(m, e) for m, em in p.state.emitted.items() for e in em.epochs}
            return len(expected) == 4 and set(expected) <= done

        async def chain_activity() -> None:
            for _ in range(2):
                for market in MARKETS:
                    await contract.release_epoch(market, 1, 2)
                    epoch = (await contract.read_market_params(market))["currentEpoch"]
                    header = tester.get_block_by_number("latest")["hash"]
                    members = [f"{market}.{epoch}.proj{p}.{p + 1}" for p in range(3)]
                    await redis.sadd(f"SnapshotCollector.{market}.{epoch}.{header}", *members)
                    expected[(market, epoch)] = members
                mine(tester, 5)  # 10 s later: past the 6 s windows
            for _ in range(50):  # keep the chain moving until the collector is done
                await anyio.sleep(0.1)
                mine(tester, 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(chain_activity)
            with anyio.fail_after(60):
                digest = await run_live(
                    settings,
                    "ns",
                    None,
                    Console(stderr=True, quiet=True),
                    providers=[w3.provider],
                    stop_when=all_batched,
                    handle_signals=False,
                )
            tg.cancel_scope.cancel()

        # journaled by default into SEQ_JOURNAL_DIR/<namespace>, rotated every 3 blocks:
        # the segments replay to the digest the run reports
        segments = list_segments(tmp_path / "journal" / "ns")
        assert len(segments) >= 2 and all(s.compressed for s in segments[:-1])
        replayed = await replay_journal(tmp_path / "journal" / "ns", embedded_redis(), "r")
        assert digest is not None and replayed.digest == digest

        queue = [json.loads(i) for i in reversed(await redis.lrange("finalizerQueue", 0, -1))]
        for (market, epoch), members in expected.items():
            batches = [
                q
                for q in queue
                if q["DataMarketAddress"] == checksum(market) and q["EpochID"] == epoch
            ]
            assert [b["Batch"] for b in batches] == [
                {m.split(".")[2]: [m]} for m in sorted(members)
            ]
            assert [b["BatchID"] for b in batches] == [1, 2, 3]
        calls = relayer.bodies("/submitBatchSize")
        assert sorted(
            (c["dataMarketAddress"], c["epochID"], c["batchSize"]) for c in calls
        ) == sorted((checksum(m), e, 3) for m, e in expected)
        head = tester.get_block_by_number("latest")
        stored = await redis.get(f"BlockHashByNumberKey.{ready + 1}")
        assert stored == tester.get_block_by_number(ready + 1)["hash"] and head["number"] > 10
    await redis.aclose()

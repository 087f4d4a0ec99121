"""`seqcollector record --from-block A --to-block B` against eth-tester and a real Redis:
the range and the answers Redis gives go into a journal, and no key is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from livekit import MARKETS as LIVE_MARKETS
from livekit import CollectorProcess, LiveWorld
from test_cli_errors import cli

from seqcollector.config import load_settings
from seqcollector.core import Block
from seqcollector.core.addresses import checksum
from seqcollector.journal import read_inputs
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.record import record_range
from seqcollector.runtime.replay import replay_journal
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.relayer import Relayer

pytestmark = pytest.mark.anyio
MARKETS = ["0x" + "c3" * 20, "0x" + "d4" * 20]


async def snapshot(redis: aioredis.Redis) -> dict[bytes, tuple[bytes | None, int]]:
    keys = sorted([k async for k in redis.scan_iter(count=1000)])
    return {k: (await redis.dump(k), await redis.ttl(k) > 0) for k in keys}  # type: ignore[misc]


async def test_record_a_range_writes_no_key_and_replays(redis_url: str, tmp_path: Path) -> None:
    tester = deterministic_tester(seed=11, block_time=2)
    w3 = async_web3(tester)
    address = await deploy_protocol_state(w3)
    contract = ProtocolStateClient(w3, address)
    for market in MARKETS:
        await contract.create_data_market(market)
        await contract.set_snapshot_submission_window(market, 6)
    ready = tester.get_block_by_number("latest")["number"]
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    expected: dict[tuple[str, int], list[str]] = {}
    for _ in range(2):
        for market in MARKETS:
            await contract.release_epoch(market, 1, 2)
            epoch = (await contract.read_market_params(market))["currentEpoch"]
            header = tester.get_block_by_number("latest")["hash"]
            members = [f"{market}.{epoch}.proj{p}.{p + 1}" for p in range(3)]
            await redis.sadd(f"SnapshotCollector.{market}.{epoch}.{header}", *members)
            expected[(market, epoch)] = members
        mine(tester, 5)  # 10 s later: past the 6 s windows
    last = tester.get_block_by_number("latest")["number"]
    settings = load_settings(
        environ={
            "PROTOCOL_STATE_CONTRACT": address,
            "DATA_MARKET_ADDRESSES": json.dumps(MARKETS),
            "SEQ_REDIS_URL": redis_url,
            "RPC_NODES": "[]",
            "BATCH_SIZE": "1",
            "BLOCK_TIME": "0.2",
        }
    )
    before = await snapshot(redis)
    out = tmp_path / "range.jsonl"
    result = await record_range(settings, ready + 1, last, out, providers=[w3.provider])
    assert await snapshot(redis) == before  # not one key written, changed or expired
    blocks = [i.number for _, _, i in read_inputs(out) if isinstance(i, Block)]
    assert blocks == list(range(ready + 1, last + 1)) and result.blocks == len(blocks)

    replayed = await replay_journal(out, embedded_redis(), "r")
    assert replayed.digest == result.digest
    queue = [json.loads(q) for q in reversed(await replayed_queue(out))]
    for (market, epoch), members in expected.items():
        batches = [
            q["Batch"]
            for q in queue
            if q["DataMarketAddress"] == checksum(market) and q["EpochID"] == epoch
        ]
        assert batches == [{m.split(".")[2]: [m]} for m in sorted(members)]
    # a later range starts from the empty state there, as a fresh collector at that block
    later = await record_range(
        settings, last - 3, last, tmp_path / "tail.jsonl", providers=[w3.provider]
    )
    assert later.blocks == 4 and await snapshot(redis) == before
    await redis.aclose()


async def replayed_queue(journal: Path) -> list[bytes]:
    store = embedded_redis()
    await replay_journal(journal, store, "r")
    return list(await store.lrange("finalizerQueue", 0, -1))


async def test_record_on_the_command_line_matches_the_live_journal(
    world: LiveWorld, relayer: Relayer, tmp_path: Path
) -> None:
    """`run` on anvil journals into SEQ_JOURNAL_DIR; `record` of the same blocks afterwards
    (a subprocess, the same settings) writes no key and `diff` finds it identical."""
    log = tmp_path / "c.log"
    collector = CollectorProcess(world, relayer.url, log).start()
    try:
        for _ in range(2):
            released = []
            for market in LIVE_MARKETS:
                epoch = await world.release(market)
                for slot in range(1, 5):
                    world.submit(market, epoch, f"project{slot % 3}", slot)
                released.append((market, epoch))
            world.advance()
            for market, epoch in released:
                world.wait_for(f"{epoch}", lambda m=market, e=epoch: world.batched(m, e))
    finally:
        collector.stop()
    env = {**collector.env, "SEQ_JOURNAL_DIR": "off"}
    head = json.loads(cli(env, "status", "--json").stdout)["committed_block"]
    first = world.ready_block + 1
    keys = sorted(world.redis.keys("*"))
    dumps = [world.redis.dump(k) for k in keys]
    out = tmp_path / "range.jsonl"
    recorded = cli(
        env, "record", "--from-block", str(first), "--to-block", str(head), "--out", str(out)
    )
    assert recorded.returncode == 0, recorded.stderr
    assert sorted(world.redis.keys("*")) == keys and [world.redis.dump(k) for k in keys] == dumps
    digest = recorded.stdout.strip().splitlines()[-1]
    assert digest == cli(env, "replay", str(out), "-q").stdout.strip().splitlines()[-1]
    live = log.parent / "journal" / "seqcollector"
    same = cli(env, "diff", str(out), "--against", str(live))
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("identical (")

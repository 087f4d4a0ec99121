"""The EVM world of `seqcollector sim`: eth-tester (py-evm) with the fixture deployed, served
over JSON-RPC on loopback and read by the collector through the same sources as a live node.

Actors, stepped in lockstep with the collector (one world step, then wait until the
collector has committed the chain head):
- the epoch manager releases an epoch of each market every `epoch_every` steps (the
  contract rolls the day over);
- snapshotters (projects x slots) submit, header = the latest block hash, into Redis as the
  dequeuer does: on time, late (after the deadline), duplicated, conflicting (a second CID),
  malformed;
- the finalizer consumes `finalizerQueue`, writes the eligibility keys and puts every batch
  on chain (submitSubmissionBatch, then endBatchSubmissions);
- faults: `rpc` (a faulty proxy in front of one endpoint), `lag` (the other endpoint lags),
  `reorg` (snapshot, revert, a longer branch), plus `crash`, `redis` and `relayer` as in the
  fast mode.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis
from eth_utils.crypto import keccak

from seqcollector.config import Timeouts
from seqcollector.core import CoreConfig
from seqcollector.core.abi import EPOCH_RELEASED, EpochReleased, decode_event
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import QueryEligibleOnChain
from seqcollector.core.keys import submission_set
from seqcollector.runtime.collector import Collector
from seqcollector.runtime.compose import CollectorRoot
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.reward_answers import EligibleOnChainReader
from seqcollector.runtime.startup import read_market_params
from seqcollector.sources import Backoff, LogRanges, RpcPool, fetch_headers
from sim.collector_runs import SimCollector, run_restarting
from sim.contract import ProtocolStateClient, deploy_protocol_state
from sim.dequeuer import Dequeuer, Submission
from sim.ethtester import deterministic_tester, mine
from sim.faults import fault_rng
from sim.finalizer import Finalizer
from sim.record import CanonicalWindow, FaultMark, SimRecord
from sim.relayer import Relayer
from sim.rewards_oracle import CountLog
from sim.rpc_proxy import RpcProxy
from sim.rpc_server import TesterRpcServer
from sim.spec import SimSpec
from sim.state_cacher import write_state_cache

GENESIS = 1_700_000_000
CanonicalChain = tuple[list[CanonicalWindow], dict[int, str]]  # its windows, its block hashes


class EvmWorld:
    def __init__(self, spec: SimSpec, redis: aioredis.Redis) -> None:
        self.spec = spec
        self.redis = redis
        self.dequeuer = Dequeuer(redis)
        self.rng = random.Random(f"{spec.seed}:world")
        self.tester = deterministic_tester(spec.seed, GENESIS, spec.block_time)
        self.server = TesterRpcServer(self.tester)
        self.markets: list[str] = []  # DataMarket contracts, lowercase (`deploy`)
        self.address = ""
        self.contract: ProtocolStateClient | None = None
        self.released: dict[str, int] = {}
        self._planned: dict[int, list[tuple[str, int, str, bool]]] = {}  # step -> submissions
        self._snapshots: list[tuple[int, Any]] = []  # (head number, eth-tester snapshot id)
        self.step_no = 0

    def head(self) -> dict[str, Any]:
        with self.server.lock:
            block: dict[str, Any] = self.tester.get_block_by_number("latest")
        return block

    async def deploy(self) -> None:
        w3 = self.server.async_web3()
        self.address = await deploy_protocol_state(w3)
        self.contract = ProtocolStateClient(w3, self.address)
        for _ in range(self.spec.markets):  # DataMarket contracts: P2 reads them on chain
            market = (await self.contract.create_data_market_contract()).lower()
            self.markets.append(market)
            self.released[market] = 0
            await self.contract.set_snapshot_submission_window(market, self.spec.window_s)
            await self.contract.set_epochs_in_a_day(market, self.spec.epochs_in_a_day)
        # the state cacher's keys: TotalNodesCount (slots 1..N), EpochsInADay. The daily
        # quota stays the contract's default: only the finalizer applies one (its own)
        await write_state_cache(
            self.redis, self.spec.slots, dict.fromkeys(self.markets, self.spec.epochs_in_a_day)
        )

    def core_config(self) -> CoreConfig:
        s = self.spec
        return CoreConfig(
            protocol_state=self.address,
            markets=self.markets,
            batch_size=s.batch_size,
            max_reorg_depth=s.core_reorg_depth,
            rewards=s.rewards,
            rewards_update_epoch_interval=s.rewards_interval,
            rewards_update_batch_size=s.rewards_batch,
            past_days_buffer=s.past_days,
        )

    # -- one world step --------------------------------------------------------------------

    async def step(self) -> None:
        """Releases, submissions due now, then one empty block (time moves on)."""
        assert self.contract is not None
        s, n = self.spec, self.step_no
        for m, market in enumerate(self.markets):
            if (n - m) % s.epoch_every == 0 and n >= m and self.released[market] < s.epochs:
                await self.contract.release_epoch(market, 1, 2)
                self.released[market] = (await self.contract.read_market_params(market))[
                    "currentEpoch"
                ]
                self._plan(market, self.released[market])
        await self._submit_due()
        with self.server.lock:
            mine(self.tester, 1)
            self._snapshots.append((self.head_number_locked(), self.tester.take_snapshot()))
        self._snapshots = self._snapshots[-(s.max_reorg_depth + 4) :]
        self.step_no += 1

    def head_number_locked(self) -> int:
        number: int = self.tester.get_block_by_number("latest")["number"]
        return number

    def _plan(self, market: str, epoch: int) -> None:
        s = self.spec
        window_steps = s.window_s // s.block_time
        for slot in range(1, s.slots + 1):
            member = f"{market}.{epoch}.proj{(slot + epoch) % s.projects}.{slot}"
            late = slot % 5 == 0
            at = self.step_no + (window_steps + 2 if late else self.rng.randrange(window_steps))
            self._planned.setdefault(at, []).append((market, epoch, member, False))
            if self.rng.random() < 0.2:  # duplicate, or conflicting (another CID, same key)
                again = self.step_no + self.rng.randrange(window_steps)
                self._planned.setdefault(again, []).append((market, epoch, member, True))
        if epoch % 4 == 0:
            self._planned.setdefault(self.step_no, []).append(
                (market, epoch, f"{market}.{epoch}.malformed", False)
            )

    async def _submit_due(self) -> None:
        due = self._planned.pop(self.step_no, [])
        if not due:
            return
        header = str(self.head()["hash"])
        await self.dequeuer.write(
            [
                Submission(submission_set(market, epoch, header), member, conflicting)
                for market, epoch, member, conflicting in due
            ]
        )

    async def reorg(self, depth: int) -> str:
        """Revert `depth` blocks and mine a longer branch (new hashes: the RNG moved on)."""
        assert self.contract is not None
        with self.server.lock:
            head = self.head_number_locked()
            older = [(n, sid) for n, sid in self._snapshots if n <= head - depth]
            if not older:
                return ""
            n, sid = older[-1]
            self.tester.revert_to_snapshot(sid)
            mine(self.tester, head - n + 1)
            self._snapshots = [(k, v) for k, v in self._snapshots if k <= n]
        for market in self.markets:  # the contract reverted too: follow its epoch counter
            params = await self.contract.read_market_params(market)
            self.released[market] = params["currentEpoch"]
        return f"reorg of depth {head - n} at block {head}"

    async def finalize(self, item: dict[str, Any]) -> None:
        """The finalizer's on-chain trail for one batch (then end the epoch after its last)."""
        assert self.contract is not None
        market, epoch = str(item["DataMarketAddress"]).lower(), int(item["EpochID"])
        cid = "bafy" + hashlib.sha256(f"{market}{epoch}{item['BatchID']}".encode()).hexdigest()[:20]
        projects = sorted(item["Batch"])
        await self.contract.submit_submission_batch(
            market, cid, epoch, projects, [cid] * len(projects)
        )
        count = await self.redis.get(f"BatchCountKey.{market}.{epoch}")
        if count is not None and int(count) == int(item["BatchID"]):
            await self.contract.end_batch_submissions(market, epoch)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class RewardsSeen:
    """What the rewards oracle needs from an EVM run (`sim.rewards_oracle`): the bodies the
    relayer accepted, the finalizer's tallies after each drain, and each market's day
    starts on the final chain (block, day), read from its DayStartedEvent logs."""

    delivered: list[dict[str, Any]]
    counts: CountLog
    day_starts: dict[str, list[tuple[int, int]]]

    def day_at(self, market: str, block: int) -> int:
        day = 1  # dayCounter before any DayStartedEvent
        for at, d in self.day_starts.get(market, []):
            if at > block:
                break
            day = d
        return day


async def run_evm(
    spec: SimSpec,
    out_dir: Path,
    redis: aioredis.Redis,
    record: SimRecord,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[Finalizer, list[dict[str, Any]], SimCollector, CanonicalChain, RewardsSeen]:
    """Run the EVM world and the collector in lockstep; returns what the checks need,
    the final chain's windows and block hashes included."""
    world = EvmWorld(spec, redis)
    rng = fault_rng(spec.seed, "rpc")
    with (
        world.server,
        RpcProxy(world.server.url, rng.randint(0, 2**31)) as faulty,
        RpcProxy(world.server.url, rng.randint(0, 2**31)) as lagging,
        Relayer(
            fail_rate=spec.relayer_fail_rate if "relayer" in spec.faults else 0.0,
            seed=fault_rng(spec.seed, "relayer").randint(0, 2**31),
        ) as relayer,
    ):
        if "rpc" in spec.faults:
            faulty.error_rate, faulty.stall_rate, faulty.stall_s = 0.1, 0.02, 1.5
        if "lag" in spec.faults:
            lagging.lag_blocks = 3
        await world.deploy()
        record.markets = [checksum(m) for m in world.markets]
        finalizer = Finalizer(redis, daily_quota=spec.daily_quota, on_batch=world.finalize)
        config = world.core_config()
        pool = CurrentPool()
        on_chain = EligibleOnChainReader(pool.request, ON_CHAIN_BUDGET_S)
        sim = SimCollector.build(
            spec,
            redis,
            relayer,
            config,
            out_dir / "journal.jsonl",
            Timeouts(block_fetch=1.0),
            answerers={QueryEligibleOnChain: on_chain},
        )
        runner = _Runner(sim.root, world, [faulty.url, lagging.url], record, pool)
        total = spec.epochs * spec.epoch_every + spec.markets + spec.window_s // spec.block_time + 3
        reorg_rng = fault_rng(spec.seed, "reorg")
        reorg_steps = (
            {
                reorg_rng.randint(spec.max_reorg_depth + 2, total - 2)
                for _ in range(max(1, total // 60))
            }
            if "reorg" in spec.faults
            else set()
        )

        async def drive() -> None:
            for i in range(total):
                if i in reorg_steps:
                    detail = await world.reorg(reorg_rng.randint(1, spec.max_reorg_depth))
                    if detail:
                        record.faults.append(FaultMark("reorg", world.head()["number"], detail))
                await world.step()
                await runner.caught_up(world)
                head = int(world.head()["number"])
                drained = await finalizer.drain()
                counts.note(head, finalizer.counted)
                if drained:
                    await runner.caught_up(world)
                if spec.rewards and i % spec.epoch_every == 0:
                    # once an epoch, the relayer puts what it was sent on chain: all of it
                    # (the outbox drained first), so the chain never depends on timing
                    await sim.drain_outbox()
                    assert world.contract is not None
                    if await relayer.submit_rewards(world.contract):
                        await runner.caught_up(world)
                if on_progress is not None:
                    on_progress(i + 1, total)
            runner.finish()

        counts = CountLog()
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await runner.run_collectors()
        head = int(world.head()["number"])
        await finalizer.drain()
        counts.note(head, finalizer.counted)
        await sim.drain_outbox()
        await sim.root.dispatcher.aclose()
        calls = [c for c, ok in relayer.answered("/submitBatchSize") if ok]
        record.summary["relayer 5xx injected"] = relayer.failures
        record.summary["rpc faults injected"] = sum(faulty.faults.values())
        record.summary["lagging endpoint answers"] = lagging.faults["lagging_block"]
        for kind, n in sorted(faulty.faults.items()):
            record.faults.append(FaultMark("rpc", 0, f"{n} x {kind}"))
        chain = await canonical_windows(world, spec.window_s)
        seen = RewardsSeen(relayer.reward_updates(), counts, await day_starts(world))
        return finalizer, calls, sim, chain, seen


class _Runner:
    """Runs collector after collector (a crash kills one, the next starts from Redis)."""

    def __init__(
        self,
        root: CollectorRoot,
        world: EvmWorld,
        urls: list[str],
        record: SimRecord,
        current: CurrentPool,
    ) -> None:
        self.root, self.world, self.urls, self.record = root, world, urls, record
        self.current = current
        self.pipeline: Pipeline | None = None
        self.collector: Collector | None = None
        self.done = False

    async def caught_up(self, world: EvmWorld, timeout_s: float = 120.0) -> None:
        target = str(world.head()["hash"])
        with anyio.fail_after(timeout_s):
            while True:
                head = self.pipeline.committed_head if self.pipeline is not None else None
                if head is not None and head.hash == target:
                    return
                await anyio.sleep(0.002)

    def finish(self) -> None:
        self.done = True
        if self.collector is not None:
            self.collector.stop()

    async def run_collectors(self) -> None:
        await run_restarting(self.root, self._run_once, self.record.faults, lambda: self.done)

    async def _run_once(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        async with RpcPool(
            self.urls, request_timeout_s=1.0, demote_s=0.3, max_lag_blocks=2
        ) as pool:
            self.current.pool = pool
            await _retry(partial(self._start, pipeline, pool))
            assert self.collector is not None
            await self.collector.run()

    async def _start(self, pipeline: Pipeline, pool: RpcPool) -> None:
        params = await read_market_params(pool.request, self.world.address, self.world.markets)
        await pipeline.apply(params)
        follower = self.root.follower(
            pipeline, pool, start_block=0, poll_interval_s=0.02, retry=Backoff(0.01, 0.1)
        )
        self.collector = self.root.collector(pipeline, follower)
        if self.done:
            self.collector.stop()


ON_CHAIN_BUDGET_S = 10.0  # eligibleNodesForDay reads (as run's: TIMEOUT_MARKET_PROCESSING / 3)


class CurrentPool:
    """The RPC pool of the collector running now (a restart opens a new one): the contract
    reads of the reward queries go through it, as `run`'s go through its pool."""

    def __init__(self) -> None:
        self.pool: RpcPool | None = None

    async def request(self, method: str, params: list[Any]) -> Any:
        if self.pool is None:
            raise RuntimeError("no collector is running: no RPC pool to read the chain")
        return await self.pool.request(method, params)


async def _retry(fn: Callable[[], Awaitable[None]], attempts: int = 200) -> None:
    """Start-up reads meet the same RPC faults as everything else: try again."""
    for attempt in range(attempts):
        try:
            await fn()
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await anyio.sleep(0.01)


async def day_starts(world: EvmWorld) -> dict[str, list[tuple[int, int]]]:
    """Each market's DayStartedEvent(address indexed, uint256 dayId, uint256 timestamp) of
    the final chain, as (block, day), decoded here (not by the core: this is the oracle)."""
    topic = "0x" + keccak(text="DayStartedEvent(address,uint256,uint256)").hex()
    async with RpcPool([world.server.url]) as pool:
        head = int(world.head()["number"])
        logs = await LogRanges().fetch_logs(pool, world.address, [topic], 0, head)
    out: dict[str, list[tuple[int, int]]] = {}
    for log in logs:
        market = "0x" + log.topics[1][-40:].lower()
        out.setdefault(market, []).append((log.block_number, int(log.data[2:66], 16)))
    return {m: sorted(v) for m, v in out.items()}


async def canonical_windows(
    world: EvmWorld, window_s: int
) -> tuple[list[CanonicalWindow], dict[int, str]]:
    """The windows of the final chain, from its own blocks and EpochReleased logs."""
    async with RpcPool([world.server.url]) as pool:
        head = int(world.head()["number"])
        headers = await fetch_headers(pool, 0, head)
        logs = await LogRanges().fetch_logs(pool, world.address, [EPOCH_RELEASED], 0, head)
    by_number = {h.number: h for h in headers}
    out = []
    for log in logs:
        event = decode_event(log.topics, log.data)
        if not isinstance(event, EpochReleased):
            continue
        deadline = by_number[log.block_number].timestamp + window_s
        close = next(
            (h.number for h in headers if h.number > log.block_number and h.timestamp > deadline),
            None,
        )
        out.append(CanonicalWindow(event.market, event.epoch, log.block_number, close))
    return out, {n: h.hash for n, h in by_number.items()}

"""A synthetic chain and dequeuer, without an EVM: deterministic from one seed.

It produces the inputs a live source would (market parameters, blocks, raw ProtocolState
logs, reorg rewinds) and plays the dequeuer: snapshotters write submission keys into the
sets `SnapshotCollector.<lc>.<epoch>.<header>`, including late, duplicate and malformed
ones. `drive()` runs the core over it and answers its queries from those sets, which is
how the fixture journals and the benchmark journals are made.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from eth_abi.abi import encode as abi_encode

from seqcollector.core import invariants, keys
from seqcollector.core.abi import (
    BATCH_SUBMISSIONS_COMPLETED,
    DAY_STARTED,
    EPOCH_RELEASED,
    SNAPSHOT_BATCH_SUBMITTED,
)
from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.core.inputs import Block, Input, Log, MarketParams, Rewind, SubmissionSets
from seqcollector.core.machine import step
from seqcollector.core.state import new_state
from sim.dequeuer import Dequeuer, Submission

PROTOCOL_STATE = "0x" + "5e" * 20


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 1
    markets: int = 1
    blocks: int = 300
    first_block: int = 1000
    genesis_ts: int = 1_700_000_000
    block_time: int = 2
    epoch_every: int = 10  # blocks between releases, per market
    window_s: int = 30
    projects: int = 6
    slots: int = 8
    epochs_in_a_day: int = 10
    late_every: int = 5  # one slot in `late_every` submits after the window closes
    malformed_every: int = 7  # every n-th epoch carries a malformed member
    reorgs: tuple[tuple[int, int], ...] = ()  # (at block, depth): replace depth blocks
    noise_logs: bool = True  # foreign-address and look-alike logs, which must be refused

    def market_addresses(self) -> list[str]:
        return [
            "0x" + hashlib.sha256(f"market{i}".encode()).hexdigest()[:40]
            for i in range(self.markets)
        ]


def _word(n: int) -> str:
    return "0x" + n.to_bytes(32, "big").hex()


def _addr_topic(lc: str) -> str:
    return "0x" + "00" * 12 + lc[2:]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


@dataclass
class SyntheticWorld:
    spec: WorldSpec
    sets: dict[str, set[str]] = field(default_factory=dict)
    written: list[Submission] = field(default_factory=list)  # in order
    keep_sets: bool = True  # False: only `written` (drained by its reader), for long runs

    def __post_init__(self) -> None:
        self.rng = random.Random(self.spec.seed)
        self.markets = self.spec.market_addresses()
        self.branch = 0
        self._hashes: dict[int, str] = {}
        # planned submissions: block number -> [(set key prefix lc, epoch, member)]
        self._planned: dict[int, list[tuple[str, int, str]]] = {}

    def core_config(self, **overrides: object) -> CoreConfig:
        values: dict[str, object] = {"protocol_state": PROTOCOL_STATE, "markets": self.markets}
        values.update(overrides)
        return CoreConfig(**values)  # type: ignore[arg-type]

    def members_of(self, query: QuerySubmissionSets) -> list[str]:
        """What the executor's SUNION would return: the sorted union."""
        found: set[str] = set()
        for key in query.keys:
            found |= self.sets.get(key, set())
        return sorted(found)

    def canonical_hash(self, number: int) -> str | None:
        """The hash of block `number` on the branch the chain ended on (None: not reached)."""
        return self._hashes.get(number)

    def release_block(self, market_index: int, epoch: int) -> int:
        """Where the epoch manager releases `epoch` of a market (the same on every branch)."""
        return self.spec.first_block + market_index + (epoch - 1) * self.spec.epoch_every

    # -- the chain ------------------------------------------------------------------------

    def _hash(self, number: int) -> str:
        digest = hashlib.sha256(f"{self.spec.seed}:{self.branch}:{number}".encode()).hexdigest()
        return "0x" + digest

    def inputs(self) -> Iterator[Input]:
        s = self.spec
        for lc in self.markets:
            window, day_size = s.window_s, 864_000_000
            yield MarketParams(lc, window, day_size, 1000, s.epochs_in_a_day, 1)
        reorgs = dict(s.reorgs)
        n = s.first_block
        last = s.first_block + s.blocks
        while n < last:
            depth = reorgs.pop(n, 0)
            if depth:
                self.branch += 1
                n -= depth
                yield Rewind(n - 1)
                for gone in range(n, n + depth):
                    self._hashes.pop(gone, None)
            yield from self._block(n)
            n += 1

    def _block(self, n: int) -> Iterator[Input]:
        s = self.spec
        parent = self._hashes.get(n - 1, self._hash(n - 1))
        self._hashes[n] = block_hash = self._hash(n)
        ts = s.genesis_ts + (n - s.first_block) * s.block_time
        yield Block(n, block_hash, parent, ts)
        index = 0
        for m, lc in enumerate(self.markets):
            if n - s.first_block < m or (n - s.first_block - m) % s.epoch_every != 0:
                continue
            epoch = (n - s.first_block - m) // s.epoch_every + 1
            for log in self._release(lc, epoch, n, ts):
                yield Log(PROTOCOL_STATE, log[0], log[1], n, block_hash, index, _hex(bytes(32)))
                index += 1
        if s.noise_logs and n % 17 == 0:
            lc = self.markets[0]
            topics = [EPOCH_RELEASED, _addr_topic(lc), _word(1)]
            data = _hex(abi_encode(["uint256"] * 3, [1, 2, 3]))
            yield Log("0x" + "11" * 20, topics, data, n, block_hash, index, "0x")
            looks_alike = "0x" + hashlib.sha256(b"EpochReleased(uint256,uint256)").hexdigest()
            yield Log(PROTOCOL_STATE, [looks_alike, _word(1)], "0x", n, block_hash, index + 1, "")
        self._submit(n, block_hash)

    def _release(self, lc: str, epoch: int, n: int, ts: int) -> Iterator[tuple[list[str], str]]:
        s = self.spec
        if epoch > 1 and epoch % s.epochs_in_a_day == 1:  # the contract's day counter rule
            day = 1 + (epoch - 1) // s.epochs_in_a_day
            data = _hex(abi_encode(["uint256", "uint256"], [day, ts]))
            yield [DAY_STARTED, _addr_topic(lc)], data
        data = _hex(abi_encode(["uint256"] * 3, [n - 10, n, ts]))
        yield [EPOCH_RELEASED, _addr_topic(lc), _word(epoch)], data
        if epoch > 2:  # the finalizer's on-chain trail for an older epoch
            done = epoch - 2
            cid = f"bafy{hashlib.sha256(f'{lc}{done}'.encode()).hexdigest()[:20]}"
            data = _hex(abi_encode(["string", "uint256"], [cid, ts]))
            yield [SNAPSHOT_BATCH_SUBMITTED, _addr_topic(lc), _word(done)], data
            yield (
                [BATCH_SUBMISSIONS_COMPLETED, _addr_topic(lc), _word(done)],
                _hex(abi_encode(["uint256"], [ts])),
            )
        self._plan_submissions(lc, epoch, n)

    def _plan_submissions(self, lc: str, epoch: int, n: int) -> None:
        """Each slot submits a project at a block of (or just past) the window."""
        s = self.spec
        window_blocks = s.window_s // s.block_time
        for slot in range(1, s.slots + 1):
            project = f"proj{(slot + epoch) % s.projects}"
            member = f"{lc}.{epoch}.{project}.{slot}"
            late = slot % s.late_every == 0
            at = n + (
                window_blocks + 1 + self.rng.randrange(3)
                if late
                else self.rng.randrange(window_blocks + 1)
            )
            self._planned.setdefault(at, []).append((lc, epoch, member))
            if self.rng.random() < 0.2:  # a duplicate under another header
                self._planned.setdefault(n + self.rng.randrange(window_blocks + 1), []).append(
                    (lc, epoch, member)
                )
        if s.malformed_every and epoch % s.malformed_every == 0:
            self._planned.setdefault(n, []).append((lc, epoch, f"{lc}.{epoch}.malformed"))

    def _submit(self, n: int, header: str) -> None:
        if n % 256 == 0:  # forget plans far behind: no reorg goes back that far
            for old in [k for k in self._planned if k < n - 256]:
                del self._planned[old]
        for lc, epoch, member in self._planned.get(n, []):
            key = keys.submission_set(lc, epoch, header)
            if self.keep_sets:
                self.sets.setdefault(key, set()).add(member)
            self.written.append(Submission(key, member))


def drive(world: SyntheticWorld, config: CoreConfig) -> Iterator[Input]:
    """The world's inputs with the core's query results spliced in, as a live run journals."""
    state = new_state(config)
    for inp in world.inputs():
        yield inp
        _, effects = step(state, inp)
        invariants.check(state)
        for effect in effects:
            if isinstance(effect, QuerySubmissionSets):
                answer = SubmissionSets(
                    effect.query_id, effect.market, effect.epoch, world.members_of(effect)
                )
                yield answer
                step(state, answer)
                invariants.check(state)


class SyntheticSource:
    """The world as a live input source: before each input, the submissions made so far are
    written to Redis exactly as the dequeuer does (`sim.dequeuer`: the sets only)."""

    def __init__(self, world: SyntheticWorld, redis: aioredis.Redis) -> None:
        self.world = world
        self.redis = redis
        self.dequeuer = Dequeuer(redis, values=False)
        self.chain_head: int | None = world.spec.first_block + world.spec.blocks - 1

    async def units(self) -> AsyncGenerator[list[Input], None]:
        """`[Rewind]`, `[MarketParams...]` or `[Block, *logs]`, submissions flushed first."""
        unit: list[Input] = []
        for inp in self.world.inputs():
            if (
                unit
                and isinstance(inp, Block | Rewind | MarketParams)
                and not (isinstance(inp, MarketParams) and isinstance(unit[-1], MarketParams))
            ):
                await self._flush()
                yield unit
                unit = []
            unit.append(inp)
        await self._flush()
        if unit:
            yield unit

    async def _flush(self) -> None:
        new, self.world.written = self.world.written, []
        await self.dequeuer.write(new)

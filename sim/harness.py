"""`seqcollector sim`: the whole pipeline against a simulated world, with seeded faults.

Fast mode: a synthetic chain and dequeuer (no EVM), fed in lockstep through the real
collector (pipeline, executor, outbox dispatcher, retry loop; assembled by the composition
root `run` uses, `sim.collector_runs`), a finalizer consuming the queue, a relayer over HTTP
on loopback. Crashes kill the collector at an effect boundary and a new one starts from
Redis. EVM mode: `sim.evm`. After the run the journal is replayed, the invariants are
checked, and a report is written.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import anyio
import msgspec
import redis.asyncio as aioredis
import structlog

from seqcollector.core.addresses import checksum
from seqcollector.core.batching import parse_member
from seqcollector.runtime.executor import embedded_redis, redis_client
from seqcollector.runtime.pipeline import Pipeline
from sim import invariants, rewards_oracle
from sim.collector_runs import SimCollector, run_restarting
from sim.evm import RewardsSeen, run_evm
from sim.faults import WORLD_KINDS, fault_rng
from sim.finalizer import Finalizer, FinalizerProcess
from sim.keysum import KeySum
from sim.lockstep import LOAD_AHEAD_STEPS, LockstepSource, SyntheticSteps
from sim.record import CanonicalWindow, FaultMark, SimRecord
from sim.relayer import Relayer
from sim.spec import SimFailed, SimSpec
from sim.synthetic import SyntheticWorld, WorldSpec
from sim.timeline import Timeline, replay_timeline
from sim.world_process import WorldProcess

__all__ = ["SimFailed", "SimSpec", "run_simulation", "world_spec"]  # the harness's interface

log = structlog.get_logger(__name__)


def world_spec(spec: SimSpec) -> WorldSpec:
    window_blocks = spec.window_s // spec.block_time
    blocks = spec.epochs * spec.epoch_every + spec.markets + window_blocks + 2
    reorgs: dict[int, int] = {}
    if "reorg" in spec.faults:
        rng = fault_rng(spec.seed, "reorg")
        for _ in range(max(1, blocks // 60)):
            depth = rng.randint(1, spec.max_reorg_depth)
            reorgs[1000 + rng.randint(depth + 2, blocks - 1)] = depth
    if "deepreorg" in spec.faults:  # deeper than the collector's MAX_REORG_DEPTH (2 x K)
        deep = fault_rng(spec.seed, "deepreorg")
        for _ in range(max(1, blocks // 200)):
            depth = deep.randint(spec.core_reorg_depth + 1, max(_deep_limit(spec, blocks), 1))
            at = 1000 + deep.randint(min(depth + 2, blocks - 1), blocks - 1)
            if at not in reorgs:
                reorgs[at] = depth
    return WorldSpec(
        seed=spec.seed,
        markets=spec.markets,
        blocks=blocks,
        block_time=spec.block_time,
        epoch_every=spec.epoch_every,
        window_s=spec.window_s,
        projects=spec.projects,
        slots=spec.slots,
        reorgs=tuple(sorted(reorgs.items())),
    )


def _deep_limit(spec: SimSpec, blocks: int) -> int:
    """How deep a `deepreorg` goes at most: below the blocks the core holds at times (it
    keeps MAX_REORG_DEPTH + up to 128), within the chain and the world's 256-block plans."""
    return max(min(blocks - 3, 160), spec.core_reorg_depth + 1)


async def run_simulation(
    spec: SimSpec,
    out_dir: Path,
    redis_url: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SimRecord:
    """Run, check, report. Raises SimFailed (after writing everything) if an invariant fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _run_fast if spec.fast else _run_evm
    record = await run(spec, out_dir, redis_url, on_progress)
    twin_faults = spec.faults & WORLD_KINDS
    if spec.faults != twin_faults or spec.crash_at:  # the clean twin: same seed and world
        with tempfile.TemporaryDirectory() as tmp:
            clean = msgspec.structs.replace(
                spec, faults=twin_faults, crash_at=frozenset(), processes=False
            )  # (in-process and embedded: the digest must not depend on where actors run)
            twin = await run(clean, Path(tmp), None, None)
        record.invariants.append(invariants.same_digest(record.digest, twin.digest))
    _write_outputs(out_dir, record)
    failed = [i for i in record.invariants if not i.ok]
    if failed:
        raise SimFailed(
            f"invariant failed with --seed {spec.seed}: {failed[0].name}: {failed[0].detail}"
        )
    return record


async def _run_fast(
    spec: SimSpec,
    out_dir: Path,
    redis_url: str | None,
    on_progress: Callable[[int, int], None] | None,
) -> SimRecord:
    world = SyntheticWorld(world_spec(spec), keep_sets=False)  # the oracle reads Redis
    config = world.core_config(batch_size=spec.batch_size, max_reorg_depth=spec.core_reorg_depth)
    apart, world_apart = _processes(spec, redis_url, world)
    redis = await _store(redis_url)
    journal = out_dir / "journal.jsonl"
    journal.unlink(missing_ok=True)
    record = SimRecord(
        spec.seed,
        "fast",
        [checksum(m) for m in world.markets],
        sorted(spec.faults),
        first_block=world.spec.first_block,
        last_block=world.spec.first_block + world.spec.blocks - 1,
    )
    ahead = 0 if spec.lockstep else LOAD_AHEAD_STEPS
    steps = SyntheticSteps(world, redis, values=spec.submission_values, ahead=ahead)
    finalizer = Finalizer(redis)
    if world_apart is not None and on_progress is not None:
        world_apart.on_step = lambda i: on_progress(i, world.spec.blocks + 1)
    started = time.monotonic()
    relayer_rng = random.Random(f"{spec.seed}:relayer")
    with (
        Relayer(
            fail_rate=spec.relayer_fail_rate if "relayer" in spec.faults else 0.0,
            seed=relayer_rng.randint(0, 2**31),
        ) as relayer,
        apart or nullcontext(),
        world_apart or nullcontext(),
    ):
        sim = SimCollector.build(spec, redis, relayer, config, journal)
        total_steps = world.spec.blocks + 1 + sum(d + 1 for _, d in world.spec.reorgs)

        async def run_once(pipeline: Pipeline) -> None:
            source = world_apart or LockstepSource(
                steps,
                steps.resume_index(pipeline),
                pipeline,
                between=None if apart else finalizer.drain,
                wait=spec.lockstep,
                between_every=1 if spec.lockstep else 20,
                on_step=(lambda i: on_progress(i, total_steps)) if on_progress else None,
            )
            await sim.root.collector(pipeline, source).run()

        busy = await run_restarting(sim.root, run_once, record.faults)
        if apart is not None:
            finalizer = await anyio.to_thread.run_sync(apart.finish, redis)
        else:
            await finalizer.drain()
        await sim.drain_outbox()
        await sim.root.dispatcher.aclose()
        calls = [c for c, ok in relayer.answered("/submitBatchSize") if ok]
        record.summary["relayer 5xx injected"] = relayer.failures
    record.faults += sim.outages()
    elapsed = time.monotonic() - started
    timeline = replay_timeline(journal, out_dir / "effects.jsonl")
    record.summary["collector busy s"] = round(busy, 2)
    windows = _synthetic_windows(spec, world)
    canonical_hash = world_apart.canonical_hash if world_apart else world.canonical_hash
    deep = _deep_replaced(spec, world.spec.reorgs, windows)
    await _check(record, windows, canonical_hash, timeline, finalizer, redis, calls, deep)
    _check_failovers(record, sim)
    _fill(record, spec, world, timeline, elapsed, len(calls))
    await redis.aclose()
    return record


def _processes(
    spec: SimSpec, redis_url: str | None, world: SyntheticWorld
) -> tuple[FinalizerProcess | None, WorldProcess | None]:
    """The finalizer and the world as processes of their own (`spec.processes`), or None."""
    if not spec.processes:
        return None, None
    if redis_url is None or spec.lockstep or "crash" in spec.faults:
        raise SimFailed(
            "world and finalizer processes (load runs) need a Redis server (--redis URL), "
            "lockstep off and no crash faults (a restarted collector resumes from the world)"
        )
    return FinalizerProcess(redis_url), WorldProcess(world.spec, redis_url, spec.submission_values)


async def _run_evm(
    spec: SimSpec,
    out_dir: Path,
    redis_url: str | None,
    on_progress: Callable[[int, int], None] | None,
) -> SimRecord:
    redis = await _store(redis_url)
    journal = out_dir / "journal.jsonl"
    journal.unlink(missing_ok=True)
    record = SimRecord(spec.seed, "evm", [], sorted(spec.faults))
    started = time.monotonic()
    limit_s = 120 + 4 * spec.epochs * spec.epoch_every * spec.markets
    try:
        with anyio.fail_after(limit_s):
            finalizer, calls, sim, chain, seen = await run_evm(
                spec, out_dir, redis, record, on_progress
            )
    except TimeoutError:
        log_file = out_dir / "sim.log"
        where = f"see {log_file}" if log_file.exists() else "see the log above"
        raise SimFailed(
            f"the EVM simulation with --seed {spec.seed} did not finish within {limit_s} s "
            f"({where}); the collector stopped making progress"
        ) from None
    elapsed = time.monotonic() - started
    record.faults += sim.outages()
    timeline = replay_timeline(journal, out_dir / "effects.jsonl")
    windows, hashes = chain
    await _check(record, windows, hashes.get, timeline, finalizer, redis, calls)
    _check_failovers(record, sim)
    if spec.rewards:
        await _check_rewards(record, spec, timeline, hashes.get, finalizer, seen)
    record.first_block, record.last_block = 0, max(hashes)
    record.windows = list(timeline.windows.values())
    record.batches = timeline.batches
    record.digest = timeline.digest
    epochs = len(timeline.batch_counts)
    record.summary.update(
        {
            "seed": spec.seed,
            "markets": spec.markets,
            "blocks": max(hashes) + 1,
            "epochs batched": epochs,
            "finalizer items": sum(timeline.pushed.values()),
            "submitBatchSize calls": len(calls),
            "crashes": sum(f.kind == "crash" for f in record.faults),
            "redis outages": sum(f.kind == "redis" for f in record.faults),
            "reorgs": sum(f.kind == "reorg" for f in record.faults),
            **(
                {"deepreorg faults": "not applicable in EVM mode (see the live anvil reset test)"}
                if "deepreorg" in spec.faults
                else {}
            ),
            "seconds": round(elapsed, 2),
            "epochs/s": round(epochs / elapsed, 1) if elapsed else 0.0,
        }
    )
    await redis.aclose()
    return record


async def _store(redis_url: str | None) -> aioredis.Redis:
    if redis_url is None:
        return embedded_redis()
    client = redis_client(redis_url)
    if await client.dbsize():
        await client.aclose()
        raise SimFailed(
            f"--redis {redis_url}: the database is not empty; the simulation writes the "
            "production key names, give it an empty database (e.g. redis://127.0.0.1:6379/15)"
        )
    return client


async def _check(
    record: SimRecord,
    windows: list[CanonicalWindow],
    canonical_hash: Callable[[int], str | None],
    t: Timeline,
    finalizer: Finalizer,
    redis: aioredis.Redis,
    calls: list[dict[str, object]],
    deep_replaced: set[tuple[str, int]] | None = None,
) -> None:
    """The invariants. The oracle for batch contents is what the dequeuer wrote in Redis
    under the canonical window's headers, read independently of the collector."""
    canonical: set[tuple[str, int]] = set()
    expected: dict[tuple[str, int], KeySum] = {}
    orphan_closed = 0
    for w in windows:
        if w.close is None:
            continue
        key = (w.market, w.epoch)
        canonical.add(key)
        closed = t.closed_at.get(key)
        if closed is None or closed[1] != canonical_hash(closed[0]):
            orphan_closed += 1
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(w.release, w.close):
                pipe.smembers(f"SnapshotCollector.{w.market}.{w.epoch}.{canonical_hash(n)}")
            replies = await pipe.execute()
        members = {m.decode() for reply in replies for m in reply}
        expected[key] = KeySum()
        for member in sorted(m for m in members if parse_member(m) is not None):
            expected[key].add(member)
    for raw in reversed(await redis.lrange("finalizerQueue", 0, -1)):  # still queued
        finalizer.record(raw.decode() if isinstance(raw, bytes) else str(raw))
    batched = set(t.batch_counts)
    gone = t.superseded
    required = deep_replaced or set()
    releases = {(w.market, w.epoch): canonical_hash(w.release) or "" for w in windows}
    rebatch = invariants.rebatched_after_deep_reorgs(required, t.opened_hash, releases)
    call_check, repeats = invariants.one_batch_size_call_per_epoch(batched, calls, gone)
    record.invariants += [
        invariants.batched_exactly_once(
            canonical, finalizer.batch_ids, t.batch_counts, gone, rebatch
        ),
        invariants.batches_hold_window_submissions(
            expected, finalizer.keys, finalizer.misplaced, gone
        ),
        invariants.queue_items_exactly_once(t.pushed, finalizer.consumed),
        call_check,
    ]
    record.summary["windows closed by a block later orphaned"] = orphan_closed
    record.summary["repeated relayer deliveries (at least once)"] = repeats
    if gone:  # a deep reorg's documented consequence (core.history)
        record.summary["epochs batched again after a deep reorg (old batches not undone)"] = len(
            gone
        )


def _check_failovers(record: SimRecord, sim: SimCollector) -> None:
    """Invariant 6 (`failover`): every paused active that resumed was fenced out."""
    checks = sim.fence_checks()
    record.invariants.append(invariants.no_commit_after_lease_loss(checks))
    record.summary["failovers (paused active fenced out on resume)"] = len(checks)
    record.summary["failovers: resumed active's delivery refused (entries pending)"] = sum(
        c.delivery == "LeaseLost" for c in checks
    )


async def _check_rewards(
    record: SimRecord,
    spec: SimSpec,
    t: Timeline,
    canonical_hash: Callable[[int], str | None],
    finalizer: Finalizer,
    seen: RewardsSeen,
) -> None:
    """Invariants 6 and 7 (`sim.rewards_oracle`): the final and periodic reward updates
    against the finalizer's tallies and the chain's days."""
    batched_at = {
        key: number
        for key, (number, block_hash) in t.closed_at.items()
        if key in t.batch_counts and canonical_hash(number) == block_hash
    }

    async def day_at(lc: str, block: int) -> int:
        return seen.day_at(lc, block)

    due, over = rewards_oracle.due_days(batched_at, seen.day_at)
    record.invariants += [
        rewards_oracle.final_updates_exactly_once(
            seen.delivered, finalizer.counted, finalizer.eligible, due, over, spec.rewards_batch
        ),
        await rewards_oracle.periodic_update_every_interval(
            seen.delivered,
            t.periodic,
            batched_at,
            seen.counts,
            day_at,
            spec.rewards_interval,
            spec.slots,
            spec.rewards_batch,
        ),
    ]
    record.summary["reward updates delivered (repeats kept)"] = len(seen.delivered)
    record.summary["market-days over / final update due"] = f"{len(over)} / {len(due)}"


def _deep_replaced(
    spec: SimSpec, reorgs: tuple[tuple[int, int], ...], windows: list[CanonicalWindow]
) -> set[tuple[str, int]]:
    """The closed canonical epochs whose release block a deep reorg replaced last: the core
    forgot them, so they must be batched from the new chain's release (`core.history`)."""
    out = set()
    for w in windows:
        last = [d for at, d in reorgs if at - d <= w.release < at]  # reorgs run in `at` order
        if w.close is not None and last and last[-1] > spec.core_reorg_depth:
            out.add((w.market, w.epoch))
    return out


def _synthetic_windows(spec: SimSpec, world: SyntheticWorld) -> list[CanonicalWindow]:
    last = world.spec.first_block + world.spec.blocks - 1
    window_blocks = spec.window_s // spec.block_time
    out = []
    for m, lc in enumerate(world.markets):
        epoch = 1
        while (release := world.release_block(m, epoch)) <= last:
            close = release + window_blocks + 1
            out.append(CanonicalWindow(lc, epoch, release, close if close <= last else None))
            epoch += 1
    return out


def _fill(
    record: SimRecord,
    spec: SimSpec,
    world: SyntheticWorld,
    t: Timeline,
    elapsed: float,
    calls: int,
) -> None:
    record.windows = list(t.windows.values())
    record.batches = t.batches
    for at, depth in world.spec.reorgs:
        kind = "deepreorg" if depth > spec.core_reorg_depth else "reorg"
        record.faults.append(FaultMark(kind, at, f"reorg of depth {depth} at block {at}"))
    record.digest = t.digest
    epochs = len(t.batch_counts)
    if spec.fast and spec.faults & {"rpc", "lag"}:
        record.summary["rpc, lag faults"] = "not applicable in fast mode (no RPC is read)"
    record.summary.update(
        {
            "seed": spec.seed,
            "markets": spec.markets,
            "blocks": world.spec.blocks,
            "epochs batched": epochs,
            "finalizer items": sum(t.pushed.values()),
            "submitBatchSize calls": calls,
            "crashes": sum(f.kind == "crash" for f in record.faults),
            "redis outages": sum(f.kind == "redis" for f in record.faults),
            "reorgs": len(world.spec.reorgs),
            "deep reorgs": sum(d > spec.core_reorg_depth for _, d in world.spec.reorgs),
            "seconds": round(elapsed, 2),
            "epochs/s": round(epochs / elapsed, 1) if elapsed else 0.0,
        }
    )


def _write_outputs(out_dir: Path, record: SimRecord) -> None:
    (out_dir / "record.json").write_bytes(msgspec.json.encode(record))
    try:
        from sim.report import write_report
    except ImportError:  # the report module is optional while it is being written
        return
    write_report(out_dir, record)

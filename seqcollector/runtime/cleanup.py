"""The cleanup pass: SCAN the key families `core.retention` knows, UNLINK the stale keys.

What the collector knows comes from its **committed** state, read from Redis (`<ns>:state`)
at the start of each pass, never from the in-memory state of a step in progress: a group
that batched an epoch in memory can still fail to commit and be batched again from the same
sets. A window that opens after the read has a newer epoch (kept); one batched after it is
still open in the read state (kept). So a pass never deletes a set that a window still needs.

Per configured market and family, one `SCAN MATCH <family>.<lc>.* COUNT 1000` walk; each
batch of keys is judged by `core.retention.verdict` and its stale keys go in one `UNLINK`
(one round trip per batch). The marker sets are read after their details were scanned: the
commit writes a marker's member and details in one script, so a details key seen by the scan
has its member visible to the later SMEMBERS, and a new marker is never taken for a fired one.

Deadlines: every round trip under `op_timeout_s` (TIMEOUT_REDIS_OPERATION); the whole pass
under `budget_s`; a pass that runs out of budget stops, says so (`complete=False`) and the
next pass continues. Progress: `cleanup_progress` every `PROGRESS_EVERY_SCANS` SCAN round
trips and at the end of each family of each market; `cleanup_done` with the report.

In `run`: once at start-up when INIT_CLEANUP_ENABLED=true, after the stored state is loaded
(so the open windows are known); then every `PERIODIC_INTERVAL_S` (10 min, the Go
collector's own cleanup interval: the submission sets expire after 20 min anyway, so the
pass is for what has no TTL: fired rollover markers, Go leftovers, sets of a stalled market).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from functools import partial
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from seqcollector.config import Settings, mask_url
from seqcollector.core import State, load_state
from seqcollector.core.retention import (
    GO_MARKER_DETAILS_PREFIX,
    GO_MARKER_SET_PREFIX,
    ROLLOVER_DETAILS_PREFIX,
    ROLLOVER_SET_PREFIX,
    SUBMISSION_SET_PREFIX,
    Family,
    Knowledge,
    Observed,
    Retained,
    parse_epoch,
    verdict,
)
from seqcollector.errors import DependencyError, SettingsError
from seqcollector.runtime.executor import redis_client
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.startup import describe_failure

log = structlog.get_logger(__name__)

SCAN_COUNT = 1000
PERIODIC_INTERVAL_S = 600.0
PASS_BUDGET_S = 120.0
PROGRESS_EVERY_SCANS = 100
EXAMPLES_KEPT = 5


class NoStoredState(SettingsError):
    """The namespace holds no committed state (or one this version cannot read): which
    windows are open is unknown (exit 2: the namespace or the version is to fix)."""


class FamilyReport(msgspec.Struct):
    scanned: int = 0
    stale: int = 0
    deleted: int = 0  # UNLINK's count (0 on a dry run)
    examples: list[str] = []  # the first stale keys found


class CleanupReport(msgspec.Struct):
    dry_run: bool
    families: dict[str, FamilyReport]
    complete: bool = True  # False: the pass budget ran out first
    round_trips: int = 0
    elapsed_s: float = 0.0

    @property
    def deleted(self) -> int:
        return sum(f.deleted for f in self.families.values())

    @property
    def stale(self) -> int:
        return sum(f.stale for f in self.families.values())


def retained_from_state(state: State, markets: Iterable[str]) -> dict[str, Retained]:
    """Per configured (lowercase) market: its open windows and batched epochs in `state`."""
    out: dict[str, Retained] = {}
    for lc in markets:
        ms = state.domain.markets.get(lc)
        emitted = state.emitted.get(lc)
        out[lc] = Retained(
            open_epochs=tuple(sorted(ms.windows)) if ms is not None else (),
            batched_epochs=tuple(emitted.epochs) if emitted is not None else (),
            batched_floor=emitted.floor if emitted is not None else -1,
        )
    return out


def knowledge_from_state(state: State | None, markets: Iterable[str]) -> Knowledge:
    """What the rule may rely on: the state's windows, batched epochs and last block (no
    state: nothing known, so only fired markers and Go leftovers past a known block go)."""
    markets = list(markets)
    if state is None:
        return Knowledge(retained={lc: Retained() for lc in markets})
    head = state.head
    return Knowledge(
        retained=retained_from_state(state, markets), head_block=head.number if head else None
    )


async def load_committed_state(
    redis: aioredis.Redis, namespace: str, op_timeout_s: float
) -> State | None:
    """The state the namespace's last commit stored (None: a fresh namespace)."""
    with anyio.fail_after(op_timeout_s):
        raw = await redis.get(StoreLayout(namespace).state)
    if raw is None:
        return None
    try:
        return load_state(raw.encode() if isinstance(raw, str) else raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise NoStoredState(
            f"namespace {namespace!r}: the stored core state cannot be read ({exc}); run the "
            "version that wrote it, or clean up with that version"
        ) from None


class _Pass:
    """One pass over one Redis: counts, examples, round trips, progress."""

    def __init__(self, redis: aioredis.Redis, dry_run: bool, op_timeout_s: float) -> None:
        self.redis = redis
        self.dry_run = dry_run
        self.op_timeout_s = op_timeout_s
        self.report = CleanupReport(dry_run, {f.value: FamilyReport() for f in Family})
        self.scans = 0

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        self.report.round_trips += 1
        with anyio.fail_after(self.op_timeout_s):
            return await fn()

    async def scan(self, pattern: str) -> list[list[bytes]]:
        """Every batch of keys of one SCAN MATCH walk (a batch per round trip)."""
        batches: list[list[bytes]] = []
        cursor = 0
        while True:
            cursor, keys = await self.call(
                partial(self.redis.scan, cursor, match=pattern, count=SCAN_COUNT)
            )
            self.scans += 1
            if keys:
                batches.append(list(keys))
            if self.scans % PROGRESS_EVERY_SCANS == 0:
                self.progress(pattern)
            if int(cursor) == 0:
                return batches

    async def judge_and_unlink(self, keys: list[bytes], knowledge: Knowledge) -> None:
        """Judge `keys`; unlink the stale ones, one UNLINK per family, in one pipeline."""
        stale: dict[Family, list[bytes]] = {}
        for raw in keys:
            try:
                key = raw.decode()
            except UnicodeDecodeError:
                self.report.families[Family.UNKNOWN].scanned += 1
                continue  # not a name the rule knows: kept
            v = verdict(key, knowledge)
            fam = self.report.families[v.family]
            fam.scanned += 1
            if v.stale:
                fam.stale += 1
                stale.setdefault(v.family, []).append(raw)
                if len(fam.examples) < EXAMPLES_KEPT:
                    fam.examples.append(f"{key} ({v.reason})")
        if not stale or self.dry_run:
            return
        families = sorted(stale)

        async def unlink() -> list[int]:
            pipe = self.redis.pipeline(transaction=False)
            for family in families:
                pipe.unlink(*stale[family])
            return list(await pipe.execute())

        for family, removed in zip(families, await self.call(unlink), strict=True):
            self.report.families[family].deleted += int(removed)

    def progress(self, where: str) -> None:
        log.info(
            "cleanup_progress",
            at=where,
            scans=self.scans,
            **{
                f: f"{r.scanned} scanned, {r.stale} stale, {r.deleted} deleted"
                for f, r in self.report.families.items()
                if r.scanned
            },
        )


def _epochs(members: Iterable[bytes]) -> tuple[int, ...]:
    out = {parse_epoch(m.decode(errors="replace")) for m in members}
    return tuple(sorted(e for e in out if e is not None))


def _limit_block(raw: bytes | None) -> int | None:
    """SubmissionLimitBlockNumber of a Go EpochMarkerDetailsKey JSON value (None: unreadable)."""
    if raw is None:
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    limit = value.get("SubmissionLimitBlockNumber") if isinstance(value, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


async def _market(p: _Pass, lc: str, base: Knowledge) -> None:
    # 1. submission sets: judged batch by batch, as the walk goes
    pattern = f"{SUBMISSION_SET_PREFIX}.{lc}.*"
    cursor = 0
    while True:
        cursor, keys = await p.call(partial(p.redis.scan, cursor, match=pattern, count=SCAN_COUNT))
        p.scans += 1
        await p.judge_and_unlink(list(keys), base)
        if p.scans % PROGRESS_EVERY_SCANS == 0:
            p.progress(pattern)
        if int(cursor) == 0:
            break
    p.progress(pattern)
    # 2. day-rollover marker details: scanned first, then the set's members (module doc)
    details = [k for batch in await p.scan(f"{ROLLOVER_DETAILS_PREFIX}.{lc}.*") for k in batch]
    if details:
        members = await p.call(lambda: p.redis.smembers(f"{ROLLOVER_SET_PREFIX}.{lc}"))
        seen = Observed(rollover_markers=_epochs(members))
        await p.judge_and_unlink(details, _with(base, lc, seen))
    p.progress(f"{ROLLOVER_DETAILS_PREFIX}.{lc}")
    # 3. the Go epoch markers (nothing writes them any more)
    go_set = f"{GO_MARKER_SET_PREFIX}.{lc}"
    go_details = [k for batch in await p.scan(f"{GO_MARKER_DETAILS_PREFIX}.{lc}.*") for k in batch]
    members = await p.call(lambda: p.redis.smembers(go_set))
    if go_details or members:
        epochs = _epochs(members)
        names = sorted(
            {k.decode(errors="replace") for k in go_details}
            | {f"{GO_MARKER_DETAILS_PREFIX}.{lc}.{e}" for e in epochs}
        )
        limits: dict[int, int] = {}
        for i in range(0, len(names), SCAN_COUNT):
            chunk = names[i : i + SCAN_COUNT]
            values = await p.call(partial(p.redis.mget, chunk))
            for name, raw in zip(chunk, values, strict=True):
                epoch, limit = parse_epoch(name.rsplit(".", 1)[1]), _limit_block(raw)
                if epoch is not None and limit is not None:
                    limits[epoch] = limit
        seen = Observed(go_marker_members=epochs, go_marker_limits=limits)
        keys = go_details + ([go_set.encode()] if members else [])
        await p.judge_and_unlink(keys, _with(base, lc, seen))
    p.progress(go_set)


def _with(base: Knowledge, lc: str, seen: Observed) -> Knowledge:
    return msgspec.structs.replace(base, observed={**base.observed, lc: seen})


async def cleanup_pass(
    redis: aioredis.Redis,
    knowledge: Knowledge,
    *,
    dry_run: bool = False,
    op_timeout_s: float = 5.0,
    budget_s: float = PASS_BUDGET_S,
) -> CleanupReport:
    """One pass over every configured market (`knowledge.retained`'s keys): stale keys
    unlinked (or only listed, `dry_run`). Redis errors and round-trip timeouts propagate;
    the budget running out does not (the report says `complete=False`)."""
    p = _Pass(redis, dry_run, op_timeout_s)
    started = time.perf_counter()
    with anyio.move_on_after(budget_s) as scope:
        for lc in sorted(knowledge.retained):
            await _market(p, lc, knowledge)
    report = p.report
    report.complete = not scope.cancelled_caught
    report.elapsed_s = round(time.perf_counter() - started, 3)
    if not report.complete:
        log.warning(
            "cleanup_budget_exhausted",
            budget_s=budget_s,
            action="the next pass continues; nothing was deleted that is not stale",
        )
    log.info(
        "cleanup_done",
        dry_run=dry_run,
        complete=report.complete,
        stale=report.stale,
        deleted=report.deleted,
        round_trips=report.round_trips,
        elapsed_s=report.elapsed_s,
        families={f: msgspec.structs.asdict(r) for f, r in report.families.items() if r.scanned},
    )
    return report


async def cleanup_namespace(
    redis: aioredis.Redis,
    namespace: str,
    markets: Iterable[str],
    *,
    dry_run: bool = False,
    op_timeout_s: float = 5.0,
    budget_s: float = PASS_BUDGET_S,
    require_state: bool = False,
) -> CleanupReport:
    """A pass judged on the namespace's committed state (read first). `require_state`:
    refuse (NoStoredState) when there is none, instead of keeping every submission set."""
    state = await load_committed_state(redis, namespace, op_timeout_s)
    if state is None and require_state:
        raise NoStoredState(
            f"namespace {namespace!r} holds no stored state, so which windows are open is "
            "unknown; run the collector (`seqcollector run`) first, or pass the namespace it "
            "uses (--namespace)"
        )
    knowledge = knowledge_from_state(state, markets)
    return await cleanup_pass(
        redis, knowledge, dry_run=dry_run, op_timeout_s=op_timeout_s, budget_s=budget_s
    )


async def periodic_cleanup(
    redis: aioredis.Redis,
    namespace: str,
    markets: Iterable[str],
    *,
    op_timeout_s: float,
    interval_s: float = PERIODIC_INTERVAL_S,
    budget_s: float = PASS_BUDGET_S,
) -> None:
    """Every `interval_s`, one pass; a failed pass is logged and the next one tries again
    (the cleanup never stops the collector). Runs until cancelled."""
    markets = list(markets)
    while True:
        await anyio.sleep(interval_s)
        try:
            await cleanup_namespace(
                redis, namespace, markets, op_timeout_s=op_timeout_s, budget_s=budget_s
            )
        except (RedisError, TimeoutError, OSError, NoStoredState) as exc:
            log.warning(
                "cleanup_failed",
                error=f"{type(exc).__name__}: {exc}",
                action=f"nothing else is affected; the next pass is in {interval_s:.0f} s",
            )


async def run_beside(
    main: Callable[[], Awaitable[None]], background: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Run `main` with `background` beside it; cancel `background` when `main` ends. An
    exception of `main` propagates as itself (not wrapped in an exception group)."""
    failed: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(background)
        try:
            await main()
        except anyio.get_cancelled_exc_class():
            raise  # the task group passes a cancellation on as it is
        except BaseException as exc:  # re-raised below, outside the task group
            failed.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if failed:
        raise failed[0]


async def cleanup_at_start(settings: Settings, redis: aioredis.Redis, namespace: str) -> None:
    """`run`'s start-up pass when INIT_CLEANUP_ENABLED=true, after the stored state was
    loaded; a failure is logged and the start goes on (the periodic pass tries again)."""
    if not settings.init_cleanup_enabled:
        return
    try:
        await cleanup_namespace(
            redis,
            namespace,
            settings.data_market_addresses,
            op_timeout_s=settings.timeouts.redis_operation,
        )
    except (RedisError, TimeoutError, OSError, NoStoredState) as exc:
        log.warning(
            "cleanup_failed",
            when="start-up (INIT_CLEANUP_ENABLED)",
            error=f"{type(exc).__name__}: {exc}",
            action=f"the collector starts anyway; the periodic pass runs in "
            f"{PERIODIC_INTERVAL_S:.0f} s",
        )


def periodic_cleanup_for(
    settings: Settings, redis: aioredis.Redis, namespace: str
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The periodic pass of `run` (every PERIODIC_INTERVAL_S), to run beside the collector."""
    return partial(
        periodic_cleanup,
        redis,
        namespace,
        settings.data_market_addresses,
        op_timeout_s=settings.timeouts.redis_operation,
    )


async def cleanup_command(
    settings: Settings, namespace: str, dry_run: bool, budget_s: float = PASS_BUDGET_S
) -> CleanupReport:
    """`seqcollector cleanup [--dry-run]`: one pass judged on the namespace's stored state,
    refused (NoStoredState) without one. Redis unreachable: DependencyError, one line."""
    redis = redis_client(settings.redis_url())
    budget = settings.timeouts.redis_operation
    try:
        return await cleanup_namespace(
            redis,
            namespace,
            settings.data_market_addresses,
            dry_run=dry_run,
            op_timeout_s=budget,
            budget_s=budget_s,
            require_state=True,
        )
    except (RedisError, TimeoutError, OSError) as exc:
        raise DependencyError(
            f"Redis at {mask_url(settings.redis_url())}: {describe_failure(exc, budget)} "
            "(cleanup, TIMEOUT_REDIS_OPERATION per round trip); check that Redis is up and "
            "answering"
        ) from None
    finally:
        await redis.aclose()

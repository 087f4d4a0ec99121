"""Data market migration (ENABLE_MARKET_MIGRATION): copy an old market's keys to the new one.

For each `old:new` of MARKET_MIGRATION_MAPPINGS, at start-up of `run`, before the start-up
tables are written, every key family the Go collector copies (go-rewards-api.md section 4)
and those it leaves behind:

- the 3 start-up hash fields (`SubmissionLimitTable`, `DaySizeTableKey`,
  `DailySnapshotQuotaTableKey`, fields keyed `<EIP55>`), `ProtocolState.<EIP55>.EpochsInADay`;
- `CurrentDayKey.<lc>`, `LastKnownDayKey.<lc>`;
- `EpochMarkerSetKey.<lc>` and `DayRolloverEpochMarkerSetKey.<lc>` with the details key of
  each member (`EpochMarkerDetailsKey.<lc>.<e>`, `DayRolloverEpochMarkerDetailsKey.<lc>.<e>`);
- for days max(1, D-DAYS+1)..D (D: the old market's `CurrentDayKey`, else its
  `LastKnownDayKey`): `EligibleNodeByDayKey.<lc>.<d>`, `ZeroCountKey.<lc>.<d>`, per slot
  1..N (N: `TotalNodesCount`) `EligibleSlotSubmissionsKey.<lc>.<d>.<s>` and
  `SlotSubmissionsKey.<lc>.<d>.<s>`, and (found by SCAN) `DiscardedSubmissionKey.<lc>.<d>`,
  `DiscardedSubmissionKey.<lc>.<d>.<epoch>`, `EligibleSlotSubmissionByEpochKey.<lc>.<d>.<epoch>`;
- per slot 1..N: `LastSnapshotSubmissionKey.<lc>.<s>`, `LastSimulatedSubmissionKey.<lc>.<s>`,
  `snapshotter:<lc>:<s>:node_version`.

Rules (each fixes a Go defect):
- **Never overwrites the new market's data**: a key is copied only when it is absent at the
  destination (`RESTORE` without REPLACE refuses an existing key, atomically; hash fields
  with HSETNX). A set present at the destination is not merged: the new market's markers and
  eligible sets are its own, newer than the old market's.
- **TTLs kept**: `DUMP` + `PTTL` at the source, `RESTORE <ttl>` at the destination, in a
  Lua script (Redis >= 6.0 like the rest; `COPY` would need 6.2).
- **Once**: a migration that completed is recorded in the hash `<ns>:migrations`, field
  `old:new`, JSON with the time and the counts; a later start copies nothing and logs
  `market_migration_already_done` with that record. One that could not be complete (no day
  for the old market, no TotalNodesCount) is recorded as `incomplete`, logged, alerted, and
  tried again at the next start (still copying only what is absent).
- **Pipelined**: all key copies go in chunks of `CHUNK_KEYS`, one EVALSHA per chunk,
  whatever the families; the first reads and the hash fields take one round trip each, the
  SCAN families one walk each (keyspace / SCAN_COUNT round trips).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from seqcollector.config import Settings
from seqcollector.core import keys
from seqcollector.core.addresses import checksum
from seqcollector.errors import DependencyError
from seqcollector.runtime.failures import Failure, FailureReporter
from seqcollector.runtime.startup import describe_failure

log = structlog.get_logger(__name__)

CHUNK_KEYS = 1000  # pairs per EVALSHA: ~20 ms of Redis time each, so other clients are not held up
SCAN_COUNT = 10_000  # a one-off walk at start-up: fewer round trips, ~ms per call
TOTAL_NODES_KEY = "TotalNodesCount"
STARTUP_TABLES = (
    keys.SUBMISSION_LIMIT_TABLE,
    keys.DAY_SIZE_TABLE,
    keys.DAILY_SNAPSHOT_QUOTA_TABLE,
)


def migrations_key(namespace: str) -> str:
    """The hash recording completed migrations, under the collector's namespace."""
    return f"{namespace}:migrations"


class FamilyCopy(msgspec.Struct):
    copied: int = 0
    present: int = 0  # already at the destination: kept, not overwritten
    missing: int = 0  # absent at the source


class MigrationReport(msgspec.Struct):
    old: str
    new: str
    status: str  # "done" | "incomplete" | "already_done"
    day: int | None = None
    days: list[int] = []
    total_nodes: int | None = None
    families: dict[str, FamilyCopy] = {}
    problems: list[str] = []
    at: float = 0.0  # unix time of the run (for "already_done": of the recorded run)
    round_trips: int = 0
    elapsed_s: float = 0.0

    @property
    def copied(self) -> int:
        return sum(f.copied for f in self.families.values())


class _Record(msgspec.Struct):
    status: str
    at: float
    day: int | None = None
    days: list[int] = []
    total_nodes: int | None = None
    families: dict[str, FamilyCopy] = {}
    problems: list[str] = []


def _int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


class _Copier:
    """Counts per family and round trips; every round trip under `op_timeout_s`."""

    def __init__(self, redis: aioredis.Redis, op_timeout_s: float) -> None:
        self.redis = redis
        self.op_timeout_s = op_timeout_s
        self.families: dict[str, FamilyCopy] = {}
        self.round_trips = 0

    def family(self, name: str) -> FamilyCopy:
        return self.families.setdefault(name, FamilyCopy())

    async def execute(self, build: Callable[[Any], None]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        build(pipe)
        self.round_trips += 1
        with anyio.fail_after(self.op_timeout_s):
            return list(await pipe.execute(raise_on_error=False))

    async def copy_keys(self, pairs: Sequence[tuple[str, str, str]]) -> None:
        """(family, source, destination) -> each destination restored from its source with
        the source's TTL, unless it exists already: one EVALSHA per `CHUNK_KEYS` pairs."""
        script = self.redis.register_script(_COPY)
        for i in range(0, len(pairs), CHUNK_KEYS):
            chunk = pairs[i : i + CHUNK_KEYS]
            names = [name for _, src, dst in chunk for name in (src, dst)]
            self.round_trips += 1
            with anyio.fail_after(self.op_timeout_s):
                codes = await script(keys=names)
            codes = codes.decode() if isinstance(codes, bytes) else str(codes)
            assert len(codes) == len(chunk), "the copy script answers one code per key"
            for (family, _, _), code in zip(chunk, codes, strict=True):
                fam = self.family(family)
                if code == "c":
                    fam.copied += 1
                elif code == "p":
                    fam.present += 1
                else:
                    fam.missing += 1

    async def scan(self, pattern: str) -> list[str]:
        found: list[str] = []
        cursor = 0
        while True:
            self.round_trips += 1
            with anyio.fail_after(self.op_timeout_s):
                cursor, batch = await self.redis.scan(cursor, match=pattern, count=SCAN_COUNT)
            found.extend(k.decode() if isinstance(k, bytes) else k for k in batch)
            if int(cursor) == 0:
                return sorted(found)


# KEYS: source 1, destination 1, source 2, ... -> one letter per pair: m (missing at the
# source), p (present at the destination: kept), c (copied with the source's TTL). Server
# side, so a chunk of keys is one round trip and no value crosses the network.
_COPY = """
local out = {}
for i = 1, #KEYS, 2 do
  local payload = redis.call('DUMP', KEYS[i])
  if not payload then
    out[#out + 1] = 'm'
  elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
    out[#out + 1] = 'p'
  else
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then ttl = 0 end
    redis.call('RESTORE', KEYS[i + 1], ttl, payload)
    out[#out + 1] = 'c'
  end
end
return table.concat(out)
"""


def _raise_unexpected(reply: object) -> None:
    if isinstance(reply, Exception):
        raise reply


def migration_days(day: int, count: int) -> list[int]:
    """The days copied: max(1, D-DAYS+1)..D (the Go rule)."""
    return list(range(max(1, day - count + 1), day + 1))


def _renamed(old: str, new: str, key: str) -> str:
    """`key` of the old market -> the same key of the new one (the market is one part)."""
    return key.replace(old, new, 1)


def _scanned_day(key: str, prefix: str) -> int | None:
    """The day of `<prefix>.<day>[.<epoch>]`, or None if `key` is not of that shape."""
    parts = key[len(prefix) + 1 :].split(".")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0])


async def migrate_market(
    redis: aioredis.Redis,
    namespace: str,
    old: str,
    new: str,
    days: int,
    *,
    op_timeout_s: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> MigrationReport:
    """Migrate `old` -> `new` (lowercase addresses) once; see the module doc."""
    started = time.perf_counter()
    field = f"{old}:{new}"
    with anyio.fail_after(op_timeout_s):
        raw_record = await redis.hget(migrations_key(namespace), field)
    if raw_record is not None:
        record = msgspec.json.decode(raw_record, type=_Record)
        if record.status == "done":
            report = MigrationReport(
                old,
                new,
                "already_done",
                day=record.day,
                days=record.days,
                total_nodes=record.total_nodes,
                families=record.families,
                at=record.at,
                round_trips=1,
            )
            log.info(
                "market_migration_already_done",
                old=old,
                new=new,
                recorded_at=record.at,
                copied=report.copied,
                action="nothing copied; HDEL the field of "
                f"{migrations_key(namespace)} to migrate again",
            )
            return report
    c = _Copier(redis, op_timeout_s)
    c.round_trips = 1
    old55, new55 = checksum(old), checksum(new)
    marker_sets = ("EpochMarkerSetKey", "DayRolloverEpochMarkerSetKey")

    def first_reads(pipe: Any) -> None:
        pipe.get(keys.current_day(old))
        pipe.get(f"LastKnownDayKey.{old}")
        pipe.get(TOTAL_NODES_KEY)
        for prefix in marker_sets:
            pipe.smembers(f"{prefix}.{old}")
        for table in STARTUP_TABLES:
            pipe.hget(table, old55)

    reads = await c.execute(first_reads)
    for reply in reads:
        _raise_unexpected(reply)
    current, last_known, total = _int(reads[0]), _int(reads[1]), _int(reads[2])
    marker_members = [sorted(m.decode() for m in reads[3 + i]) for i in range(2)]
    table_values = reads[5:8]
    problems: list[str] = []
    day = current if current is not None and current >= 1 else None
    if day is None and last_known is not None and last_known >= 1:
        day = last_known  # CurrentDayKey has a TTL: LastKnownDayKey outlives it
    if day is None:
        problems.append(
            f"the old market {old} has no day (CurrentDayKey.{old} and LastKnownDayKey.{old} "
            "missing or not a positive integer): the per-day families were not copied"
        )
    if total is None:
        problems.append(
            f"{TOTAL_NODES_KEY} is missing or not an integer: the per-slot families "
            "(eligible and slot submission counts, last submissions, node versions) were "
            "not copied"
        )
    day_list = migration_days(day, days) if day is not None else []
    slots = range(1, total + 1) if total is not None else range(0)

    # 1. the start-up hash fields, keyed by EIP-55 address: HSETNX (absent fields only)
    def tables(pipe: Any) -> None:
        for table, value in zip(STARTUP_TABLES, table_values, strict=True):
            if value is not None:
                pipe.hsetnx(table, new55, value)

    fam = c.family("startup_tables")
    fam.missing += sum(v is None for v in table_values)
    if any(v is not None for v in table_values):
        for reply in await c.execute(tables):
            _raise_unexpected(reply)
            if reply:
                fam.copied += 1
            else:
                fam.present += 1

    # 2. every key family, one pipelined copy
    pairs: list[tuple[str, str, str]] = []

    def add(family: str, key: str, new_key: str | None = None) -> None:
        pairs.append((family, key, new_key if new_key is not None else _renamed(old, new, key)))

    add(
        "epochs_in_a_day",
        f"ProtocolState.{old55}.EpochsInADay",
        f"ProtocolState.{new55}.EpochsInADay",
    )
    add("current_day", keys.current_day(old))
    add("last_known_day", f"LastKnownDayKey.{old}")
    details = ("EpochMarkerDetailsKey", "DayRolloverEpochMarkerDetailsKey")
    for prefix, detail, members in zip(marker_sets, details, marker_members, strict=True):
        name = "epoch_markers" if prefix == "EpochMarkerSetKey" else "rollover_markers"
        add(name, f"{prefix}.{old}")
        for epoch in members:
            add(f"{name}_details", f"{detail}.{old}.{epoch}")
    for d in day_list:
        add("eligible_nodes_by_day", f"EligibleNodeByDayKey.{old}.{d}")
        add("zero_count", f"ZeroCountKey.{old}.{d}")
        for s in slots:
            add("eligible_slot_submissions", f"EligibleSlotSubmissionsKey.{old}.{d}.{s}")
            add("slot_submissions", keys.slot_submissions(old, d, s))
    for s in slots:
        add("last_snapshot_submission", f"LastSnapshotSubmissionKey.{old}.{s}")
        add("last_simulated_submission", f"LastSimulatedSubmissionKey.{old}.{s}")
        add("node_version", f"snapshotter:{old}:{s}:node_version")
    # the finalizer's per-day and per-epoch hashes of those days: found by SCAN
    wanted = set(day_list)
    for prefix, family in (
        ("DiscardedSubmissionKey", "discarded"),
        ("EligibleSlotSubmissionByEpochKey", "eligible_by_epoch"),
    ):
        if not wanted:
            break
        for key in await c.scan(f"{prefix}.{old}.*"):
            if _scanned_day(key, f"{prefix}.{old}") in wanted:
                add(family, key)
    await c.copy_keys(pairs)

    if not problems and not any(f.copied or f.present for f in c.families.values()):
        problems.append(
            f"no key of the old market {old} was found: check MARKET_MIGRATION_MAPPINGS "
            "(old:new) and the Redis database"
        )
    status = "incomplete" if problems else "done"
    at = clock()
    record = _Record(status, at, day, day_list, total, c.families, problems)
    with anyio.fail_after(op_timeout_s):
        await redis.hset(migrations_key(namespace), field, msgspec.json.encode(record))
    c.round_trips += 1
    report = MigrationReport(
        old,
        new,
        status,
        day=day,
        days=day_list,
        total_nodes=total,
        families=c.families,
        problems=problems,
        at=at,
        round_trips=c.round_trips,
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    log.info(
        "market_migration",
        old=old,
        new=new,
        status=status,
        day=day,
        days=day_list,
        total_nodes=total,
        copied=report.copied,
        round_trips=report.round_trips,
        elapsed_s=report.elapsed_s,
        families={k: msgspec.structs.asdict(v) for k, v in sorted(c.families.items())},
    )
    for problem in problems:
        log.warning("market_migration_incomplete", old=old, new=new, problem=problem)
    return report


async def migrate_markets(
    redis: aioredis.Redis,
    namespace: str,
    mappings: Iterable[tuple[str, str]],
    days: int,
    *,
    op_timeout_s: float = 5.0,
    reporter: FailureReporter | None = None,
) -> list[MigrationReport]:
    """Every mapping in order; an incomplete one is alerted (Medium) through `reporter`."""
    reports: list[MigrationReport] = []
    for old, new in mappings:
        report = await migrate_market(redis, namespace, old, new, days, op_timeout_s=op_timeout_s)
        reports.append(report)
        if report.problems and reporter is not None:
            await reporter.report(
                Failure(
                    operation="MarketMigration",
                    error="; ".join(report.problems),
                    market=old,
                    action=f"copied {report.copied} keys to {new}; fix the source keys and "
                    "restart to copy the rest (only keys absent at the new market are copied)",
                ),
                severity="Medium",
                always=True,
            )
    return reports


async def migrate_at_start(
    settings: Settings, redis: aioredis.Redis, namespace: str, reporter: FailureReporter
) -> list[MigrationReport]:
    """`run`'s start-up step, before the start-up tables are written: every mapping when
    ENABLE_MARKET_MIGRATION=true (else nothing). A Redis failure stops the start, one line."""
    if not settings.enable_market_migration:
        return []
    if not settings.market_migration_mappings:
        log.warning(
            "market_migration_no_mappings",
            action="ENABLE_MARKET_MIGRATION=true but MARKET_MIGRATION_MAPPINGS is empty: "
            "nothing to migrate",
        )
        return []
    budget = settings.timeouts.redis_operation
    try:
        return await migrate_markets(
            redis,
            namespace,
            settings.market_migration_mappings,
            settings.market_migration_days,
            op_timeout_s=budget,
            reporter=reporter,
        )
    except (RedisError, TimeoutError) as exc:
        raise DependencyError(
            f"Redis: market migration (MARKET_MIGRATION_MAPPINGS) failed: "
            f"{describe_failure(exc, budget)}; nothing was overwritten, restart to finish it "
            "(only keys absent at the new market are copied)"
        ) from None

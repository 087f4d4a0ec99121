"""`seqcollector rewind --to-block N`: roll a stopped collector's namespace back to block N.

It is the rewind the core performs on a reorg whose common ancestor is N: a `Rewind(N)`
input, checked first by `core.rewinds.rewind_to` (only within the retained history), then
applied by the live pipeline exactly as it applies a reorg's (`Pipeline.apply`): the
reorg's effects (`BlockHashByNumberKey` of the blocks above N deleted), the rewound state
and the checkpoint (seq + 1, block N) in one commit script, so a crash leaves the old
state or the new one. With `--record JOURNAL` (the journal `run --record` writes) the input
is journaled first, as every input is, so `run --record JOURNAL` resumes after it.

Nothing of history is rewound, as in a reorg: batched epochs stay batched (their
windows are not reopened, their batches, batch counts and slot counts stay), days and
rollover markers stay decided.

The outbox is left as it is: no entry is cancelled. Every pending entry belongs to an epoch
that stays batched or a day that stays decided (a `submitBatchSize` of batches already
pushed to the finalizer, a reward update whose marker has fired) or is an alert about what
happened; cancelling one would leave the relayer without a call nothing will send again.
Delivered entries cannot be taken back. The report says how many pending entries are of
epochs batched above N.

Refused, with nothing written: while `<ns>:alive` names a running collector
(`runtime.alive`) or another process holds the lease `<ns>:lease` (`runtime.lease`); with
no stored state; for N not below the committed block; for N below
the retained history (the message names the oldest block it can rewind to). The rewind
(not `--dry-run`) takes the lease for its duration and commits fenced by it, as a
collector does: a collector that starts meanwhile stands by until it is released, then
takes over from the rewound checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from seqcollector.config import Settings, Timeouts, mask_url
from seqcollector.core import Rewind, queries
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import QUERY_EFFECTS, DeleteKeys
from seqcollector.core.rewinds import RewindRefusal, batched_above, rewind_to
from seqcollector.core.state import Phase, State, StateFormatError, dump_state, load_state
from seqcollector.errors import DependencyError, OperatorError, SettingsError
from seqcollector.journal_dir import JournalDirSpec, spec_from_settings
from seqcollector.runtime.alive import TTL_S, alive_key, holder
from seqcollector.runtime.cleanup import NoStoredState
from seqcollector.runtime.compose import Delivery, compose_collector
from seqcollector.runtime.executor import ConcurrentWriterError, RedisExecutor, redis_client
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.lease import DEFAULT_LEASE_S, Lease, LeaseHolder, LeaseLost
from seqcollector.runtime.pipeline import Answerer
from seqcollector.runtime.startup import describe_failure

PAGE = 500  # ids per ZRANGE of the outbox, keys per EXISTS
EXAMPLES = 5
_EPOCH_OF_ID = re.compile(r":(0x[0-9a-f]{40}):(\d+)(?::|$)")  # `<kind>:<lc>:<epoch>[:...]`


class RewindRefused(SettingsError):
    """The block asked for cannot be rewound to (exit 2); nothing was written."""


class NamespaceHeld(OperatorError):
    """A running collector holds the namespace (exit 1); nothing was written."""


class MarketRewind(msgspec.Struct):
    market: str  # EIP-55
    reopened: list[int]  # windows queried at the old head, open again (they collect anew)
    dropped: list[int]  # windows released above N: reopened when their blocks are processed
    kept_batched: list[int]  # epochs batched above N: batched they stay, never again
    open_after: list[int]  # every window open after the rewind


class RewindReport(msgspec.Struct):
    namespace: str
    dry_run: bool
    from_block: int
    to_block: int
    resume_from: int  # the block the next `run` processes first
    markets: list[MarketRewind]
    keys_deleted: dict[str, int]  # family -> keys deleted that were there
    keys_named: dict[str, int]  # family -> keys the rewind deletes (present or expired)
    queries_restored: dict[str, int]  # kind -> queries asked again when `run` resumes
    outbox_pending: int  # entries not yet delivered: all kept
    outbox_of_batched_above: int  # of them, entries of epochs batched above N
    outbox_examples: list[str]  # the first ids of those
    journal: str | None = None  # the journal the rewind was appended to
    outbox_cancelled: int = 0


class _NoQueries:
    """The answerer of every query kind for the rewind's pipeline: a rewind asks none."""

    async def answer(self, query: Any) -> Any:
        raise AssertionError(f"a rewind asks no query, got {query!r}")


_NO_QUERIES: dict[type[Any], Answerer] = {kind: _NoQueries() for kind in QUERY_EFFECTS}


async def rewind_namespace(
    redis: aioredis.Redis,
    namespace: str,
    to_block: int,
    *,
    dry_run: bool = False,
    journal: Path | JournalDirSpec | None = None,
    timeouts: Timeouts | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> RewindReport:
    """Rewind `namespace` to block `to_block` (or, `dry_run`, say what that would do) ->
    the report. The rewind is committed as the live pipeline commits a reorg's `Rewind`
    (`Pipeline.apply`: the step, the journal, one commit); `journal`, the one `run --record`
    writes for this namespace, gets the rewind appended (after checking that it replays to
    the stored state), so that `run --record` resumes from it. Raises `NamespaceHeld`,
    `NoStoredState`, `RewindRefused` (or `ResumeError`, a journal that does not fit) with
    nothing written; `ConcurrentWriterError` becomes `NamespaceHeld`."""
    timeouts = timeouts or Timeouts()
    op_timeout_s = timeouts.redis_operation
    with anyio.fail_after(op_timeout_s):
        held = await holder(redis, namespace)
    if held is not None:
        raise NamespaceHeld(_held_message(namespace, held))
    lease = Lease(redis, namespace, lease_s, op_timeout_s=op_timeout_s)
    held_now = await lease.current()
    if held_now is not None:
        raise NamespaceHeld(_lease_message(namespace, held_now, lease_s))

    async def work() -> RewindReport:
        layout = StoreLayout(namespace)
        with anyio.fail_after(op_timeout_s):
            raw, record = await redis.mget([layout.state, layout.checkpoint])
        if raw is None or record is None:
            raise NoStoredState(
                f"namespace {namespace!r} holds no stored state: no collector committed there, "
                "nothing to rewind (check --namespace, and that this is the collector's Redis)"
            )
        config = _loaded(raw if isinstance(raw, bytes) else raw.encode(), namespace).config
        pipeline = compose_collector(  # the one composition root; its outbox is never run here
            RedisExecutor(redis, namespace),
            config,
            Delivery("", "", ""),
            timeouts=timeouts,
            journal=None if dry_run else journal,
            answerers=_NO_QUERIES,
        ).pipeline()
        await pipeline.open()  # the state again, the checkpoint, and the journal checked
        try:
            before = pipeline.state
            plan = load_state(dump_state(before))
            batched = batched_above(plan, to_block)
            result = rewind_to(plan, to_block)
            if isinstance(result, RewindRefusal):
                raise RewindRefused(_refusal_message(namespace, result, plan))
            assert before.head is not None  # rewind_to refuses without blocks
            named = [k for e in result if isinstance(e, DeleteKeys) for k in e.keys]
            present = await _present(redis, named, op_timeout_s)
            pending, of_batched = await _outbox(redis, layout, batched, op_timeout_s)
            report = RewindReport(
                namespace=namespace,
                dry_run=dry_run,
                from_block=before.head.number,
                to_block=to_block,
                resume_from=to_block + 1,
                markets=_markets(before, plan, batched),
                keys_deleted=_by_family(present),
                keys_named=_by_family(named),
                queries_restored=_kinds(plan),
                outbox_pending=pending,
                outbox_of_batched_above=len(of_batched),
                outbox_examples=of_batched[:EXAMPLES],
                journal=_shown_journal(journal),
            )
            if dry_run:
                return report
            now = await lease.acquire()  # the commit is fenced by the lease, as a collector's
            if lease.value is None:
                raise NamespaceHeld(_lease_message(namespace, now, lease_s))
            try:
                await pipeline.apply([Rewind(to_block)])
            except LeaseLost:
                raise NamespaceHeld(_lease_message(namespace, None, lease_s)) from None
            except ConcurrentWriterError:
                raise NamespaceHeld(
                    f"namespace {namespace!r}: a collector committed while the rewind was "
                    "prepared; nothing was rewound. Stop every collector of the namespace, "
                    "then rewind again"
                ) from None
            assert dump_state(pipeline.state) == dump_state(plan)  # the step that was planned
            return report
        finally:
            await lease.release()
            await pipeline.close()

    return await work()


def _lease_message(namespace: str, now: LeaseHolder | None, lease_s: float) -> str:
    by = f" held by {now}" if now is not None else " taken meanwhile"
    return (
        f"namespace {namespace!r} is held by a running collector (lease "
        f"{StoreLayout(namespace).lease}{by}); nothing was rewound: stop every collector of "
        "the namespace (active and standby), then rewind again (a collector that died "
        f"leaves the lease for at most SEQ_HA_LEASE_S, {lease_s:g} s)"
    )


def _loaded(raw: bytes, namespace: str) -> State:
    try:
        return load_state(raw)
    except StateFormatError as exc:
        raise NoStoredState(f"namespace {namespace!r}: {exc}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise NoStoredState(
            f"namespace {namespace!r}: the stored core state cannot be read ({exc}); rewind "
            "with the version that wrote it"
        ) from None


def _held_message(namespace: str, held: dict[str, Any]) -> str:
    if "pid" in held:
        who = f"pid {held.get('pid')} on host {held.get('host')}, started {held.get('started')}"
        how = f"stop it (SIGTERM to pid {held.get('pid')} on {held.get('host')}, or its service)"
    else:
        who, how = f"mark {held.get('value')!r}", "stop it"
    return (
        f"namespace {namespace!r} is held by a running collector ({who}; key "
        f"{alive_key(namespace)}); nothing was rewound: {how}, then rewind again (a collector "
        f"that died leaves the key for at most {TTL_S} s)"
    )


def _refusal_message(namespace: str, r: RewindRefusal, state: State) -> str:
    ns = f"namespace {namespace!r}"
    depth = f"SEQ_MAX_REORG_DEPTH={state.config.max_reorg_depth}"
    if r.reason == "no_blocks":
        return f"{ns} holds a state with no block processed yet: nothing to rewind"
    if r.oldest is None:
        reach = f"it holds no block below the committed block {r.head} to rewind to"
    else:
        reach = f"the oldest block it can rewind to is {r.oldest}"
    if r.reason == "not_below_head":
        return (
            f"{ns}: nothing to rewind: block {r.to_block} is not below the committed block "
            f"{r.head}; give a block below it ({reach})"
        )
    if r.oldest is None:
        return (
            f"{ns}: block {r.to_block} is beyond the retained history: {reach} (the state "
            f"keeps the last {depth} blocks); let the collector process more blocks first"
        )
    return (
        f"{ns}: block {r.to_block} is beyond the retained history: {reach} (committed block "
        f"{r.head}; the state keeps the blocks and windows of the last {depth} blocks). "
        f"Rewind to a block from {r.oldest} on, or set SEQ_MAX_REORG_DEPTH higher to keep "
        "more history from now on"
    )


def _markets(before: State, after: State, batched: dict[str, list[int]]) -> list[MarketRewind]:
    out = []
    for lc, ms in after.domain.markets.items():
        was = before.domain.markets[lc].windows
        out.append(
            MarketRewind(
                checksum(lc),
                reopened=sorted(
                    e
                    for e, w in ms.windows.items()
                    if w.phase is Phase.OPEN and (e not in was or was[e].phase is not Phase.OPEN)
                ),
                dropped=sorted(
                    e for e in was if e not in ms.windows and e not in batched.get(lc, [])
                ),
                kept_batched=batched.get(lc, []),
                open_after=sorted(e for e, w in ms.windows.items() if w.phase is Phase.OPEN),
            )
        )
    return out


def _kinds(state: State) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for q in queries.pending(state):
        kinds[type(q).__name__] = kinds.get(type(q).__name__, 0) + 1
    return kinds


def _by_family(keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in keys:
        family = key.split(".", 1)[0]
        out[family] = out.get(family, 0) + 1
    return out


async def _present(redis: aioredis.Redis, keys: list[str], op_timeout_s: float) -> list[str]:
    """The `keys` that exist (one pipelined EXISTS per key, `PAGE` keys a round trip)."""
    found: list[str] = []
    for i in range(0, len(keys), PAGE):
        chunk = keys[i : i + PAGE]
        with anyio.fail_after(op_timeout_s):
            async with redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.exists(key)
                counts = await pipe.execute()
        found += [k for k, n in zip(chunk, counts, strict=True) if n]
    return found


async def _outbox(
    redis: aioredis.Redis,
    layout: StoreLayout,
    batched: dict[str, list[int]],
    op_timeout_s: float,
) -> tuple[int, list[str]]:
    """-> (entries pending, the ids of those of epochs in `batched`), in emission order."""
    wanted = {(lc, e) for lc, epochs in batched.items() for e in epochs}
    total, start = 0, 0
    of_batched: list[str] = []
    while True:
        with anyio.fail_after(op_timeout_s):
            found = await redis.zrange(layout.outbox_pending, start, start + PAGE - 1)
        if not found:
            return total, of_batched
        for raw in found:
            entry_id = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            total += 1
            m = _EPOCH_OF_ID.search(entry_id)
            if m is not None and (m.group(1), int(m.group(2))) in wanted:
                of_batched.append(entry_id)
        start += PAGE


def _shown_journal(journal: Path | JournalDirSpec | None) -> str | None:
    if isinstance(journal, JournalDirSpec):
        return f"{journal.path} (SEQ_JOURNAL_DIR)"
    return None if journal is None else str(journal)


async def rewind_command(
    settings: Settings, namespace: str, to_block: int, dry_run: bool, journal: Path | None
) -> RewindReport:
    """`seqcollector rewind`: Redis only (no chain), TIMEOUT_REDIS_OPERATION per round trip.
    The rewind is journaled where `run` journals: `--record FILE`, else SEQ_JOURNAL_DIR."""
    redis = redis_client(settings.redis_url())
    budget = settings.timeouts.redis_operation
    target = journal if journal is not None else spec_from_settings(settings, namespace)
    try:
        return await rewind_namespace(
            redis,
            namespace,
            to_block,
            dry_run=dry_run,
            journal=target,
            timeouts=settings.timeouts,
            lease_s=settings.ha_lease_s,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        raise DependencyError(
            f"Redis at {mask_url(settings.redis_url())}: {describe_failure(exc, budget)} "
            "(rewind; nothing was written unless the commit's reply was lost: `seqcollector "
            "status` shows the committed block); check that Redis is up and answering"
        ) from None
    finally:
        await redis.aclose()

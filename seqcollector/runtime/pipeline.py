"""The step loop shared by live runs and simulations: inputs in, one commit per group.

`Pipeline.apply(group)` steps each input through the core, answers the core's queries right
away, each kind by its answerer (`Answerer`, chosen by the query's type from a table: the
submission sets from Redis, `runtime.answers`), their answers become inputs too, journaled
in order; it writes
the inputs to the journal, then commits the group's effects, the new state and the
checkpoint in one MULTI/EXEC. If anything fails before the commit lands, the in-memory state
and the journal are put back as they were, so the same group can simply be applied again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec
import structlog

from seqcollector.config import Timeouts
from seqcollector.core import (
    Block,
    CoreConfig,
    Input,
    Log,
    MarketParams,
    Rewind,
    State,
    dump_state,
    invariants,
    load_state,
    new_state,
    pending_queries,
    step,
)
from seqcollector.core.effects import (
    QUERY_EFFECTS,
    Effect,
    Query,
    QueryDaySet,
    QueryNodeCounts,
    QueryPastDays,
    QuerySubmissionSets,
)
from seqcollector.core.inputs import ANSWERS, Answer
from seqcollector.core.state import BlockRef, StateFormatError
from seqcollector.journal import (
    EffectsDigest,
    JournalError,
    JournalHeader,
    JournalWriter,
    read_header,
    read_inputs,
)
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.metrics import Metrics
from seqcollector.runtime.reward_answers import EligibilityReader
from seqcollector.runtime.workers import WorkerPool

log = structlog.get_logger(__name__)


class Answerer(Protocol):
    """Answers one kind of query (reads only: Redis, a contract view), within the caller's
    deadline; raises to have the whole group retried."""

    async def answer(self, query: Any) -> Answer: ...


class ResumeError(Exception):
    """Stored state, checkpoint and journal do not fit together; the message says why."""


class CoreStepError(RuntimeError):
    """The core raised on an input: a bug (the core refuses bad input, it never raises).

    Names the input (sequence number, type, market, epoch, block) so that it can be found
    in the journal. The group is retried with backoff and every attempt is reported: the
    failure stays visible until a fixed version runs; nothing after it is applied.
    """

    def __init__(self, seq: int, inp: Input, cause: Exception) -> None:
        self.seq = seq
        self.input_type = type(inp).__name__
        self.market, self.epoch, self.block = describe_input(inp)
        where = ", ".join(
            f"{k} {v}"
            for k, v in (("market", self.market), ("epoch", self.epoch), ("block", self.block))
            if v is not None
        )
        super().__init__(
            f"the core raised on input seq={seq} ({self.input_type}{', ' if where else ''}"
            f"{where}): {type(cause).__name__}: {cause}. This is a bug in seqcollector: keep "
            "the journal (--record) or the stored state and report it; nothing after this "
            "input is applied until a fixed version runs"
        )


def describe_input(inp: Input) -> tuple[str | None, int | None, int | None]:
    """(market, epoch, block) an input is about, where it says (numbers outside int64 and
    markets are shown only as far as they can be printed)."""
    if isinstance(inp, Block):
        return None, None, _fit(inp.number)
    if isinstance(inp, Log):
        return None, None, _fit(inp.block_number)
    if isinstance(inp, ANSWERS):
        return _shown(inp.market), _fit(inp.epoch), None
    if isinstance(inp, MarketParams):
        return _shown(inp.market), None, None
    if isinstance(inp, Rewind):
        return None, None, _fit(inp.to_block)
    return None, None, None


def context_of(group: Sequence[Input]) -> dict[str, object]:
    """What a group of inputs is about, bound to every line logged while it is applied:
    its block (`block`, and `to_block` when it spans several), and its market and epoch
    when all its inputs that name one name the same."""
    found: dict[str, object] = {}
    where = {describe_input(inp) for inp in group}
    blocks = [b for _, _, b in where if b is not None]
    if blocks:
        found["block"] = min(blocks)
        if max(blocks) != min(blocks):
            found["to_block"] = max(blocks)
    markets = {(m, e) for m, e, _ in where if m is not None}
    if len(markets) == 1:
        ((market, epoch),) = markets
        found["market"] = market
        if epoch is not None:
            found["epoch"] = epoch
    return found


def _shown(text: str) -> str:
    return text[:64].encode("ascii", "backslashreplace").decode()


def _fit(n: int) -> int | None:
    return n if isinstance(n, int) and -(2**63) <= n < 2**63 else None


class Pipeline:
    """Owns the core state, the input sequence number, the executor and the journal."""

    def __init__(
        self,
        executor: RedisExecutor,
        config: CoreConfig,
        timeouts: Timeouts | None = None,
        journal: Path | None = None,
        on_effects: Callable[[Sequence[Effect]], None] | None = None,
        workers: WorkerPool | None = None,
        reader: Answerer | None = None,
        answerers: Mapping[type[Any], Answerer] | None = None,
        check_invariants: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """`answerers`: the answerer of each query type; `reader` (the submission sets)
        defaults to `SubmissionSetReader` on the executor's Redis, the eligibility keys to
        `EligibilityReader` on it; the contract view (`QueryEligibleOnChain`) must be given
        when the configuration has rewards on. `check_invariants`: run
        `core.invariants.check` after every step (tests and simulations). `metrics`: where
        step, commit and query times and the facts of each landed group are recorded."""
        self.executor = executor
        eligibility = EligibilityReader(executor.redis)
        table: dict[type[Any], Answerer] = {
            QuerySubmissionSets: reader or SubmissionSetReader(executor.redis),
            QueryNodeCounts: eligibility,
            QueryDaySet: eligibility,
            QueryPastDays: eligibility,
        }
        table.update(answerers or {})
        missing = [t.__name__ for t in QUERY_EFFECTS if t not in table]
        if missing and config.rewards:
            raise ValueError(f"no answerer for the core's queries {missing}")
        self.answerers: Mapping[type[Any], Answerer] = table
        self.check_invariants = check_invariants
        self.metrics = metrics
        self.config = config
        self.timeouts = timeouts or Timeouts()
        self.journal_path = journal
        self.on_effects = on_effects
        self.workers = workers or WorkerPool("batch preparation", 4, 5.0)
        self.state: State = new_state(config)
        self.seq = 0
        self.digest: EffectsDigest | None = None
        self._committed = dump_state(self.state)
        self.committed_head: BlockRef | None = None  # the head of the last commit that landed
        self.busy_s = 0.0  # time spent applying groups that landed (throughput figures)
        self._journal: JournalWriter | None = None

    async def open(self) -> None:
        """Load state and checkpoint; on a resumed record, check the journal against them."""
        with anyio.fail_after(self.timeouts.redis_operation):
            raw, checkpoint = await self.executor.load()
        if raw is not None and checkpoint is not None:
            try:
                self.state = load_state(raw)
            except StateFormatError as exc:
                raise ResumeError(f"namespace {self.executor.namespace!r}: {exc}") from None
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ResumeError(
                    f"namespace {self.executor.namespace!r}: the stored core state cannot be "
                    f"read ({exc}); it was not written by this version or was damaged: use a "
                    "version that wrote it, or a new namespace"
                ) from None
            self.seq = checkpoint.seq
            self._committed = raw
            self.committed_head = self.state.head
            if self.state.config != self.config:
                raise ResumeError(
                    f"namespace {self.executor.namespace!r} holds state for another core "
                    f"configuration ({self.state.config}); use the same configuration "
                    "or another namespace"
                )
        if self.journal_path is not None:
            self._open_journal()

    def _open_journal(self) -> None:
        """Fresh run: a new journal. Resumed run: the journal must replay to the stored state."""
        path = self.journal_path
        assert path is not None
        self.digest = EffectsDigest()
        if self.seq == 0:
            if path.exists() and _holds_inputs(path):
                raise ResumeError(
                    f"namespace {self.executor.namespace!r} has no checkpoint in Redis, but "
                    f"--record {path} holds inputs of an earlier run: Redis lost its data "
                    "(a restart without persistence, FLUSHALL, eviction). Run `seqcollector "
                    f"run --recover --record {path}` to rebuild from the journal, or move "
                    "the journal away to start over (the finalizer and the relayer may then "
                    "get epochs they already had)"
                )
            self._journal = JournalWriter(path, JournalHeader(config=self.config))
            return
        if not path.exists():
            raise ResumeError(
                f"--record {path}: the store already holds {self.seq} applied inputs but the "
                "journal does not exist; record into the journal of the first run, or use a "
                "new namespace for a new recording"
            )
        try:
            if read_header(path).config != self.config:
                raise ResumeError(f"--record {path}: the journal is of another configuration")
            state, kept_bytes = new_state(self.config), 0
            for n, (_, offset, inp) in enumerate(read_inputs(path), start=1):
                if n > self.seq:
                    break
                self.digest.add(step(state, inp)[1])
                kept_bytes = offset
        except JournalError as exc:
            raise ResumeError(f"--record {path}: {exc}") from None
        if state.inputs_seen != self.seq or dump_state(state) != self._committed:
            raise ResumeError(
                f"--record {path}: the journal holds {state.inputs_seen} of the {self.seq} "
                "applied inputs, or replays to another state; record into a new namespace"
            )
        with path.open("r+b") as f:  # drop inputs written but never committed (a crash)
            f.truncate(kept_bytes)
        self._journal = JournalWriter(path, JournalHeader(config=self.config), append=True)

    async def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    async def resume_queries(self) -> None:
        """Re-issue the queries a crash left unanswered (before any new input)."""
        queries = pending_queries(self.state)
        if queries:
            log.info("resume_pending_queries", count=len(queries))
            await self.apply(await self._answer_all(queries))

    async def apply(self, group: Sequence[Input]) -> None:
        """Step, answer queries, journal and commit `group` as one transaction, or nothing.

        Deadlines nest (anyio): event processing (the group) > batch preparation (all the
        windows closed by one input) > market processing (one window's read); the Redis
        commit has its own deadline inside the group's. A child never outlives its parent.
        """
        if not group:
            return
        with structlog.contextvars.bound_contextvars(**context_of(group)):
            await self._apply(group)

    async def _apply(self, group: Sequence[Input]) -> None:
        started = time.perf_counter()
        journal_size = self._journal_size()
        fed: list[Input] = []
        effects: list[Effect] = []
        reorgs: list[int] = []  # depth of each rewind that moves the head back (metrics)
        try:
            with anyio.fail_after(self.timeouts.event_processing):
                queue = list(group)
                while queue:
                    inp = queue.pop(0)
                    fed.append(inp)
                    if isinstance(inp, Rewind):
                        reorgs.extend(_reorg_depth(self.state, inp))
                    out = self._step(inp, self.seq + len(fed))
                    effects.extend(out)
                    queries = [e for e in out if isinstance(e, QUERY_EFFECTS)]
                    queue[0:0] = await self._answer_all(queries)
                if self._journal is not None:
                    self._journal.write_many(fed)
                    self._journal.flush()
                state_bytes = dump_state(self.state)
                head = self.state.head
                with (
                    anyio.CancelScope(shield=True),
                    anyio.fail_after(self.timeouts.redis_operation),
                ):
                    commit_started = time.perf_counter()
                    await self.executor.commit(
                        self.seq + len(fed), head.number if head else None, effects, state_bytes
                    )
                    commit_s = time.perf_counter() - commit_started
        except (Exception, anyio.get_cancelled_exc_class()):
            # The group did not land (or its outcome is unknown: the retry's commit tells).
            # Anything else (a simulated process death) leaves everything as a crash would.
            self._rollback(journal_size)
            raise
        self.seq += len(fed)
        self._committed = state_bytes
        self.committed_head = self.state.head
        self.busy_s += time.perf_counter() - started
        if self.metrics is not None:
            size = self.executor.last_commit_bytes
            self.metrics.committed(commit_s, size, len(fed), effects, self.state, reorgs)
        log.debug("group_committed", seq=self.seq, inputs=len(fed), effects=len(effects))
        if self.digest is not None:
            self.digest.add(effects)
        if self.on_effects is not None:
            self.on_effects(effects)

    def _step(self, inp: Input, seq: int) -> list[Effect]:
        """`core.step`; a raise (a bug in the core: it refuses bad input, never raises) becomes
        a `CoreStepError` naming the input."""
        started = time.perf_counter() if self.metrics is not None else 0.0
        try:
            effects = step(self.state, inp)[1]
            if self.check_invariants:
                invariants.check(self.state)
        except Exception as exc:
            raise CoreStepError(seq, inp, exc) from exc
        if self.metrics is not None:
            self.metrics.step_done(time.perf_counter() - started)
        return effects

    async def _answer_all(self, queries: Sequence[Query]) -> list[Input]:
        """Answer several queries (windows, markets) at once, each on a pool worker by the
        answerer of its kind; the answers keep the queries' order, so the journal does not
        depend on timing."""
        answers: list[Input | None] = [None] * len(queries)

        async def answer(i: int, query: Query) -> None:
            answerer = self.answerers[type(query)]
            with structlog.contextvars.bound_contextvars(market=query.market, epoch=query.epoch):
                async with self.workers.worker(f"market {query.market} epoch {query.epoch}"):
                    read_started = time.perf_counter()
                    with anyio.fail_after(self.timeouts.market_processing):
                        answers[i] = await answerer.answer(query)
                    if self.metrics is not None:
                        self.metrics.window_read(query.market, time.perf_counter() - read_started)
                log.debug("query_answered", query=type(query).__name__)

        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeouts.batch_preparation):
                async with anyio.create_task_group() as tg:
                    for i, query in enumerate(queries):
                        tg.start_soon(answer, i, query)
        except BaseExceptionGroup as group:  # report the cause, not the task group
            raise _first_leaf(group) from group
        if self.metrics is not None and queries:
            self.metrics.batch_prepared(time.perf_counter() - started)
        return [a for a in answers if a is not None]

    def _journal_size(self) -> int | None:
        if self._journal is None:
            return None
        self._journal.flush()
        return self._journal.path.stat().st_size

    def _rollback(self, journal_size: int | None) -> None:
        self.state = load_state(self._committed)
        if self._journal is not None and journal_size is not None:
            self._journal.truncate(journal_size)


def _holds_inputs(path: Path) -> bool:
    """True when the journal at `path` has at least one input line after its header."""
    with path.open("rb") as f:
        f.readline()
        return any(line.strip() for line in f)


def _reorg_depth(state: State, rewind: Rewind) -> list[int]:
    """[blocks the rewind takes back] when it moves the head back, else [] (a no-op)."""
    head = state.head
    if head is None or rewind.to_block >= head.number:
        return []
    return [head.number - rewind.to_block]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first

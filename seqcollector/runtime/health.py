"""Liveness, readiness and the error-rate alarm of a running collector (seed section 8.3).

`Health` is fed by the collector loop (`Collector`: a heartbeat, each commit, each failure,
the chain head and the outbox backlog) and answers the probes (`api.probes`):

- `live()`: the collector loop runs. Before it starts (start-up retries) the process counts
  as live ("starting"); once started, its heartbeat (every `Collector.heartbeat_s`) must be
  younger than `HealthLimits.heartbeat_stale_s`; once it stopped (a fatal error, a stop),
  it is not live.
- Standby (active/standby, `runtime.lease`): while `run` waits for the lease (`standby()`),
  the process is live ("standby: lease held by X, token N") and not ready: `ready()` is
  the Redis check and a failing `lease` check with that detail (`/ready` answers 503 with
  `"status": "standby"`). `started()` (the takeover) ends it.
- `ready()`: every check, each with a detail:
  - `redis`: PING answered within TIMEOUT_REDIS_OPERATION (the same round trip reads the
    reorg acknowledgement).
  - `commit`: the last commit is younger than SEQ_READY_COMMIT_BLOCKS x BLOCK_TIME seconds,
    or there is nothing to commit (the confirmed head, chain head - SEQ_CONFIRMATIONS, is
    not above the committed block: a chain that stalls does not make the collector
    unready; during catch-up commits come many per second anyway). Before the first commit
    the age counts from the start.
  - `head_lag`: chain head - SEQ_CONFIRMATIONS - committed block (the blocks the collector
    could have committed and has not) <= SEQ_READY_MAX_LAG_BLOCKS; unknown (no head or no
    commit yet) is not ready.
  - `outbox`: the oldest pending entry of every lane is younger than SEQ_READY_MAX_OUTBOX_AGE
    (its age counts from when this process first saw it pending).
  - `error_rate`: not in the degraded state of the error-rate alarm (below).
  - `deep_reorg`: no reorg the core could not undo whole (its `reorg_too_deep` refusal:
    deeper than MAX_REORG_DEPTH, or below the retained history) since this process started
    or since the last `seqcollector ack-reorg`, which stores the core's count of them under
    `<ns>:reorg:acknowledged` (`reorg_ack_key`); read at every readiness check.

Error rate: failures / (commits + failures) over one MONITORING_HEALTH_CHECK_INTERVAL, where
failures are the collector loop's failed attempts (a group or the pending queries that did
not land: Redis down or refusing, a worker timeout, a core bug; each one the
`FailureReporter` reports) and commits the groups that landed; an interval with neither is 0.
Chain-source failures are retried inside the source and do not count here (they show in
`seqcollector_errors_total{operation="source_..."}` and, if they last, as `head_lag` and
`commit`). `run()` evaluates it at the end of every interval (tumbling windows): a rate above
MONITORING_ERROR_RATE_THRESHOLD enters the degraded state (one High alert, a log line, the
`seqcollector_error_rate_degraded` gauge and a `crossed` transition); it leaves it only at
the end of a full interval at or below the threshold (one Low alert, `recovered`). At most
one transition per interval: it cannot flap on every check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from seqcollector.runtime.failures import Failure, FailureReporter

if TYPE_CHECKING:
    from seqcollector.config import Settings
    from seqcollector.runtime.metrics import Metrics

log = structlog.get_logger(__name__)

DEEP_REORG_COUNTER = "reorg_too_deep"  # the core's counter of reorgs it could not undo whole


def reorg_ack_key(namespace: str) -> str:
    """Where `seqcollector ack-reorg` stores the count of deep reorgs acknowledged."""
    return f"{namespace}:reorg:acknowledged"


@dataclass(frozen=True)
class HealthLimits:
    """The thresholds of the checks (see the module docstring), in seconds and blocks."""

    commit_within_s: float = 20.0
    max_lag_blocks: int = 50
    max_outbox_age_s: float = 300.0
    error_rate_threshold: float = 0.1
    interval_s: float = 60.0
    redis_timeout_s: float = 5.0
    confirmations: int = 0
    max_reorg_depth: int = 64
    heartbeat_stale_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthLimits:
        """SEQ_READY_COMMIT_BLOCKS x BLOCK_TIME, SEQ_READY_MAX_LAG_BLOCKS,
        SEQ_READY_MAX_OUTBOX_AGE, MONITORING_ERROR_RATE_THRESHOLD,
        MONITORING_HEALTH_CHECK_INTERVAL, TIMEOUT_REDIS_OPERATION, SEQ_CONFIRMATIONS,
        SEQ_MAX_REORG_DEPTH."""
        m = settings.monitoring
        return cls(
            commit_within_s=m.ready_commit_blocks * settings.block_time,
            max_lag_blocks=m.ready_max_lag_blocks,
            max_outbox_age_s=m.ready_max_outbox_age,
            error_rate_threshold=m.error_rate_threshold,
            interval_s=m.health_check_interval,
            redis_timeout_s=settings.timeouts.redis_operation,
            confirmations=settings.confirmations,
            max_reorg_depth=settings.max_reorg_depth,
        )


class Check(msgspec.Struct, frozen=True):
    """One probe check: its name, whether it passes, and why (what to do when it fails)."""

    name: str
    ok: bool
    detail: str


class Health:
    """The collector's liveness and readiness; see the module docstring."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        limits: HealthLimits | None = None,
        reporter: FailureReporter | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.limits = limits or HealthLimits()
        self.reporter = reporter or FailureReporter()
        self.metrics = metrics
        self.clock = clock
        self._created = clock()
        self._started: float | None = None
        self._stopped = False
        self.standby_detail: str | None = None  # set while standing by (`standby()`)
        self._beat = self._created
        self._last_commit: float | None = None
        self.committed_block: int | None = None
        self.chain_head: int | None = None
        self._backlog: dict[str, tuple[int, float]] = {}
        self._deep_reorgs = 0
        self._deep_baseline: int | None = None  # the count when this process started
        self._acknowledged = 0
        # error rate: running totals, and their values at the start of the interval
        self.commits = 0
        self.failures = 0
        self._interval_start = (0, 0)
        self.error_rate = 0.0
        self.degraded = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        redis: aioredis.Redis,
        namespace: str,
        reporter: FailureReporter | None = None,
        metrics: Metrics | None = None,
    ) -> Health:
        return cls(redis, namespace, HealthLimits.from_settings(settings), reporter, metrics)

    # -- fed by the collector loop ----------------------------------------------------------

    def started(self, committed_block: int | None, deep_reorgs: int) -> None:
        """The collector loop starts (again, after an in-process restart)."""
        self._started = self._beat = self.clock()
        self._stopped = False
        self.standby_detail = None
        self.committed_block = committed_block
        self._deep_reorgs = deep_reorgs
        if self._deep_baseline is None:
            self._deep_baseline = deep_reorgs

    def stopped(self) -> None:
        self._stopped = True

    def standby(self, detail: str) -> None:
        """Waiting for the lease (`detail`: who holds it); live, not ready."""
        self.standby_detail = detail
        self._stopped = False
        self._beat = self.clock()

    def beat(self) -> None:
        self._beat = self.clock()

    def committed(self, block: int | None, deep_reorgs: int) -> None:
        """A group landed: the committed block and the core's count of deep reorgs."""
        self._last_commit = self.clock()
        self.commits += 1
        self.committed_block = block
        self._deep_reorgs = deep_reorgs

    def failed(self) -> None:
        """An attempt of the collector loop failed (it is retried)."""
        self.failures += 1

    def observe(
        self, chain_head: int | None, backlog: Mapping[str, tuple[int, float]] | None = None
    ) -> None:
        """The latest chain head and the outbox backlog (lane -> (depth, oldest age s));
        None: unchanged."""
        if chain_head is not None:
            self.chain_head = chain_head
        if backlog is not None:
            self._backlog = dict(backlog)

    # -- probes ------------------------------------------------------------------------------

    def live(self) -> Check:
        if self.standby_detail is not None:
            return Check("live", True, f"standby: {self.standby_detail}")
        if self._stopped:
            return Check("live", False, "the collector loop has stopped (see the log)")
        if self._started is None:
            return Check("live", True, "starting")
        age = self.clock() - self._beat
        if age > self.limits.heartbeat_stale_s:
            return Check(
                "live",
                False,
                f"no heartbeat of the collector loop for {age:.1f} s (limit "
                f"{self.limits.heartbeat_stale_s:g} s): the event loop is blocked or stuck",
            )
        return Check("live", True, "running")

    async def ready(self) -> list[Check]:
        """Every readiness check (one Redis round trip)."""
        if self.standby_detail is not None:
            return [
                await self._redis_check(),
                Check("lease", False, f"standby: {self.standby_detail}"),
            ]
        return [
            await self._redis_check(),
            self._commit_check(),
            self._lag_check(),
            self._outbox_check(),
            self._error_rate_check(),
            self._deep_reorg_check(),
        ]

    async def _redis_check(self) -> Check:
        budget = self.limits.redis_timeout_s
        try:
            with anyio.fail_after(budget):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.ping()
                    pipe.get(reorg_ack_key(self.namespace))
                    _, ack = await pipe.execute()
        except TimeoutError:
            return Check(
                "redis", False, f"PING not answered within {budget:g} s (TIMEOUT_REDIS_OPERATION)"
            )
        except (RedisError, OSError) as exc:
            return Check("redis", False, f"PING failed: {type(exc).__name__}: {exc}"[:300])
        self._acknowledged = _int_or(ack, self._acknowledged)
        return Check("redis", True, "PING answered")

    def _commit_check(self) -> Check:
        limit = self.limits.commit_within_s
        since = self._last_commit if self._last_commit is not None else self._started
        if since is None:
            return Check("commit", False, "the collector loop has not started yet")
        age = self.clock() - since
        what = "the last commit" if self._last_commit is not None else "the start (no commit yet)"
        if age <= limit:
            return Check("commit", True, f"{what} {age:.1f} s ago")
        confirmed = None if self.chain_head is None else self.chain_head - self.limits.confirmations
        if (
            confirmed is not None
            and self.committed_block is not None
            and confirmed <= self.committed_block
        ):
            return Check("commit", True, f"nothing to commit (block {self.committed_block})")
        return Check(
            "commit",
            False,
            f"{what} {age:.1f} s ago, over {limit:g} s (SEQ_READY_COMMIT_BLOCKS x BLOCK_TIME) "
            "with blocks waiting: check Redis, the RPC nodes and the log",
        )

    def _lag_check(self) -> Check:
        if self.chain_head is None:
            return Check("head_lag", False, "no chain head seen yet")
        if self.committed_block is None:
            return Check("head_lag", False, f"nothing committed yet (chain head {self.chain_head})")
        lag = max(self.chain_head - self.limits.confirmations - self.committed_block, 0)
        limit = self.limits.max_lag_blocks
        detail = (
            f"{lag} blocks behind the confirmed head (committed {self.committed_block}, "
            f"chain head {self.chain_head}, confirmations {self.limits.confirmations})"
        )
        if lag <= limit:
            return Check("head_lag", True, detail)
        return Check("head_lag", False, f"{detail}: over {limit} (SEQ_READY_MAX_LAG_BLOCKS)")

    def _outbox_check(self) -> Check:
        limit = self.limits.max_outbox_age_s
        late = sorted(
            (lane, depth, age) for lane, (depth, age) in self._backlog.items() if age > limit
        )
        if late:
            shown = "; ".join(
                f"lane {lane}: {depth} pending, the oldest for {age:.0f} s"
                for lane, depth, age in late
            )
            return Check(
                "outbox",
                False,
                f"{shown} (SEQ_READY_MAX_OUTBOX_AGE {limit:g} s): check TX_RELAYER_URL / "
                "SLACK_REPORTING_URL and the outbox_delivery_failed log lines",
            )
        pending = sum(depth for depth, _ in self._backlog.values())
        return Check("outbox", True, f"{pending} pending, none older than {limit:g} s")

    def _error_rate_check(self) -> Check:
        limit = self.limits.error_rate_threshold
        detail = (
            f"error rate {self.error_rate:.3f} over the last interval "
            f"({self.limits.interval_s:g} s), threshold {limit:g}"
        )
        if self.degraded:
            return Check(
                "error_rate", False, f"{detail}: degraded until a full interval is below it"
            )
        return Check("error_rate", True, detail)

    def _deep_reorg_check(self) -> Check:
        seen = max(self._deep_baseline or 0, self._acknowledged)
        new = self._deep_reorgs - seen
        if new <= 0:
            return Check("deep_reorg", True, "no unacknowledged reorg deeper than history")
        return Check(
            "deep_reorg",
            False,
            f"{new} reorg(s) deeper than MAX_REORG_DEPTH ({self.limits.max_reorg_depth}) or "
            "the retained history since the start: what could not be undone is in the "
            "reorg_too_deep alert; once handled, run `seqcollector ack-reorg --namespace "
            f"{self.namespace}`",
        )

    # -- the error-rate alarm ------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate the error rate at the end of every interval, until cancelled."""
        while True:
            await anyio.sleep(self.limits.interval_s)
            await self.evaluate_error_rate()

    async def evaluate_error_rate(self) -> float:
        """Close the current interval: its error rate, and a transition (alerted) when it
        crosses the threshold or recovers -> the rate."""
        commits0, failures0 = self._interval_start
        commits, failures = self.commits - commits0, self.failures - failures0
        self._interval_start = (self.commits, self.failures)
        attempts = commits + failures
        rate = failures / attempts if attempts else 0.0
        self.error_rate = rate
        limit = self.limits.error_rate_threshold
        window = f"{failures} failures and {commits} commits in {self.limits.interval_s:g} s"
        if not self.degraded and rate > limit:
            self.degraded = True
            await self._transition(
                "crossed",
                "High",
                f"error rate {rate:.3f} is above MONITORING_ERROR_RATE_THRESHOLD {limit:g} "
                f"({window})",
                "the collector retries; check Redis, the RPC nodes and the failure log lines",
            )
        elif self.degraded and rate <= limit:
            self.degraded = False
            await self._transition(
                "recovered",
                "Low",
                f"error rate {rate:.3f} is back at or below {limit:g} for a full interval "
                f"({window})",
                "none needed",
            )
        if self.metrics is not None:
            self.metrics.error_rate_evaluated(rate, self.degraded)
        return rate

    async def _transition(self, transition: str, severity: str, message: str, action: str) -> None:
        if transition == "crossed":
            log.warning("error_rate_crossed", detail=message, namespace=self.namespace)
        else:
            log.info("error_rate_recovered", detail=message, namespace=self.namespace)
        if self.metrics is not None:
            self.metrics.error_rate_transition(transition)
        failure = Failure("error_rate", message, action=action)
        await self.reporter.report(failure, severity=severity, always=True)


def _int_or(raw: object, default: int) -> int:
    if isinstance(raw, bytes | str):
        try:
            return int(raw)
        except ValueError:
            log.warning("reorg_ack_unreadable", value=str(raw)[:40])
    return default


async def acknowledge_deep_reorgs(redis: aioredis.Redis, namespace: str) -> int:
    """`seqcollector ack-reorg`: store the core's count of deep reorgs (the namespace's
    stored state) as acknowledged -> that count. A running collector reads it at its next
    readiness check. `NoStoredState` when nothing was committed there."""
    from seqcollector.core import load_state
    from seqcollector.core.state import StateFormatError
    from seqcollector.runtime.cleanup import NoStoredState
    from seqcollector.runtime.layout import StoreLayout

    raw = await redis.get(StoreLayout(namespace).state)
    if not isinstance(raw, bytes):
        raise NoStoredState(
            f"namespace {namespace!r} holds no stored state: nothing to acknowledge (check "
            "--namespace, and that this is the collector's Redis)"
        )
    try:
        count = load_state(raw).counters.get(DEEP_REORG_COUNTER, 0)
    except StateFormatError as exc:
        raise NoStoredState(f"namespace {namespace!r}: {exc}") from None
    await redis.set(reorg_ack_key(namespace), str(count))
    log.info("deep_reorgs_acknowledged", namespace=namespace, count=count)
    return count

"""The composition root: the one place a collector is assembled, for `seqcollector run`, the
fast simulation and the EVM simulation.

A collector is a pipeline (core, executor, journal, worker pool and the table of answerers
of the core's queries), a block source and the outbox dispatcher, run by `Collector`. The
executor and the dispatcher outlive a restart, so they are made once per run and held here;
the pipeline and the source are made anew for each start, because the source resumes from
the blocks the pipeline loaded. Entry points pass what differs between them (settings or a
simulated world's values, the executor, hooks) and never build these parts themselves.

Metrics and health (`runtime.metrics`, `runtime.health`) are given here once and reach
every part from here: the pipeline, the collector loop, the outbox dispatcher, the failure
reporter, the worker pool, and the RPC pool and follower of `CollectorRoot.follower`.
`metrics=None` (FEATURE_METRICS_ENABLED=false) records nothing.

The answerers table is built in `CollectorRoot.answer_table` only: the submission sets are
read from Redis by default; `answerers` adds (or replaces) kinds. A new query kind is an
entry in that argument, given by the callers of `compose_collector`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from seqcollector.config import Settings, Timeouts
from seqcollector.core import CoreConfig
from seqcollector.core.effects import (
    QueryDaySet,
    QueryNodeCounts,
    QueryPastDays,
    QuerySubmissionSets,
)
from seqcollector.core.history import anchor_refs
from seqcollector.journal_dir import JournalDirSpec
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.collector import Collector, InputSource
from seqcollector.runtime.delivery_ledger import DeliveryLedger
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.failures import FailureReporter
from seqcollector.runtime.health import Health
from seqcollector.runtime.lease import Lease
from seqcollector.runtime.metrics import Metrics
from seqcollector.runtime.outbox import OutboxDispatcher
from seqcollector.runtime.pipeline import Answerer, Pipeline
from seqcollector.runtime.reward_answers import EligibilityReader
from seqcollector.runtime.workers import WorkerPool
from seqcollector.sources.follower import ChainFollower
from seqcollector.sources.retrying import Backoff
from seqcollector.sources.rpc import RpcPool


@dataclass(frozen=True)
class Delivery:
    """Where and how the outbox delivers: the relayer (TX_RELAYER_URL, its token), the alert
    webhook (SLACK_REPORTING_URL, empty: alerts are logged and dropped), and the retry and
    timeout figures of `OutboxDispatcher`."""

    relayer_url: str
    relayer_token: str
    alert_url: str
    http_timeout_s: float = 5.0
    max_attempts: int = 3
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 4.0
    redis_timeout_s: float = 5.0
    reward_concurrency: int = 10
    pass_timeout_s: float = 120.0
    min_replicas: int = 0  # SEQ_REDIS_MIN_REPLICAS: replicas that must have what is delivered

    @classmethod
    def from_settings(cls, settings: Settings) -> Delivery:
        """What `seqcollector run` uses: TX_RELAYER_URL, its token, SLACK_REPORTING_URL,
        HTTP_TIMEOUT, RETRY_LIMITS, CONCURRENT_SUBMISSION_COUNT_UPDATES,
        BATCH_PROCESSING_TIMEOUT, TIMEOUT_REDIS_OPERATION (the backoff: the Go
        collector's) and SEQ_REDIS_MIN_REPLICAS."""
        return cls(
            settings.tx_relayer_url,
            settings.tx_relayer_auth_write_token,
            settings.slack_reporting_url,
            http_timeout_s=settings.http_timeout,
            max_attempts=settings.retry_limits,
            reward_concurrency=settings.concurrent_submission_count_updates,
            pass_timeout_s=settings.timeouts.batch_processing,
            redis_timeout_s=settings.timeouts.redis_operation,
            min_replicas=settings.redis_min_replicas,
        )


def poll_interval_s(settings: Settings) -> float:
    """How often `run` and `record` ask the node for a new head: a quarter of BLOCK_TIME,
    between 50 ms and 1 s."""
    return min(1.0, max(settings.block_time / 4, 0.05))


@dataclass(frozen=True)
class Pace:
    """How often the collector loop runs the dispatcher and how it backs off a failed group
    (`Collector`); a simulation goes faster than production."""

    dispatch_interval_s: float = 0.2
    retry_first_s: float = 0.2
    retry_max_s: float = 30.0


@dataclass(frozen=True)
class CollectorRoot:
    """The long-lived parts of one collector run and the rules that make the others."""

    executor: RedisExecutor
    config: CoreConfig
    dispatcher: OutboxDispatcher
    timeouts: Timeouts = field(default_factory=Timeouts)
    journal: Path | JournalDirSpec | None = None
    workers: WorkerPool | None = None
    answerers: Mapping[type[Any], Answerer] = field(default_factory=dict)
    before_read: Callable[[str], None] | None = None
    check_invariants: bool = False
    pace: Pace = Pace()
    reporter: FailureReporter | None = None
    handle_signals: bool = True
    metrics: Metrics | None = None
    health: Health | None = None
    lease: Lease | None = None

    def answer_table(self) -> dict[type[Any], Answerer]:
        """The answerer of each query kind: the submission sets and the eligibility keys from
        the executor's Redis (`before_read` runs before each of their operations), then
        `answerers` over them (the contract view `QueryEligibleOnChain` comes from there)."""
        eligibility = EligibilityReader(self.executor.redis, before=self.before_read)
        table: dict[type[Any], Answerer] = {
            QuerySubmissionSets: SubmissionSetReader(self.executor.redis, before=self.before_read),
            QueryNodeCounts: eligibility,
            QueryDaySet: eligibility,
            QueryPastDays: eligibility,
        }
        table.update(self.answerers)
        return table

    def pipeline(self) -> Pipeline:
        """A new pipeline (not opened: `await pipeline.open()` loads the stored state)."""
        table = self.answer_table()
        return Pipeline(
            self.executor,
            self.config,
            self.timeouts,
            self.journal,
            workers=self.workers,
            reader=table[QuerySubmissionSets],
            answerers=table,
            check_invariants=self.check_invariants,
            metrics=self.metrics,
        )

    def follower_from_settings(
        self, pipeline: Pipeline, pool: RpcPool, settings: Settings, start_block: int
    ) -> ChainFollower:
        """`follower` as `run` and `record` configure it: the poll interval from BLOCK_TIME,
        the follower's backoff, SEQ_CONFIRMATIONS and BLOCK_FETCH_TIMEOUT."""
        return self.follower(
            pipeline,
            pool,
            start_block=start_block,
            poll_interval_s=poll_interval_s(settings),
            retry=Backoff.from_settings(settings),
            confirmations=settings.confirmations,
            attempt_timeout_s=settings.timeouts.block_fetch,
        )

    def follower(
        self,
        pipeline: Pipeline,
        pool: RpcPool,
        *,
        start_block: int,
        poll_interval_s: float,
        retry: Backoff,
        confirmations: int = 0,
        attempt_timeout_s: float | None = None,
    ) -> ChainFollower:
        """The chain follower for an opened `pipeline`: it knows the recent blocks and the
        anchors the core holds, so a reorg across a restart is seen. `pool` records its
        requests in the root's metrics from now on."""
        if self.metrics is not None:
            pool.attach_metrics(self.metrics)
        return ChainFollower(
            pool,
            self.config.protocol_state,
            confirmations=confirmations,
            max_reorg_depth=self.config.max_reorg_depth,
            known=[(b.number, b.hash) for b in pipeline.state.blocks],
            anchors=[(a.number, a.hash) for a in anchor_refs(pipeline.state)],
            start_block=start_block,
            poll_interval_s=poll_interval_s,
            retry=retry,
            attempt_timeout_s=attempt_timeout_s,
            metrics=self.metrics,
        )

    def collector(
        self,
        pipeline: Pipeline,
        source: InputSource,
        *,
        on_progress: Callable[[int, int | None, float], None] | None = None,
        stop_when: Callable[[Pipeline], bool] | None = None,
    ) -> Collector:
        """The collector loop over an opened `pipeline`, fed by `source`."""
        return Collector(
            pipeline,
            source,
            self.dispatcher,
            self.reporter,
            dispatch_interval_s=self.pace.dispatch_interval_s,
            on_progress=on_progress,
            stop_when=stop_when,
            handle_signals=self.handle_signals,
            retry_first_s=self.pace.retry_first_s,
            retry_max_s=self.pace.retry_max_s,
            metrics=self.metrics,
            health=self.health,
            lease=self.lease,
        )


def outbox_dispatcher(
    redis: Redis, namespace: str, delivery: Delivery, ledger: DeliveryLedger | None = None
) -> OutboxDispatcher:
    """The outbox dispatcher of `namespace` delivering as `delivery` says (recording what it
    delivered in `ledger`)."""
    return OutboxDispatcher(
        redis,
        namespace,
        delivery.relayer_url,
        delivery.relayer_token,
        delivery.alert_url,
        http_timeout_s=delivery.http_timeout_s,
        max_attempts=delivery.max_attempts,
        backoff_initial_s=delivery.backoff_initial_s,
        backoff_max_s=delivery.backoff_max_s,
        redis_timeout_s=delivery.redis_timeout_s,
        reward_concurrency=delivery.reward_concurrency,
        pass_timeout_s=delivery.pass_timeout_s,
        min_replicas=delivery.min_replicas,
        ledger=ledger,
    )


def compose_collector(
    executor: RedisExecutor,
    config: CoreConfig,
    delivery: Delivery,
    *,
    timeouts: Timeouts | None = None,
    journal: Path | JournalDirSpec | None = None,
    workers: WorkerPool | None = None,
    answerers: Mapping[type[Any], Answerer] | None = None,
    before_read: Callable[[str], None] | None = None,
    check_invariants: bool = False,
    pace: Pace | None = None,
    reporter: FailureReporter | None = None,
    handle_signals: bool = True,
    metrics: Metrics | None = None,
    health: Health | None = None,
    ledger: DeliveryLedger | None = None,
    lease: Lease | None = None,
) -> CollectorRoot:
    """The collector's root for one run on `executor`'s Redis and namespace.

    `delivery`: where the outbox goes (`Delivery.from_settings`, or the simulated relayer's).
    `answerers`: query kinds answered by other readers than the default (see
    `CollectorRoot.answer_table`); `before_read`: a hook run before each Redis read of the
    default readers (the simulation injects outages there). `journal`: record the inputs
    there (`--record`). `check_invariants`: check the core's invariants after every step.
    `metrics`: recorded into by every part (`Metrics.from_settings`: None when
    FEATURE_METRICS_ENABLED=false); `health`: fed by the collector loop (`Health`);
    `ledger`: the outbox records there what it delivered (`run --recover` reads it).
    `lease` (active/standby, `runtime.lease`): fences every commit of `executor` and every
    POST of the outbox, and the collector loop renews it.
    """
    dispatcher = outbox_dispatcher(executor.redis, executor.namespace, delivery, ledger)
    dispatcher.metrics = metrics
    if lease is not None:
        executor.lease = lease
        dispatcher.lease = lease
    if reporter is not None:
        reporter.metrics = metrics
    if workers is not None:
        workers.attach_metrics(metrics)
    if health is not None and health.metrics is None:
        health.metrics = metrics
    return CollectorRoot(
        executor,
        config,
        dispatcher,
        timeouts=timeouts or Timeouts(),
        journal=journal,
        workers=workers,
        answerers=dict(answerers or {}),
        before_read=before_read,
        check_invariants=check_invariants,
        pace=pace or Pace(),
        reporter=reporter,
        handle_signals=handle_signals,
        metrics=metrics,
        health=health,
        lease=lease,
    )

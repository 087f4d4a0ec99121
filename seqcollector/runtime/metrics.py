"""Prometheus metrics of one collector (seed section 6.5), in a registry of their own.

`Metrics` owns a `CollectorRegistry` (never prometheus_client's global one: tests and
simulations build several); `/metrics` serves `exposition()`. Names follow Prometheus's
conventions: `seqcollector_` prefix, counters end in `_total`, base units (`_seconds`,
`_bytes`, `_blocks`). Endpoint labels are masked (`config.mask_url`: no key of an RPC URL
reaches a label); markets are the core's lowercase addresses.

The runtime records what it knows where it knows it: the pipeline its step, commit and
query times and the facts the core's effects and state show (reorgs, refusals, batched
epochs, open windows: derived in the shell, the core stays pure), the collector loop the
heads and errors, the RPC pool its requests, the worker pool its waits, the outbox its
deliveries and backlog. Cost on the hot path: label children are bound once (`_Bound`), a
step is one `perf_counter` pair and one histogram observation.

`Metrics.from_settings(settings)`: None when FEATURE_METRICS_ENABLED=false (nothing is
recorded, no /metrics route); the worker-pool metrics are left out (not registered) when
WORKER_POOL_METRICS_ENABLED=false.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from seqcollector.config import mask_url
from seqcollector.core.effects import Effect, IncrementBy, Rejected, RelayerCall

if TYPE_CHECKING:
    from seqcollector.config import Settings
    from seqcollector.core.state import State

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# seconds: a core step is tens of microseconds, a commit milliseconds, an RPC call up to
# RPC_REQUEST_TIMEOUT_S (30 s)
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
WAIT_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REORG_DEPTH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 1024)
BATCH_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
SUBMISSION_BUCKETS = (0, 1, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000, 100_000, 500_000)
SIZE_BUCKETS = tuple(float(2**n) for n in range(10, 28, 2))  # 1 KiB .. 128 MiB

OPERATIONS = ("step", "commit", "batch_preparation", "window_read", "rpc_call")
SLOT_SUBMISSIONS_PREFIX = "SlotSubmissionsKey."  # `core.keys.slot_submissions`
BATCH_SIZE_PATH = "/submitBatchSize"
REORG_TOO_DEEP = "reorg_too_deep"  # the core's refusal of a reorg it cannot undo whole


class Metrics:
    """Every metric of one collector; see the module docstring. `worker_pool=False`: the
    worker-pool metrics are not registered (their recorders do nothing)."""

    def __init__(self, *, worker_pool: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.processing_duration = Histogram(
            "seqcollector_processing_duration_seconds",
            "Time spent per operation: a core step, a commit, a batch preparation (every "
            "window closed by one input), a window read (one query), an RPC call.",
            ["operation", "market"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.chain_head = Gauge(
            "seqcollector_chain_head_block", "Latest chain head seen by the source.", registry=r
        )
        self.committed_block = Gauge(
            "seqcollector_committed_block", "Last block committed to Redis.", registry=r
        )
        self.committed_block_timestamp = Gauge(
            "seqcollector_committed_block_timestamp_seconds",
            "Timestamp of the last committed block (unix seconds).",
            registry=r,
        )
        self.head_lag_blocks = Gauge(
            "seqcollector_head_lag_blocks",
            "Chain head minus the last committed block (confirmations included).",
            registry=r,
        )
        self.head_lag_seconds = Gauge(
            "seqcollector_head_lag_seconds",
            "Wall-clock time now minus the last committed block's timestamp.",
            registry=r,
        )
        self.head_lag_seconds.set_function(self._lag_seconds)
        self.reorg_depth = Histogram(
            "seqcollector_reorg_depth_blocks",
            "Reorgs (rewinds that moved the head back) by depth in blocks.",
            buckets=REORG_DEPTH_BUCKETS,
            registry=r,
        )
        self.rewinds = Counter(
            "seqcollector_rewinds_total",
            "Rewinds applied: restored (from a snapshot) or too_deep (beyond MAX_REORG_DEPTH "
            "or the retained history).",
            ["outcome"],
            registry=r,
        )
        self.rpc_requests = Counter(
            "seqcollector_rpc_requests_total",
            "JSON-RPC requests on the wire (a batch is one, method 'batch').",
            ["endpoint", "method"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "seqcollector_rpc_errors_total",
            "Failed JSON-RPC requests: kind transport, rpc (an error answer), unusable, connect.",
            ["endpoint", "method", "kind"],
            registry=r,
        )
        self.endpoint_demotions = Counter(
            "seqcollector_rpc_endpoint_demotions_total",
            "Times an RPC endpoint was demoted (failure or lag).",
            ["endpoint"],
            registry=r,
        )
        self.worker_pool = worker_pool
        if worker_pool:
            self.worker_wait = Histogram(
                "seqcollector_worker_pool_wait_seconds",
                "Time waited to acquire a worker.",
                ["pool"],
                buckets=WAIT_BUCKETS,
                registry=r,
            )
            self.worker_busy = Gauge(
                "seqcollector_worker_pool_busy_workers", "Workers held.", ["pool"], registry=r
            )
            self.worker_size = Gauge(
                "seqcollector_worker_pool_workers", "Workers in the pool.", ["pool"], registry=r
            )
            self.worker_utilisation = Gauge(
                "seqcollector_worker_pool_utilisation_ratio",
                "Busy workers over pool size.",
                ["pool"],
                registry=r,
            )
            self.worker_timeouts = Counter(
                "seqcollector_worker_pool_timeouts_total",
                "Acquisitions that timed out (WORKER_POOL_ACQUISITION_TIMEOUT).",
                ["pool"],
                registry=r,
            )
        self.open_windows = Gauge(
            "seqcollector_open_windows",
            "Submission windows not yet batched, after the last commit.",
            ["market"],
            registry=r,
        )
        self.epochs_batched = Counter(
            "seqcollector_epochs_batched_total",
            "Epochs whose batches were committed.",
            ["market"],
            registry=r,
        )
        self.batches_per_epoch = Histogram(
            "seqcollector_batches_per_epoch",
            "Finalizer batches of each batched epoch.",
            ["market"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.submissions_per_epoch = Histogram(
            "seqcollector_submissions_per_epoch",
            "Submission keys in the batches of each batched epoch.",
            ["market"],
            buckets=SUBMISSION_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "seqcollector_refusals_total",
            "Inputs (or parts) the core refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "seqcollector_errors_total",
            "Failures by operation and exception type (retried unless fatal).",
            ["operation", "kind"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "seqcollector_outbox_pending_entries",
            "Outbox entries waiting for delivery, by lane.",
            ["lane"],
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "seqcollector_outbox_oldest_entry_age_seconds",
            "Age of the lane's oldest pending entry (since this process first saw it).",
            ["lane"],
            registry=r,
        )
        self.relayer_calls = Counter(
            "seqcollector_relayer_calls_total",
            "Relayer POSTs by lane path and HTTP status (or error/timeout).",
            ["path", "status"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "seqcollector_alerts_sent_total",
            "Alerts posted to SLACK_REPORTING_URL: origin runtime (failures, error rate) "
            "or core (outbox).",
            ["origin", "severity"],
            registry=r,
        )
        self.commit_size = Histogram(
            "seqcollector_commit_size_bytes",
            "Bytes sent with one commit (script arguments: state, effects, outbox rows).",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.commits = Counter("seqcollector_commits_total", "Commits that landed.", registry=r)
        self.inputs_applied = Counter(
            "seqcollector_inputs_applied_total", "Inputs committed (answers included).", registry=r
        )
        self.error_rate = Gauge(
            "seqcollector_error_rate_ratio",
            "Failures / (commits + failures) over the last health check interval.",
            registry=r,
        )
        self.error_rate_degraded = Gauge(
            "seqcollector_error_rate_degraded",
            "1 while the error rate is above MONITORING_ERROR_RATE_THRESHOLD.",
            registry=r,
        )
        self.error_rate_transitions = Counter(
            "seqcollector_error_rate_transitions_total",
            "Error-rate threshold crossings (crossed) and recoveries (recovered).",
            ["transition"],
            registry=r,
        )
        self._step = self.processing_duration.labels("step", "")
        self._commit = self.processing_duration.labels("commit", "")
        self._preparation = self.processing_duration.labels("batch_preparation", "")
        self._rpc_call = self.processing_duration.labels("rpc_call", "")
        self._committed_ts: float | None = None
        self._endpoint_labels: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Metrics | None:
        """None when FEATURE_METRICS_ENABLED=false; without the worker-pool metrics when
        WORKER_POOL_METRICS_ENABLED=false."""
        if not settings.features.metrics_enabled:
            return None
        return cls(worker_pool=settings.worker_pool.metrics_enabled)

    def exposition(self) -> bytes:
        """The text exposition format of this registry (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # -- the pipeline ------------------------------------------------------------------------

    def step_done(self, seconds: float) -> None:
        self._step.observe(seconds)

    def batch_prepared(self, seconds: float) -> None:
        self._preparation.observe(seconds)

    def window_read(self, market: str, seconds: float) -> None:
        self.processing_duration.labels("window_read", market).observe(seconds)

    def committed(
        self,
        seconds: float,
        size_bytes: int,
        inputs: int,
        effects: Sequence[Effect],
        state: State,
        reorg_depths: Sequence[int],
    ) -> None:
        """A group landed: its commit, and what its effects and the state show."""
        self._commit.observe(seconds)
        self.commit_size.observe(size_bytes)
        self.commits.inc()
        self.inputs_applied.inc(inputs)
        too_deep = self._effects(effects)
        for depth in reorg_depths:
            self.reorg_depth.observe(depth)
        if reorg_depths:
            restored = len(reorg_depths) - too_deep
            if restored > 0:
                self.rewinds.labels("restored").inc(restored)
            if too_deep:
                self.rewinds.labels("too_deep").inc(too_deep)
        for market, ms in state.domain.markets.items():
            self.open_windows.labels(market).set(len(ms.windows))
        head = state.head
        if head is not None:
            self.committed_block.set(head.number)
            self.committed_block_timestamp.set(head.timestamp)
            self._committed_ts = float(head.timestamp)

    def _effects(self, effects: Sequence[Effect]) -> int:
        """Batched epochs (a `submitBatchSize` call, then the slot counters of its keys),
        refusals -> how many refusals were `reorg_too_deep`."""
        too_deep = 0
        market: str | None = None
        submissions = 0
        for effect in effects:
            if isinstance(effect, RelayerCall) and effect.path == BATCH_SIZE_PATH:
                if market is not None:
                    self.submissions_per_epoch.labels(market).observe(submissions)
                market = str(effect.body.get("dataMarketAddress", "")).lower()
                submissions = 0
                self.epochs_batched.labels(market).inc()
                size = effect.body.get("batchSize", 0)
                self.batches_per_epoch.labels(market).observe(size if isinstance(size, int) else 0)
            elif (
                market is not None
                and isinstance(effect, IncrementBy)
                and effect.key.startswith(SLOT_SUBMISSIONS_PREFIX)
            ):
                submissions += effect.amount
            elif isinstance(effect, Rejected):
                self.refusals.labels(effect.reason).inc()
                too_deep += effect.reason == REORG_TOO_DEEP
        if market is not None:
            self.submissions_per_epoch.labels(market).observe(submissions)
        return too_deep

    # -- the collector loop --------------------------------------------------------------------

    def heads(self, chain_head: int | None, committed: int | None) -> None:
        if chain_head is not None:
            self.chain_head.set(chain_head)
            if committed is not None:
                self.head_lag_blocks.set(max(chain_head - committed, 0))

    def error(self, operation: str, kind: str) -> None:
        self.errors.labels(operation, kind).inc()

    def _lag_seconds(self) -> float:
        if self._committed_ts is None:
            return math.nan
        return max(time.time() - self._committed_ts, 0.0)

    # -- the RPC pool ----------------------------------------------------------------------------

    def endpoint_label(self, endpoint: str) -> str:
        """The label of an endpoint name: a URL masked once (`config.mask_url`), then
        cached; an in-process provider's name (no URL) as it is."""
        label = self._endpoint_labels.get(endpoint)
        if label is None:
            label = mask_url(endpoint) if "://" in endpoint else endpoint
            self._endpoint_labels[endpoint] = label
        return label

    def rpc_request(self, endpoint: str, method: str, seconds: float) -> None:
        self.rpc_requests.labels(self.endpoint_label(endpoint), method).inc()
        self._rpc_call.observe(seconds)

    def rpc_error(self, endpoint: str, method: str, kind: str) -> None:
        self.rpc_errors.labels(self.endpoint_label(endpoint), method, kind).inc()

    def demoted(self, endpoint: str) -> None:
        self.endpoint_demotions.labels(self.endpoint_label(endpoint)).inc()

    # -- the worker pool -------------------------------------------------------------------------

    def worker_acquired(self, pool: str, waited_s: float, busy: int, size: int) -> None:
        if self.worker_pool:
            self.worker_wait.labels(pool).observe(waited_s)
            self.workers(pool, busy, size)

    def workers(self, pool: str, busy: int, size: int) -> None:
        if self.worker_pool:
            self.worker_busy.labels(pool).set(busy)
            self.worker_size.labels(pool).set(size)
            self.worker_utilisation.labels(pool).set(busy / size if size else 0.0)

    def worker_timed_out(self, pool: str) -> None:
        if self.worker_pool:
            self.worker_timeouts.labels(pool).inc()

    # -- the outbox ------------------------------------------------------------------------------

    def relayer_call(self, path: str, status: str) -> None:
        self.relayer_calls.labels(path, status).inc()

    def alert_sent(self, origin: str, severity: str) -> None:
        self.alerts_sent.labels(origin, severity).inc()

    def outbox_backlog(self, lanes: Mapping[str, tuple[int, float]]) -> None:
        """Per lane: (pending entries, age in seconds of the oldest; 0 when empty)."""
        for lane, (depth, age) in lanes.items():
            self.outbox_pending.labels(lane).set(depth)
            self.outbox_oldest_age.labels(lane).set(age)

    # -- health ----------------------------------------------------------------------------------

    def error_rate_evaluated(self, rate: float, degraded: bool) -> None:
        self.error_rate.set(rate)
        self.error_rate_degraded.set(1 if degraded else 0)

    def error_rate_transition(self, transition: str) -> None:
        self.error_rate_transitions.labels(transition).inc()

"""Structured failures: what failed, for which market/epoch/block, and what to do.

Every failure of the live runtime becomes a `Failure`, logged with structlog and sent (best
effort, rate limited) to SLACK_REPORTING_URL directly: the outbox lives in Redis, and a
Redis outage is one of the failures to report. The alert is the outbox's (`runtime.alerts`
body, `runtime.http` client).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import structlog

from seqcollector.runtime.alerts import alert_body
from seqcollector.runtime.http import POST_ERRORS, client_session, post_json

if TYPE_CHECKING:
    from seqcollector.runtime.metrics import Metrics

log = structlog.get_logger(__name__)


class Failure(msgspec.Struct, frozen=True):
    operation: str
    error: str
    block: int | None = None
    market: str | None = None
    epoch: int | None = None
    action: str = "retrying with backoff; nothing is skipped"

    def message(self) -> str:
        where = ", ".join(
            f"{k} {v}"
            for k, v in (("market", self.market), ("epoch", self.epoch), ("block", self.block))
            if v is not None
        )
        at = f" for {where}" if where else ""
        return f"{self.operation} failed{at}: {self.error} ({self.action})"


class FailureReporter:
    """Logs every failure; alerts at most once per operation per `alert_every_s`."""

    def __init__(self, alert_url: str = "", alert_every_s: float = 60.0, timeout_s: float = 5.0):
        self.alert_url = alert_url
        self.alert_every_s = alert_every_s
        self.timeout_s = timeout_s
        self.count = 0
        self._last_alert: dict[str, float] = {}
        self.metrics: Metrics | None = None  # alerts sent (`runtime.metrics`)

    async def report(self, failure: Failure, severity: str = "High", always: bool = False) -> None:
        """Log `failure`; alert unless this operation alerted recently (`always`: alert
        anyway, for a failure that stops the collector)."""
        self.count += 1
        fields = msgspec.structs.asdict(failure)  # unset fields leave the bound context's
        log.error("failure", **{k: v for k, v in fields.items() if v is not None})
        now = time.monotonic()
        recent = now - self._last_alert.get(failure.operation, -1e9) < self.alert_every_s
        if not self.alert_url or (recent and not always):
            return
        self._last_alert[failure.operation] = now
        body = alert_body(failure.operation, failure.message(), severity)
        try:
            async with client_session() as session:
                status, text = await post_json(session, self.alert_url, body, self.timeout_s)
        except POST_ERRORS as exc:
            error = str(exc) or repr(exc)
            log.warning("alert_not_sent", operation=failure.operation, error=error)
            return
        if status != 200:
            log.warning(
                "alert_not_sent", operation=failure.operation, status=status, body=text[:200]
            )
            return
        if self.metrics is not None:
            self.metrics.alert_sent("runtime", severity)

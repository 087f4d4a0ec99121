"""The alert body, as the Go collector's reporting client sends it to SLACK_REPORTING_URL.

Go (`pkgs/clients/reporting.go`) POSTs its `SequencerAlert` struct, JSON in field order:
`{"process_name", "error_msg", "timestamp", "severity"}`, the process name being
`SequencerEventCollector: <step>`. Both senders build it here: the outbox for the core's
`Alert` effects, `FailureReporter` for the runtime's failures.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec

ALERT_PROCESS_PREFIX: Final = "SequencerEventCollector: "


class SequencerAlert(msgspec.Struct, frozen=True):
    """Go's `clients.SequencerAlert`, encoded in its field order."""

    process_name: str
    error_msg: str
    timestamp: str
    severity: str


def alert_body(step: str, message: str, severity: str, at: datetime | None = None) -> bytes:
    """The JSON body of an alert from `step` (`SequencerEventCollector: <step>`), stamped
    `at` (default: now, UTC, ISO 8601). Text that is not valid Unicode (lone surrogates,
    which JSON cannot carry) is sent with those characters escaped as `\\udcxx`."""
    stamp = (at or datetime.now(UTC)).isoformat()
    alert = SequencerAlert(ALERT_PROCESS_PREFIX + step, message, stamp, severity)
    try:
        return msgspec.json.encode(alert)
    except UnicodeEncodeError:
        fields = msgspec.structs.asdict(alert)
        safe = {k: v.encode("utf-8", "backslashreplace").decode() for k, v in fields.items()}
        return msgspec.json.encode(SequencerAlert(**safe))

"""The app `seqcollector run` serves: the read API, /health, /ready and /metrics.

Without AUTH_READ_TOKEN the read endpoints are not served (an empty token would let every
request in; the Go collector serves them open): the probes and /metrics still are, and the
start-up log says so. SEQ_API_ENABLED=false (`features.api`) serves nothing: `run` does not
call this.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import structlog
from litestar import Litestar

from seqcollector.api.app import build_app
from seqcollector.api.probes import probe_routes
from seqcollector.config import Settings
from seqcollector.runtime.health import Health
from seqcollector.runtime.metrics import Metrics

log = structlog.get_logger(__name__)


def collector_app(
    settings: Settings, redis: aioredis.Redis, health: Health, metrics: Metrics | None
) -> Litestar:
    """The read API (when AUTH_READ_TOKEN is set) with the probes of `health` and `metrics`."""
    probes = probe_routes(health, metrics)
    if settings.auth_read_token and settings.data_market_addresses:
        return build_app(settings, redis, route_handlers=probes)
    log.warning(
        "read_api_not_served",
        reason="AUTH_READ_TOKEN is unset: the read endpoints would answer anyone",
        served=["/health", "/ready"] + (["/metrics"] if metrics is not None else []),
        action="set AUTH_READ_TOKEN to serve the read API",
    )
    return Litestar(route_handlers=probes, openapi_config=None, logging_config=None)

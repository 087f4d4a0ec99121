"""The probes of a running collector: GET /health, GET /ready and GET /metrics.

`probe_routes(health, metrics)` gives the Litestar route handlers, for `api.app.build_app`
(`route_handlers=`) or any Litestar app:

- `/health`: 200 `{"status": "ok", "detail": ...}` while the collector loop runs, else 503
  `{"status": "unavailable", "detail": ...}` (`Health.live`).
- `/ready`: 200 `{"status": "ok", "checks": {name: {"ok": true, "detail": ...}}}` when every
  check passes, else 503 with `"status": "unavailable"`, `"failing": [names]` and the same
  `checks` saying why each fails (`Health.ready`); `"status": "standby"` while the
  process waits for the lease (active/standby).
- `/metrics`: the Prometheus text exposition of `metrics`' registry; no route when
  `metrics` is None (FEATURE_METRICS_ENABLED=false).

They are left out of the OpenAPI schema: it documents the read API.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from seqcollector.runtime.health import Health
from seqcollector.runtime.metrics import CONTENT_TYPE, Metrics

JSON = "application/json"


def probe_routes(health: Health, metrics: Metrics | None) -> list[HTTPRouteHandler]:
    """The route handlers of /health, /ready and (when `metrics`) /metrics."""

    @get("/health", include_in_schema=False, sync_to_thread=False)
    def liveness() -> Response[bytes]:
        check = health.live()
        body = {"status": "ok" if check.ok else "unavailable", "detail": check.detail}
        return _json(body, 200 if check.ok else 503)

    @get("/ready", include_in_schema=False)
    async def readiness() -> Response[bytes]:
        checks = await health.ready()
        failing = [c.name for c in checks if not c.ok]
        body: dict[str, Any] = {
            "status": "standby"
            if health.standby_detail is not None
            else ("unavailable" if failing else "ok"),
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        if failing:
            body["failing"] = failing
        return _json(body, 503 if failing else 200)

    routes: list[HTTPRouteHandler] = [liveness, readiness]
    if metrics is not None:

        @get("/metrics", include_in_schema=False, sync_to_thread=False)
        def exposition() -> Response[bytes]:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE, status_code=200)

        routes.append(exposition)
    return routes


def _json(body: dict[str, Any], status: int) -> Response[bytes]:
    return Response(msgspec.json.encode(body), media_type=JSON, status_code=status)

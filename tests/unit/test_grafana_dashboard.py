"""The Grafana dashboard (ops/grafana/seqcollector.json) uses only metrics that exist: every
`seqcollector_*` series its expressions name is a sample a `Metrics` registry exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from seqcollector.runtime.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "seqcollector.json"
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}
# the series the issue asks the dashboard to show
REQUIRED = {
    "seqcollector_head_lag_blocks",
    "seqcollector_processing_duration_seconds_bucket",
    "seqcollector_rpc_errors_total",
    "seqcollector_outbox_pending_entries",
    "seqcollector_outbox_oldest_entry_age_seconds",
    "seqcollector_relayer_calls_total",
    "seqcollector_epochs_batched_total",
    "seqcollector_reorg_depth_blocks_count",
    "seqcollector_error_rate_ratio",
    "seqcollector_worker_pool_utilisation_ratio",
}


def exposed_series(metrics: Metrics) -> set[str]:
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in SUFFIXES[family.type]
    }


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def test_every_metric_the_dashboard_uses_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard["panels"])
    used = {m for e in exprs for m in re.findall(r"\bseqcollector_[a-z0-9_]+", e)}
    known = exposed_series(Metrics())
    assert used and not used - known, f"unknown series in {DASHBOARD}: {sorted(used - known)}"
    assert used >= REQUIRED, f"the dashboard lacks {sorted(REQUIRED - used)}"
    assert any("histogram_quantile" in e and 'operation="commit"' in e for e in exprs)
    assert any("histogram_quantile" in e and 'operation="step"' in e for e in exprs)
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    assert all("_bucket" in e and "by (le" in e for e in quantiles)  # quantiles need le


def test_panels_have_unique_ids_and_a_target() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] for p in panels if p["type"] != "row")

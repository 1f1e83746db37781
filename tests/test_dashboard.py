"""The Grafana dashboard asks only for metrics the code really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from llmbus.metrics import AuditMetrics, GatewayMetrics, TopicMetrics, WorkerMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "helm" / "llmbus" / "dashboards" / "llmbus.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard_metrics(prefix: str) -> set[str]:
    exprs = [
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    ]
    return {
        name
        for expr in exprs
        for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
        if name.startswith(prefix)
    }


def exported_llmbus_metrics() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    AuditMetrics(registry)
    GatewayMetrics(registry)
    TopicMetrics(registry)
    return {
        family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]
    }


def test_every_llmbus_metric_on_the_dashboard_exists() -> None:
    wanted = dashboard_metrics("llmbus_")
    assert len(wanted) >= 15, wanted
    missing = wanted - exported_llmbus_metrics()
    assert not missing, f"dashboard queries metrics nobody exports: {sorted(missing)}"


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["panels"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))

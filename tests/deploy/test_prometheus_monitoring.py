"""Monitoring proven against a real Prometheus (Debian's package, unpacked by `make setup`).

It scrapes a worker on real vLLM, the auditor and the gateway, each its own ``llmbus``
process, every second while chats arrive through Kafka and through the gateway (streamed
and not, batch lane, poison, a 404 and a 429). Then every query of the Grafana dashboard
must parse and return data, and the alert rules shipped with the chart must load into
Prometheus, evaluate without error and pass ``promtool check rules``, both as the file
and as the chart renders them in its PrometheusRule.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmbus.bus import BusProducer
from llmbus.schemas import ChatResult
from llmbus.settings import default_cache_dir
from llmbus.stack.processes import free_port
from llmbus.stack.prometheus_server import PrometheusServer, find_prometheus, promtool_check_rules
from tests.batch_lane import publish_batch
from tests.conftest import Bus
from tests.gateway.keys import create_key
from tests.polling import ProcessOutput

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "llmbus"
DASHBOARD = CHART / "dashboards" / "llmbus.json"
ALERTS = CHART / "alerts" / "llmbus-alerts.yaml"

# Grafana's built-in interval variables, as Grafana would fill them for a 1 s scrape.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "1s", "__range": "5m"}
# Up to 10 minutes: vLLM's CPU build compiles the model on a fresh machine's first start.
WORKER_START_S = 600
# Up to 2 minutes for the last answers to be audited and scraped (1 s scrapes, 0.5 s audit
# flushes): only a broken pipeline takes longer.
DATA_WAIT_S = 120


def dashboard_queries() -> list[str]:
    """Every target's ``expr``, with the dashboard's template variables filled in: an
    interval for Grafana's own, ``.*`` (Grafana's "All") for a variable of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    names = [v["name"] for v in board.get("templating", {}).get("list", [])]
    values = {**{n: ".*" for n in names if n != "datasource"}, **GRAFANA_INTERVALS}

    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [q for p in items for q in [p, *panels(p.get("panels", []))]]

    exprs: list[str] = []
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(values, key=len, reverse=True):  # $model_name before $model
                for form in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
                    expr = expr.replace(form, values[name])
            assert "$" not in expr, f"a variable this test does not know: {target['expr']}"
            exprs.append(expr)
    assert exprs
    return exprs


def reads(expr: str) -> set[str]:
    """The llmbus and vLLM metric names a PromQL expression reads."""
    return set(re.findall(r"\b(?:llmbus_|vllm:)[\w:]+", expr))


def missing(wanted: set[str], scraped: set[str]) -> str:
    """Which of ``wanted`` Prometheus never stored, and any stored with ``_`` for ``:``."""
    lines = [
        f"{m} (stored as {m.replace(':', '_')}: colons escaped at the scrape)"
        if m.replace(":", "_") in scraped
        else m
        for m in sorted(wanted - scraped)
    ]
    return f"never scraped: {', '.join(lines) or 'none'}"


async def query(http: httpx.AsyncClient, prom: PrometheusServer, expr: str) -> dict[str, Any]:
    answer = await http.get(f"{prom.url}/api/v1/query", params={"query": expr})
    body: dict[str, Any] = answer.json()
    return body


def has_data(body: dict[str, Any]) -> bool:
    """A non-empty result with at least one number (a quantile of no observations is NaN)."""
    if body.get("status") != "success":
        return False
    data = body["data"]
    if data["resultType"] == "scalar":
        return not math.isnan(float(data["result"][1]))
    return any(not math.isnan(float(r["value"][1])) for r in data["result"])


async def scraped_since(http: httpx.AsyncClient, prom: PrometheusServer, t: float) -> None:
    """Return once every target was scraped, successfully, after ``t`` (epoch seconds)."""
    while True:
        body = await query(http, prom, "timestamp(up == 1)")
        stamps = [float(r["value"][1]) for r in body["data"]["result"]]
        if len(stamps) == len(prom.jobs) and min(stamps) > t:
            return
        await asyncio.sleep(0.5)


async def drive_traffic(bus: Bus, gateway: str, key: str, limited_key: str, n: int) -> list[int]:
    """One round of everything the dashboard shows; returns the gateway's statuses."""
    s = bus.settings
    async with bus.client(tenant_id="prom-kafka") as client:
        for i in range(3):
            result = await client.chat(f"Count to {i + 3}.", max_tokens=8, temperature=0)
            assert isinstance(result, ChatResult)
        replies = [r async for r in client.stream("Say hi.", max_tokens=8, temperature=0)]
        assert isinstance(replies[-1], ChatResult)
        await client.chat("And the next turn?", max_tokens=4, conversation_id=f"conv-{n}")
    async with BusProducer(s.kafka_bootstrap, client_id="prom", max_request_bytes=1 << 20) as prod:
        # Poison: dead-lettered and counted as a failure by code.
        await prod.send(s.requests_topic, b"\x00 not a request", [], key=b"poison")
        batch_id = f"prom-batch-{n}"
        colours = [f"Name {i + 2} colours." for i in range(2)]
        await publish_batch(prod, s, batch_id, colours, max_tokens=8, temperature=0)
    statuses: list[int] = []
    chat = {"model": s.model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=auth, timeout=120) as http:
        statuses.append((await http.get("/v1/models")).status_code)
        statuses.append((await http.post("/v1/chat/completions", json=chat)).status_code)
        async with http.stream(
            "POST", "/v1/chat/completions", json={**chat, "stream": True}
        ) as stream:
            statuses.append(stream.status_code)
            assert [line async for line in stream.aiter_lines() if line][-1] == "data: [DONE]"
        unknown = {**chat, "model": "no-such-model"}
        statuses.append((await http.post("/v1/chat/completions", json=unknown)).status_code)
        limited = {"Authorization": f"Bearer {limited_key}"}
        for _ in range(2):  # one request a minute: the second is refused
            call = await http.post("/v1/chat/completions", json=chat, headers=limited)
            statuses.append(call.status_code)
    return statuses


async def test_dashboard_queries_and_alert_rules_against_a_real_prometheus(
    bus: Bus, prometheus_factory: Any
) -> None:
    worker_port, auditor_port = free_port(), free_port()
    worker = bus.spawn_worker_process(
        "prom-w", engine=None, extra_env={"LLMBUS_METRICS_PORT": str(worker_port)}
    )
    worker_out = ProcessOutput(worker, b"serving")
    auditor = bus.spawn_cli(["auditor"], {**bus.env(), "LLMBUS_METRICS_PORT": str(auditor_port)})
    ProcessOutput(auditor)
    gateway = await bus.start_gateway()
    key = await create_key(bus, f"prom-{uuid.uuid4().hex[:8]}")
    limited_key = await create_key(bus, "prom-limited", "--rpm", "1")
    for _ in range(WORKER_START_S * 2):
        if worker_out.marked.is_set():
            break
        assert worker.poll() is None, worker_out.text()[-3000:]
        await asyncio.sleep(0.5)
    assert worker_out.marked.is_set(), "the vLLM worker did not start"

    prom = await prometheus_factory(
        {
            "llmbus-worker": [f"127.0.0.1:{worker_port}"],
            "llmbus-auditor": [f"127.0.0.1:{auditor_port}"],
            "llmbus-gateway": [gateway.removeprefix("http://")],  # its /metrics
        },
        rule_files=[ALERTS],
    )
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.wait_for(scraped_since(http, prom, 0), 60)
        # Two rounds with scrapes between: a labelled series is born at its first
        # increment, and rate() needs it seen before the increment to show any.
        statuses: list[int] = []
        for n in range(2):
            statuses += await drive_traffic(bus, gateway, key, limited_key, n)
            started = datetime.now(UTC).timestamp()
            await asyncio.wait_for(scraped_since(http, prom, started), 60)
        assert {200, 404, 429} <= set(statuses), statuses

        exprs = dashboard_queries()
        give_up = loop.time() + DATA_WAIT_S
        while True:  # the audit trail and batch lane finish after the calls return
            answers = {expr: await query(http, prom, expr) for expr in exprs}
            failing = {e: a for e, a in answers.items() if not has_data(a)}
            if not failing or loop.time() > give_up:
                break
            await asyncio.sleep(1)
        names = set((await http.get(f"{prom.url}/api/v1/label/__name__/values")).json()["data"])
        report = "\n".join(
            f"  {e}\n    -> {json.dumps(a)[:300]}\n    {missing(reads(e), names)}"
            for e, a in failing.items()
        )
        assert not failing, f"{len(failing)} of {len(exprs)} dashboard queries:\n{report}"

        # The alert rules: every group of the file loaded, every rule evaluated cleanly.
        groups = [g["name"] for g in yaml.safe_load(ALERTS.read_text())["groups"]]
        give_up = loop.time() + 30  # evaluated every second: 30 s is a broken load
        while True:
            loaded = (await http.get(f"{prom.url}/api/v1/rules")).json()["data"]["groups"]
            rules = [(g["name"], r) for g in loaded for r in g["rules"]]
            if all(r["health"] != "unknown" for _, r in rules) or loop.time() > give_up:
                break
            await asyncio.sleep(0.5)
        assert sorted(g["name"] for g in loaded) == sorted(groups) and rules
        bad = [f"{g}/{r['name']}: {r['lastError']}" for g, r in rules if r["health"] != "ok"]
        assert not bad, "\n".join(bad)
        # An alert on a metric nobody exports evaluates "ok" and never fires: each llmbus
        # or vLLM metric an alert reads must be among those scraped here.
        names = set((await http.get(f"{prom.url}/api/v1/label/__name__/values")).json()["data"])
        unknown = {m for _, r in rules for m in reads(r["query"])} - names
        assert not unknown, f"alerts read metrics nobody exported: {sorted(unknown)}"


def test_promtool_passes_the_alert_file_and_the_charts_prometheus_rule(
    helm: str, tmp_path: Path
) -> None:
    bin_dir = find_prometheus(default_cache_dir())
    done = promtool_check_rules(bin_dir, ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr

    rendered = subprocess.run(
        [
            helm,
            "template",
            "rel",
            str(CHART),
            "--kube-version",
            "1.30.0",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheus-rules.yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert [d["kind"] for d in docs] == ["PrometheusRule"]
    spec = docs[0]["spec"]
    assert spec == yaml.safe_load(ALERTS.read_text()), "the chart ships the file as it is"
    rules = tmp_path / "rendered-rules.yaml"
    rules.write_text(yaml.safe_dump(spec))
    done = promtool_check_rules(bin_dir, rules)
    assert done.returncode == 0, done.stdout + done.stderr

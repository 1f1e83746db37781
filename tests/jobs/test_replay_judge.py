"""The replay report on real runs (Kafka, PostgreSQL, vLLM on the default model), through the
``llmbus`` command: a run still running, an empty one, one whose requests failed, and one
judged by the default model across a worker restart, its page opened in Chromium and its
numbers checked against PostgreSQL's own."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.consumers.engine import Engine
from llmbus.jobs.judge_verdicts import parse_verdict
from tests.browser import HeadlessChromium
from tests.conftest import Bus
from tests.e2e.test_chat_path import wait_for_rows
from tests.jobs.test_batch_jobs import wait_until
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

PROMPTS = [
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Name three colours.",
]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


async def stop(bus: Bus, worker: Any) -> None:
    worker.stop()
    task = next(t for w, t in bus.tasks if w is worker)
    await asyncio.wait_for(task, timeout=60)


async def start_judging(run_id: str, model: str, *, pairs: int, env: dict[str, str]) -> str:
    code, _, err = await report(run_id, "--judge", model, "--no-wait", env=env)
    assert code == 0, err
    found = re.search(rf"judging {pairs} pairs with \S+: (judge_\w+)", err)
    assert found, err
    return found.group(1)


async def report(run_id: str, *extra: str, env: dict[str, str]) -> tuple[int, str, str]:
    return await run_cli("replay", "report", run_id, *extra, env=env)


async def test_reports_of_running_empty_failed_and_judged_runs(
    bus: Bus,
    engine: Engine,
    analyst_db: AsyncEngine,
    chromium: HeadlessChromium,
    tmp_path: Path,
) -> None:
    tenant = f"judge-{uuid.uuid4().hex[:8]}"
    env = bus.env()
    await bus.start_auditor()
    first = await bus.start_worker(engine, worker_id="w1")
    async with bus.client(tenant_id=tenant) as client:
        for n, prompt in enumerate(PROMPTS):
            await client.chat(prompt, max_tokens=12, temperature=0, request_id=f"{tenant}-{n}")
        await client.chat(
            "Which city is the capital of France? Answer in JSON.",
            max_tokens=24,
            temperature=0,
            request_id=f"{tenant}-json",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": SCHEMA},
            },
        )
    await wait_for_rows(
        analyst_db,
        "SELECT request_id FROM results WHERE request_id LIKE :p",
        {"p": f"{tenant}-%"},
        want=4,
    )
    await stop(bus, first)

    # No worker now: the run is recorded and published, and none of it is answered.
    code, out, err = await run_cli("replay", "--tenant", tenant, "--max-tokens", "8", env=env)
    assert code == 0, err
    run_id = out.splitlines()[0]
    code, out, err = await report(run_id, env=env)
    assert code == 0, err
    assert "still running: 4 of 4 not answered yet" in out
    assert "max_tokens" in out and "temperature" in out

    code, out, err = await run_cli("replay", "--tenant", f"{tenant}-nobody", env=env)
    assert code == 1 and "recorded empty" in err
    code, out, err = await report(out.strip(), env=env)
    assert code == 0, err
    assert "requests 0" in out and "matched no logged conversation" in out

    # Too many tokens for the model's context: every replayed request fails.
    code, out, err = await run_cli("replay", "--tenant", tenant, "--max-tokens", "4096", env=env)
    assert code == 0, err
    failing = out.splitlines()[0]

    # Workers from here stop abruptly: half a second of grace, then what is in flight is
    # dropped uncommitted, for the next worker to redo.
    bus.settings = bus.settings.model_copy(update={"shutdown_grace_s": 0.5})
    second = await bus.start_worker(engine, worker_id="w2")
    assert (await wait_until(bus, run_id, done=4)).completed == 4
    assert (await wait_until(bus, failing, done=4)).failed == 4
    code, out, err = await report(failing, env=env)
    assert code == 0, err
    assert "failed 4" in out and "failed 4x: context_length_exceeded" in out
    await stop(bus, second)

    # A judging cancelled before any worker read it: the next --judge sends every pair again.
    model = bus.settings.model
    cancelled = await start_judging(run_id, model, pairs=4, env=env)
    code, out, err = await run_cli("batch", "cancel", cancelled, env=env)
    assert code == 0, err
    third = await bus.start_worker(engine, worker_id="w3")
    assert (await wait_until(bus, cancelled, done=4)).cancelled == 4
    judging = await start_judging(run_id, model, pairs=4, env=env)
    # At once again: the judging's requests are not in the audit trail yet, so nothing may
    # be sent until it ends.
    code, out, err = await report(run_id, "--judge", model, "--no-wait", env=env)
    assert code == 0 and f"following the judging under way: {judging}" in err, err
    await wait_until(bus, judging, done=1)
    await stop(bus, third)  # mid-judging
    await bus.start_worker(engine, worker_id="w4")

    html, csv_path = tmp_path / "report.html", tmp_path / "pairs.csv"
    code, out, err = await report(
        run_id, "--judge", model, "--html", str(html), "--csv", str(csv_path), env=env
    )
    assert code == 0, err
    assert "pairs with" not in err, "a resumed judging sent pairs again"
    every = await _judge_rows(analyst_db, run_id)
    judged = [r for r in every if r["output"] is not None]
    # Exactly one answered judge request per pair, over every judging and the restart.
    assert len(judged) == 4 and len({r["pair"] for r in judged}) == 4
    assert {r["batch_id"] for r in judged} == {judging}
    print(f"\n[judge] answered by {Counter(r['worker'] for r in judged)}")
    verdicts = [parse_verdict(r["output"], r["first"]) for r in judged]
    assert all(v is not None for v in verdicts), [r["output"] for r in judged]
    assert f"judge {model}, 4 pairs (95% CI)" in out
    assert "4 pairs written" in out

    page = await chromium.open(html)
    assert page.errors == []
    await page.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000
    charts = await page.evaluate(
        "Array.from(document.querySelectorAll('svg.chart')).map(s => "
        "Array.from(s.querySelectorAll('.axis-label')).map(t => t.textContent))"
    )
    assert len(charts) == 4 and all(len(labels) == 2 and all(labels) for labels in charts)
    cells = await page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('table.measures tr'))"
        ".slice(1).map(r => [r.cells[0].textContent, Array.from(r.cells).slice(1, 5)"
        ".map(c => c.textContent)]))"
    )
    expected = await _measures_in_sql(analyst_db, run_id)
    for name, values in expected.items():
        assert cells[name] == values, name
    wins = sum(v is not None and v.winner == "replay" for v in verdicts)
    shares = await page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('table.judge tr')).slice(1)"
        ".map(r => [r.cells[0].textContent, r.cells[1].textContent]))"
    )
    assert shares["replay better"] == str(wins)


async def _judge_rows(db: AsyncEngine, run_id: str) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT q.batch_id, q.metadata->>'pair' AS pair, "
                "q.metadata->>'first' AS first, "
                "min(r.output) AS output, min(r.worker_id) AS worker "
                "FROM batches b JOIN requests q ON q.batch_id = b.batch_id "
                "LEFT JOIN results r ON r.request_id = q.request_id "
                "WHERE b.kind = 'judge' AND b.params->>'judge_of' = :run "
                "GROUP BY q.batch_id, q.request_id, q.metadata"
            ),
            {"run": run_id},
        )
        return [dict(r._mapping) for r in rows]


async def _measures_in_sql(db: AsyncEngine, run_id: str) -> dict[str, list[str]]:
    """The latency table computed by PostgreSQL: p50 and p95 (linear interpolation) of the
    originals' and the replay's queue wait, time to first token on a worker, time per
    output token (answers of 2 tokens or more) and output tokens."""
    parts = {
        "queue wait (ms)": "{r}.queue_ms",
        "time to first token (ms)": "{r}.ttft_ms - {r}.queue_ms",
        "time per output token (ms)": "({r}.total_ms - {r}.ttft_ms) / ({r}.completion_tokens - 1)",
        "output tokens (tokens)": "{r}.completion_tokens",
    }
    out: dict[str, list[str]] = {}
    async with db.connect() as conn:
        for name, expr in parts.items():
            cols = ", ".join(
                f"percentile_cont({q}) WITHIN GROUP (ORDER BY {expr.format(r=r)}) "
                f"FILTER (WHERE {r}.completion_tokens > 1 OR {not name.startswith('time per')})"
                for r in ("o", "n")
                for q in (0.5, 0.95)
            )
            row = (
                await conn.execute(
                    text(
                        f"SELECT {cols} FROM requests q "
                        "JOIN results n ON n.request_id = q.request_id "
                        "JOIN results o ON o.request_id = q.replay_of "
                        "WHERE q.batch_id = :run AND n.status = 'ok' AND o.status = 'ok'"
                    ),
                    {"run": run_id},
                )
            ).one()
            out[name] = [f"{float(v):.1f}" for v in row]
    return out

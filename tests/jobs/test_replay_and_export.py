"""Replay and export of logged conversations, through the ``llmbus`` command, on real
Kafka, PostgreSQL and vLLM (the default model)."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.consumers.engine import Engine
from tests.conftest import Bus
from tests.e2e.test_chat_path import wait_for_rows
from tests.jobs.test_batch_jobs import wait_until
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

PROMPTS = [
    "Write a long story about a dragon.",
    "Describe the sea in detail.",
    "Tell me about trees.",
]


async def test_replay_links_to_originals_and_reports_the_difference(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine, tmp_path: Path
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    tenant = f"analyst-{uuid.uuid4().hex[:8]}"
    async with bus.client(tenant_id=tenant) as client:
        originals = {}
        for n, prompt in enumerate(PROMPTS):
            result = await client.chat(
                prompt, max_tokens=16, temperature=0, request_id=f"{tenant}-{n}"
            )
            originals[result.request_id] = result
    # Every original ran to its token limit: the replay below changes only max_tokens.
    assert {r.completion.usage.completion_tokens for r in originals.values()} == {16}
    await wait_for_rows(
        analyst_db,
        "SELECT request_id FROM results WHERE request_id LIKE :p",
        {"p": f"{tenant}-%"},
        want=3,
    )
    env = bus.env()
    code, out, err = await run_cli("replay", "--tenant", tenant, "--dry-run", env=env)
    assert code == 0, err
    assert out.strip() == "3 conversations would be replayed"
    code, out, _ = await run_cli(
        "replay", "--tenant", tenant, "--text", "dragon", "--dry-run", env=env
    )
    assert out.strip() == "1 conversations would be replayed"

    code, out, err = await run_cli("replay", "--tenant", tenant, "--max-tokens", "8", env=env)
    assert code == 0, err
    run_id = out.splitlines()[0]
    assert run_id.startswith("replay_")
    final = await wait_until(bus, run_id, done=3)
    assert (final.kind, final.status, final.completed) == ("replay", "completed", 3)

    rows = await wait_for_rows(
        analyst_db,
        "SELECT q.replay_of, q.params, q.tenant_id, q.messages, r.completion_tokens "
        "FROM requests q JOIN results r USING (request_id) WHERE q.batch_id = :run",
        {"run": run_id},
        want=3,
    )
    assert sorted(r["replay_of"] for r in rows) == sorted(originals)
    for row in rows:
        assert row["params"]["max_tokens"] == 8 and row["params"]["temperature"] == 0
        assert row["tenant_id"] == tenant
        assert row["completion_tokens"] == 8
        assert row["messages"][0]["content"] in PROMPTS

    html = tmp_path / "report.html"
    code, out, err = await run_cli("replay", "report", run_id, "--html", str(html), env=env)
    assert code == 0, err
    # 8 tokens are a prefix of 16: nothing identical.
    assert "requests 3: compared 3, identical 0 (0%), failed 0" in out
    assert re.search(r"output tokens\s+p50 16  p95 16 tokens\s+p50 8  p95 8 tokens", out)
    assert re.search(r"max_tokens\s+16\s+8", out)
    assert "most different pairs" in out
    page = html.read_text()
    assert page.startswith("<!doctype html>") and page.count("<circle") == 3


async def test_export_round_trips_selected_conversations(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine, tmp_path: Path
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    tenant = f"export-{uuid.uuid4().hex[:8]}"
    async with bus.client(tenant_id=tenant, user_id="ana") as client:
        sent = [
            await client.chat(f"Say the number {n}.", max_tokens=8, temperature=0) for n in range(3)
        ]
    await wait_for_rows(
        analyst_db,
        "SELECT request_id FROM requests JOIN results USING (request_id) WHERE tenant_id = :t",
        {"t": tenant},
        want=3,
    )
    out = tmp_path / "conv.jsonl"
    code, stdout, err = await run_cli("export", "--tenant", tenant, "-o", str(out), env=bus.env())
    assert code == 0, err
    assert stdout.strip() == f"3 conversations written to {out}"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    assert set(by_id) == {r.request_id for r in sent}
    for result in sent:
        line = by_id[result.request_id]
        assert line["output"] == result.completion.choices[0].message.content
        assert line["completion_tokens"] == result.completion.usage.completion_tokens
        assert line["user_id"] == "ana" and line["status"] == "ok"
        assert line["messages"][0]["role"] == "user"
        assert line["params"]["max_tokens"] == 8
        assert line["created_at"].endswith("+00:00")

    parquet = tmp_path / "conv.parquet"
    code, stdout, err = await run_cli(
        "export", "--tenant", tenant, "-o", str(parquet), env=bus.env()
    )
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 2 and "Parquet export needs pyarrow" in err
        assert not parquet.exists()
    else:
        import pyarrow.parquet as pq

        assert code == 0, err
        table = pq.read_table(parquet)
        assert sorted(table.column("request_id").to_pylist()) == sorted(by_id)

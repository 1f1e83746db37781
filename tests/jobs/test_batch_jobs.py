"""Batch jobs end to end, through the ``llmbus batch`` command, on real Kafka,
PostgreSQL and vLLM (the default model)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from llmbus.consumers.engine import Engine
from llmbus.jobs.commands import open_jobs
from llmbus.store.batch_store import BatchStatus
from tests.conftest import Bus
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

QUESTIONS = ["What is 2+2?", "Name a colour.", "Say hello.", "What is the capital of France?"]


def write_batch(path: Path, n: int, *, model: str, max_tokens: int = 8) -> list[str]:
    ids = [f"req-{i:05d}" for i in range(n)]
    with path.open("w") as fh:
        for i, custom_id in enumerate(ids):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            fh.write(
                json.dumps(
                    {
                        "custom_id": custom_id,
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    return ids


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def batch_status(bus: Bus, batch_id: str) -> dict[str, Any]:
    code, out, err = await run_cli("batch", "status", batch_id, "--json", env=bus.env())
    assert code == 0, err
    return dict(json.loads(out))


async def wait_until(bus: Bus, batch_id: str, done: int, timeout_s: float = 300) -> BatchStatus:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    async with open_jobs(bus.settings.model_copy(update=_db(bus))) as jobs:
        while True:
            status = await jobs.store.status(batch_id)
            if status.done >= done or loop.time() > give_up:
                return status
            await asyncio.sleep(0.5)


def _db(bus: Bus) -> dict[str, Any]:
    from pydantic import SecretStr

    return {"database_url": SecretStr(bus.stack.postgres.url("llmbus_writer"))}


async def test_submit_wait_status_results(bus: Bus, engine: Engine, tmp_path: Path) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    ids = write_batch(tmp_path / "in.jsonl", 12, model=bus.settings.model, max_tokens=16)
    code, out, err = await run_cli(
        "batch", "submit", str(tmp_path / "in.jsonl"), "--wait", "--tenant", "acme", env=bus.env()
    )
    assert code == 0, err
    batch_id = out.splitlines()[0]
    assert batch_id.startswith("batch_")
    assert "published [" in err and "12/12" in err, "the publish progress bar is shown"
    assert "completed" in out.splitlines()[-1]

    status = await batch_status(bus, batch_id)
    assert status["status"] == "completed"
    assert (status["total"], status["completed"], status["failed"], status["cancelled"]) == (
        12,
        12,
        0,
        0,
    )
    assert status["in_progress"] == 0 and status["finished_at"] is not None

    code, out, err = await run_cli(
        "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"),
        "--errors", str(tmp_path / "err.jsonl"), env=bus.env(),
    )  # fmt: skip
    assert code == 0, err
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "err.jsonl") == []
    assert sorted(line["custom_id"] for line in lines) == ids
    for line in lines:
        assert line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200
        assert response["body"]["object"] == "chat.completion"
        assert response["body"]["choices"][0]["message"]["content"]
        assert 0 < response["body"]["usage"]["completion_tokens"] <= 16
    france = next(line for line in lines if line["custom_id"] == "req-00003")
    assert "Paris" in france["response"]["body"]["choices"][0]["message"]["content"]

    code, out, _ = await run_cli("batch", "list", env=bus.env())
    assert code == 0 and batch_id in out

    # Too late to cancel: the batch stays completed, counts and all.
    code, out, err = await run_cli("batch", "cancel", batch_id, env=bus.env())
    assert code == 0, err
    assert (await batch_status(bus, batch_id))["status"] == "completed"
    assert "cancelling" not in out


async def test_invalid_file_enqueues_nothing_unless_skipping(bus: Bus, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    write_batch(path, 3, model=bus.settings.model)
    with path.open("a") as fh:
        fh.write("{broken\n")
        fh.write(
            json.dumps({"custom_id": "x", "method": "GET", "url": "/v1/chat/completions"}) + "\n"
        )
    code, out, err = await run_cli("batch", "submit", str(path), env=bus.env())
    assert code == 1
    assert "2 invalid line(s)" in err and "nothing was enqueued" in err
    assert "line 4: not JSON" in err and "line 5: method" in err
    assert out == ""
    code, out, _ = await run_cli("batch", "list", "--limit", "1000", env=bus.env())
    assert "mixed.jsonl" not in out  # no batch was recorded
    async with open_jobs(bus.settings.model_copy(update=_db(bus))) as jobs:
        assert not [s for s in await jobs.store.recent(limit=1000) if s.source == "mixed.jsonl"]

    code, out, err = await run_cli("batch", "submit", str(path), "--skip-invalid", env=bus.env())
    assert code == 0, err
    assert "skipped line 4" in err and "skipped line 5" in err
    status = await batch_status(bus, out.splitlines()[0])
    assert status["total"] == 3 and status["status"] == "in_progress"

    code, _, err = await run_cli("batch", "status", "batch_nope", env=bus.env())
    assert code == 2 and "no batch 'batch_nope'" in err


async def test_interactive_is_served_ahead_of_a_batch_backlog_which_is_then_cancelled(
    bus: Bus, engine: Engine, tmp_path: Path
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    write_batch(tmp_path / "big.jsonl", 2000, model=bus.settings.model, max_tokens=64)
    code, out, err = await run_cli("batch", "submit", str(tmp_path / "big.jsonl"), env=bus.env())
    assert code == 0, err
    batch_id = out.strip()
    await wait_until(bus, batch_id, done=1)  # the backlog is being worked on

    async with bus.client() as client:
        result = await client.chat("What is the capital of France?", max_tokens=16, temperature=0)
    assert "Paris" in result.completion.choices[0].message.content
    during = await batch_status(bus, batch_id)
    print(f"interactive answered while the batch had {during['in_progress']} of 2000 open")
    assert during["in_progress"] > 1500, "the interactive request did not wait for the backlog"

    code, out, err = await run_cli("batch", "cancel", batch_id, env=bus.env())
    assert code == 0, err
    assert "cancelling" in out or "cancelled" in out
    final = await wait_until(bus, batch_id, done=2000, timeout_s=240)
    assert final.status == "cancelled"
    assert final.done == 2000 and final.failed == 0
    assert final.cancelled > 1500 and final.completed > 0

    code, _, err = await run_cli(
        "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"),
        "--errors", str(tmp_path / "err.jsonl"), env=bus.env(),
    )  # fmt: skip
    assert code == 0, err
    errors = read_jsonl(tmp_path / "err.jsonl")
    assert len(errors) == final.cancelled
    assert {e["error"]["code"] for e in errors} == {"cancelled"}
    assert len(read_jsonl(tmp_path / "out.jsonl")) == final.completed


async def finish_across_a_crash(
    bus: Bus, engine: Engine, batch_file: Path, *, step_s: float, kill_at: int, timeout_s: float
) -> tuple[BatchStatus, list[dict[str, Any]]]:
    """Submit ``batch_file``; a first worker (stand-in engine, a real process) is killed -9
    once ``kill_at`` requests are done, and a worker on ``engine`` takes over its partitions
    and finishes the batch. Returns the status at the kill and the result lines, checked to
    be exactly one per input line."""
    total = len(read_jsonl(batch_file))
    first = bus.spawn_worker_process("doomed", step_s=step_s, max_num_seqs=16)
    code, out, err = await run_cli("batch", "submit", str(batch_file), env=bus.env())
    assert code == 0, err
    batch_id = out.strip()
    midway = await wait_until(bus, batch_id, done=kill_at)
    assert kill_at <= midway.done < total
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    await bus.start_worker(engine, worker_id="survivor")
    final = await wait_until(bus, batch_id, done=total, timeout_s=timeout_s)
    assert final.status == "completed", final
    assert (final.completed, final.failed, final.cancelled) == (total, 0, 0)

    results = batch_file.with_suffix(".out.jsonl")
    code, _, err = await run_cli("batch", "results", batch_id, "-o", str(results), env=bus.env())
    assert code == 0, err
    lines = read_jsonl(results)
    custom_ids = sorted(line["custom_id"] for line in read_jsonl(batch_file))
    assert sorted(line["custom_id"] for line in lines) == custom_ids
    return midway, lines


async def test_a_thousand_requests_complete_exactly_once_across_a_worker_crash(
    bus: Bus, engine: Engine, tmp_path: Path
) -> None:
    await bus.start_auditor()
    write_batch(tmp_path / "k.jsonl", 1000, model=bus.settings.model, max_tokens=4)
    midway, lines = await finish_across_a_crash(
        bus, engine, tmp_path / "k.jsonl", step_s=0.05, kill_at=300, timeout_s=600
    )
    assert len(lines) == 1000
    print(f"killed at {midway.done}/1000 done; 1000 result lines, one per custom_id")


class CountingEngine:
    """The session's real engine, counting every request that reaches it."""

    def __init__(self, inner: Engine) -> None:
        self._inner = inner
        self.started: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def serve(self, call: Any) -> Any:
        self.started.append(call.request_id)
        return self._inner.serve(call)


async def test_batches_cancelled_before_any_worker_started_never_reach_the_engine(
    bus: Bus, engine: Engine, tmp_path: Path
) -> None:
    """The cancel is on the control topic before the worker exists: the worker must read
    it at start-up, so every queued request is answered ``cancelled`` without running."""
    import openai

    from tests.gateway.keys import create_key

    await bus.start_auditor()
    url = await bus.start_gateway()
    gateway = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=await create_key(bus, "acme"), max_retries=0
    )
    write_batch(tmp_path / "cli.jsonl", 3, model=bus.settings.model)
    code, out, err = await run_cli(
        "batch", "submit", str(tmp_path / "cli.jsonl"), "--tenant", "acme", env=bus.env()
    )
    assert code == 0, err
    by_cli = out.strip()
    code, out, err = await run_cli("batch", "cancel", by_cli, env=bus.env())
    assert code == 0, err
    assert "cancelling" in out

    write_batch(tmp_path / "http.jsonl", 4, model=bus.settings.model)
    upload = await gateway.files.create(
        file=("http.jsonl", (tmp_path / "http.jsonl").read_bytes()), purpose="batch"
    )
    created = await gateway.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    by_http = created.id
    assert (await gateway.batches.cancel(by_http)).status == "cancelling"

    counting = CountingEngine(engine)
    await bus.start_worker(counting)  # type: ignore[arg-type]
    for batch_id, total in ((by_cli, 3), (by_http, 4)):
        final = await wait_until(bus, batch_id, done=total, timeout_s=120)
        assert (final.status, final.total, final.completed, final.failed, final.cancelled) == (
            "cancelled",
            total,
            0,
            0,
            total,
        ), final
        # The command line and the gateway tell the same story.
        cli = await batch_status(bus, batch_id)
        assert (cli["status"], cli["completed"], cli["cancelled"], cli["in_progress"]) == (
            "cancelled",
            0,
            total,
            0,
        )
        seen = await gateway.batches.retrieve(batch_id)
        assert seen.status == "cancelled" and seen.request_counts is not None
        counts = seen.request_counts
        assert (counts.total, counts.completed, counts.failed) == (total, 0, total)
        assert seen.cancelled_at is not None and seen.completed_at is None
    assert counting.started == [], "a request of a cancelled batch reached the engine"

    # The worker is alive and serving: a later, uncancelled batch runs normally.
    write_batch(tmp_path / "after.jsonl", 2, model=bus.settings.model)
    code, out, err = await run_cli("batch", "submit", str(tmp_path / "after.jsonl"), env=bus.env())
    assert code == 0, err
    after = await wait_until(bus, out.strip(), done=2, timeout_s=120)
    assert (after.status, after.completed) == ("completed", 2)
    assert len(counting.started) == 2

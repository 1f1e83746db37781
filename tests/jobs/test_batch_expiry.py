"""A batch past its completion window ends ``expired``: what finished in the window is its
output, every other line a ``batch_expired`` error, as OpenAI's Batch API does (real
Kafka and PostgreSQL; the stand-in engine paces the work)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine
from tests.jobs.test_batch_jobs import batch_status, read_jsonl, wait_until, write_batch
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

WINDOW_S = 6.0


async def test_a_batch_past_its_window_expires_with_its_finished_lines(
    bus: Bus, tmp_path: Path
) -> None:
    # Four at a time, about a second each: a 6 s window finishes some of 60 lines, not all.
    await bus.start_worker(EchoEngine(step_s=0.25, max_num_seqs=4))
    await bus.start_auditor()
    async with bus.client() as client:
        await client.chat("ready?")  # the worker holds its partitions before the clock starts
    ids = write_batch(tmp_path / "in.jsonl", 60, model=bus.settings.model)
    code, out, err = await run_cli(
        "batch", "submit", str(tmp_path / "in.jsonl"),
        "--completion-window-h", str(WINDOW_S / 3600), env=bus.env(),
    )  # fmt: skip
    assert code == 0, err
    batch_id = out.strip()

    # Workers refuse what is left by its deadline; the counts settle once all are answered.
    final = await wait_until(bus, batch_id, done=60, timeout_s=120)
    assert final.status == "expired", final
    assert final.expires_at is not None and final.finished_at == final.expires_at
    assert 0 < final.completed < 60 and final.failed == 0 and final.cancelled == 0
    assert final.completed + final.expired == 60
    status = await batch_status(bus, batch_id)
    assert (status["status"], status["expired"], status["in_progress"]) == (
        "expired",
        60 - final.completed,
        0,
    )

    code, _, err = await run_cli(
        "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"),
        "--errors", str(tmp_path / "err.jsonl"), env=bus.env(),
    )  # fmt: skip
    assert code == 0, err
    done, expired = read_jsonl(tmp_path / "out.jsonl"), read_jsonl(tmp_path / "err.jsonl")
    assert len(done) == final.completed and len(expired) == final.expired
    assert sorted(line["custom_id"] for line in done + expired) == ids
    assert all(line["response"]["status_code"] == 200 for line in done)
    for line in expired:
        assert line["response"] is None
        assert line["error"]["code"] == "batch_expired"
        assert "completion window expired" in line["error"]["message"]

"""An embedding batch through ``llmbus batch``, across a worker killed -9, on real Kafka,
PostgreSQL and the real pooling engine (all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmbus.consumers.engine import Engine
from tests.conftest import Bus
from tests.jobs.test_batch_jobs import finish_across_a_crash

pytestmark = pytest.mark.integration


def write_embedding_batch(path: Path, n: int, *, model: str) -> list[str]:
    ids = [f"doc-{i:05d}" for i in range(n)]
    with path.open("w") as fh:
        for i, custom_id in enumerate(ids):
            body = {"model": model, "input": [f"document {i}", f"its title {i % 7}"]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings"}
            fh.write(json.dumps({**line, "body": body}) + "\n")
    return ids


async def test_a_thousand_embedding_lines_complete_exactly_once_across_a_worker_crash(
    embedding_bus: Bus, embedding_engine: Engine, tmp_path: Path
) -> None:
    bus = embedding_bus
    await bus.start_auditor()
    write_embedding_batch(tmp_path / "e.jsonl", 1000, model=bus.settings.model)
    # One stand-in step per call: slow enough to be killed midway; the real model finishes.
    midway, lines = await finish_across_a_crash(
        bus, embedding_engine, tmp_path / "e.jsonl", step_s=0.5, kill_at=200, timeout_s=300
    )
    assert len(lines) == 1000
    real = 0
    for line in lines:
        body = line["response"]["body"]
        assert line["error"] is None and body["object"] == "list"
        assert [d["index"] for d in body["data"]] == [0, 1]
        real += len(body["data"][0]["embedding"]) == 384
    # Answered but not yet audited when it died: at most a second or two of its work.
    assert real >= 1000 - midway.done - 100, "the survivor's answers are real vectors"
    print(f"killed at {midway.done}/1000 done; 1000 result lines, {real} from the real model")

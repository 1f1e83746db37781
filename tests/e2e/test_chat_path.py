"""The whole path on real parts: client -> Kafka -> worker (vLLM) -> Kafka -> client,
and the auditor's rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import collections

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.consumers.engine import Engine
from llmbus.schemas import ChatResult, StreamDelta
from tests.conftest import Bus

pytestmark = pytest.mark.integration


async def wait_for_rows(
    db: AsyncEngine, sql: str, params: dict[str, object], want: int, timeout_s: float = 30
) -> list[dict[str, object]]:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while True:
        async with db.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(text(sql), params)]
        if len(rows) >= want or loop.time() > give_up:
            return rows
        await asyncio.sleep(0.2)


async def test_chat_answers_and_is_audited(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    async with bus.client(tenant_id="acme", user_id="ana") as client:
        result = await client.chat(
            "What is the capital of France?", max_tokens=32, temperature=0.0, request_id="capital-1"
        )
    content = result.completion.choices[0].message.content
    assert "Paris" in content
    assert result.completion.usage.completion_tokens > 0
    assert result.completion.usage.prompt_tokens > 5
    assert result.timings.total_ms >= result.timings.queue_ms

    rows = await wait_for_rows(
        analyst_db,
        "SELECT q.request_id, q.tenant_id, q.user_id, q.messages, q.params, q.model, "
        "r.status, r.output, r.finish_reason, r.completion_tokens, r.worker_id "
        "FROM requests q JOIN results r USING (request_id) WHERE q.request_id = :rid",
        {"rid": "capital-1"},
        want=1,
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["tenant_id"] == "acme" and row["user_id"] == "ana"
    assert row["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert row["params"]["max_tokens"] == 32 and row["params"]["temperature"] == 0.0
    assert row["model"] == bus.settings.model
    assert row["status"] == "ok" and row["output"] == content
    assert row["completion_tokens"] == result.completion.usage.completion_tokens
    assert row["worker_id"] == "w1"


async def test_stream_yields_deltas_then_final(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    async with bus.client() as client:
        replies = [
            r async for r in client.stream("Name three colours.", max_tokens=24, temperature=0.0)
        ]
    deltas = [r for r in replies if isinstance(r, StreamDelta)]
    assert isinstance(replies[-1], ChatResult)
    assert len(deltas) >= 2, "streaming should deliver the answer in pieces"
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    final = replies[-1].completion.choices[0].message.content
    assert "".join(d.content for d in deltas) == final


async def test_fifty_concurrent_requests_each_answered_once(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    async with bus.client() as client:
        ids = [f"c{i}" for i in range(50)]
        results = await asyncio.gather(
            *(
                client.chat(f"Say the number {i}.", max_tokens=16, temperature=0.0, request_id=rid)
                for i, rid in enumerate(ids)
            )
        )
    assert sorted(r.request_id for r in results) == sorted(ids)
    rows = await wait_for_rows(
        analyst_db,
        "SELECT request_id FROM results WHERE request_id = ANY(:ids)",
        {"ids": ids},
        want=50,
    )
    counts = collections.Counter(r["request_id"] for r in rows)
    assert len(counts) == 50 and set(counts.values()) == {1}

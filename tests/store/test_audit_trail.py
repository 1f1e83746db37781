"""The audit trail at scale: daily partitions made ahead and pruned by queries, retention
that drops whole days and keeps the usage aggregates, content retention that keeps
metadata, and usage counted once however often a batch is delivered."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmbus.consumers.auditor import Auditor, AuditorConfig
from llmbus.metrics import AuditMetrics
from llmbus.schemas import (
    ChatRequest,
    ChatResult,
    ErrorReply,
    Timings,
)
from llmbus.schemas.chat import ChatCompletion
from llmbus.stack.local_stack import LocalStack
from llmbus.store.audit_partitions import AuditMaintenance, today
from llmbus.store.audit_rows import RowPolicy, request_row, result_row
from llmbus.store.audit_writer import AuditWriter
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

OLD = [datetime(2020, 1, d, 12, tzinfo=UTC) for d in (1, 2, 3)]


@pytest.fixture
async def owner(stack: LocalStack) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(stack.postgres.url("llmbus_owner"))
    yield engine
    await engine.dispose()


@pytest.fixture
async def writer(stack: LocalStack) -> AsyncIterator[AuditWriter]:
    w = AuditWriter(stack.postgres.url("llmbus_writer"))
    await w.start()
    yield w
    await w.stop()


def make_request(rid: str, at: datetime, tenant: str, content: str) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "request_id": rid,
            "created_at": at,
            "tenant_id": tenant,
            "user_id": "ana",
            "metadata": {"team": "legal"},
            "reply_to": {"topic": "x.replies", "partition": 0},
            "body": {
                "model": "m",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 5,
            },
        }
    )


def make_result(req: ChatRequest, output: str, *, facts: bool = True) -> ChatResult:
    completion = ChatCompletion.model_validate(
        {
            "id": f"chatcmpl-{req.request_id}",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": output},
                 "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )  # fmt: skip
    return ChatResult(
        request_id=req.request_id,
        completion=completion,
        timings=Timings(queue_ms=1, ttft_ms=2, total_ms=3),
        worker_id="w",
        finished_at=req.created_at + timedelta(seconds=1),
        request=req.facts() if facts else None,
    )


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


async def test_days_are_partitions_dropped_whole_and_emptied_of_content(
    owner: AsyncEngine, writer: AuditWriter
) -> None:
    tenant = f"old-{uuid.uuid4().hex[:6]}"
    maintenance = AuditMaintenance(owner)
    report = await maintenance.run(ahead_days=3, retention_days=None, content_retention_days=None)
    parts = await maintenance.partitions()
    for table in ("requests", "results", "gateway_calls"):
        assert {today() + timedelta(i) for i in range(3)} <= set(parts[table]), (table, report)

    policy = RowPolicy()
    reqs = [make_request(f"{tenant}-{i}", at, tenant, f"secret {i}") for i, at in enumerate(OLD)]
    await writer.write(
        [request_row(r, "t", 0, i, policy) for i, r in enumerate(reqs)],
        [result_row(make_result(r, f"answer {i}"), policy) for i, r in enumerate(reqs[:2])],
    )
    # A final from an older worker (no request facts) finds its request's day in the trail.
    legacy = ErrorReply(request_id=reqs[2].request_id, code="cancelled", message="stop")
    await writer.write([], [result_row(legacy, policy)])
    assert await rows(
        owner, "SELECT created_at, status FROM llmbus.results WHERE request_id = :r",
        r=reqs[2].request_id,
    ) == [(OLD[2], "error")]  # fmt: skip

    # A query on one day reads that day's partition only.
    async with owner.connect() as conn:
        plan = "\n".join(
            str(r[0])
            for r in await conn.execute(
                text(
                    "EXPLAIN SELECT * FROM llmbus.requests WHERE tenant_id = :t "
                    "AND created_at >= :a AND created_at < :b"
                ),
                {"t": tenant, "a": OLD[1] - timedelta(hours=12), "b": OLD[1] + timedelta(hours=1)},
            )
        )
    assert "requests_p20200102" in plan and "requests_p20200101" not in plan, plan

    usage_sql = (
        "SELECT day, requests, errors, prompt_tokens, completion_tokens FROM llmbus.usage_daily "
        "WHERE tenant_id = :t ORDER BY day"
    )
    usage = await rows(owner, usage_sql, t=tenant)
    assert usage == [
        (date(2020, 1, 1), 1, 0, 7, 3),
        (date(2020, 1, 2), 1, 0, 7, 3),
        (date(2020, 1, 3), 1, 1, 0, 0),
    ]

    # Content retention: days before the 3rd lose prompts and outputs, keep the rest.
    assert await maintenance.purge_content_before(date(2020, 1, 3)) == [
        date(2020, 1, 1),
        date(2020, 1, 2),
    ]
    assert await maintenance.purge_content_before(date(2020, 1, 3)) == []  # once per day
    content_sql = (
        "SELECT q.request_id, q.messages::text, q.metadata->>'team', r.output, "
        "r.completion IS NULL, r.prompt_tokens FROM llmbus.requests q LEFT JOIN llmbus.results "
        "r USING (request_id, created_at) WHERE q.tenant_id = :t ORDER BY 1"
    )
    assert await rows(owner, content_sql, t=tenant) == [
        (reqs[0].request_id, "[]", "legal", None, True, 7),
        (reqs[1].request_id, "[]", "legal", None, True, 7),
        (reqs[2].request_id, '[{"role": "user", "content": "secret 2"}]', "legal", None, True,
         None),
    ]  # fmt: skip

    # Retention: the 1st is dropped whole; its usage stays.
    dropped = await maintenance.drop_before(date(2020, 1, 2))
    assert sorted(dropped) == ["gateway_calls_p20200101", "requests_p20200101", "results_p20200101"]
    remaining = await rows(
        owner, "SELECT request_id FROM llmbus.requests WHERE tenant_id = :t ORDER BY 1", t=tenant
    )
    assert remaining == [(reqs[1].request_id,), (reqs[2].request_id,)]
    assert await rows(owner, usage_sql, t=tenant) == usage

    # A late row for a dropped day makes its partition again rather than failing.
    late = make_request(f"{tenant}-late", OLD[0], tenant, "late")
    await writer.write([request_row(late, "t", 0, 9, policy)], [])
    assert (late.request_id,) in await rows(
        owner, "SELECT request_id FROM llmbus.requests WHERE tenant_id = :t", t=tenant
    )
    await maintenance.drop_before(date(2020, 1, 4))  # leave the session's trail as it was


async def test_a_redelivered_batch_adds_no_rows_and_no_usage(bus: Bus, owner: AsyncEngine) -> None:
    tenant = f"redo-{uuid.uuid4().hex[:6]}"
    n = 12
    await bus.start_worker(EchoEngine(step_s=0.01))
    await bus.start_auditor()
    async with bus.client(tenant_id=tenant, user_id="ana") as client:
        answers = await asyncio.gather(*(client.chat(f"one two {i}") for i in range(n)))
    assert all(isinstance(a, ChatResult) for a in answers)
    usage_sql = (
        "SELECT requests, errors, prompt_tokens, completion_tokens, lane FROM llmbus.usage_daily "
        "WHERE tenant_id = :t AND user_id = 'ana'"
    )
    expected = [
        (
            n,
            0,
            sum(a.completion.usage.prompt_tokens for a in answers),
            sum(a.completion.usage.completion_tokens for a in answers),
            "interactive",
        )
    ]
    for _ in range(60):
        if await rows(owner, usage_sql, t=tenant) == expected:
            break
        await asyncio.sleep(0.5)
    assert await rows(owner, usage_sql, t=tenant) == expected
    # Quiet now: the auditor commits what it stored without waiting for more batches (each
    # topic starts at offset 0, so the committed offsets add up to the records read).
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.settings.kafka_bootstrap)
    await admin.start()
    try:
        for _ in range(20):
            committed = await admin.list_consumer_group_offsets(
                f"{bus.settings.topic_prefix}-auditor"
            )
            if sum(o.offset for o in committed.values()) == 2 * n:
                break
            await asyncio.sleep(0.5)
        assert sum(o.offset for o in committed.values()) == 2 * n, committed
    finally:
        await admin.close()

    # A second auditor group reads every record again: the same batches, redelivered.
    s = bus.settings
    metrics = AuditMetrics(CollectorRegistry())
    again = Auditor(
        AuditorConfig(
            bootstrap=s.kafka_bootstrap,
            group_id=f"{s.topic_prefix}-auditor-again",
            topics=None,
            pattern=s.audit_pattern,
            batch_size=5,  # several batches, each a redelivery of stored rows
            flush_interval_s=0.2,
            max_request_bytes=s.max_request_bytes,
        ),
        AuditWriter(bus.stack.postgres.url("llmbus_writer")),
        metrics,
    )
    task = asyncio.create_task(again.run())
    try:
        for _ in range(120):
            await asyncio.sleep(0.5)
            lags = [
                sample.value for family in metrics.backlog.collect() for sample in family.samples
            ]
            if lags and not any(lags):
                break
        assert lags and not any(lags), "the second auditor did not catch up"
    finally:
        again.stop()
        await asyncio.wait_for(task, 30)
    assert await rows(owner, usage_sql, t=tenant) == expected
    count_sql = "SELECT count(*) FROM llmbus.{} WHERE request_id = ANY(:ids)"
    ids = [a.request_id for a in answers]
    assert await rows(owner, count_sql.format("requests"), ids=ids) == [(n,)]
    assert await rows(owner, count_sql.format("results"), ids=ids) == [(n,)]
    assert metrics.rows.labels("results")._value.get() == 0  # nothing new was stored

    code, out, err = await run_cli("usage", "--tenant", tenant, "--csv", env=bus.env())
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [(r["tenant_id"], r["user_id"], r["lane"], int(r["requests"])) for r in table] == [
        (tenant, "ana", "interactive", n)
    ]
    assert int(table[0]["completion_tokens"]) == expected[0][3]
    code, out, err = await run_cli("usage", "--tenant", tenant, env=bus.env())
    assert code == 0 and out.splitlines()[-1].split()[:2] == ["total", str(n)], out

"""Analysts' filters stay fast as the trail grows: on 200,000 audit rows, each filter's
selection is planned on its index, never as a scan of the whole table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from llmbus.stack.local_stack import LocalStack
from llmbus.store.conversation_query import ConversationFilter, explain_plan

pytestmark = pytest.mark.integration

ROWS = 200_000

# Server-side generation: 200k rows in a few seconds, no client round trips. Tenants,
# models, batches and days vary so that each filter selects a small share.
LOAD_REQUESTS = f"""
INSERT INTO llmbus.requests (request_id, created_at, logged_at, model, messages, params,
    priority, tenant_id, user_id, batch_id, replay_of, metadata, stream, kafka_topic,
    kafka_partition, kafka_offset)
SELECT 'plan-' || i,
       timestamptz '2026-01-01 00:00:00+00' + (i % 200) * interval '1 day' + i * interval '1 ms',
       now(), 'model-' || (i % 10),
       jsonb_build_array(jsonb_build_object('role', 'user', 'content',
           'question number ' || i || CASE WHEN i % 1000 = 0 THEN ' zanzibar' ELSE '' END)),
       '{{"temperature": 0}}'::jsonb, 'normal', 'tenant-' || (i % 50), 'user-' || (i % 500),
       'batch-' || (i % 2000), CASE WHEN i % 100 = 0 THEN 'plan-' || (i - 1) END,
       '{{}}'::jsonb, 'false', 'plan', 0, i
FROM generate_series(1, {ROWS}) AS i
"""
LOAD_RESULTS = f"""
INSERT INTO llmbus.results (request_id, status, finished_at, logged_at, output)
SELECT 'plan-' || i, 'ok', now(), now(), 'answer ' || i FROM generate_series(1, {ROWS}, 2) AS i
"""

CASES = [
    (
        "time range",
        ConversationFilter(
            since=datetime(2026, 3, 1, tzinfo=UTC), until=datetime(2026, 3, 1, 1, tzinfo=UTC)
        ),
        "requests_created_at",
    ),
    (
        "tenant and time",
        ConversationFilter(tenant_id="tenant-7", since=datetime(2026, 6, 1, tzinfo=UTC)),
        "requests_tenant_created",
    ),
    ("model", ConversationFilter(model="model-3", limit=100), "requests_model_created"),
    ("batch", ConversationFilter(batch_id="batch-42"), "requests_batch"),
    ("request ids", ConversationFilter(request_ids=("plan-5", "plan-77")), "requests_pkey"),
    ("text", ConversationFilter(text="zanzibar"), "requests_messages_text"),
]


async def test_filters_use_their_indexes_on_200k_rows(stack: LocalStack) -> None:
    db = create_async_engine(stack.postgres.url("llmbus_owner"))
    try:
        async with db.connect() as conn:
            tx = await conn.begin()
            try:
                await conn.execute(text(LOAD_REQUESTS))
                await conn.execute(text(LOAD_RESULTS))
                await conn.execute(text("ANALYZE llmbus.requests"))
                await conn.execute(text("ANALYZE llmbus.results"))
                plans = {name: await explain_plan(conn, f) for name, f, _ in CASES}
            finally:
                await tx.rollback()  # the rows were only there to be planned against
    finally:
        await db.dispose()
    for name, _, index in CASES:
        plan = plans[name]
        print(f"--- {name}\n{plan}")
        assert index in plan, f"{name}: expected {index} in\n{plan}"
        assert "Seq Scan on requests" not in plan, f"{name} scans the table:\n{plan}"

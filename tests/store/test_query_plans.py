"""Analysts' filters stay fast as the trail grows: on 1,000,000 audit rows in 200 daily
partitions, a filter on time reads only its days' partitions (pruning), and each filter's
selection is planned on its index, never as a scan of a whole table."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from llmbus.stack.local_stack import LocalStack
from llmbus.store.conversation_query import ConversationFilter, explain_plan

pytestmark = pytest.mark.integration

ROWS = 1_000_000
DAYS = 200

# Server-side generation: 1M rows in about half a minute, no client round trips. Tenants,
# models, batches and days vary independently, so that each filter selects a small share
# of every day.
LOAD_REQUESTS = f"""
INSERT INTO llmbus.requests (request_id, created_at, logged_at, model, messages, params,
    priority, tenant_id, user_id, batch_id, replay_of, metadata, stream, kafka_topic,
    kafka_partition, kafka_offset)
SELECT 'plan-' || i,
       timestamptz '2026-01-01 00:00:00+00' + (i % {DAYS}) * interval '1 day'
           + (i / {DAYS}) * interval '17 seconds',
       now(), 'model-' || ((i / {DAYS}) % 10),
       jsonb_build_array(jsonb_build_object('role', 'user', 'content',
           'question number ' || i || CASE WHEN i % 1000 = 0 THEN ' zanzibar' ELSE '' END)),
       '{{"temperature": 0}}'::jsonb, 'normal', 'tenant-' || ((i / {DAYS}) % 50),
       'user-' || ((i / {DAYS}) % 500),
       'batch-' || (i % 2000), CASE WHEN i % 100 = 0 THEN 'plan-' || (i - 1) END,
       '{{}}'::jsonb, 'false', 'plan', 0, i
FROM generate_series(1, {ROWS}) AS i
"""
LOAD_RESULTS = """
INSERT INTO llmbus.results (request_id, created_at, status, finished_at, logged_at, output)
SELECT request_id, created_at, 'ok', now(), now(), 'answer' FROM llmbus.requests
WHERE request_id LIKE 'plan-%' AND kafka_offset % 2 = 1
"""

LOADED_DAYS = {f"{date(2026, 1, 1) + timedelta(days=i):%Y%m%d}" for i in range(DAYS)}


def _of_loaded_days(line: str) -> bool:
    """A plan line about one of the loaded days' partitions, or about no partition."""
    day = re.search(r"_p(\d{8})", line)
    return day is None or day.group(1) in LOADED_DAYS


LOAD_BATCH = """
INSERT INTO llmbus.batches (batch_id, kind, created_at, model, total, params)
VALUES ('batch-42', 'batch', '2026-02-12 12:00:00+00', 'model-1', 500, '{}')
"""

CASES = [
    # name, filter, the index requests are read by, how many days' partitions are read
    # ("keyed": every day's, each results table probed by its key)
    (
        "time range",
        ConversationFilter(
            since=datetime(2026, 3, 1, tzinfo=UTC), until=datetime(2026, 3, 1, 1, tzinfo=UTC)
        ),
        "created_at_idx",
        1,
    ),
    (
        "tenant and time",
        ConversationFilter(
            tenant_id="tenant-7",
            since=datetime(2026, 6, 1, tzinfo=UTC),
            until=datetime(2026, 6, 8, tzinfo=UTC),
        ),
        "tenant_id_created_at_idx",
        7,
    ),
    (  # as `llmbus replay --dry-run` selects: answered ones only
        "replay: tenant and time",
        ConversationFilter(
            tenant_id="tenant-7",
            since=datetime(2026, 6, 1, tzinfo=UTC),
            until=datetime(2026, 6, 8, tzinfo=UTC),
            only_ok=True,
        ),
        "tenant_id_created_at_idx",
        7,
    ),
    # Its requests are on 2026-02-12 (42 % 200 days in), the batch's day: a day either side.
    ("batch", ConversationFilter(batch_id="batch-42"), "batch_id_idx", 3),
    ("request ids", ConversationFilter(request_ids=("plan-5", "plan-77")), "_pkey", "keyed"),
    # A search of the whole trail joins its matches to every day's results; --since and
    # --until bound it to their days, as above.
    ("text", ConversationFilter(text="zanzibar"), "jsonb_to_tsvector_idx", None),
]


async def test_filters_prune_partitions_and_use_their_indexes_on_1m_rows(
    stack: LocalStack,
) -> None:
    db = create_async_engine(stack.postgres.url("llmbus_owner"))
    try:
        async with db.connect() as conn:
            tx = await conn.begin()
            try:
                await conn.execute(
                    text(f"SELECT llmbus.ensure_audit_partitions('2026-01-01', {DAYS})")
                )
                await conn.execute(text(LOAD_REQUESTS))
                await conn.execute(text(LOAD_RESULTS))
                await conn.execute(text(LOAD_BATCH))
                # One process reads the plan, so what it prunes shows in one place.
                await conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
                await conn.execute(text("ANALYZE llmbus.requests"))
                await conn.execute(text("ANALYZE llmbus.results"))
                plans = {name: await explain_plan(conn, f, analyze=True) for name, f, _, _ in CASES}
            finally:
                await tx.rollback()  # the rows were only there to be planned against
    finally:
        await db.dispose()
    for name, _, index, days in CASES:
        # Left out: partitions pruned at run time, empty ones (cost 0: the loaded days without
        # results), and the days of this session's other tests (today and the days made
        # ahead: a few rows, which a plan may as well read whole).
        plan = "\n".join(
            line
            for line in plans[name].splitlines()
            if "never executed" not in line
            and "cost=0.00..0.00 " not in line
            and _of_loaded_days(line)
        )
        print(f"--- {name}\n" + "\n".join(line for line in plan.splitlines() if " on " in line))
        assert index in plan, f"{name}: expected {index} in\n{plan}"
        assert "Seq Scan on requests_p" not in plan, f"{name} scans a day's requests:\n{plan}"
        if days == "keyed":
            assert "Seq Scan on results_p" not in plan, f"{name} scans results:\n{plan}"
        elif (
            days is not None
        ):  # a day's results may be read whole: one small table, pruned like requests
            days_of = {
                table: set(re.findall(rf"on {table}_p(\d{{8}})", plan))
                for table in ("requests", "results")
            }
            assert len(days_of["requests"]) == days, f"{name}: {days_of}, not {days} days"
            # (Results were loaded for every other day only.)
            assert days_of["results"] <= days_of["requests"], f"{name}: {days_of}"

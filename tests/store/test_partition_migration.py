"""Migration 0006 turns the audit tables into partitioned ones and keeps every row that
the previous head (0005) wrote, with their grants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmbus.stack.local_stack import LocalStack
from llmbus.store.audit_partitions import AuditMaintenance
from llmbus.store.migrate import alembic_config

pytestmark = pytest.mark.integration

DAY1 = datetime(2026, 3, 4, 10, tzinfo=UTC)
DAY2 = datetime(2026, 3, 5, 23, 59, 59, tzinfo=UTC)

# Rows as 0005's schema holds them: two requests on two days, a result for each and one
# whose request was never logged, and gateway calls with their identity ids.
OLD_ROWS = [
    """INSERT INTO llmbus.requests (request_id, created_at, logged_at, model, messages,
       params, priority, tenant_id, user_id, batch_id, metadata, stream, kafka_topic,
       kafka_partition, kafka_offset)
       VALUES ('r1', :d1, :d1, 'm', '[{"role":"user","content":"one"}]', '{}', 'normal',
               't1', 'u1', NULL, '{}', 'false', 'x', 0, 1),
              ('r2', :d2, :d2, 'm', '[{"role":"user","content":"two"}]', '{}', 'low',
               't1', 'u2', 'b1', '{}', 'false', 'x', 0, 2)""",
    """INSERT INTO llmbus.results (request_id, status, finished_at, logged_at, output,
       prompt_tokens, completion_tokens)
       VALUES ('r1', 'ok', :d1, :d1, 'answer one', 3, 4),
              ('r2', 'ok', CAST(:d2 AS timestamptz) + interval '1 hour', :d2, 'answer two', 5, 6),
              ('orphan', 'error', :d2, :d2, NULL, NULL, NULL)""",
    """INSERT INTO llmbus.gateway_calls (at, method, path, status, latency_ms)
       VALUES (:d1, 'POST', '/v1/chat/completions', 200, 12.5),
              (:d2, 'GET', '/v1/models', 200, 1.0)""",
]


@pytest.fixture
async def fresh_db(stack: LocalStack) -> AsyncIterator[str]:
    """A database of its own, set up as ``llmbus up`` sets up the main one."""
    name = f"llmbus_mig_{uuid.uuid4().hex[:8]}"
    pg = stack.postgres
    admin = create_async_engine(pg.url("llmbus_admin", "postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name} OWNER llmbus_admin"))
        await conn.execute(
            text(f"GRANT CONNECT ON DATABASE {name} TO llmbus_owner, llmbus_writer, llmbus_reader")
        )
    db = create_async_engine(pg.url("llmbus_admin", name), isolation_level="AUTOCOMMIT")
    async with db.connect() as conn:
        for stmt in pg.owner_sql():
            await conn.execute(text(stmt))
    await db.dispose()
    yield name
    async with admin.connect() as conn:
        await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    await admin.dispose()


async def _rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql))]


async def test_upgrade_keeps_every_row_of_the_previous_head(
    stack: LocalStack, fresh_db: str
) -> None:
    pg = stack.postgres
    cfg = alembic_config(pg.url("llmbus_owner", fresh_db))
    await asyncio.to_thread(command.upgrade, cfg, "0005")
    owner = create_async_engine(pg.url("llmbus_owner", fresh_db))
    writer = create_async_engine(pg.url("llmbus_writer", fresh_db))
    reader = create_async_engine(pg.url("llmbus_reader", fresh_db))
    try:
        async with writer.begin() as conn:  # written by the roles that wrote them before
            for stmt in OLD_ROWS:
                await conn.execute(text(stmt), {"d1": DAY1, "d2": DAY2})

        await asyncio.to_thread(command.upgrade, cfg, "head")

        assert await _rows(
            reader, "SELECT request_id, created_at FROM llmbus.requests ORDER BY 1"
        ) == [("r1", DAY1), ("r2", DAY2)]
        # A result takes its request's creation time; an orphan its finish time.
        assert await _rows(
            reader, "SELECT request_id, created_at, output FROM llmbus.results ORDER BY 1"
        ) == [("orphan", DAY2, None), ("r1", DAY1, "answer one"), ("r2", DAY2, "answer two")]
        assert await _rows(reader, "SELECT id, path FROM llmbus.gateway_calls ORDER BY 1") == [
            (1, "/v1/chat/completions"),
            (2, "/v1/models"),
        ]
        partitions = await AuditMaintenance(owner).partitions()
        for table in ("requests", "results", "gateway_calls"):
            days = set(partitions[table])
            assert {DAY1.date(), DAY2.date()} <= days, (table, days)
            assert datetime.now(UTC).date() in days  # made ahead
        # Usage of the rows that were there, per day, tenant, user, model and lane.
        assert await _rows(
            reader,
            "SELECT day, tenant_id, user_id, model, lane, requests, errors, prompt_tokens, "
            "completion_tokens FROM llmbus.usage_daily ORDER BY day, user_id",
        ) == [
            (DAY1.date(), "t1", "u1", "m", "interactive", 1, 0, 3, 4),
            (DAY2.date(), "", "", "", "interactive", 1, 1, 0, 0),
            (DAY2.date(), "t1", "u2", "m", "batch", 1, 0, 5, 6),
        ]
        # The writer keeps its rights on the new tables: it inserts, with the identity
        # going on from the copied ids, and makes a missing day through the function.
        async with writer.begin() as conn:
            await conn.execute(text("SELECT llmbus.ensure_audit_partitions('2030-01-01')"))
            new_id = await conn.scalar(
                text(
                    "INSERT INTO llmbus.gateway_calls (at, method, path, status, latency_ms) "
                    "VALUES ('2030-01-01T12:00:00Z', 'GET', '/v1/models', 200, 1) RETURNING id"
                )
            )
        assert new_id == 3
        # ... but cannot drop what it made, nor change the trail.
        for forbidden in (
            "DROP TABLE llmbus.requests_p20300101",
            "UPDATE llmbus.requests SET messages = '[]'",
        ):
            async with writer.connect() as conn:
                with pytest.raises(Exception, match=r"must be owner|permission denied"):
                    await conn.execute(text(forbidden))
    finally:
        for engine in (owner, writer, reader):
            await engine.dispose()

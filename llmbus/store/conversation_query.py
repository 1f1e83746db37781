"""Selecting logged conversations by analysts' filters; shared by replay and export.

Every filter is a bound parameter (never SQL text from the user), and each one has an
index behind it (migration 0002), so selections stay fast as the trail grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnClause, Select, and_, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from llmbus.store.database import Database, mapped
from llmbus.store.tables import near_batch, requests, results, same_request

MESSAGES_TSV: ColumnClause[Any] = literal_column(
    "jsonb_to_tsvector('simple'::regconfig, llmbus.requests.messages, '[\"string\"]'::jsonb)"
)
"""The expression of index ``requests_messages_text``; the planner uses the index only
for this exact expression."""


@dataclass(frozen=True)
class ConversationFilter:
    since: datetime | None = None
    until: datetime | None = None
    tenant_id: str | None = None
    model: str | None = None
    batch_id: str | None = None
    request_ids: Sequence[str] = field(default_factory=tuple)
    text: str | None = None
    """Words that must all appear in the messages (full-text, case-insensitive)."""
    only_ok: bool = False
    """Only conversations that were answered successfully (what a replay wants)."""
    limit: int | None = None


def select_conversations(f: ConversationFilter, *, embeddings: bool = False) -> Select[Any]:
    """The selected conversations; with ``embeddings``, also each result's embedding
    items (vectors where the audit trail stored them, else each vector's length)."""
    q = requests
    r = results
    extra = [r.c.completion["data"].label("embeddings")] if embeddings else []
    query = select(
        q.c.request_id,
        q.c.created_at,
        q.c.model,
        q.c.messages,
        q.c.params,
        q.c.tenant_id,
        q.c.user_id,
        q.c.batch_id,
        q.c.replay_of,
        q.c.metadata,
        r.c.status,
        r.c.output,
        r.c.finish_reason,
        r.c.prompt_tokens,
        r.c.completion_tokens,
        r.c.total_ms,
        r.c.error_code,
        *extra,
    )
    # Time bounds on both sides: a result shares its request's created_at, so the results
    # table is pruned to the same days' partitions as the requests table.
    on = [same_request(r, q)]
    if f.since is not None:
        query = query.where(q.c.created_at >= f.since)
        on.append(r.c.created_at >= f.since)
    if f.until is not None:
        query = query.where(q.c.created_at < f.until)
        on.append(r.c.created_at < f.until)
    if f.batch_id is not None:
        q_near, r_near = near_batch(f.batch_id, q.c.created_at, r.c.created_at)
        query = query.where(q.c.batch_id == f.batch_id, q_near)
        on.append(r_near)
    if f.request_ids:
        query = query.where(q.c.request_id.in_(list(f.request_ids)))
        # Said of both sides, so each day's results are probed by their key, not read.
        on.append(r.c.request_id.in_(list(f.request_ids)))
    query = query.select_from(q.outerjoin(r, and_(*on)))
    if f.tenant_id is not None:
        query = query.where(q.c.tenant_id == f.tenant_id)
    if f.model is not None:
        query = query.where(q.c.model == f.model)
    if f.text:
        query = query.where(MESSAGES_TSV.op("@@")(func.plainto_tsquery("simple", f.text)))
    if f.only_ok:
        query = query.where(r.c.status == "ok")
    query = query.order_by(q.c.created_at, q.c.request_id)
    if f.limit is not None:
        query = query.limit(f.limit)
    return query


class ConversationQuery:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def fetch(
        self, f: ConversationFilter, *, embeddings: bool = False
    ) -> list[dict[str, Any]]:
        async def op() -> list[dict[str, Any]]:
            async with self._db.engine.connect() as conn:
                return [
                    dict(row._mapping)
                    for row in await conn.execute(select_conversations(f, embeddings=embeddings))
                ]

        return await mapped(op)

    async def count(self, f: ConversationFilter) -> int:
        query = select(func.count()).select_from(select_conversations(f).subquery())

        async def op() -> int:
            async with self._db.engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

        return await mapped(op)


async def explain_plan(
    conn: AsyncConnection, f: ConversationFilter, *, analyze: bool = False
) -> str:
    """PostgreSQL's plan for the selection, as the text ``EXPLAIN`` prints; with
    ``analyze``, as run, so partitions pruned once a subquery's value was known are gone."""
    compiled = select_conversations(f).compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
    )
    names = compiled.positiontup or []
    args = tuple(compiled.params[name] for name in names)
    explain = "EXPLAIN (ANALYZE, TIMING OFF)" if analyze else "EXPLAIN"
    rows = await conn.exec_driver_sql(f"{explain} {compiled.string}", args)
    return "\n".join(str(row[0]) for row in rows)

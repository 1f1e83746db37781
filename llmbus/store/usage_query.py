"""``UsageQuery``: the daily usage aggregates, filtered and summed for ``llmbus usage``.

It reads ``usage_daily`` only, never the raw trail: a year of usage for every tenant is a
few thousand rows, whatever the number of requests behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from llmbus.store.database import Database, mapped
from llmbus.store.tables import usage_daily


@dataclass(frozen=True)
class UsageRow:
    day: date
    tenant_id: str
    user_id: str
    model: str
    lane: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int


class UsageQuery:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def fetch(
        self,
        *,
        since: date | None = None,
        until: date | None = None,
        tenant_id: str | None = None,
        model: str | None = None,
    ) -> list[UsageRow]:
        """Days from ``since`` up to, not including, ``until``."""
        u = usage_daily
        query = select(u).order_by(u.c.day, u.c.tenant_id, u.c.user_id, u.c.model, u.c.lane)
        if since is not None:
            query = query.where(u.c.day >= since)
        if until is not None:
            query = query.where(u.c.day < until)
        if tenant_id is not None:
            query = query.where(u.c.tenant_id == tenant_id)
        if model is not None:
            query = query.where(u.c.model == model)

        async def op() -> list[UsageRow]:
            async with self._db.engine.connect() as conn:
                return [UsageRow(**row._mapping) for row in await conn.execute(query)]

        return await mapped(op)

"""``BatchNoticeStore``: batch lifecycle events recorded in PostgreSQL before they are
published, and the webhook deliveries they owe.

A notice's id is derived from its batch and type (``schemas.events.event_id``), so
recording one twice, by a restarted or a second notifier, inserts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from llmbus.schemas.events import BatchEvent
from llmbus.store.database import Database, mapped
from llmbus.store.tables import batch_notices, webhook_deliveries, webhook_endpoints


class BatchNoticeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def recorded_types(self, batch_ids: Sequence[str]) -> dict[str, set[str]]:
        query = select(batch_notices.c.batch_id, batch_notices.c.type).where(
            batch_notices.c.batch_id.in_(batch_ids)
        )

        async def op() -> dict[str, set[str]]:
            async with self._db.engine.connect() as conn:
                found: dict[str, set[str]] = {}
                for batch_id, kind in await conn.execute(query):
                    found.setdefault(batch_id, set()).add(kind)
                return found

        return await mapped(op)

    async def record(self, events: Sequence[tuple[BatchEvent, str | None]]) -> list[BatchEvent]:
        """Record (event, tenant) pairs not recorded yet, and in the same transaction a
        delivery for each of the tenant's webhook endpoints that wants the event's type.
        Returns the events that were new."""
        now = datetime.now(UTC)

        async def op() -> list[BatchEvent]:
            new = []
            async with self._db.engine.begin() as conn:
                for event, tenant in events:
                    inserted = await conn.execute(
                        insert(batch_notices)
                        .values(
                            event_id=event.id,
                            batch_id=event.data.id,
                            type=event.type.value,
                            created_at=now,
                            payload=event.model_dump(mode="json"),
                        )
                        .on_conflict_do_nothing()
                        .returning(batch_notices.c.event_id)
                    )
                    if inserted.first() is None:
                        continue  # recorded before (by this notifier or another)
                    new.append(event)
                    if tenant is None:
                        continue  # webhooks are a tenant's
                    e = webhook_endpoints.c
                    wanted = select(literal(event.id), e.endpoint_id, literal(now)).where(
                        e.tenant_id == tenant,
                        e.disabled_at.is_(None),
                        or_(e.event_types.is_(None), e.event_types.contains([event.type.value])),
                    )
                    await conn.execute(
                        insert(webhook_deliveries)
                        .from_select(["event_id", "endpoint_id", "next_attempt_at"], wanted)
                        .on_conflict_do_nothing()
                    )
            return new

        return await mapped(op)

    async def unpublished(self, limit: int) -> list[tuple[BatchEvent, datetime]]:
        """Recorded but not yet known to be on the events topic, in recording order."""
        n = batch_notices.c
        query = (
            select(n.payload, n.created_at)
            .where(n.published_at.is_(None))
            .order_by(n.seq)
            .limit(limit)
        )

        async def op() -> list[tuple[BatchEvent, datetime]]:
            async with self._db.engine.connect() as conn:
                rows = await conn.execute(query)
                return [(BatchEvent.model_validate(p), at) for p, at in rows]

        return await mapped(op)

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        n = batch_notices.c
        statement = (
            update(batch_notices)
            .where(and_(n.event_id.in_(event_ids), n.published_at.is_(None)))
            .values(published_at=datetime.now(UTC))
        )

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(statement)

        await mapped(op)

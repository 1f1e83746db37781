"""``BatchStore``: batch jobs and replay runs in PostgreSQL, and their progress.

Progress is derived, never updated in place: a batch's row says how many requests it has,
the audit trail says which of them have a final, and ``batch_events`` says whether it was
published or cancelled. The submitting role therefore needs INSERT and SELECT only.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.dialects.postgresql import insert

from llmbus.errors import NotFoundError
from llmbus.schemas.batch_input import WIRE_FORMAT_KEY
from llmbus.schemas.events import BatchEventType
from llmbus.store.database import Database, mapped
from llmbus.store.tables import (
    batch_events,
    batch_notices,
    batches,
    created_near,
    near_batch,
    requests,
    results,
    same_request,
)

CANCELLED = "cancelled"
"""The error code of a request skipped or aborted because its batch was cancelled."""
DEADLINE_EXCEEDED = "deadline_exceeded"
"""The error code workers give a batch's request reached after the batch's window."""
BATCH_EXPIRED = "batch_expired"
"""OpenAI's error code, in an expired batch's error file, for each line it did not finish."""
_BATCH_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


OPENAI_STATUS = {"publishing": "validating", "in_progress": "in_progress",
                 "completed": "completed", "cancelling": "cancelling", "cancelled": "cancelled",
                 "expired": "expired", "failed": "failed"}  # fmt: skip
"""llmbus's batch status -> OpenAI's batch object status."""


def new_batch_id(kind: str = "batch") -> str:
    return f"{kind}_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    kind: str
    model: str
    status: str
    total: int
    completed: int
    failed: int
    cancelled: int
    created_at: datetime
    published_at: datetime | None
    cancel_requested_at: datetime | None
    finished_at: datetime | None
    source: str | None
    tenant_id: str | None
    endpoint: str | None = None
    """The endpoint all its lines name, when it was submitted with one."""
    expired: int = 0
    """Lines the batch's completion window ended before they were done (counted only once
    the batch is ``expired``)."""
    expires_at: datetime | None = None
    failed_at: datetime | None = None
    """When its publishing failed: the batch is ``failed`` and nothing more is sent."""

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.cancelled + self.expired

    @property
    def in_progress(self) -> int:
        return max(0, self.total - self.done)


class BatchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        batch_id: str,
        *,
        kind: str,
        model: str,
        total: int,
        tenant_id: str | None,
        user_id: str | None,
        source: str | None,
        params: dict[str, Any],
    ) -> None:
        row = {
            "batch_id": batch_id,
            "kind": kind,
            "created_at": datetime.now(UTC),
            "model": model,
            "total": total,
            "tenant_id": tenant_id,
            "user_id": user_id,
            "source": source,
            "params": params,
        }

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(batches), [row])

        await mapped(op)

    async def add_event(self, batch_id: str, event: str) -> None:
        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(
                    insert(batch_events),
                    [{"batch_id": batch_id, "event": event, "at": datetime.now(UTC)}],
                )

        await mapped(op)

    async def status(self, batch_id: str) -> BatchStatus:
        found = await self._statuses(batches.c.batch_id == batch_id, limit=1)
        if not found:
            raise NotFoundError(f"no batch {batch_id!r}")
        return found[0]

    async def recent(self, *, limit: int = 20, tenant_id: str | None = None) -> list[BatchStatus]:
        where = batches.c.tenant_id == tenant_id if tenant_id is not None else None
        return await self._statuses(where, limit=limit)

    async def awaiting_final_event(self, *, limit: int) -> list[BatchStatus]:
        """Announced batches whose final lifecycle event is not recorded yet: the
        notifier's work list (newest first; a batch leaves it with its final event)."""
        n = batch_notices.c
        final = [t.value for t in BatchEventType if t.is_terminal]
        recorded = exists().where(and_(n.batch_id == batches.c.batch_id, n.type.in_(final)))
        return await self._statuses(and_(batches.c.announce, ~recorded), limit=limit)

    async def _statuses(self, where: Any, *, limit: int) -> list[BatchStatus]:
        picked = select(batches).order_by(batches.c.created_at.desc()).limit(limit)
        if where is not None:
            picked = picked.where(where)
        b = picked.subquery("b")
        r = results
        first = select(func.min(b.c.created_at)).scalar_subquery()
        last = select(func.max(b.c.created_at)).scalar_subquery()
        near = [created_near(c, first, last) for c in (requests.c.created_at, r.c.created_at)]
        counts = (
            select(
                b,
                func.count(r.c.request_id).filter(r.c.status == "ok").label("completed"),
                func.count(r.c.request_id)
                .filter(and_(r.c.status == "error", r.c.error_code == CANCELLED))
                .label("cancelled"),
                func.count(r.c.request_id)
                .filter(and_(r.c.status == "error", r.c.error_code.not_in(_NOT_FAILED)))
                .label("failed"),
                func.count(r.c.request_id)
                .filter(and_(r.c.status == "error", r.c.error_code == DEADLINE_EXCEEDED))
                .label("late"),
                func.max(r.c.finished_at).label("last_finished"),
            )
            .select_from(
                b.outerjoin(requests, and_(requests.c.batch_id == b.c.batch_id, near[0])).outerjoin(
                    r, and_(same_request(r, requests), near[1])
                )
            )
            .group_by(*b.c)
            .order_by(b.c.created_at.desc())
        )
        events = (
            select(batch_events.c.batch_id, batch_events.c.event, func.min(batch_events.c.at))
            .where(batch_events.c.batch_id.in_(select(b.c.batch_id)))
            .group_by(batch_events.c.batch_id, batch_events.c.event)
        )

        async def op() -> tuple[list[Any], list[Any]]:
            async with self._db.engine.connect() as conn:
                return list(await conn.execute(counts)), list(await conn.execute(events))

        rows, event_rows = await mapped(op)
        seen: dict[str, dict[str, datetime]] = {}
        for batch_id, event, at in event_rows:
            seen.setdefault(batch_id, {})[event] = at
        return [_status(row._mapping, seen.get(row.batch_id, {})) for row in rows]

    async def results(
        self, batch_id: str, *, expired: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Each finished request of the batch, in input-file order; for an ``expired``
        batch, every request, those it did not finish as ``batch_expired`` errors."""
        near = near_batch(batch_id, requests.c.created_at, results.c.created_at)
        query = (
            select(
                requests.c.request_id,
                requests.c.metadata["custom_id"].astext.label("custom_id"),
                requests.c.metadata[WIRE_FORMAT_KEY].astext.label("encoding_format"),
                results.c.status,
                results.c.completion,
                results.c.error_code,
                results.c.error_message,
            )
            .select_from(
                requests.join(
                    results,
                    and_(same_request(results, requests), near[1]),
                    isouter=expired,
                )
            )
            .where(requests.c.batch_id == batch_id, near[0])
            .order_by(requests.c.kafka_partition, requests.c.kafka_offset)
        )

        async def op() -> list[Any]:
            async with self._db.engine.connect() as conn:
                return list(await conn.execute(query))

        for row in await mapped(op):
            found = dict(row._mapping)
            if expired and (found["status"] is None or found["error_code"] == DEADLINE_EXCEEDED):
                found.update(
                    status="error", error_code=BATCH_EXPIRED, error_message=_BATCH_EXPIRED_MESSAGE
                )
            yield found


_NOT_FAILED = (CANCELLED, DEADLINE_EXCEEDED)


def _status(row: Any, events: dict[str, datetime]) -> BatchStatus:
    params = row["params"] or {}
    late, failed = row["late"], row["failed"]
    done = row["completed"] + failed + row["cancelled"] + late
    finished = row["last_finished"] if done >= row["total"] else None
    if row["total"] == 0:
        finished = events.get("published")  # an empty replay run: done once recorded
    expires_at = datetime.fromisoformat(params["expires_at"]) if "expires_at" in params else None
    past_window = expires_at is not None and datetime.now(UTC) >= expires_at
    expired = 0
    if "cancel_requested" in events and "published" not in events:
        # Cancelled while publishing (or after its publisher died): what was published is
        # skipped by the workers, the rest never will be; nothing is left to wait for.
        state, finished = "cancelled", events["cancel_requested"]
    elif "cancel_requested" in events:
        # A cancel that came too late to stop any request leaves a batch that simply
        # completed: ``cancelled`` always comes with cancelled requests in its counts.
        state = "cancelling" if not finished else "cancelled" if row["cancelled"] else "completed"
    elif "publish_failed" in events:
        state, finished = "failed", events["publish_failed"]
    elif "published" not in events:
        state = "publishing"
        if past_window:
            # Its submitter died mid-publish and nobody cancelled it: past its window it
            # will never complete (OpenAI's batch that failed validation).
            state, finished = "failed", expires_at
    elif past_window and (late or not finished):
        # OpenAI's expired batch: what finished in the window is its output, the rest are
        # batch_expired errors (requests still queued are refused by their deadline).
        state, finished, expired = "expired", expires_at, row["total"] - done + late
    else:
        state = "completed" if finished else "in_progress"
        failed += late  # a request's own deadline, not the batch's window
    return BatchStatus(
        batch_id=row["batch_id"],
        kind=row["kind"],
        model=row["model"],
        status=state,
        total=row["total"],
        completed=row["completed"],
        failed=failed,
        cancelled=row["cancelled"],
        created_at=row["created_at"],
        published_at=events.get("published"),
        cancel_requested_at=events.get("cancel_requested"),
        finished_at=finished,
        source=row["source"],
        tenant_id=row["tenant_id"],
        endpoint=params.get("endpoint"),
        expired=expired,
        expires_at=expires_at,
        failed_at=events.get("publish_failed"),
    )

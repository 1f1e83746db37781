"""``CallLog``: one audit row per gateway call, written in the background in batches.

A call is answered without waiting for PostgreSQL; its row follows within a flush interval.
While the database is away rows are kept (up to ``max_buffer``) and written when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from llmbus.background import cancel_and_wait
from llmbus.errors import DatabaseUnavailableError, NotStartedError
from llmbus.store.audit_partitions import PartitionCalendar, day_of
from llmbus.store.database import Database, mapped
from llmbus.store.tables import gateway_calls

log = logging.getLogger(__name__)

_FLUSH_S = 0.5
"""Rows reach the table within about half a second, at one INSERT per interval."""


class CallLog:
    def __init__(self, db: Database, *, max_buffer: int = 100_000) -> None:
        self._db = db
        self._rows: list[dict[str, Any]] = []
        self._max_buffer = max_buffer
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._calendar = PartitionCalendar()

    def record(self, row: dict[str, Any]) -> None:
        if self._task is None:
            raise NotStartedError("CallLog used before start()")
        if len(self._rows) >= self._max_buffer:
            # Memory is bounded on purpose: a database away for hours must not take the
            # gateway down with it. What is dropped is counted and logged.
            self._rows.pop(0)
            self._dropped += 1
        self._rows.append(row)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop())

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)
            with contextlib.suppress(DatabaseUnavailableError):
                await self.flush()

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return

        async def op() -> None:
            engine = self._db.engine
            await self._calendar.ensure(engine, {day_of(row["at"]) for row in rows})
            async with engine.begin() as conn:
                await conn.execute(insert(gateway_calls), rows)

        try:
            await mapped(op)
        except DatabaseUnavailableError:
            self._rows[:0] = rows
            raise

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_S)
            try:
                await self.flush()
            except DatabaseUnavailableError as exc:
                log.warning("call audit not written yet (%s); %d rows kept", exc, len(self._rows))
            if self._dropped:
                log.error("call audit buffer full: %d rows dropped", self._dropped)
                self._dropped = 0

"""``BulkInsert``: many rows in one statement, one array per column (``unnest``).

An ``INSERT ... VALUES`` of n rows sends n times columns parameters and makes PostgreSQL parse
and plan a statement of that size; ``executemany`` pays a round trip's worth of protocol
per row. Column arrays are one parameter each, sent in asyncpg's binary format, and the
statement text never changes, so it stays prepared. ``COPY`` is faster still but cannot
skip rows that are already there, which idempotent redelivery needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

JSONB = "jsonb"


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class BulkInsert:
    def __init__(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        *,
        conflict: Sequence[str],
        returning: Sequence[str] = (),
    ) -> None:
        """``columns``: (name, PostgreSQL type) pairs; jsonb columns take Python values
        and are sent as JSON text. ``conflict``: the unique key whose existing rows are
        skipped. ``returning``: columns of the rows actually inserted."""
        self._columns = list(columns)
        names = ", ".join(name for name, _ in columns)
        arrays = ", ".join(
            f"CAST(:c{i} AS text[])::jsonb[]" if kind == JSONB else f"CAST(:c{i} AS {kind}[])"
            for i, (_, kind) in enumerate(columns)
        )
        sql = (
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
        )
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        self._statement = text(sql)

    @property
    def columns(self) -> list[tuple[str, str]]:
        return list(self._columns)

    def params(self, rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i, (name, kind) in enumerate(self._columns):
            values = [row[name] for row in rows]
            out[f"c{i}"] = [_dumps(v) for v in values] if kind == JSONB else values
        return out

    async def run(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[Row[Any]]:
        """Insert ``rows``; the ``returning`` columns of those that were new."""
        if not rows:
            return []
        result = await conn.execute(self._statement, self.params(rows))
        return list(result) if result.returns_rows else []

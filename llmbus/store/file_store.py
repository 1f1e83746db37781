"""``FileStore``: batch input files uploaded through the gateway, per tenant."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from llmbus.errors import NotFoundError
from llmbus.store.database import Database, mapped
from llmbus.store.tables import files


class FileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(
        self, *, tenant_id: str, filename: str, purpose: str, content: bytes
    ) -> dict[str, Any]:
        row = {
            "file_id": f"file-{secrets.token_hex(12)}",
            "tenant_id": tenant_id,
            "filename": filename[:256],
            "purpose": purpose,
            "bytes": len(content),
            "content": content,
            "created_at": datetime.now(UTC),
        }

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(files), [row])

        await mapped(op)
        return {k: v for k, v in row.items() if k != "content"}

    async def get(self, file_id: str, *, tenant_id: str) -> dict[str, Any]:
        """The file with its content; NotFoundError for another tenant's file too."""
        query = select(files).where(files.c.file_id == file_id, files.c.tenant_id == tenant_id)

        async def op() -> Any:
            async with self._db.engine.connect() as conn:
                return (await conn.execute(query)).first()

        row = await mapped(op)
        if row is None:
            raise NotFoundError(f"no file {file_id!r}")
        return dict(row._mapping)

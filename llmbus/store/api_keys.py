"""``KeyStore``: the gateway's API keys. A key is shown once, at creation; only a salted
hash of its secret is stored.

Keys look like ``llmbus_<key id>_<secret>``. The id finds the row; the secret is checked
against ``HMAC-SHA256(salt, secret)`` in constant time. A fast hash is right here, unlike
for passwords: the secret is 32 random bytes, so there is nothing to guess by brute force,
and a slow hash would only hand attackers a cheap way to burn the gateway's CPU.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from llmbus.errors import NotFoundError
from llmbus.store.database import Database, mapped
from llmbus.store.tables import api_key_revocations, api_keys

_KEY_FORMAT = re.compile(r"^llmbus_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    tenant_id: str
    user_id: str | None
    rpm: int | None
    tpm: int | None
    created_at: datetime
    revoked_at: datetime | None = None


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, *, tenant_id: str, user_id: str | None, rpm: int | None, tpm: int | None
    ) -> tuple[str, KeyInfo]:
        """A new key: (the key itself, to show once; what is stored about it)."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        info = KeyInfo(key_id, tenant_id, user_id, rpm, tpm, datetime.now(UTC))
        row = {**info.__dict__, "salt": salt, "hash": _digest(salt, secret)}
        del row["revoked_at"]

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(api_keys), [row])

        await mapped(op)
        return f"llmbus_{key_id}_{secret}", info

    async def revoke(self, key_id: str) -> None:
        if not await self._select(key_id):
            raise NotFoundError(f"no key {key_id!r}")

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(
                    insert(api_key_revocations).on_conflict_do_nothing(),
                    [{"key_id": key_id, "revoked_at": datetime.now(UTC)}],
                )

        await mapped(op)

    async def keys(self, *, include_revoked: bool = False) -> list[KeyInfo]:
        rows = await self._select(None)
        return [k for k in rows if include_revoked or k.revoked_at is None]

    async def verify(self, key: str) -> KeyInfo | None:
        """The key's owner, or None when it is malformed, unknown, wrong or revoked."""
        match = _KEY_FORMAT.match(key)
        if match is None:
            return None
        key_id, secret = match.groups()
        found = await self._select(key_id, with_hash=True)
        if not found:
            return None
        info, salt, digest = found[0]
        if not hmac.compare_digest(_digest(salt, secret), digest) or info.revoked_at:
            return None
        assert isinstance(info, KeyInfo)
        return info

    async def _select(self, key_id: str | None, *, with_hash: bool = False) -> list[Any]:
        k, r = api_keys, api_key_revocations
        query = (
            select(k, r.c.revoked_at)
            .select_from(k.outerjoin(r, r.c.key_id == k.c.key_id))
            .order_by(k.c.created_at)
        )
        if key_id is not None:
            query = query.where(k.c.key_id == key_id)

        async def op() -> list[Any]:
            async with self._db.engine.connect() as conn:
                return list(await conn.execute(query))

        out: list[Any] = []
        for row in await mapped(op):
            m = row._mapping
            info = KeyInfo(
                m["key_id"], m["tenant_id"], m["user_id"], m["rpm"], m["tpm"],
                m["created_at"], m["revoked_at"],
            )  # fmt: skip
            out.append((info, m["salt"], m["hash"]) if with_hash else info)
        return out

"""``WebhookStore``: tenants' webhook endpoints, and the deliveries owed to them.

Each delivery row keeps its attempts, the receiver's last answer and when to try again,
so an operator sees in PostgreSQL what reached whom, and a restarted notifier resumes
where its predecessor stopped.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert

from llmbus.errors import InvalidRequestError, NotFoundError
from llmbus.schemas.events import BatchEvent
from llmbus.store.database import Database, mapped
from llmbus.store.tables import batch_notices, webhook_deliveries, webhook_endpoints

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
"""Standard Webhooks' secret format: ``whsec_`` and the base64 of the key bytes."""


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    tenant_id: str
    url: str
    event_types: list[str] | None
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    event: BatchEvent
    endpoint_id: str
    url: str
    secret: str
    attempts: int


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_url(url: str) -> str:
    """HTTPS, or plain HTTP to this host only (a local receiver): events carry tenants'
    batch ids and counts, not for the open network in clear text."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url
    raise InvalidRequestError(f"webhook URL must be https:// (or http:// to loopback): {url!r}")


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, tenant_id: str, url: str, event_types: Sequence[str] | None = None
    ) -> tuple[str, str]:
        """A new endpoint; returns (endpoint id, signing secret), the secret shown once."""
        check_url(url)
        endpoint_id = f"we_{secrets.token_hex(12)}"
        secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        row = {
            "endpoint_id": endpoint_id,
            "tenant_id": tenant_id,
            "url": url,
            "secret": secret,
            "event_types": list(event_types) if event_types else None,
            "created_at": datetime.now(UTC),
        }

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(webhook_endpoints), [row])

        await mapped(op)
        return endpoint_id, secret

    async def endpoints(self, *, include_disabled: bool = False) -> list[Endpoint]:
        e = webhook_endpoints.c
        query = select(
            e.endpoint_id, e.tenant_id, e.url, e.event_types, e.created_at, e.disabled_at
        ).order_by(e.created_at)
        if not include_disabled:
            query = query.where(e.disabled_at.is_(None))

        async def op() -> list[Any]:
            async with self._db.engine.connect() as conn:
                return list(await conn.execute(query))

        return [Endpoint(**row._mapping) for row in await mapped(op)]

    async def disable(self, endpoint_id: str) -> None:
        """No new deliveries to it; pending ones are dropped at their next attempt."""
        e = webhook_endpoints.c
        statement = (
            update(webhook_endpoints)
            .where(and_(e.endpoint_id == endpoint_id, e.disabled_at.is_(None)))
            .values(disabled_at=datetime.now(UTC))
        )

        async def op() -> int:
            async with self._db.engine.begin() as conn:
                return (await conn.execute(statement)).rowcount

        if not await mapped(op):
            raise NotFoundError(f"no active webhook endpoint {endpoint_id!r}")

    async def due(self, now: datetime, *, max_attempts: int, limit: int) -> list[Delivery]:
        """Undelivered deliveries whose next attempt is due, to endpoints still enabled."""
        d, e, n = webhook_deliveries.c, webhook_endpoints.c, batch_notices.c
        query = (
            select(n.payload, d.endpoint_id, e.url, e.secret, d.attempts)
            .select_from(
                webhook_deliveries.join(webhook_endpoints, e.endpoint_id == d.endpoint_id).join(
                    batch_notices, n.event_id == d.event_id
                )
            )
            .where(
                d.delivered_at.is_(None),
                d.next_attempt_at <= now,
                d.attempts < max_attempts,
                e.disabled_at.is_(None),
            )
            .order_by(d.next_attempt_at, n.seq)  # a batch's events in the order they happened
            .limit(limit)
        )

        async def op() -> list[Any]:
            async with self._db.engine.connect() as conn:
                return list(await conn.execute(query))

        return [
            Delivery(BatchEvent.model_validate(payload), endpoint_id, url, secret, attempts)
            for payload, endpoint_id, url, secret, attempts in await mapped(op)
        ]

    async def record_attempt(
        self,
        delivery: Delivery,
        *,
        status: int | None,
        error: str | None,
        delivered: bool,
        next_attempt_at: datetime,
    ) -> None:
        d = webhook_deliveries.c
        now = datetime.now(UTC)
        statement = (
            update(webhook_deliveries)
            .where(and_(d.event_id == delivery.event.id, d.endpoint_id == delivery.endpoint_id))
            .values(
                attempts=d.attempts + 1,
                last_status=status,
                last_error=error,
                last_attempt_at=now,
                next_attempt_at=next_attempt_at,
                delivered_at=now if delivered else None,
            )
        )

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(statement)

        await mapped(op)

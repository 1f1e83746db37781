"""``WebhookSender``: delivers recorded batch events to tenants' endpoints, signed as
Standard Webhooks (and OpenAI's webhooks) are, at least once, with retries and backoff.

Delivery order: the POST is answered 2xx, then the delivery is marked delivered. A crash
in between sends it again with the same ``webhook-id`` (the event id), which receivers
deduplicate on. Workers never wait on any of this: it runs in ``llmbus notifier``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx

from llmbus.metrics import NotifierMetrics
from llmbus.store.webhooks import SECRET_PREFIX, Delivery, WebhookStore

log = logging.getLogger(__name__)

_PER_ROUND = 32
"""Deliveries tried at once: a slow receiver holds one of these for its timeout, not the
round; the rest wait for the next round."""


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' ``webhook-signature``: HMAC-SHA256 over ``id.timestamp.body``
    keyed with the secret's bytes, as ``v1,<base64>``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookSender:
    def __init__(
        self,
        store: WebhookStore,
        http: httpx.AsyncClient,
        *,
        retry_s: Sequence[float],
        metrics: NotifierMetrics,
    ) -> None:
        self._store = store
        self._http = http
        self._retry_s = list(retry_s)
        """Wait before each retry; its length + 1 is the number of attempts."""
        self._metrics = metrics

    async def deliver_due(self) -> int:
        """Try every delivery that is due (up to a round's worth); returns how many."""
        due = await self._store.due(
            datetime.now(UTC), max_attempts=len(self._retry_s) + 1, limit=_PER_ROUND
        )
        await asyncio.gather(*(self._attempt(d) for d in due))
        return len(due)

    async def _attempt(self, delivery: Delivery) -> None:
        event = delivery.event
        body = event.model_dump_json().encode()
        timestamp = int(datetime.now(UTC).timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "llmbus-webhooks",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(delivery.secret, event.id, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            # No redirects: a receiver cannot point llmbus's requests elsewhere.
            response = await self._http.post(
                delivery.url, content=body, headers=headers, follow_redirects=False
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        delivered = status is not None and 200 <= status < 300
        if not delivered and error is None:
            error = f"HTTP {status}"
        attempt = delivery.attempts  # this one's index
        last = attempt >= len(self._retry_s)
        wait = timedelta(seconds=self._retry_s[min(attempt, len(self._retry_s) - 1)])
        await self._store.record_attempt(
            delivery,
            status=status,
            error=None if delivered else error,
            delivered=delivered,
            next_attempt_at=datetime.now(UTC) + wait,
        )
        outcome = "delivered" if delivered else "gave_up" if last else "retry"
        self._metrics.webhook_attempts.labels(outcome).inc()
        if not delivered:
            log.warning(
                "webhook %s to %s failed (%s), attempt %d%s",
                event.id,
                delivery.endpoint_id,
                error,
                attempt + 1,
                "; giving up" if last else f"; next in {wait.total_seconds():.0f} s",
            )

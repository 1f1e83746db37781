"""``llmbus notifier``: batch lifecycle events to the events topic and to webhooks.

Run one or more: a PostgreSQL advisory lock (``LeaderLease``) lets one of them work and
keeps the others waiting to take over. It polls rather than listens: a batch's status
is derived from the audit trail, which changes with every answer, and one query a second
over unfinished batches is cheaper than a trigger on every audited row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from llmbus.errors import BrokerUnavailableError, DatabaseUnavailableError
from llmbus.jobs.batch_events import BatchEvents
from llmbus.jobs.webhook_sender import WebhookSender
from llmbus.metrics import NotifierMetrics
from llmbus.store.leader_lease import LeaderLease

log = logging.getLogger(__name__)

NOTIFIER_LOCK = 0x6C6C6D62_6E6F7466
"""The advisory lock key of the notifier lease ("llmbnotf"); one per database."""
_MAX_BACKOFF_S = 10.0
"""Ceiling of the wait while PostgreSQL or Kafka is away: back within 10 s of their return."""


class Notifier:
    def __init__(
        self,
        lease: LeaderLease,
        events: BatchEvents,
        webhooks: WebhookSender,
        metrics: NotifierMetrics,
        *,
        poll_s: float,
    ) -> None:
        self._lease = lease
        self._events = events
        self._webhooks = webhooks
        self._metrics = metrics
        self._poll_s = poll_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        backoff = self._poll_s
        try:
            while not self._stopping.is_set():
                try:
                    if await self._lease.try_acquire() and await self._lease.confirm():
                        self._metrics.leader.set(1)
                        await self.round()
                    else:
                        self._metrics.leader.set(0)
                    backoff = self._poll_s
                except (DatabaseUnavailableError, BrokerUnavailableError) as exc:
                    log.warning("notifier round failed (%s); retrying in %.1f s", exc, backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                await self._sleep(backoff)
        finally:
            self._metrics.leader.set(0)
            await self._lease.release()

    async def round(self) -> None:
        """One pass: record what changed, publish it, deliver what is due. Webhooks do not
        wait for Kafka: their deliveries are recorded with the events, in PostgreSQL."""
        await self._events.record_changes()
        try:
            await self._events.publish_recorded()
        finally:
            await self._webhooks.deliver_due()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

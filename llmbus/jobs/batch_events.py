"""``BatchEvents``: turns batches' status changes into lifecycle events, each written to
the events topic once.

Commit order: (1) an event is recorded in PostgreSQL with the webhook deliveries it owes,
in one transaction, under an id derived from batch and type (recording it again inserts
nothing); (2) it is published to the events topic and Kafka acknowledges it; (3) it is
marked published. A crash between (2) and (3), or a publish that failed after all, leaves
an event on the topic that PostgreSQL calls unpublished; so before publishing after a
start or a failed publish, the topic is read from just before the oldest unmarked event
was recorded, and the events found there are marked, not sent again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from llmbus.bus import BusProducer, Kafka, TopicPartition, read_since
from llmbus.metrics import NotifierMetrics
from llmbus.schemas import header
from llmbus.schemas.events import (
    H_EVENT_ID,
    BatchEvent,
    BatchEventData,
    BatchEventType,
    RequestCounts,
    encode_event,
    event_id,
)
from llmbus.store.batch_notices import BatchNoticeStore
from llmbus.store.batch_store import OPENAI_STATUS, BatchStatus, BatchStore

log = logging.getLogger(__name__)

_WORK_LIST = 1000
"""Unfinished batches looked at per round (newest first); more than this many at once
delays the oldest ones' events until some finish."""
_PUBLISH_CHUNK = 500
_CLOCK_MARGIN = timedelta(minutes=1)
"""How far before an event's recording the topic is searched for it: covers the clock
difference between PostgreSQL's client (recording time) and the broker (record time)."""

_FINAL = {
    "completed": BatchEventType.COMPLETED,
    "cancelled": BatchEventType.CANCELLED,
    "expired": BatchEventType.EXPIRED,
    "failed": BatchEventType.FAILED,
}


class BatchEvents:
    def __init__(
        self,
        batches: BatchStore,
        notices: BatchNoticeStore,
        producer: BusProducer,
        *,
        bootstrap: Kafka,
        topic: str,
        metrics: NotifierMetrics,
    ) -> None:
        self._batches = batches
        self._notices = notices
        self._producer = producer
        self._bootstrap = bootstrap
        self._topic = topic
        self._metrics = metrics
        self._topic_checked = False
        """False at start and after a failed publish: search the topic before sending."""

    async def record_changes(self) -> int:
        """Record the events batches' current status calls for; returns how many were new."""
        statuses = await self._batches.awaiting_final_event(limit=_WORK_LIST)
        if not statuses:
            return 0
        recorded = await self._notices.recorded_types([s.batch_id for s in statuses])
        now = int(datetime.now(UTC).timestamp())
        new = [
            (_event(s, kind, now), s.tenant_id)
            for s in reversed(statuses)  # oldest batch first
            for kind in _due(s)
            if kind.value not in recorded.get(s.batch_id, set())
        ]
        inserted = await self._notices.record(new) if new else []
        for event in inserted:
            self._metrics.events.labels(event.type.value).inc()
        return len(inserted)

    async def publish_recorded(self) -> int:
        """Publish recorded events not yet marked published; returns how many were sent."""
        pending = await self._notices.unpublished(_PUBLISH_CHUNK)
        if not pending:
            return 0
        if not self._topic_checked:
            since = min(at for _, at in pending) - _CLOCK_MARGIN
            on_topic = await self._ids_on_topic(since) & {e.id for e, _ in pending}
            await self._notices.mark_published(sorted(on_topic))
            if on_topic:
                log.info("%d event(s) were published before; not sent again", len(on_topic))
            pending = [(e, at) for e, at in pending if e.id not in on_topic]
            self._topic_checked = True
        try:
            acks = []
            for event, _ in pending:
                value, headers = encode_event(event)
                acks.append(
                    await self._producer.enqueue(
                        self._topic, value, headers, key=event.data.id.encode()
                    )
                )
            for ack in acks:
                await ack
        except BaseException:
            self._topic_checked = False  # some may be on the topic: look before resending
            raise
        await self._notices.mark_published([e.id for e, _ in pending])
        self._metrics.published.inc(len(pending))
        return len(pending)

    async def _ids_on_topic(self, since: datetime) -> set[str]:
        found: set[str] = set()
        for partition in sorted(await self._producer.partitions_for(self._topic)):
            records = await read_since(
                self._bootstrap,
                TopicPartition(self._topic, partition),
                int(since.timestamp() * 1000),
                client_id="llmbus-notifier",
            )
            found |= {header(r.headers, H_EVENT_ID) or "" for r in records}
        return found


def _due(s: BatchStatus) -> list[BatchEventType]:
    """The events a batch in this status has had, in the order they happened."""
    due = [BatchEventType.CREATED]
    if s.published_at is not None:
        due.append(BatchEventType.IN_PROGRESS)
    if s.status in _FINAL:
        due.append(_FINAL[s.status])
    return due


def _event(s: BatchStatus, kind: BatchEventType, now: int) -> BatchEvent:
    finished = kind.is_terminal and kind is not BatchEventType.FAILED
    return BatchEvent(
        id=event_id(s.batch_id, kind),
        type=kind,
        created_at=now,
        data=BatchEventData(
            id=s.batch_id,
            status=OPENAI_STATUS[s.status] if kind.is_terminal else _EARLIER[kind],
            kind=s.kind,
            model=s.model,
            tenant_id=s.tenant_id,
            request_counts=RequestCounts(
                total=s.total, completed=s.completed, failed=s.failed + s.cancelled + s.expired
            ),
            output_file_id=f"{s.batch_id}-output" if finished else None,
            error_file_id=f"{s.batch_id}-errors" if finished else None,
            results_command=f"llmbus batch results {s.batch_id}" if finished else None,
        ),
    )


_EARLIER = {BatchEventType.CREATED: "validating", BatchEventType.IN_PROGRESS: "in_progress"}
"""A catch-up event (recorded after the batch moved on) still says what it announces."""

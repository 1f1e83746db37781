"""``BatchPublisher``: a batch job's or replay run's requests onto the batch lane."""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable, Sequence

from llmbus.bus import BusProducer
from llmbus.schemas import (
    BatchCancellation,
    ChatRequest,
    ReplyTo,
    encode,
)
from llmbus.schemas.wire import CONTENT_TYPE, H_CONTENT_TYPE, H_KIND
from llmbus.settings import Settings, batch_topic
from llmbus.tracing import TRACEPARENT, outgoing_traceparent

_WINDOW = 2_000
"""Records queued but not yet acknowledged: enough to keep the producer's batches full,
small enough that a 50,000-line submission does not hold every future at once."""


class BatchPublisher:
    def __init__(
        self, producer: BusProducer, *, topic_prefix: str, replies_topic: str, control_topic: str
    ) -> None:
        self._producer = producer
        self._prefix = topic_prefix
        self._replies_topic = replies_topic
        self._control_topic = control_topic

    @classmethod
    def from_settings(cls, producer: BusProducer, settings: Settings) -> BatchPublisher:
        """The publisher for ``settings``' topics."""
        return cls(
            producer,
            topic_prefix=settings.topic_prefix,
            replies_topic=settings.replies_topic,
            control_topic=settings.control_topic,
        )

    async def reply_to(self, batch_id: str) -> ReplyTo:
        """Finals of a batch go to one replies partition; only the auditor reads them."""
        partitions = sorted(await self._producer.partitions_for(self._replies_topic))
        if not partitions:
            raise ValueError(f"replies topic {self._replies_topic} does not exist")
        index = zlib.crc32(batch_id.encode()) % len(partitions)
        return ReplyTo(topic=self._replies_topic, partition=partitions[index])

    async def publish(
        self, requests: Sequence[ChatRequest], on_acked: Callable[[int], None] | None = None
    ) -> None:
        """Publish all ``requests``; returns once the broker acknowledged every one.

        Raises BrokerUnavailableError if one could not be written; request ids are
        deterministic, so publishing the same requests again is safe (workers resend
        what was already answered).
        """
        pending: deque[asyncio.Future[object]] = deque()
        for request in requests:
            value, headers = encode(request)
            headers = [*headers, (TRACEPARENT, outgoing_traceparent().encode())]
            topic = batch_topic(self._prefix, request.body.model)
            pending.append(
                await self._producer.enqueue(topic, value, headers, key=request.request_id.encode())
            )
            if len(pending) >= _WINDOW:
                await pending.popleft()
                if on_acked:
                    on_acked(1)
        while pending:
            await pending.popleft()
            if on_acked:
                on_acked(1)

    async def cancel(self, batch_id: str) -> None:
        body = BatchCancellation(batch_id=batch_id).model_dump_json().encode()
        await self._producer.send(
            self._control_topic,
            body,
            [(H_CONTENT_TYPE, CONTENT_TYPE.encode()), (H_KIND, b"batch-cancellation")],
            key=batch_id.encode(),
        )

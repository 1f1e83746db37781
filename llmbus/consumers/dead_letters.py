"""Poison records go to the dead-letter topic: original bytes, original headers, and why."""

from __future__ import annotations

from llmbus.bus import BusProducer, Record

H_REASON = "llmbus-dlq-reason"
H_CODE = "llmbus-dlq-code"
H_SOURCE = "llmbus-dlq-source"
H_TRUNCATED = "llmbus-dlq-truncated-from"
_MAX_REASON = 1000
"""Headers are not for essays; a reason is a sentence."""


class DeadLetters:
    def __init__(self, producer: BusProducer, topic: str, *, max_bytes: int) -> None:
        self._producer = producer
        self._topic = topic
        self._max_bytes = max_bytes

    async def publish(self, record: Record, code: str, reason: str) -> None:
        """Returns once the broker acknowledged the dead letter (then the offset may move)."""
        headers = [
            *((k, v) for k, v in record.headers if not k.startswith("llmbus-dlq-")),
            (H_CODE, code.encode()),
            (H_REASON, reason[:_MAX_REASON].encode("utf-8", "replace")),
            (H_SOURCE, f"{record.topic}:{record.partition}:{record.offset}".encode()),
        ]
        value = record.value or b""
        if len(value) > self._max_bytes:
            # Larger than this producer may send: keep the head, say how big it was, so a
            # too-big poison record cannot block its partition by failing its dead-lettering.
            headers.append((H_TRUNCATED, str(len(value)).encode()))
            value = value[: self._max_bytes]
        await self._producer.send(self._topic, value, headers, key=record.key)

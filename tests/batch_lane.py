"""Publishing chat requests on the batch lane, as ``llmbus batch submit`` does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from llmbus.bus import BusProducer
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.schemas import ChatCompletionRequest, ChatMessage, ChatRequest, Priority
from llmbus.settings import Settings


async def publish_batch(
    producer: BusProducer, s: Settings, batch_id: str, prompts: list[str], **body: Any
) -> None:
    """One chat request per prompt (ids ``{batch_id}-{i}``), low priority, with ``body``'s
    extra fields (``max_tokens``, ``temperature``...)."""
    publisher = BatchPublisher.from_settings(producer, s)
    reply_to = await publisher.reply_to(batch_id)
    await publisher.publish(
        [
            ChatRequest(
                request_id=f"{batch_id}-{i}",
                created_at=datetime.now(UTC),
                reply_to=reply_to,
                priority=Priority.LOW,
                batch_id=batch_id,
                body=ChatCompletionRequest(
                    model=s.model,
                    messages=[ChatMessage(role="user", content=prompt)],
                    **body,
                ),
            )
            for i, prompt in enumerate(prompts)
        ]
    )


def batch_answered(registry: CollectorRegistry) -> float:
    """Batch-lane requests a worker with metrics in ``registry`` has answered so far."""
    labels = {"lane": "batch", "outcome": "ok"}
    return registry.get_sample_value("llmbus_lane_finals_total", labels) or 0.0

"""The example service's handlers, on FastStream's in-memory broker (no Kafka): which
request a ticket becomes, and which enriched ticket each kind of answer becomes. That the
service works against llmbus is shown by test_ticket_triage_live.py."""

from __future__ import annotations

import json
from typing import Any

from faststream.kafka import KafkaBroker, TestKafkaBroker

from examples.ticket_triage.app import TriageConfig, build_broker
from llmbus.schemas import decode_request
from llmbus.schemas.envelope import ChatResult, ErrorReply, Timings

CONFIG = TriageConfig(llmbus_prefix="unit", model="smollm2-135m-instruct")
TICKET = {"ticket_id": "T-42", "subject": "Invoice wrong", "body": "I was charged twice."}


def answer(content: str) -> dict[str, Any]:
    return ChatResult(
        request_id="ticket-T-42",
        completion={
            "object": "chat.completion",
            "id": "chatcmpl-ticket-T-42",
            "created": 1,
            "model": CONFIG.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
        },
        timings=Timings(queue_ms=1.0, ttft_ms=5.0, total_ms=80.0),
        worker_id="w1",
    ).model_dump(mode="json")


def sink(broker: KafkaBroker, topic: str) -> list[dict[str, Any]]:
    """What the service publishes to ``topic``, as a consumer of it would read it."""
    received: list[dict[str, Any]] = []

    @broker.subscriber(topic, group_id="test-sink")
    async def keep(body: dict[str, Any]) -> None:
        received.append(body)

    return received


async def test_a_ticket_becomes_an_llmbus_request_answered_on_our_results_topic() -> None:
    broker = build_broker(CONFIG)
    got = sink(broker, CONFIG.requests_topic)  # where llmbus's workers would read it
    async with TestKafkaBroker(broker) as br:
        await br.publish(TICKET, CONFIG.tickets_topic)
    (sent,) = got
    request = decode_request(json.dumps(sent).encode(), [("llmbus-kind", b"request")])
    assert request.request_id == "ticket-T-42"
    assert request.reply_to.topic == "unit.replies.ticket-triage"
    assert request.reply_to.partition is None and request.schema_version == 4
    assert request.body.response_format.type == "json_schema"  # type: ignore[union-attr]
    assert "charged twice" in request.body.messages[1].content  # type: ignore[union-attr]


async def test_answers_become_enriched_tickets_and_deltas_are_ignored() -> None:
    broker = build_broker(CONFIG)
    enriched = sink(broker, CONFIG.enriched_topic)
    async with TestKafkaBroker(broker) as br:
        topic = CONFIG.results_topic
        good = json.dumps({"category": "billing", "summary": "Charged twice"})
        await br.publish(answer(good), topic, headers={"llmbus-kind": "result"})
        await br.publish(answer("not json"), topic, headers={"llmbus-kind": "result"})
        await br.publish({"request_id": "ticket-T-42", "seq": 0, "content": "x"}, topic,
                         headers={"llmbus-kind": "delta"})  # fmt: skip
        failed = ErrorReply(request_id="ticket-T-7", code="deadline_exceeded", message="late")
        await br.publish(failed.model_dump(mode="json"), topic, headers={"llmbus-kind": "error"})
    assert enriched == [
        {"ticket_id": "T-42", "category": "billing", "summary": "Charged twice",
         "model": CONFIG.model, "triage_ms": 80.0, "error": None},
        {"ticket_id": "T-42", "category": "other", "summary": "", "model": None,
         "triage_ms": None, "error": "unparsed"},
        {"ticket_id": "T-7", "category": "other", "summary": "", "model": None,
         "triage_ms": None, "error": "deadline_exceeded"},
    ]  # fmt: skip

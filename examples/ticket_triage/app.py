"""Ticket triage: support tickets in, llmbus classifies them, enriched tickets out.

1. ``on_ticket`` consumes the business topic and publishes an llmbus request whose answer
   goes to this service's own results topic (``reply_to`` without a partition).
2. ``on_answer`` consumes that results topic (any replica of this service may: it is a
   consumer group, not a live client), and publishes the enriched ticket.

The model answers in JSON constrained by a schema (OpenAI's ``response_format``), so the
category is always one of ours. Run it with ``faststream run examples.ticket_triage.app:app``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker, KafkaMessage, KafkaResponse
from pydantic import BaseModel, Field, ValidationError

from llmbus.schemas import ChatResult, ErrorReply

CATEGORIES = ["billing", "technical", "account", "other"]
_ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": CATEGORIES},
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["category", "summary"],
    "additionalProperties": False,
}
_MAX_TOKENS = 96
"""Room for the JSON answer: a category and a summary of at most 60 characters."""
_DEADLINE_S = 120
"""A ticket not triaged within two minutes is better routed by hand than late."""


@dataclass(frozen=True)
class TriageConfig:
    bootstrap: str = "127.0.0.1:19092"
    llmbus_prefix: str = "llmbus"
    model: str = "smollm2-135m-instruct"
    tickets_topic: str = "support.tickets"
    enriched_topic: str = "support.tickets.enriched"
    group: str = "ticket-triage"

    @property
    def requests_topic(self) -> str:
        return f"{self.llmbus_prefix}.requests.{self.model}"

    @property
    def results_topic(self) -> str:
        """Ours alone; inside llmbus's default LLMBUS_REPLY_TOPIC_PATTERN."""
        return f"{self.llmbus_prefix}.replies.{self.group}"

    @classmethod
    def from_env(cls) -> TriageConfig:
        return cls(
            bootstrap=os.environ.get("LLMBUS_KAFKA_BOOTSTRAP", cls.bootstrap),
            llmbus_prefix=os.environ.get("LLMBUS_TOPIC_PREFIX", cls.llmbus_prefix),
            model=os.environ.get("TRIAGE_MODEL", cls.model),
            tickets_topic=os.environ.get("TRIAGE_TICKETS_TOPIC", cls.tickets_topic),
            enriched_topic=os.environ.get("TRIAGE_ENRICHED_TOPIC", cls.enriched_topic),
            group=os.environ.get("TRIAGE_GROUP", cls.group),
        )


class Ticket(BaseModel):
    ticket_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    subject: str = Field(max_length=200)
    body: str = Field(max_length=4000)


class EnrichedTicket(BaseModel):
    ticket_id: str
    category: str
    summary: str
    model: str | None = None
    triage_ms: float | None = None
    error: str | None = None
    """Set when llmbus could not triage it (the code of its error answer)."""


def triage_request(ticket: Ticket, config: TriageConfig) -> dict[str, Any]:
    """An llmbus request, written from docs/kafka-api.md (the contract), not from code."""
    return {
        "request_id": f"ticket-{ticket.ticket_id}",
        "reply_to": {"topic": config.results_topic},
        "metadata": {"ticket_id": ticket.ticket_id},
        "body": {
            "model": config.model,
            "messages": [
                {"role": "system", "content": "Classify the support ticket and summarise it."},
                {"role": "user", "content": f"{ticket.subject}\n\n{ticket.body}"},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "triage", "schema": _ANSWER_SCHEMA},
            },
            "max_tokens": _MAX_TOKENS,
            "temperature": 0,
        },
        "deadline": (datetime.now(UTC) + timedelta(seconds=_DEADLINE_S)).isoformat(),
    }


def enriched_from(answer: ChatResult | ErrorReply) -> EnrichedTicket:
    ticket_id = answer.request_id.removeprefix("ticket-")
    if isinstance(answer, ErrorReply):
        return EnrichedTicket(ticket_id=ticket_id, category="other", summary="", error=answer.code)
    try:
        parsed = json.loads(answer.text())
        category, summary = parsed["category"], parsed["summary"]
    except (ValueError, KeyError, TypeError):
        return EnrichedTicket(ticket_id=ticket_id, category="other", summary="", error="unparsed")
    return EnrichedTicket(
        ticket_id=ticket_id,
        category=category if category in CATEGORIES else "other",
        summary=summary,
        model=answer.completion.model,
        triage_ms=answer.timings.total_ms,
    )


def build_broker(config: TriageConfig) -> KafkaBroker:
    broker = KafkaBroker(config.bootstrap)

    # "earliest": a new group (the service's first start) handles what is already there.
    @broker.subscriber(config.tickets_topic, group_id=config.group, auto_offset_reset="earliest")
    @broker.publisher(config.requests_topic)
    async def on_ticket(ticket: Ticket) -> KafkaResponse:
        request = triage_request(ticket, config)
        # Keyed by request id: a cancel would land behind it, and retries are deduplicated.
        return KafkaResponse(
            request, key=request["request_id"].encode(), headers={"llmbus-kind": "request"}
        )

    enriched = broker.publisher(config.enriched_topic)

    @broker.subscriber(
        config.results_topic, group_id=f"{config.group}-results", auto_offset_reset="earliest"
    )
    async def on_answer(body: dict[str, Any], message: KafkaMessage) -> None:
        # Routed by header, as the contract says: finals only (deltas would come only
        # for requests that stream, and these do not).
        kind = message.headers.get("llmbus-kind")
        answer: ChatResult | ErrorReply
        try:
            if kind == "result":
                answer = ChatResult.model_validate(body)
            elif kind == "error":
                answer = ErrorReply.model_validate(body)
            else:
                return
        except ValidationError:
            return  # not an llmbus answer: nothing to enrich
        ticket = enriched_from(answer)
        await enriched.publish(ticket, key=ticket.ticket_id.encode())

    return broker


app = FastStream(build_broker(TriageConfig.from_env()))

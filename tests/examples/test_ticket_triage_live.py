"""The example service against the real broker and a real worker on the real model:
tickets in, enriched tickets out, llmbus in between (no in-memory broker)."""

from __future__ import annotations

import asyncio
import json

import pytest

from examples.ticket_triage.app import CATEGORIES, TriageConfig, build_broker
from llmbus.bus import TopicPartition, ensure_topics, read_all
from llmbus.consumers.engine import Engine
from tests.conftest import Bus

pytestmark = pytest.mark.integration

TICKETS = {
    "T-1": ("Charged twice", "My invoice shows the same payment two times. Please refund."),
    "T-2": ("App crashes", "The app crashes with an error when I open the settings page."),
    "T-3": ("Cannot log in", "I forgot my password and the reset email never arrives."),
}


async def test_tickets_are_triaged_through_llmbus(bus: Bus, engine: Engine) -> None:
    s = bus.settings
    config = TriageConfig(
        bootstrap=s.kafka_bootstrap,
        llmbus_prefix=s.topic_prefix,
        model=s.model,
        tickets_topic=f"{s.topic_prefix}.support.tickets",
        enriched_topic=f"{s.topic_prefix}.support.enriched",
    )
    await ensure_topics(
        s.kafka_bootstrap,
        {config.tickets_topic: 2, config.results_topic: 2, config.enriched_topic: 1},
    )
    await bus.start_worker(engine)
    broker = build_broker(config)
    async with broker:
        await broker.start()
        for ticket_id, (subject, body) in TICKETS.items():
            ticket = {"ticket_id": ticket_id, "subject": subject, "body": body}
            await broker.publish(ticket, config.tickets_topic, key=ticket_id.encode())
        enriched: dict[str, dict[str, object]] = {}
        for _ in range(300):  # up to 2 minutes: three structured answers on a CPU
            records, _ = await read_all(
                s.kafka_bootstrap, TopicPartition(config.enriched_topic, 0), client_id="check"
            )
            enriched = {r.key.decode(): json.loads(r.value or b"") for r in records if r.key}
            if len(enriched) == len(TICKETS):
                break
            await asyncio.sleep(0.4)
    assert set(enriched) == set(TICKETS)
    for ticket in enriched.values():
        assert ticket["error"] is None, ticket
        assert ticket["category"] in CATEGORIES
        assert isinstance(ticket["summary"], str) and ticket["summary"]
        assert ticket["model"] == s.model

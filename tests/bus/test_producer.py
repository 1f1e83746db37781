"""``BusProducer.send_together`` (real broker): records sent together are each
acknowledged; one that cannot be queued fails with those after it, never those before."""

from __future__ import annotations

import uuid

import pytest

from llmbus.bus import BusProducer, Outgoing, TopicPartition, ensure_topics, read_all
from llmbus.errors import BrokerUnavailableError
from llmbus.stack.local_stack import LocalStack

pytestmark = pytest.mark.integration


async def test_records_sent_together_land_and_a_failure_stops_what_follows(
    stack: LocalStack,
) -> None:
    bootstrap = stack.kafka.bootstrap
    log, reply = (f"together-{name}-{uuid.uuid4().hex[:8]}" for name in ("log", "reply"))
    await ensure_topics(bootstrap, {log: 2, reply: 1})
    async with BusProducer(bootstrap, client_id="t", max_request_bytes=4096) as producer:
        sent = [
            Outgoing(log, b"logged", [("h", b"1")], key=b"r1", partition=1),
            Outgoing(reply, b"final", [], key=b"r1"),
        ]
        assert await producer.send_together(sent) == [None, None]

        # Over the producer's request limit: refused before it leaves. What comes after it
        # stays unsent (a final must not go out ahead of its answered-log entry); what
        # came before still goes.
        too_big = Outgoing(log, b"x" * 200_000, [], key=b"r2", partition=1)
        second = Outgoing(reply, b"final-2", [], key=b"r2")
        failures = await producer.send_together([too_big, second])
        assert all(isinstance(f, BrokerUnavailableError) for f in failures)
        assert "not sent" in str(failures[1])
        before, after = await producer.send_together([second, too_big])
        assert before is None
        assert isinstance(after, BrokerUnavailableError)

    logged, _ = await read_all(bootstrap, TopicPartition(log, 1), client_id="t")
    replies, _ = await read_all(bootstrap, TopicPartition(reply, 0), client_id="t")
    assert [(r.key, r.value, r.headers) for r in logged] == [(b"r1", b"logged", [("h", b"1")])]
    assert [r.value for r in replies] == [b"final", b"final-2"]

"""Replies to a topic of the requester's choice: keyed by request id for any consumer
group, restricted to the topics the deployment allows, audited like any other answer
(real Kafka, PostgreSQL and the stand-in engine)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.bus import Record, TopicPartition, ensure_topics, read_all
from llmbus.consumers.request_processor import REPLY_TOPIC_REFUSED
from llmbus.schemas import ChatResult, Kind, StreamDelta, decode
from llmbus.schemas.wire import H_KIND, H_REQUEST_ID, header
from tests.conftest import Bus
from tests.consumers.test_bad_input import read_dead_letters
from tests.e2e.test_chat_path import wait_for_rows
from tests.fakes.echo_engine import EchoEngine
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration


def is_final(record: Record) -> bool:
    return header(record.headers, H_KIND) == Kind.RESULT


async def read_topic_until(
    bootstrap: str, topic: str, partitions: int, *, finals: int, timeout_s: float = 60
) -> list[Record]:
    """Every record of ``topic`` once it holds ``finals`` results (as any group reads it)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while True:
        out: list[Record] = []
        for partition in range(partitions):
            records, _ = await read_all(
                bootstrap, TopicPartition(topic, partition), client_id="reader"
            )
            out += records
        if sum(map(is_final, out)) >= finals or loop.time() > give_up:
            return out
        await asyncio.sleep(0.3)


async def test_answers_go_to_a_named_topic_keyed_by_request_id(
    bus: Bus, analyst_db: AsyncEngine
) -> None:
    s = bus.settings
    results = f"{s.topic_prefix}.replies.pipeline"
    await ensure_topics(s.kafka_bootstrap, {results: 3})
    await bus.start_worker(EchoEngine(step_s=0.01))
    await bus.start_auditor()
    async with bus.client() as client:
        for n, stream in enumerate((False, True)):
            request = client.build_request(
                f"ticket {n} is late", request_id=f"pipe-{n}", reply_topic=results, stream=stream
            )
            assert request.reply_to.partition is None and request.schema_version == 4
            await client.submit(request)

        records = await read_topic_until(s.kafka_bootstrap, results, 3, finals=2)
    for record in records:
        assert record.key == header(record.headers, H_REQUEST_ID).encode()
    finals = {r.key: decode(r.value, r.headers) for r in records if is_final(r)}
    assert {k: f.text() for k, f in finals.items() if isinstance(f, ChatResult)} == {
        b"pipe-0": "echo: w6 w1 w2 w4",  # the stand-in engine's answer to "ticket 0 is late"
        b"pipe-1": "echo: w6 w1 w2 w4",
    }
    # The streamed one's deltas share its final's partition, in order, before it.
    streamed = [r for r in records if r.key == b"pipe-1"]
    assert len({r.partition for r in streamed}) == 1
    deltas = [decode(r.value, r.headers) for r in streamed[:-1]]
    assert deltas and all(isinstance(d, StreamDelta) for d in deltas)
    assert [d.seq for d in deltas] == list(range(len(deltas)))  # type: ignore[union-attr]

    # The auditor reads every allowed reply topic: these answers are in the trail.
    rows = await wait_for_rows(
        analyst_db,
        "SELECT request_id, status, output FROM llmbus.results"
        " WHERE request_id IN ('pipe-0', 'pipe-1') ORDER BY request_id",
        {},
        want=2,
    )
    assert [(r["request_id"], r["status"]) for r in rows] == [("pipe-0", "ok"), ("pipe-1", "ok")]

    # ... and replayable like any other: the replay's answers come back to the replay run.
    code, out, err = await run_cli("replay", "--request-id", "pipe-0", "--wait", env=bus.env())
    assert code == 0, err
    run_id = out.splitlines()[0]
    replayed = await wait_for_rows(
        analyst_db,
        "SELECT r.status, r.output FROM llmbus.requests q JOIN llmbus.results r"
        " USING (request_id) WHERE q.replay_of = 'pipe-0' AND q.batch_id = :run",
        {"run": run_id},
        want=1,
    )
    assert [(r["status"], r["output"]) for r in replayed] == [("ok", "echo: w6 w1 w2 w4")]


async def test_a_topic_outside_the_pattern_or_missing_is_refused_and_dead_lettered(
    bus: Bus,
) -> None:
    s = bus.settings
    foreign = f"{s.topic_prefix}-other.payments"
    await ensure_topics(s.kafka_bootstrap, {foreign: 1})
    await bus.start_worker(EchoEngine(step_s=0.01))
    async with bus.client() as client:
        refused = {
            "to-foreign": foreign,
            "to-missing": f"{s.topic_prefix}.replies.nobody-made-this",
        }
        for rid, topic in refused.items():
            await client.submit(client.build_request("pay me", request_id=rid, reply_topic=topic))
        # The worker goes on: a request to its own replies is answered.
        assert (await client.chat("still there?")).text() == "echo: w5 w6"

    dead = await read_dead_letters(s.kafka_bootstrap, s.dead_letter_topic, want=2)
    reasons = {
        header(r.headers, H_REQUEST_ID): (
            header(r.headers, "llmbus-dlq-code"),
            header(r.headers, "llmbus-dlq-reason"),
        )
        for r in dead
    }
    assert set(reasons) == set(refused)
    assert reasons["to-foreign"][0] == REPLY_TOPIC_REFUSED
    assert "not one this deployment answers on" in reasons["to-foreign"][1]
    assert reasons["to-missing"][0] == REPLY_TOPIC_REFUSED
    assert "does not exist" in reasons["to-missing"][1]
    # Nothing was written into the topic the request had no right to.
    records, end = await read_all(s.kafka_bootstrap, TopicPartition(foreign, 0), client_id="check")
    assert (records, end) == ([], 0)

"""Batch lifecycle events: each once on the events topic, and as signed webhooks that a
local receiver verifies and sees once each across a kill -9 of the notifier (real
Kafka, PostgreSQL, ``llmbus notifier`` processes; the stand-in engine paces the work)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmbus.bus import BusProducer, TopicPartition, read_all
from llmbus.errors import NotStartedError
from llmbus.jobs.batch_events import BatchEvents
from llmbus.metrics import NotifierMetrics
from llmbus.schemas.events import H_EVENT_ID, BatchEventType, encode_event, event_id
from llmbus.schemas.wire import header
from llmbus.stack.processes import free_port
from llmbus.store.batch_notices import BatchNoticeStore
from llmbus.store.batch_store import BatchStore
from llmbus.store.database import Database
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine
from tests.jobs.test_batch_jobs import write_batch
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """A tenant's webhook endpoint: verifies Standard Webhooks signatures itself, refuses
    each event's first delivery (so every event is retried), dedupes by webhook-id."""

    secret: str = ""
    seen: dict[str, dict[str, object]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers["webhook-id"]
        timestamp = request.headers["webhook-timestamp"]
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(
            hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        offered = [s.removeprefix("v1,") for s in request.headers["webhook-signature"].split()]
        if expected not in offered or abs(time.time() - int(timestamp)) > 300:
            self.bad_signatures += 1
            return web.Response(status=401)
        self.attempts[msg_id] = self.attempts.get(msg_id, 0) + 1
        if self.attempts[msg_id] == 1:
            return web.Response(status=500)  # try again later
        self.seen.setdefault(msg_id, json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield hooks, f"http://127.0.0.1:{port}/hooks"
    await runner.cleanup()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 90) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if condition():
            return
        await asyncio.sleep(0.2)


async def test_events_once_on_kafka_and_as_signed_webhooks_across_a_notifier_crash(
    bus: Bus, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    hooks, url = receiver
    s = bus.settings
    tenant = f"acme-{s.topic_prefix}"  # the database is the session's: a tenant of our own
    code, out, err = await run_cli(
        "webhooks", "add", "--tenant", tenant, "--url", url, env=bus.env()
    )
    assert code == 0, err
    endpoint_id, hooks.secret = out.split()
    assert hooks.secret.startswith("whsec_") and hooks.secret not in err
    notifier_env = {
        **bus.env(),
        "LLMBUS_NOTIFIER_POLL_S": "0.2",
        "LLMBUS_WEBHOOK_RETRY_S": "[0.3, 0.5, 1, 1, 1, 1]",
        "LLMBUS_LOG_LEVEL": "WARNING",
    }
    first = bus.spawn_cli(["notifier"], notifier_env)
    await bus.start_worker(EchoEngine(step_s=0.2, max_num_seqs=4))
    await bus.start_auditor()

    write_batch(tmp_path / "done.jsonl", 4, model=s.model)
    code, out, err = await run_cli(
        "batch", "submit", str(tmp_path / "done.jsonl"), "--tenant", tenant, "--wait",
        env=bus.env(),
    )  # fmt: skip
    assert code == 0, err
    done = out.splitlines()[0]
    # Kill the notifier hard once some events went out, and start another.
    await wait_for(lambda: len(hooks.seen) >= 1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    bus.spawn_cli(["notifier"], notifier_env)

    write_batch(tmp_path / "stopped.jsonl", 40, model=s.model)
    code, out, err = await run_cli(
        "batch", "submit", str(tmp_path / "stopped.jsonl"), "--tenant", tenant, env=bus.env()
    )
    assert code == 0, err
    stopped = out.strip()
    code, _, err = await run_cli("batch", "cancel", stopped, env=bus.env())
    assert code == 0, err

    kinds = (BatchEventType.CREATED, BatchEventType.IN_PROGRESS)
    expected = {
        event_id(batch, kind): (batch, kind.value)
        for batch, final in ((done, BatchEventType.COMPLETED), (stopped, BatchEventType.CANCELLED))
        for kind in (*kinds, final)
    }
    await wait_for(lambda: set(hooks.seen) >= set(expected))
    assert {i: (e["data"]["id"], e["type"]) for i, e in hooks.seen.items()} == expected
    assert hooks.bad_signatures == 0
    assert all(n >= 2 for n in hooks.attempts.values()), "each was refused once, then retried"
    completed = hooks.seen[event_id(done, BatchEventType.COMPLETED)]
    assert completed["object"] == "event"
    assert completed["data"] == {
        "id": done, "object": "batch", "status": "completed", "kind": "batch",
        "model": s.model, "tenant_id": tenant,
        "request_counts": {"total": 4, "completed": 4, "failed": 0},
        "output_file_id": f"{done}-output", "error_file_id": f"{done}-errors",
        "results_command": f"llmbus batch results {done}",
    }  # fmt: skip

    # On Kafka: each event exactly once, keyed by batch, in order within a batch. (Other
    # tests' batches share the database, so their events may be here too.)
    records, _ = await read_all(
        s.kafka_bootstrap, TopicPartition(s.events_topic, 0), client_id="check"
    )
    ours = [r for r in records if r.key in (done.encode(), stopped.encode())]
    on_topic = [header(r.headers, H_EVENT_ID) or "" for r in ours]
    assert sorted(on_topic) == sorted(expected), "every event once, none twice"
    for record in ours:
        assert record.key == expected[header(record.headers, H_EVENT_ID) or ""][0].encode()
    for batch in (done, stopped):
        kinds_in_order = [expected[i][1] for i in on_topic if expected[i][0] == batch]
        assert kinds_in_order[:2] == ["batch.created", "batch.in_progress"]

    # PostgreSQL keeps each delivery's attempts and last answer; analysts cannot read them.
    writer = create_async_engine(bus.stack.postgres.url("llmbus_writer"))
    reader = create_async_engine(bus.stack.postgres.url("llmbus_reader"))
    try:
        rows = await _deliveries(writer, endpoint_id)
        assert {r[0] for r in rows} == set(expected)
        for _, attempts, status, delivered in rows:
            assert (attempts >= 2, status, delivered) == (True, 204, True)
        with pytest.raises(ProgrammingError, match="permission denied"):
            await _deliveries(reader, endpoint_id)
    finally:
        await writer.dispose()
        await reader.dispose()


async def _deliveries(db: AsyncEngine, endpoint_id: str) -> list[tuple]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT d.event_id, d.attempts, d.last_status, d.delivered_at IS NOT NULL"
                " FROM llmbus.webhook_deliveries d JOIN llmbus.webhook_endpoints e"
                " USING (endpoint_id) WHERE endpoint_id = :e"
            ),
            {"e": endpoint_id},
        )
        return [tuple(r) for r in rows]


async def test_an_event_published_before_a_crash_is_not_published_again(bus: Bus) -> None:
    """The window between Kafka's acknowledgement and the mark in PostgreSQL: a notifier
    died there, so the event is on the topic but recorded as unpublished."""
    s = bus.settings
    metrics = NotifierMetrics(CollectorRegistry())
    async with (
        Database(bus.stack.postgres.url("llmbus_writer")) as db,
        BusProducer(s.kafka, client_id="t", max_request_bytes=s.max_request_bytes) as producer,
    ):
        batches, notices = BatchStore(db), BatchNoticeStore(db)

        def events() -> BatchEvents:
            return BatchEvents(
                batches, notices, producer, bootstrap=s.kafka, topic=s.events_topic,
                metrics=metrics,
            )  # fmt: skip

        batch_id = f"batch_{s.topic_prefix}"
        await batches.create(
            batch_id, kind="batch", model=s.model, total=1, tenant_id=None, user_id=None,
            source="x.jsonl", params={},
        )  # fmt: skip

        async def unpublished() -> list[str]:
            return [e.id for e, _ in await notices.unpublished(10_000) if e.data.id == batch_id]

        await events().record_changes()
        assert await notices.recorded_types([batch_id]) == {batch_id: {"batch.created"}}
        (created,) = [e for e, _ in await notices.unpublished(10_000) if e.data.id == batch_id]
        # The crashed notifier's send: acknowledged by Kafka, never marked.
        await producer.send(s.events_topic, *encode_event(created), key=batch_id.encode())

        restarted = events()
        await restarted.record_changes()
        assert await notices.recorded_types([batch_id]) == {batch_id: {"batch.created"}}
        await restarted.publish_recorded()
        assert await unpublished() == [], "found on the topic and marked, not resent"
        await batches.add_event(batch_id, "published")
        await restarted.record_changes()
        assert await unpublished() == [event_id(batch_id, BatchEventType.IN_PROGRESS)]
        await restarted.publish_recorded()
        assert await unpublished() == []
    records, _ = await read_all(
        s.kafka_bootstrap, TopicPartition(s.events_topic, 0), client_id="check"
    )
    ids = [header(r.headers, H_EVENT_ID) for r in records if r.key == batch_id.encode()]
    assert ids == [
        event_id(batch_id, BatchEventType.CREATED),
        event_id(batch_id, BatchEventType.IN_PROGRESS),
    ]


async def test_failed_and_expired_batches_announce_their_end(bus: Bus) -> None:
    """A publish that fails marks the batch failed; a batch past its window with work left
    is expired. Each gets its final event (in-process notifier rounds, real PostgreSQL)."""
    from datetime import UTC, datetime, timedelta

    from llmbus.jobs.batch_jobs import BatchJobs
    from llmbus.producers.batch_publisher import BatchPublisher
    from llmbus.schemas import ChatCompletionRequest, ChatRequest, ReplyTo

    s = bus.settings
    async with (
        Database(bus.stack.postgres.url("llmbus_writer")) as db,
        BusProducer(s.kafka, client_id="t", max_request_bytes=s.max_request_bytes) as producer,
    ):
        batches, notices = BatchStore(db), BatchNoticeStore(db)
        events = BatchEvents(
            batches, notices, producer, bootstrap=s.kafka, topic=s.events_topic,
            metrics=NotifierMetrics(CollectorRegistry()),
        )  # fmt: skip
        # Publishing through a producer that was never started fails like a lost broker.
        unstarted = BusProducer(s.kafka, client_id="x", max_request_bytes=s.max_request_bytes)
        jobs = BatchJobs(batches, BatchPublisher.from_settings(unstarted, s))
        failed = f"batch_failed_{s.topic_prefix}"
        request = ChatRequest(
            request_id=f"{failed}-1",
            reply_to=ReplyTo(topic=s.replies_topic, partition=0),
            batch_id=failed,
            deadline=datetime.now(UTC) + timedelta(hours=1),
            body=ChatCompletionRequest(model=s.model, messages=[{"role": "user", "content": "x"}]),
        )
        with pytest.raises(NotStartedError):
            await jobs.enqueue(
                failed, [request], kind="batch", tenant_id=None, user_id=None, source="f.jsonl",
                params={},
            )  # fmt: skip
        assert (await batches.status(failed)).status == "failed"

        expired = f"batch_expired_{s.topic_prefix}"
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        await batches.create(
            expired, kind="batch", model=s.model, total=3, tenant_id=None, user_id=None,
            source="e.jsonl", params={"expires_at": past},
        )  # fmt: skip
        await batches.add_event(expired, "published")
        status = await batches.status(expired)
        assert (status.status, status.expired, status.completed) == ("expired", 3, 0)
        # The same, never published (its submitter killed): failed once its window is over.
        stuck = f"batch_stuck_{s.topic_prefix}"
        await batches.create(
            stuck, kind="batch", model=s.model, total=3, tenant_id=None, user_id=None,
            source="s.jsonl", params={"expires_at": past},
        )  # fmt: skip
        assert (await batches.status(stuck)).status == "failed"

        await events.record_changes()
        found = await notices.recorded_types([failed, expired, stuck])
        assert found == {
            failed: {"batch.created", "batch.failed"},
            stuck: {"batch.created", "batch.failed"},
            expired: {"batch.created", "batch.in_progress", "batch.expired"},
        }
        (final,) = [
            e
            for e, _ in await notices.unpublished(10_000)
            if e.data.id == expired and e.type is BatchEventType.EXPIRED
        ]
        assert final.data.status == "expired"
        assert final.data.request_counts.model_dump() == {"total": 3, "completed": 0, "failed": 3}

"""Trace context and log fields across processes: the caller's traceparent reaches the
worker and comes back on every reply; the worker's log lines name the request's id,
tenant, model and trace."""

from __future__ import annotations

import json
import logging

import pytest

from llmbus.bus import PartitionReader
from llmbus.errors import RemoteError
from llmbus.logs import JsonFormatter
from llmbus.schemas.wire import H_REQUEST_ID, header
from llmbus.tracing import TRACEPARENT, attached, trace_id
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine

pytestmark = pytest.mark.integration

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def replies_of(bus: Bus, partition: int, rid: str) -> list[list[tuple[str, bytes]]]:
    async with PartitionReader(
        bus.settings.kafka_bootstrap,
        topic=bus.settings.replies_topic,
        partition=partition,
        client_id="trace-test",
        from_beginning=True,
    ) as reader:
        records = await reader.getmany(timeout_ms=2000)
    return [r.headers for r in records if header(r.headers, H_REQUEST_ID) == rid]


async def test_traceparent_flows_to_the_worker_and_back(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    await bus.start_worker(EchoEngine(step_s=0.01))
    async with bus.client(tenant_id="acme") as client:
        with attached({TRACEPARENT: PARENT}):
            replies = [r async for r in client.stream("one two three", request_id="traced-1")]
        assert len(replies) >= 3
        with (
            caplog.at_level(logging.INFO, logger="llmbus"),
            attached({TRACEPARENT: PARENT}),
            pytest.raises(RemoteError),
        ):
            await client.chat("too late", request_id="traced-2", deadline_s=0.001)
        await client.chat("no caller trace", request_id="traced-3")
        partition = client.reply_to.partition

    traced = await replies_of(bus, partition, "traced-1")
    assert len(traced) == len(replies)  # every delta and the final
    assert {trace_id(header(h, TRACEPARENT)) for h in traced} == {trace_id(PARENT)}
    fresh = await replies_of(bus, partition, "traced-3")
    assert trace_id(header(fresh[0], TRACEPARENT)) not in (None, trace_id(PARENT))

    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    failed = [line for line in lines if line.get("request_id") == "traced-2"]
    assert failed, "the worker logged nothing for the failed request"
    for line in failed:
        assert line["tenant_id"] == "acme"
        assert line["model"] == bus.settings.model
        assert line["trace_id"] == trace_id(PARENT)

"""The worker's fetch loop (``Worker._fetch``) on real Kafka with the stand-in engine."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from llmbus.bus import BusProducer
from llmbus.bus import consumer as consumer_module
from llmbus.consumers import worker as worker_module
from llmbus.metrics import WorkerMetrics
from tests.batch_lane import batch_answered, publish_batch
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine
from tests.polling import eventually

pytestmark = pytest.mark.integration


async def one_batch_slot(
    bus: Bus, batch_id: str, count: int
) -> tuple[EchoEngine, CollectorRegistry]:
    """A worker whose batch lane has one slot, and ``count`` batch requests for it."""
    bus.settings = bus.settings.model_copy(update={"batch_reserved_slots": 1})
    engine = EchoEngine(max_num_seqs=2, step_s=0.01)
    registry = CollectorRegistry()
    await bus.start_worker(engine, metrics=WorkerMetrics(registry))
    s = bus.settings
    async with BusProducer(s.kafka_bootstrap, client_id="t", max_request_bytes=1 << 20) as p:
        await publish_batch(p, s, batch_id, [f"Hi {i}." for i in range(count)])
    return engine, registry


async def test_a_freed_batch_slot_is_refilled_without_waiting_out_the_fetch(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch slot: while a batch request runs, the batch lane is held and the loop
    waits in a fetch of the interactive lane. With that wait raised to ten minutes, only
    a finished request waking the loop lets the next batch request in, so the batch is
    answered one request after another; and stopping the worker must not wait it out
    either (the fixture's teardown stops it)."""
    monkeypatch.setattr(worker_module, "_FETCH_WAIT_MS", 600_000)
    engine, registry = await one_batch_slot(bus, "one-slot", 5)
    # Generous for a loaded machine, and still far below the ten-minute fetch wait.
    await eventually(lambda: batch_answered(registry) == 5, 120, "every batch request answered")
    assert sorted(engine.seen) == [f"one-slot-{i}" for i in range(5)]
    assert registry.get_sample_value("llmbus_batch_slot_limit") == 1


async def test_a_full_lane_keeps_what_was_fetched_for_it(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch slot, and the broker holding an empty fetch for 30 s (under aiokafka's
    40 s request timeout). The batch requests are fetched at once; while one runs, the
    batch lane is held and the consumer waits in a fetch of the interactive lane. The next
    batch request must come from what the consumer already fetched: a lane paused instead
    drops that and is fetched again only when the fetch in flight returns, about 30 s
    later for each request."""
    monkeypatch.setattr(consumer_module, "GROUP_FETCH_WAIT_MS", 30_000)
    engine, registry = await one_batch_slot(bus, "kept", 5)
    # Generous for a loaded machine, and still under one 30 s wait of a fetch in flight.
    await eventually(lambda: batch_answered(registry) == 5, 25, "every batch request answered")
    assert sorted(engine.seen) == [f"kept-{i}" for i in range(5)]

"""The worker's fetch loop (``Worker._fetch``) on real Kafka with the stand-in engine."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from llmbus.bus import BusProducer
from llmbus.consumers import worker as worker_module
from llmbus.metrics import WorkerMetrics
from tests.batch_lane import publish_batch
from tests.conftest import Bus
from tests.consumers.test_batch_throttle import eventually
from tests.fakes.echo_engine import EchoEngine

pytestmark = pytest.mark.integration


async def test_a_freed_batch_slot_is_refilled_without_waiting_out_the_fetch(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch slot: while a batch request runs, the batch lane is paused and the loop
    waits in a fetch of the interactive lane. With that wait raised to ten minutes, only
    a finished request waking the loop lets the next batch request in, so the batch is
    answered one request after another; and stopping the worker must not wait it out
    either (the fixture's teardown stops it)."""
    monkeypatch.setattr(worker_module, "_FETCH_WAIT_MS", 600_000)
    bus.settings = bus.settings.model_copy(update={"batch_reserved_slots": 1})
    engine = EchoEngine(max_num_seqs=2, step_s=0.01)
    registry = CollectorRegistry()
    await bus.start_worker(engine, metrics=WorkerMetrics(registry))

    def batch_answered() -> float:
        labels = {"lane": "batch", "outcome": "ok"}
        return registry.get_sample_value("llmbus_lane_finals_total", labels) or 0.0

    s, count = bus.settings, 5
    async with BusProducer(s.kafka_bootstrap, client_id="t", max_request_bytes=1 << 20) as p:
        await publish_batch(p, s, "one-slot", [f"Hi {i}." for i in range(count)])
    # Generous for a loaded machine, and still far below the ten-minute fetch wait.
    await eventually(lambda: batch_answered() == count, 120, "every batch request answered")
    assert sorted(engine.seen) == [f"one-slot-{i}" for i in range(count)]
    assert registry.get_sample_value("llmbus_batch_slot_limit") == 1

import asyncio
import logging
import re

import pytest
from prometheus_client import CollectorRegistry

from llmbus.bus import BusProducer
from llmbus.consumers.batch_throttle import BatchThrottle, StepCostModel, batch_limit_log_level
from llmbus.consumers.engine import Engine
from llmbus.consumers.lanes import LaneAdmission
from llmbus.metrics import WorkerMetrics
from tests.batch_lane import batch_answered, publish_batch
from tests.conftest import Bus
from tests.consumers.test_lanes import B0, I0
from tests.polling import eventually

# This machine's measured shape: 53 ms a step alone, 230 ms beside 56 batch sequences.
BASE_S, PER_SEQ_S = 0.050, 0.0032


def cpu_like() -> StepCostModel:
    costs = StepCostModel()
    for _ in range(30):
        for running in (1, 2, 57, 60):
            costs.observe(running, BASE_S + PER_SEQ_S * running)
    return costs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_fitted_line_recovers_base_and_per_sequence_cost() -> None:
    fit = cpu_like().fitted()
    assert fit is not None
    base, per_seq = fit
    assert abs(base - BASE_S) < 1e-3 and abs(per_seq - PER_SEQ_S) < 1e-5


def test_no_fit_from_one_occupancy_or_from_garbage() -> None:
    costs = StepCostModel()
    for _ in range(100):
        costs.observe(57, 0.23)
    costs.observe(0, 0.05)
    costs.observe(3, float("nan"))
    costs.observe(3, -1.0)
    assert costs.fitted() is None


def test_cap_keeps_interactive_tokens_within_the_slowdown_and_lifts_after_hold() -> None:
    clock = Clock()
    throttle = BatchThrottle(max_batch=56, slowdown=1.25, hold_s=5.0, costs=cpu_like(), clock=clock)
    assert throttle.limit(0) == 56  # no interactive traffic yet: every slot
    throttle.interactive_seen()
    cap = throttle.limit(1)
    assert 1 <= cap < 56
    step_with_cap = BASE_S + PER_SEQ_S * (1 + cap)
    assert step_with_cap <= 1.25 * (BASE_S + PER_SEQ_S) + 1e-9
    assert BASE_S + PER_SEQ_S * (2 + cap) > 1.25 * (BASE_S + PER_SEQ_S)  # the largest such
    clock.now += 4.9
    assert throttle.limit(0) == cap  # between one chat turn and the next
    clock.now += 0.2
    assert throttle.limit(0) == 56


def test_no_cap_where_steps_cost_the_same_for_any_batch_or_when_disabled() -> None:
    flat = StepCostModel()
    for _ in range(30):
        for running in (1, 30, 64):
            flat.observe(running, 0.020)
    gpu_like = BatchThrottle(max_batch=56, slowdown=1.25, hold_s=5.0, costs=flat)
    gpu_like.interactive_seen()
    assert gpu_like.limit(1) == 56
    off = BatchThrottle(max_batch=56, slowdown=1.0, hold_s=5.0, costs=cpu_like())
    off.interactive_seen()
    assert off.limit(1) == 56
    unfitted = BatchThrottle(max_batch=56, slowdown=1.25, hold_s=5.0, costs=StepCostModel())
    unfitted.interactive_seen()
    assert unfitted.limit(1) == 56


def test_lanes_admit_batch_work_only_up_to_the_throttled_limit() -> None:
    clock = Clock()
    throttle = BatchThrottle(max_batch=56, slowdown=1.25, hold_s=5.0, costs=cpu_like(), clock=clock)
    lanes = LaneAdmission(max_inflight=80, max_batch=56, batch_topic=B0.topic, throttle=throttle)
    assert lanes.plan({I0, B0}).max_records == 56
    lanes.admit(I0)
    cap = lanes.batch_limit()
    assert cap < 56
    for _ in range(cap):
        lanes.admit(B0)
    plan = lanes.plan({I0, B0})
    assert plan.held == {B0} and plan.max_records > 0  # interactive still admitted
    lanes.release(I0)
    clock.now += 6
    assert lanes.batch_limit() == 56
    assert lanes.plan({I0, B0}).held == set()


def test_only_giving_way_and_its_end_are_logged_at_info() -> None:
    assert batch_limit_log_level(56, 23, 56) == logging.INFO
    assert batch_limit_log_level(23, 24, 56) == logging.DEBUG
    assert batch_limit_log_level(24, 22, 56) == logging.DEBUG
    assert batch_limit_log_level(22, 56, 56) == logging.INFO


@pytest.mark.integration
async def test_the_batch_lane_gives_way_while_an_interactive_request_runs(
    bus: Bus, engine: Engine, step_costs: StepCostModel, caplog: pytest.LogCaptureFixture
) -> None:
    """Real engine, real Kafka: a batch fills the engine, the worker learns what a step
    costs per sequence, an interactive chat lowers the batch lane's limit while it runs
    and for the hold after it, and the whole batch is still answered. The log says when
    the lane starts and stops giving way, not every move in between."""
    caplog.set_level(logging.INFO, logger="llmbus.consumers.worker")
    hold_s, batch_size = 2.0, 60
    bus.settings = bus.settings.model_copy(update={"interactive_hold_s": hold_s})
    registry = CollectorRegistry()
    await bus.start_worker(engine, metrics=WorkerMetrics(registry), step_costs=step_costs)
    full = engine.max_num_seqs - bus.settings.reserved_slots

    def limit() -> float | None:
        return registry.get_sample_value("llmbus_batch_slot_limit")

    s = bus.settings
    async with (
        bus.client() as client,
        BusProducer(s.kafka_bootstrap, client_id="t", max_request_bytes=1 << 20) as producer,
    ):
        await client.chat("Say hi.", max_tokens=8, temperature=0)  # steps with one sequence
        stories = [f"Tell a story about {i}." for i in range(batch_size)]
        await publish_batch(producer, s, "throttled", stories, max_tokens=48, temperature=0)
        await eventually(lambda: step_costs.fitted() is not None, 120, "a fitted step cost")
        await eventually(lambda: limit() == full, 3 * hold_s, "every batch slot after the hold")
        expected = BatchThrottle(max_batch=full, slowdown=s.interactive_slowdown, hold_s=hold_s,
                                 costs=step_costs)  # fmt: skip
        expected.interactive_seen()
        chat = asyncio.create_task(client.chat("Name three colours.", max_tokens=32, temperature=0))
        seen: list[float] = []
        while not chat.done():
            seen.append(limit() or 0.0)
            await asyncio.sleep(0.05)
        await chat
        fit = step_costs.fitted()
        print(f"step cost fit {fit}; limit while the chat ran: {min(seen)} of {full}")
        if expected.limit(1) < full:  # steps cost more with more sequences (a CPU)
            assert min(seen) < full
            assert min(seen) >= 1  # the batch lane is slowed, never stopped
        else:  # steps cost the same for any batch (a GPU): nothing to give way
            assert min(seen) == full
        await eventually(lambda: limit() == full, 3 * hold_s + 5, "the cap lifted after the hold")
        await eventually(
            lambda: batch_answered(registry) == batch_size, 300, "the whole batch answered"
        )
    moves = [
        tuple(int(n) for n in found.groups())
        for r in caplog.records
        if r.levelno >= logging.INFO
        and (found := re.match(r"batch lane limit (\d+) -> (\d+)", r.getMessage()))
    ]
    print(f"batch lane limit moves logged at INFO: {moves}")
    assert all(full in move for move in moves), moves
    if expected.limit(1) < full:
        assert moves[0][0] == full and moves[-1][1] == full, moves

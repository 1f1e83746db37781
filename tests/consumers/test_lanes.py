import pytest

from llmbus.bus import TopicPartition
from llmbus.consumers.lanes import LaneAdmission

I0 = TopicPartition("p.requests.m", 0)
B0 = TopicPartition("p.batch.m", 0)
B1 = TopicPartition("p.batch.m", 1)


def test_batch_lane_is_held_at_its_limit_while_interactive_stays_open() -> None:
    lanes = LaneAdmission(max_inflight=10, max_batch=6, batch_topic="p.batch.m")
    assignment = {I0, B0, B1}
    assert lanes.plan(assignment).max_records == 6
    for _ in range(6):
        lanes.admit(B0)
    plan = lanes.plan(assignment)
    assert plan.held == {B0, B1}
    assert plan.max_records == 4
    for _ in range(4):
        lanes.admit(I0)
    plan = lanes.plan(assignment)
    assert plan.held == assignment and plan.max_records == 0
    lanes.release(I0)
    lanes.release(B0)
    plan = lanes.plan(assignment)
    assert plan.held == set() and plan.max_records == 1


def test_batch_slots_must_leave_room() -> None:
    with pytest.raises(ValueError, match="batch slots"):
        LaneAdmission(max_inflight=4, max_batch=5, batch_topic="b")
    with pytest.raises(ValueError, match="batch slots"):
        LaneAdmission(max_inflight=4, max_batch=0, batch_topic="b")

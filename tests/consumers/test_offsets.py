from __future__ import annotations

from llmbus.bus import TopicPartition
from llmbus.consumers.offsets import OffsetTracker

TP = TopicPartition("t", 0)
TP2 = TopicPartition("t", 1)


def test_commits_only_contiguous_finished_prefix() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.track(TP, offset)
    assert tracker.committable() == {TP: 10}
    tracker.finish(TP, 12)
    tracker.finish(TP, 13)
    assert tracker.committable() == {TP: 10}, "10 and 11 are unfinished"
    tracker.finish(TP, 10)
    assert tracker.committable() == {TP: 11}
    tracker.finish(TP, 11)
    assert tracker.committable() == {TP: 14}


def test_reports_only_advances_after_commit() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.finish(TP, 0)
    offsets = tracker.committable()
    assert offsets == {TP: 1}
    tracker.mark_committed(offsets)
    assert tracker.committable() == {}
    tracker.track(TP, 1)
    assert tracker.committable() == {}
    tracker.finish(TP, 1)
    assert tracker.committable() == {TP: 2}


def test_partitions_are_independent_and_can_be_filtered() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 5)
    tracker.track(TP2, 7)
    tracker.finish(TP2, 7)
    assert tracker.committable() == {TP: 5, TP2: 8}
    assert tracker.committable({TP2}) == {TP2: 8}
    assert tracker.pending_count() == 1


def test_forgotten_partitions_ignore_late_finishers() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 3)
    tracker.forget({TP})
    tracker.finish(TP, 3)
    assert tracker.committable() == {}
    assert tracker.pending_count() == 0

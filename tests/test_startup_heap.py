"""What a worker or gateway holds at start-up is out of the collector's reach."""

from __future__ import annotations

import gc

from llmbus.startup_heap import freeze_startup_heap


def test_objects_alive_at_start_up_are_frozen_and_later_ones_are_not() -> None:
    at_start_up = [[i] for i in range(1000)]
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(at_start_up)
        later = [[i] for i in range(10)]
        tracked = {id(o) for o in gc.get_objects()}
        assert id(at_start_up) not in tracked
        assert id(later) in tracked
    finally:
        gc.unfreeze()

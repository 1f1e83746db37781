"""How often ``BatchJobs.wait`` re-reads a batch's status (pure arithmetic; the reads
themselves are exercised against PostgreSQL in test_batch_jobs.py)."""

from __future__ import annotations

import pytest

from llmbus.jobs.batch_jobs import poll_interval_s


def test_small_batches_are_read_once_a_second() -> None:
    assert poll_interval_s(0.0) == 1.0
    assert poll_interval_s(0.005) == 1.0


@pytest.mark.parametrize("read_s", [0.07, 0.3])
def test_reads_that_take_longer_are_spaced_so_they_keep_to_two_percent_of_a_core(
    read_s: float,
) -> None:
    interval = poll_interval_s(read_s)
    assert interval > 1.0
    assert read_s / interval == pytest.approx(0.02)


def test_a_slow_read_never_delays_the_next_beyond_half_a_minute() -> None:
    assert poll_interval_s(2.0) == 30.0
    assert poll_interval_s(600.0) == 30.0

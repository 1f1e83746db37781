"""How often ``BatchJobs.wait`` re-reads a batch's status (the arithmetic, and ``wait``
against a store whose reads take 50 ms; the reads themselves are exercised against PostgreSQL
in test_batch_jobs.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from llmbus.jobs import batch_jobs
from llmbus.jobs.batch_jobs import poll_interval_s
from llmbus.store.batch_store import BatchStatus


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


class _SlowStatusStore:
    """A store whose status reads take ``read_s``; the batch finishes on the third read."""

    def __init__(self, read_s: float) -> None:
        self._read_s = read_s
        self.reads = 0

    async def status(self, batch_id: str) -> BatchStatus:
        await asyncio.sleep(self._read_s)
        self.reads += 1
        done = self.reads == 3
        now = datetime.now(UTC)
        return BatchStatus(
            batch_id=batch_id,
            kind="batch",
            model="m",
            status="completed" if done else "in_progress",
            total=10,
            completed=10 if done else 3,
            failed=0,
            cancelled=0,
            created_at=now,
            published_at=now,
            cancel_requested_at=None,
            finished_at=now if done else None,
            source=None,
            tenant_id=None,
        )


async def test_wait_spaces_its_reads_by_what_the_last_read_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    measured: list[float] = []

    def interval(read_s: float) -> float:
        measured.append(read_s)
        return 0.1

    monkeypatch.setattr(batch_jobs, "poll_interval_s", interval)
    store = _SlowStatusStore(read_s=0.05)
    seen: list[int] = []
    jobs = batch_jobs.BatchJobs(store, publisher=None)  # type: ignore[arg-type]

    began = time.monotonic()
    final = await jobs.wait("b1", on_progress=lambda s: seen.append(s.completed))
    took = time.monotonic() - began

    assert final.finished_at is not None
    assert seen == [3, 3, 10]
    # One pause after each read that did not see the end, sized by that read's own time
    # (the read sleeps 50 ms; the upper bound only says it is that read, not the run).
    assert len(measured) == 2
    assert all(0.05 <= read_s < 5.0 for read_s in measured)
    # ... and it paused for what the interval said: three reads and two 0.1 s pauses.
    assert took >= 3 * 0.05 + 2 * 0.1 - 0.01

"""The lag gauge forgets partitions the member no longer owns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from llmbus.bus import TopicPartition
from llmbus.consumers import lag_gauge


class Rebalanced:
    """A consumer that owns partitions 0 and 1, then (after a rebalance) only 1."""

    def __init__(self) -> None:
        self.calls = 0

    async def lag(self) -> dict[TopicPartition, int]:
        self.calls += 1
        if self.calls == 1:
            return {TopicPartition("t", 0): 7, TopicPartition("t", 1): 3}
        return {TopicPartition("t", 1): 2}


async def test_a_partition_given_away_loses_its_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lag_gauge, "LAG_INTERVAL_S", 0.01)
    registry = CollectorRegistry()
    gauge = Gauge("lag", "lag", ["topic", "partition"], registry=registry)
    consumer = Rebalanced()
    task = asyncio.create_task(lag_gauge.report_lag(consumer, gauge))  # type: ignore[arg-type]
    while consumer.calls < 3:  # noqa: ASYNC110 - polls the fake's call count
        await asyncio.sleep(0.01)
    task.cancel()
    samples: dict[str, Any] = {
        s.labels["partition"]: s.value for m in registry.collect() for s in m.samples
    }
    assert samples == {"1": 2}

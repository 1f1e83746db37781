"""Consumer lag as a gauge, for any group member (worker, auditor)."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

from llmbus.bus import GroupConsumer

LAG_INTERVAL_S = 5.0
"""Lag moves slowly next to generation and audit writes, and scrapes come less often."""


async def report_lag(consumer: GroupConsumer, gauge: Gauge) -> None:
    """Forever, in the background: ``gauge{topic, partition}`` = each assigned partition's
    lag (from the consumer's last fetch; no extra broker round trip)."""
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        for tp, lag in (await consumer.lag()).items():
            gauge.labels(tp.topic, str(tp.partition)).set(lag)

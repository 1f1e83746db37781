"""Consumer lag as a gauge, for any group member (worker, auditor)."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

from llmbus.bus import GroupConsumer

LAG_INTERVAL_S = 5.0
"""Lag moves slowly next to generation and audit writes, and scrapes come less often."""


async def report_lag(consumer: GroupConsumer, gauge: Gauge) -> None:
    """Forever, in the background: ``gauge{topic, partition}`` = each assigned partition's
    lag (from the consumer's last fetch; no extra broker round trip). A partition given
    away in a rebalance loses its series here, or its last lag would stay in every sum
    (and in the lag alert) while its new owner reports it too."""
    reported: set[tuple[str, str]] = set()
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        now = {(tp.topic, str(tp.partition)): lag for tp, lag in (await consumer.lag()).items()}
        for labels in reported - now.keys():
            gauge.remove(*labels)
        for labels, lag in now.items():
            gauge.labels(*labels).set(lag)
        reported = set(now)

"""Describing topics through brokers whose metadata lags behind the one that made them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from llmbus.bus.admin import _describe_known

_UNKNOWN = 3


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries' pauses are real time the test need not spend."""

    async def no_pause(_: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_pause)


class LaggingBrokers:
    """Answers "unknown topic" for ``late`` during its first ``lag`` metadata requests,
    as a broker that has not caught up with a new topic does; ``gone`` never exists."""

    def __init__(self, late: set[str], lag: int) -> None:
        self.late, self.lag = late, lag
        self.asked: list[list[str]] = []

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.asked.append(list(topics))
        lagging = len(self.asked) <= self.lag
        return [
            {
                "topic": name,
                "error_code": _UNKNOWN if name == "gone" or (lagging and name in self.late) else 0,
                "partitions": [],
            }
            for name in topics
        ]


async def test_a_topic_a_lagging_broker_does_not_know_yet_is_asked_for_again() -> None:
    brokers = LaggingBrokers({"b"}, lag=3)
    described = await _describe_known(cast(AIOKafkaAdminClient, brokers), ["a", "b"])
    assert {t["topic"]: t["error_code"] for t in described} == {"a": 0, "b": 0}
    # Only the unknown one is asked for again.
    assert brokers.asked == [["a", "b"], ["b"], ["b"], ["b"]]


async def test_a_topic_that_does_not_exist_is_reported_unknown_after_the_retries() -> None:
    brokers = LaggingBrokers(set(), lag=0)
    described = await _describe_known(cast(AIOKafkaAdminClient, brokers), ["a", "gone"])
    assert {t["topic"]: t["error_code"] for t in described} == {"a": 0, "gone": _UNKNOWN}
    assert len(brokers.asked) == 20

"""What ``GroupConsumer`` asks of aiokafka (no broker needed: nothing connects before
``start`` has built the client)."""

from __future__ import annotations

from typing import Any

import pytest

from llmbus.bus import consumer as consumer_module
from llmbus.bus.consumer import GroupConsumer
from llmbus.settings import Settings

TOKENS_PER_S_SLOWEST = 1.0
"""Per sequence, on a small CPU with the engine full: 64 sequences shared about 150 tok/s
on the 2-core machines the benchmarks ran on, a little over two each."""


class Built(Exception):
    """Raised by the stand-in client once it has seen its arguments."""


async def test_a_worker_full_of_long_answers_is_not_taken_for_a_stuck_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker fetches only for free slots, so with every slot busy it calls nothing on
    the consumer until a request finishes. aiokafka makes a member that has not fetched
    for ``max_poll_interval_ms`` leave its group (its 5-minute default), and the group
    would hand the running requests to another worker to compute again. The limit must
    outlast the longest answer a slot can hold: a default-length one at the slowest rate."""
    seen: dict[str, Any] = {}

    def stand_in(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise Built

    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", stand_in)
    group = GroupConsumer(
        "127.0.0.1:9",  # never dialled
        group_id="g",
        topics=["t"],
        client_id="c",
        max_partition_fetch_bytes=1 << 20,
    )
    with pytest.raises(Built):
        await group.start()
    longest_answer_ms = Settings().max_model_len / TOKENS_PER_S_SLOWEST * 1000
    assert seen["max_poll_interval_ms"] >= longest_answer_ms
    # Liveness stays with the heartbeat, which runs on the worker's own event loop.
    assert seen["session_timeout_ms"] <= 30_000

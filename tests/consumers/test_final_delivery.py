"""How a worker retries a final and its answered-log entry when one of the two writes
fails (a stand-in producer that fails chosen writes once; the real broker path is in
``tests/bus/test_producer.py`` and ``test_outages.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from llmbus.bus import Outgoing
from llmbus.consumers.request_processor import ProcessorConfig, RequestProcessor
from llmbus.errors import BrokerUnavailableError
from llmbus.schemas import ReplyTo

LOG, REPLIES = "answered", "replies"


class FailingOnce:
    """Fails the first write to each topic in ``failing``; records every attempt."""

    def __init__(self, *failing: str) -> None:
        self._failing = set(failing)
        self.rounds: list[list[str]] = []

    async def send_together(self, records: Sequence[Outgoing]) -> list[Any]:
        self.rounds.append([r.topic for r in records])
        out: list[Any] = []
        for r in records:
            if r.topic in self._failing:
                self._failing.discard(r.topic)
                out.append(BrokerUnavailableError(f"{r.topic} not acknowledged"))
            else:
                out.append(None)
        return out


async def deliver(producer: FailingOnce) -> list[int]:
    """Send one final with its log entry; returns the round in which the entry was noted."""
    unused = cast(Any, None)  # _send touches none of the other parts
    processor = RequestProcessor(
        unused,
        cast(Any, producer),
        ProcessorConfig("m", "w", 1_000_000),
        unused,
        unused,
        {},
        unused,
        unused,
    )
    noted: list[int] = []
    entry = Outgoing(LOG, b"final", [], key=b"r", partition=0)
    await processor._send(
        ReplyTo(topic=REPLIES),
        "r",
        b"final",
        [],
        also=entry,
        on_also=lambda: noted.append(len(producer.rounds)),
    )
    return noted


@pytest.mark.parametrize(
    ("failing", "rounds", "noted"),
    [
        ((), [[LOG, REPLIES]], [1]),
        ((LOG,), [[LOG, REPLIES], [LOG]], [2]),  # the final is not sent twice
        ((REPLIES,), [[LOG, REPLIES], [REPLIES]], [1]),  # noted once the entry is in
    ],
)
async def test_only_what_failed_is_sent_again_and_the_entry_is_noted_once_acknowledged(
    failing: tuple[str, ...], rounds: list[list[str]], noted: list[int]
) -> None:
    producer = FailingOnce(*failing)
    assert await deliver(producer) == noted
    assert producer.rounds == rounds

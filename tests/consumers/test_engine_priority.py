"""Which requests vLLM's scheduler takes first: by lane, and within a lane a continuing
conversation's turn (its history is in this worker's prefix cache) before new ones."""

from __future__ import annotations

from typing import Any

from llmbus.consumers.request_processor import engine_priority
from llmbus.schemas import ChatRequest

HISTORY = [
    {"role": "user", "content": "Summarise the contract."},
    {"role": "assistant", "content": "It is a lease for five years."},
    {"role": "user", "content": "Who pays the repairs?"},
]


def request(priority: str = "normal", conversation: str | None = None, **body: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "request_id": "r1",
            "priority": priority,
            "conversation_id": conversation,
            "reply_to": {"topic": "t", "partition": 0},
            "body": {"model": "m", "messages": HISTORY[:1], **body},
        }
    )


def test_a_continuing_turn_goes_ahead_of_new_requests_of_its_lane_only() -> None:
    new = engine_priority(request(conversation="c1"))
    continuing = engine_priority(request(conversation="c1", messages=HISTORY))
    assert continuing < new == engine_priority(request())
    assert engine_priority(request("high")) < continuing
    # History without a conversation key lands on any worker: no reason to go first.
    assert engine_priority(request(messages=HISTORY)) == new
    assert engine_priority(request("low")) > new
    assert engine_priority(request(service_tier="flex")) == engine_priority(request("low"))

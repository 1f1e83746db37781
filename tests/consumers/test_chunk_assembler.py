"""Assembling OpenAI stream chunks into the non-streamed object, as OpenAI clients do."""

from __future__ import annotations

from typing import Any

from llmbus.consumers.chunk_assembler import ChunkAssembler


def chat_chunk(index: int, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_text_of_several_choices_with_logprobs_and_usage() -> None:
    a = ChunkAssembler(chat=True)
    a.add(chat_chunk(0, role="assistant", content=""))
    a.add(chat_chunk(1, role="assistant", content=""))
    a.add(
        {
            "choices": [
                {"index": 1, "delta": {"content": "Bon"}, "logprobs": {"content": [{"t": 1}]}},
                {"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [{"t": 2}]}},
            ]
        }
    )
    a.add(chat_chunk(0, content="lo", finish=None))
    a.add(chat_chunk(0, finish="stop"))
    a.add(chat_chunk(1, content="jour", finish="length"))
    a.add({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    first, second = a.choices()
    assert first["message"] == {"role": "assistant", "content": "Hello"}
    assert first["finish_reason"] == "stop" and first["logprobs"] == {"content": [{"t": 2}]}
    assert second["message"]["content"] == "Bonjour" and second["finish_reason"] == "length"
    assert a.usage == {"prompt_tokens": 3, "completion_tokens": 4}
    assert a.text(1) == "Bonjour"


def test_tool_call_fragments_merge_by_index_and_end_as_tool_calls() -> None:
    a = ChunkAssembler(chat=True)
    call = {"index": 0, "id": "call-1", "type": "function", "function": {"name": "get_weather"}}
    a.add(chat_chunk(0, role="assistant", tool_calls=[call]))
    a.add(chat_chunk(0, tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]))
    second = {"index": 1, "id": "call-2", "function": {"name": "f", "arguments": "{}"}}
    a.add(chat_chunk(0, tool_calls=[second]))
    a.add(chat_chunk(0, tool_calls=[{"index": 0, "function": {"arguments": '"Oslo"}'}}]))
    last = chat_chunk(0, finish="stop")
    a.add(last)
    (choice,) = a.choices()
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call-1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call-2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ]  # fmt: skip
    assert choice["finish_reason"] == "tool_calls"
    assert a.forwardable(last)["choices"][0]["finish_reason"] == "tool_calls"
    plain = ChunkAssembler(chat=True)
    plain.add(chat_chunk(0, content="x", finish="stop"))
    assert plain.forwardable(chat_chunk(0, finish="stop"))["choices"][0]["finish_reason"] == "stop"


def test_legacy_completions_keep_text_and_logprob_lists() -> None:
    a = ChunkAssembler(chat=False)
    lp = {"tokens": ["A"], "token_logprobs": [-0.1], "top_logprobs": [{"A": -0.1}],
          "text_offset": [0]}  # fmt: skip
    a.add({"choices": [{"index": 0, "text": "A", "logprobs": lp, "finish_reason": None}]})
    a.add({"choices": [{"index": 1, "text": "Z", "logprobs": None, "finish_reason": "length"}]})
    a.add({"choices": [{"index": 0, "text": "B", "logprobs": lp, "finish_reason": "stop"}]})
    first, second = a.choices()
    assert first["text"] == "AB" and first["finish_reason"] == "stop"
    assert first["logprobs"]["tokens"] == ["A", "A"] and first["logprobs"]["text_offset"] == [0, 0]
    assert second == {"index": 1, "text": "Z", "logprobs": None, "finish_reason": "length"}


def test_a_whole_response_leaves_in_the_same_shape_as_its_stream() -> None:
    """Non-streamed requests get one whole response from the engine; it must come out
    exactly as the equivalent stream would (tool calls end as ``tool_calls``)."""
    call = {"id": "call-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    whole = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "Hi", "tool_calls": []},
                "logprobs": {"content": [{"t": 1}]},
                "finish_reason": "length",
            },
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    a = ChunkAssembler(chat=True)
    a.add_whole(whole)
    streamed = ChunkAssembler(chat=True)
    streamed.add(chat_chunk(0, tool_calls=[{**call, "index": 0}]))
    streamed.add(chat_chunk(0, finish="stop"))
    streamed.add({"choices": [{"index": 1, "delta": {"content": "Hi"}, "finish_reason": "length",
                               "logprobs": {"content": [{"t": 1}]}}]})  # fmt: skip
    assert a.choices() == streamed.choices()
    assert a.choices()[0]["finish_reason"] == "tool_calls"
    assert a.completion_tokens() == 7

    legacy = ChunkAssembler(chat=False)
    legacy.add_whole(
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": "abc", "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        }
    )
    assert legacy.choices() == [
        {"index": 0, "text": "abc", "logprobs": None, "finish_reason": "stop"}
    ]

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from llmbus.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatRequest,
    ChatResult,
    Choice,
    CompletionRequest,
    ErrorReply,
    Kind,
    ReplyTo,
    StreamDelta,
    Timings,
    Usage,
    WireDecodeError,
    decode,
    decode_request,
    encode,
    header,
)
from llmbus.schemas.chat import AssistantMessage
from llmbus.schemas.wire import H_KIND, H_REQUEST_ID, H_VERSION


def make_request(**overrides: object) -> ChatRequest:
    fields: dict[str, object] = {
        "request_id": "r-1",
        "reply_to": ReplyTo(topic="llmbus.replies", partition=3),
        "tenant_id": "acme",
        "metadata": {"job": "nightly"},
        "body": ChatCompletionRequest(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.2,
            top_p=0.9,
            max_tokens=12,
            stop=["\n"],
            seed=7,
        ),
    }
    fields.update(overrides)
    return ChatRequest.model_validate(fields)


def test_request_round_trips_with_headers() -> None:
    request = make_request()
    value, headers = encode(request)
    assert header(headers, H_KIND) == "request"
    assert header(headers, H_VERSION) == "1"
    assert header(headers, H_REQUEST_ID) == "r-1"
    assert header(headers, "content-type") == "application/json"
    assert decode_request(value, headers) == request


def make_result(content: str, finish_reason: str, ttft_ms: float | None) -> ChatResult:
    return ChatResult.model_validate(
        {
            "request_id": "r",
            "completion": ChatCompletion(
                id="chatcmpl-r",
                created=1,
                model="m",
                choices=[
                    Choice.model_validate(
                        {
                            "message": AssistantMessage(content=content),
                            "finish_reason": finish_reason,
                        }
                    )
                ],
                usage=Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4),
            ),
            "timings": Timings(queue_ms=1.0, ttft_ms=ttft_ms, total_ms=3.0),
            "worker_id": "w",
        }
    )


@pytest.mark.parametrize(
    "message",
    [
        StreamDelta(request_id="r", seq=0, content="Hel"),
        ErrorReply(request_id="r", code="deadline_exceeded", message="late"),
        make_result("Paris", "stop", 2.0),
    ],
)
def test_replies_round_trip(message: StreamDelta | ErrorReply | ChatResult) -> None:
    value, headers = encode(message)
    assert decode(value, headers) == message
    assert Kind(header(headers, H_KIND)).is_final == (not isinstance(message, StreamDelta))


def test_completion_is_openai_shaped() -> None:
    value, headers = encode(make_result("x", "length", None))
    result = decode(value, headers)
    assert isinstance(result, ChatResult)
    body = result.completion.model_dump(exclude_none=True)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "x"}
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


@pytest.mark.parametrize(
    ("value", "headers", "fragment"),
    [
        (b"\xff\xfe not json", [], "Invalid JSON"),
        (b'{"request_id": "x"}', [], "reply_to: Field required"),
        (b"{}", [("llmbus-schema-version", b"9")], "unsupported schema version"),
        (b"{}", [("content-type", b"text/plain")], "unsupported content type"),
        (b"{}", [("llmbus-kind", b"bogus")], "unknown message kind"),
        (None, [], "empty record"),
    ],
)
def test_bad_records_raise_clear_errors(
    value: bytes | None, headers: list[tuple[str, bytes]], fragment: str
) -> None:
    with pytest.raises(WireDecodeError) as info:
        decode_request(value, headers)
    assert fragment in info.value.reason


def test_unknown_version_has_its_own_code() -> None:
    with pytest.raises(WireDecodeError) as info:
        decode(b"{}", [("llmbus-schema-version", b"6")])
    assert info.value.code == "unsupported_schema_version"


def test_a_plain_chat_travels_as_version_1_and_anything_more_as_version_2() -> None:
    plain = make_request()
    assert plain.schema_version == 1
    tooled = make_request(
        body=ChatCompletionRequest(
            model="m",
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
            n=2,
            logprobs=True,
            top_logprobs=3,
        )
    )
    assert tooled.schema_version == 2
    value, headers = encode(tooled)
    assert header(headers, H_VERSION) == "2"
    assert decode_request(value, headers) == tooled
    completion = make_request(body=CompletionRequest(model="m", prompt=["a", "b"], echo=True))
    value, headers = encode(completion)
    assert header(headers, H_VERSION) == "2"
    decoded = decode_request(value, headers)
    assert isinstance(decoded.body, CompletionRequest) and not decoded.is_chat


def test_version_1_records_of_older_producers_still_decode() -> None:
    import json

    old = {
        "schema_version": 1,
        "request_id": "old-1",
        "created_at": "2026-11-01T00:00:00Z",
        "reply_to": {"topic": "llmbus.replies", "partition": 0},
        "body": {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 1.0,
            "top_p": 1.0,
            "max_tokens": None,
            "stop": None,
            "seed": None,
        },
    }
    decoded = decode_request(json.dumps(old).encode(), [("llmbus-schema-version", b"1")])
    assert decoded.schema_version == 1 and decoded.body.temperature == 1.0
    old["body"]["n"] = 2  # a field version 1 never had, under a version-1 label
    with pytest.raises(WireDecodeError, match="needs schema_version 2"):
        decode_request(json.dumps(old).encode(), [("llmbus-schema-version", b"1")])


def test_error_messages_do_not_echo_the_prompt() -> None:
    request = make_request().model_dump(mode="json")
    request["body"]["temperature"] = 9
    request["body"]["messages"][0]["content"] = "TOP-SECRET-PROMPT"
    import json

    with pytest.raises(WireDecodeError) as info:
        decode_request(json.dumps(request).encode(), [])
    assert "temperature" in info.value.reason
    assert "TOP-SECRET-PROMPT" not in info.value.reason


@pytest.mark.parametrize(
    "body_change",
    [
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0},
        {"max_tokens": 0},
        {"messages": []},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"unknown_field": 1},
        {"messages": [{"role": "wizard", "content": "x"}]},
    ],
)
def test_invalid_sampling_and_messages_are_rejected(body_change: dict[str, object]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body_change}
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize("request_id", ["", "has space", "x" * 129, "semi;colon"])
def test_request_ids_are_short_and_printable(request_id: str) -> None:
    with pytest.raises(ValidationError):
        make_request(request_id=request_id)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        make_request(created_at=datetime(2026, 1, 1))
    assert make_request(created_at=datetime(2026, 1, 1, tzinfo=UTC)).created_at.tzinfo


def test_metadata_is_bounded() -> None:
    with pytest.raises(ValidationError):
        make_request(metadata={f"k{i}": "v" for i in range(33)})


def test_a_reply_topic_without_partition_travels_as_version_4() -> None:
    request = make_request(reply_to=ReplyTo(topic="llmbus.replies.pipeline"))
    assert request.schema_version == 4
    decoded = decode_request(*encode(request))
    assert decoded.reply_to.partition is None
    # A JSON producer may leave the version out; one that says less is refused.
    data = json.loads(request.model_dump_json(exclude={"schema_version"}))
    assert ChatRequest.model_validate(data).schema_version == 4
    with pytest.raises(ValidationError, match="needs schema_version 4"):
        ChatRequest.model_validate({**data, "schema_version": 2})


@pytest.mark.parametrize("topic", ["", "a topic", "x" * 250, "llmbus/replies"])
def test_a_reply_topic_must_be_a_kafka_name(topic: str) -> None:
    with pytest.raises(ValidationError):
        ReplyTo(topic=topic)


def test_a_conversation_key_travels_as_version_5_and_keys_the_record() -> None:
    request = make_request(conversation_id="conv-7")
    assert request.schema_version == 5 and request.kafka_key == "conv-7"
    assert make_request().kafka_key == "r-1"
    data = json.loads(request.model_dump_json(exclude={"schema_version"}))
    assert ChatRequest.model_validate(data).schema_version == 5
    with pytest.raises(ValidationError, match="needs schema_version 5"):
        ChatRequest.model_validate({**data, "schema_version": 4})
    with pytest.raises(ValidationError):
        make_request(conversation_id="no spaces please")

"""Embeddings on the wire: what a request may hold, its version, and the audit shape."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from llmbus.schemas import (
    ChatRequest,
    ChatResult,
    EmbeddingList,
    EmbeddingRequest,
    Timings,
    WireDecodeError,
    decode,
    decode_request,
    encode,
)
from llmbus.schemas.batch_input import for_the_bus, output_line, parse_batch_lines
from llmbus.schemas.embedding import MAX_INPUTS
from llmbus.store.audit_rows import RowPolicy, result_row


def raw(body: dict[str, object], **extra: object) -> bytes:
    data = {"request_id": "e1", "reply_to": {"topic": "r", "partition": 0}, "body": body}
    return json.dumps({**data, **extra}).encode()


def envelope(body: dict[str, object], **extra: object) -> bytes:
    return ChatRequest.model_validate_json(raw(body, **extra)).model_dump_json().encode()


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        ("one text", ["one text"]),
        (["a", "b"], ["a", "b"]),
        ([101, 2023, 102], [[101, 2023, 102]]),
        ([[101, 102], [101, 7, 102]], [[101, 102], [101, 7, 102]]),
    ],
)
def test_every_openai_input_shape_is_one_vector_per_entry(value: object, shape: object) -> None:
    body = EmbeddingRequest.model_validate({"model": "m", "input": value})
    assert body.inputs() == shape


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([], "input is empty"),
        ("", "empty string"),
        (["a", ""], "empty string"),
        ([[1], []], "empty string or token array"),
        (["x"] * (MAX_INPUTS + 1), f"at most {MAX_INPUTS} inputs"),
    ],
)
def test_bad_input_is_refused_by_name(value: object, fragment: str) -> None:
    with pytest.raises(WireDecodeError) as info:
        decode_request(raw({"model": "m", "input": value}), None)
    assert fragment in info.value.reason and "input" in info.value.reason


def test_unknown_fields_and_formats_are_refused_by_name() -> None:
    for body, name in [
        ({"model": "m", "input": "x", "encoding_format": "bytes"}, "encoding_format"),
        ({"model": "m", "input": "x", "truncate": True}, "truncate"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ]:
        with pytest.raises(ValueError, match=name):
            EmbeddingRequest.model_validate(body)


def test_embeddings_travel_as_version_3_and_are_never_streamed() -> None:
    request = decode_request(envelope({"model": "m", "input": ["a"]}), None)
    assert request.schema_version == 3 and request.is_embedding
    assert request.completion_id == "embd-e1"
    _, headers = encode(request)
    assert ("llmbus-schema-version", b"3") in headers
    with pytest.raises(WireDecodeError, match="never streamed"):
        decode_request(raw({"model": "m", "input": ["a"]}, stream=True), None)


def _vector_b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def make_result(batch_id: str | None, encoded: bool = False) -> ChatResult:
    vectors = [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]]
    data = [
        {"object": "embedding", "index": i, "embedding": _vector_b64(v) if encoded else v}
        for i, v in enumerate(vectors)
    ]
    listing = EmbeddingList.model_validate(
        {
            "id": "embd-e1",
            "created": 0,
            "model": "m",
            "data": data,
            "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
        }
    )
    timings = Timings(queue_ms=1, ttft_ms=None, total_ms=2)
    return ChatResult(
        schema_version=3,
        request_id="e1",
        completion=listing,
        timings=timings,
        worker_id="w",
        batch_id=batch_id,
    )


def test_a_result_decodes_as_embeddings() -> None:
    value, headers = encode(make_result(None))
    final = decode(value, headers)
    assert isinstance(final, ChatResult) and isinstance(final.completion, EmbeddingList)
    assert [d.dimensions() for d in final.completion.data] == [3, 3]
    with pytest.raises(TypeError):
        final.text()


@pytest.mark.parametrize("encoded", [False, True])
def test_the_audit_row_keeps_lengths_not_vectors_unless_told(encoded: bool) -> None:
    row = result_row(make_result(None, encoded), RowPolicy())
    assert row["status"] == "ok" and row["prompt_tokens"] == 5 and row["output"] is None
    assert row["completion"]["data"] == [
        {"object": "embedding", "index": 0, "dimensions": 3},
        {"object": "embedding", "index": 1, "dimensions": 3},
    ]
    stored = result_row(make_result(None, encoded), RowPolicy(store_vectors=True))
    assert "embedding" in stored["completion"]["data"][0]
    # A batch's vectors are its output file: always kept.
    assert (
        "embedding"
        in result_row(make_result("batch_1", encoded), RowPolicy())["completion"]["data"][0]
    )


def test_batch_lines_take_embeddings_and_check_the_body_fits_the_url() -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings"}
    good = json.dumps({**line, "body": {"model": "m", "input": ["x", "y"]}})
    wrong = json.dumps({**line, "custom_id": "b", "body": {"model": "m", "prompt": "x"}})
    parsed = parse_batch_lines([good, wrong])
    assert [n for n, _ in parsed.lines] == [1]
    assert "needs 'input'" in str(parsed.errors[0])


def test_a_batch_sends_vectors_as_base64_and_writes_what_the_line_asked_for() -> None:
    floats = EmbeddingRequest(model="m", input=["a"])
    body, restore = for_the_bus(floats)
    assert isinstance(body, EmbeddingRequest) and body.encoding_format == "base64"
    assert restore == {"encoding_format": "float"}
    packed = make_result("batch_1", encoded=True).completion.model_dump(mode="json")
    line = output_line(
        request_id="r", custom_id="c", completion=packed, error_code=None, error_message=None,
        encoding_format=restore["encoding_format"],
    )  # fmt: skip
    vectors = [item["embedding"] for item in line["response"]["body"]["data"]]
    assert vectors == [pytest.approx([0.6, 0.8, 0.0]), [1.0, 0.0, 0.0]]
    # A line that asked for base64 (or a chat line) travels and is written as it came.
    asked = EmbeddingRequest(model="m", input=["a"], encoding_format="base64")
    assert for_the_bus(asked) == (asked, {})
    kept = output_line(
        request_id="r", custom_id="c", completion=packed, error_code=None, error_message=None
    )
    assert kept["response"]["body"] == packed

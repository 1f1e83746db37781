"""OpenAI Batch files: the input lines llmbus accepts and the output lines it writes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmbus.schemas.chat import ChatCompletionRequest
from llmbus.schemas.completion import CompletionRequest
from llmbus.schemas.embedding import EmbeddingRequest, base64_to_floats
from llmbus.schemas.envelope import RequestBody
from llmbus.schemas.wire import UNION_TAGS

BATCH_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
EMBEDDINGS_URL = "/v1/embeddings"
BATCH_URLS = (BATCH_URL, COMPLETIONS_URL, EMBEDDINGS_URL)
BatchUrl = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
_BODY_OF_URL: dict[str, tuple[type, str]] = {
    BATCH_URL: (ChatCompletionRequest, "messages"),
    COMPLETIONS_URL: (CompletionRequest, "prompt"),
    EMBEDDINGS_URL: (EmbeddingRequest, "input"),
}
MAX_BATCH_LINES = 50_000
"""OpenAI's own per-batch limit; bounds one submission's memory and publish time."""
MAX_LINE_BYTES = 1_000_000
"""A line above this could not travel as one Kafka record anyway."""
MAX_REPORTED_ERRORS = 20
"""A file with thousands of bad lines is reported by its first few, not all of them."""


class BatchInputLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: BatchUrl
    body: RequestBody

    @model_validator(mode="after")
    def _body_fits_url(self) -> BatchInputLine:
        shape, wanted = _BODY_OF_URL[self.url]
        if not isinstance(self.body, shape):
            raise ValueError(f"a {self.url} body needs {wanted!r}")
        return self


@dataclass(frozen=True)
class LineError:
    line: int
    """1-based line number in the input file."""
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ParsedBatch:
    lines: list[tuple[int, BatchInputLine]]
    """Valid lines with their 1-based line numbers, in file order."""
    errors: list[LineError]
    error_count: int


def parse_batch_lines(
    lines: Iterable[bytes | str], *, model: str | None = None, url: str | None = None
) -> ParsedBatch:
    """Validate every line. ``model`` replaces each body's model (``--model``); ``url``,
    when given, is the one endpoint every line must name (an OpenAI batch has one).

    Blank lines are ignored; every other line must be a valid request with a
    ``custom_id`` unique within the file.
    """
    good: list[tuple[int, BatchInputLine]] = []
    errors: list[LineError] = []
    count = 0
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        reason, parsed = _parse_line(text, model)
        if parsed is not None and url is not None and parsed.url != url:
            reason, parsed = f"url {parsed.url!r} differs from the batch's endpoint {url!r}", None
        if parsed is not None and parsed.custom_id in seen:
            reason = f"custom_id {parsed.custom_id!r} repeats line {seen[parsed.custom_id]}"
        if reason is None and parsed is not None:
            seen[parsed.custom_id] = number
            good.append((number, parsed))
        else:
            count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(LineError(number, reason or "invalid"))
        if len(good) + count > MAX_BATCH_LINES:
            errors.append(LineError(number, f"more than {MAX_BATCH_LINES} requests in one batch"))
            return ParsedBatch(good, errors, count + 1)
    return ParsedBatch(good, errors, count)


def _parse_line(text: str, model: str | None) -> tuple[str | None, BatchInputLine | None]:
    if len(text.encode()) > MAX_LINE_BYTES:
        return f"line longer than {MAX_LINE_BYTES} bytes", None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})", None
    if not isinstance(data, dict):
        return "not a JSON object", None
    if model is not None and isinstance(data.get("body"), dict):
        data["body"] = {**data["body"], "model": model}
    try:
        return None, BatchInputLine.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in UNION_TAGS) or "line"
        return f"{where}: {first['msg']}", None


WIRE_FORMAT_KEY = "encoding_format"
"""Metadata key: the vector format a batch line asked for, when the bus carries another."""


def for_the_bus(body: RequestBody) -> tuple[RequestBody, dict[str, str]]:
    """The body a batch line is sent with, and metadata to restore what it asked for.

    Embedding vectors travel as base64 (a quarter of the bytes of JSON floats through
    Kafka twice, the auditor and PostgreSQL, where a batch's vectors are kept for its
    output file); a line that asked for floats gets floats in that file."""
    if isinstance(body, EmbeddingRequest) and body.encoding_format == "float":
        return body.model_copy(update={"encoding_format": "base64"}), {WIRE_FORMAT_KEY: "float"}
    return body, {}


def output_line(
    *,
    request_id: str,
    custom_id: str,
    completion: dict[str, Any] | None,
    error_code: str | None,
    error_message: str | None,
    encoding_format: str | None = None,
) -> dict[str, Any]:
    """One line of an OpenAI Batch output (or error) file; ``encoding_format`` is what
    ``for_the_bus`` recorded."""
    if completion is not None and encoding_format == "float":
        completion = base64_to_floats(completion)
    if completion is not None:
        return {
            "id": f"batch_req_{request_id}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": completion},
            "error": None,
        }
    return {
        "id": f"batch_req_{request_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": error_code or "unknown", "message": error_message or ""},
    }

"""Bytes and headers on Kafka: JSON bodies, headers carry content type, version and kind.

Headers let consumers route or skip a record without parsing its body (the auditor skips
deltas, a client skips replies for other requests).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ValidationError

from llmbus.schemas.envelope import CancelRequest, ChatRequest, ChatResult, ErrorReply, StreamDelta

CONTENT_TYPE = "application/json"
SCHEMA_VERSION = 5
"""The newest wire version this build speaks; it reads every version up to it."""

H_CONTENT_TYPE = "content-type"
H_VERSION = "llmbus-schema-version"
H_KIND = "llmbus-kind"
H_REQUEST_ID = "llmbus-request-id"

Headers = list[tuple[str, bytes]]


class Kind(StrEnum):
    REQUEST = "request"
    DELTA = "delta"
    RESULT = "result"
    ERROR = "error"
    CANCEL = "cancel"

    @property
    def is_final(self) -> bool:
        return self in (Kind.RESULT, Kind.ERROR)


_MODELS: dict[Kind, type[BaseModel]] = {
    Kind.REQUEST: ChatRequest,
    Kind.DELTA: StreamDelta,
    Kind.RESULT: ChatResult,
    Kind.ERROR: ErrorReply,
    Kind.CANCEL: CancelRequest,
}
_KIND_OF: dict[type[BaseModel], Kind] = {v: k for k, v in _MODELS.items()}

Message = ChatRequest | StreamDelta | ChatResult | ErrorReply | CancelRequest


class WireDecodeError(ValueError):
    """A record that is not a valid llmbus message; ``reason`` is safe to log and reply."""

    def __init__(self, reason: str, *, code: str = "invalid_request") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def header(headers: Headers | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def encode(message: Message) -> tuple[bytes, Headers]:
    kind = _KIND_OF[type(message)]
    headers: Headers = [
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        # The message's own version: a version-1 message stays readable by older builds.
        (H_VERSION, str(getattr(message, "schema_version", 1)).encode()),
        (H_KIND, kind.value.encode()),
        (H_REQUEST_ID, message.request_id.encode()),
    ]
    return message.model_dump_json().encode(), headers


def decode(value: bytes | None, headers: Headers | None) -> Message:
    """Parse a record into its model, checking content type, version and kind."""
    content_type = header(headers, H_CONTENT_TYPE)
    if content_type not in (None, CONTENT_TYPE):
        raise WireDecodeError(f"unsupported content type {content_type!r}")
    version = header(headers, H_VERSION)
    if version is not None and version not in {str(v) for v in range(1, SCHEMA_VERSION + 1)}:
        raise WireDecodeError(
            f"unsupported schema version {version!r} (this build speaks {SCHEMA_VERSION})",
            code="unsupported_schema_version",
        )
    raw_kind = header(headers, H_KIND) or Kind.REQUEST.value
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise WireDecodeError(f"unknown message kind {raw_kind!r}") from None
    if value is None:
        raise WireDecodeError("empty record")
    try:
        return _MODELS[kind].model_validate_json(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise WireDecodeError(describe_validation_error(exc)) from exc


def decode_request(value: bytes | None, headers: Headers | None) -> ChatRequest:
    message = decode(value, headers)
    if not isinstance(message, ChatRequest):
        raise WireDecodeError(f"expected a request, got {type(message).__name__}")
    return message


UNION_TAGS = frozenset(
    {"chat", "completion", "embedding", "chat.completion", "text_completion", "list"}
)


def describe_validation_error(exc: ValidationError) -> str:
    """A short, input-free description: error replies must not echo prompts back."""
    parts = []
    for error in exc.errors(include_input=False)[:5]:
        # Union tags (which kind of body was tried) mean nothing to whoever sent it.
        where = ".".join(str(p) for p in error["loc"] if p not in UNION_TAGS) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")

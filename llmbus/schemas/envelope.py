"""What travels on llmbus's topics: a request in an envelope, deltas, and one final."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from llmbus.schemas.chat import ChatCompletion, ChatCompletionRequest

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""Ids go into Kafka headers, log lines and vLLM; keep them short and printable."""
MAX_METADATA_ITEMS = 32
MAX_METADATA_VALUE = 512


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ReplyTo(BaseModel):
    """Where the requester listens: one partition of the shared replies topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(min_length=1, max_length=249)
    partition: int = Field(ge=0)


class ChatRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    reply_to: ReplyTo
    priority: Priority = Priority.NORMAL
    deadline: AwareDatetime | None = None
    tenant_id: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    batch_id: str | None = Field(default=None, max_length=128)
    """The batch job or replay run this request belongs to."""
    replay_of: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)
    """For a replayed conversation: the request id of the logged original."""
    metadata: dict[str, str] = Field(default_factory=dict)
    stream: bool = False
    body: ChatCompletionRequest

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_ITEMS:
            raise ValueError(f"at most {MAX_METADATA_ITEMS} metadata items")
        if any(len(k) > 64 or len(v) > MAX_METADATA_VALUE for k, v in value.items()):
            raise ValueError("metadata keys are at most 64 chars, values 512")
        return value


class CancelRequest(BaseModel):
    """Published on the request topic with the request's id as key, so it lands on the
    same partition, behind the request, at the worker that holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    reason: str = Field(default="cancelled by the client", max_length=256)


class StreamDelta(BaseModel):
    """A piece of generated text; ``seq`` lets the client detect gaps and duplicates."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    seq: int = Field(ge=0)
    content: str


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True)

    queue_ms: float
    """From the request's created_at to the worker handing it to the engine."""
    ttft_ms: float | None
    """From created_at to the first generated token."""
    total_ms: float
    """From created_at to the final result being produced."""


class ChatResult(BaseModel):
    """The successful final: an OpenAI ``chat.completion`` plus llmbus's timings."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    completion: ChatCompletion
    timings: Timings
    worker_id: str
    finished_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))


class ErrorReply(BaseModel):
    """The failed final: a stable code clients can switch on, and a message for people."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    code: str
    message: str
    worker_id: str | None = None
    finished_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))


class BatchCancellation(BaseModel):
    """Published on the control topic (key: the batch id); every worker reads it and
    skips or aborts the batch's requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str = Field(min_length=1, max_length=128)
    cancelled_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

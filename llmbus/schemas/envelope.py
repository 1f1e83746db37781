"""What travels on llmbus's topics: a request in an envelope, deltas, and one final."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from llmbus.schemas.chat import ChatCompletion, ChatCompletionRequest
from llmbus.schemas.completion import CompletionRequest, TextCompletion
from llmbus.schemas.embedding import EmbeddingList, EmbeddingRequest

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""Ids go into Kafka headers, log lines and vLLM; keep them short and printable."""
MAX_METADATA_ITEMS = 32
MAX_METADATA_VALUE = 512


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ReplyTo(BaseModel):
    """Where the answer goes. With a partition: that partition of the shared replies
    topic, which one live client reads. Without: the topic itself, keyed by request id,
    for any consumer group to read (a pipeline's results topic); workers write only to
    topics their ``LLMBUS_REPLY_TOPIC_PATTERN`` allows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    partition: int | None = Field(default=None, ge=0)


WireVersion = Literal[1, 2, 3, 4, 5]
"""1: plain-text chat. 2: the whole OpenAI surface (content parts, tools, structured
outputs, ``n``, logprobs, legacy completions). 3: embeddings. 4: a reply topic without a
partition. 5: a conversation key. A request is sent in the lowest version that carries
it, so workers of an older version keep serving it during a rolling upgrade (and refuse a
newer one by its version, not as a malformed body)."""

_V1_BODY_FIELDS = frozenset(
    {"model", "messages", "temperature", "top_p", "max_tokens", "stop", "seed"}
)


def _body_kind(value: Any) -> str:
    data = value if isinstance(value, dict) else value.__dict__
    if "input" in data:
        return "embedding"
    return "completion" if "prompt" in data else "chat"


Body = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


def lowest_version(
    body: Body, reply_to: ReplyTo | None = None, conversation_id: str | None = None
) -> WireVersion:
    """The oldest wire version that carries ``body`` (and ``reply_to``, and
    ``conversation_id``) without losing anything."""
    if conversation_id is not None:
        return 5
    if reply_to is not None and reply_to.partition is None:
        return 4
    if isinstance(body, EmbeddingRequest):
        return 3
    if not isinstance(body, ChatCompletionRequest):
        return 2
    if not body.model_dump(exclude_defaults=True).keys() <= _V1_BODY_FIELDS:
        return 2
    plain = all(
        isinstance(m.content, str)
        and m.model_dump(exclude_defaults=True).keys() <= {"role", "content"}
        for m in body.messages
    )
    return 1 if plain else 2


def _partition_of(reply_to: ReplyTo | dict[str, Any]) -> Any:
    return reply_to.partition if isinstance(reply_to, ReplyTo) else reply_to.get("partition")


RequestBody = Annotated[
    Annotated[ChatCompletionRequest, Tag("chat")]
    | Annotated[CompletionRequest, Tag("completion")]
    | Annotated[EmbeddingRequest, Tag("embedding")],
    Discriminator(_body_kind),
]


class ChatRequest(BaseModel):
    """A request in its envelope: a chat completion, a legacy text completion or
    embeddings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: WireVersion = 2
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
    conversation_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)
    """The conversation this request is a turn of. It is the record's Kafka key, so every
    turn lands on the same partition, and so on the worker whose engine has the
    conversation's earlier turns in its prefix cache."""
    metadata: dict[str, str] = Field(default_factory=dict)
    stream: bool = False
    body: RequestBody

    @model_validator(mode="before")
    @classmethod
    def _version_from_body(cls, data: Any) -> Any:
        # Producers built with this module leave the version out: the lowest that fits.
        if isinstance(data, dict) and "schema_version" not in data and "body" in data:
            body, reply_to = data["body"], data.get("reply_to")
            if data.get("conversation_id") is not None:
                data = {**data, "schema_version": 5}
            elif isinstance(reply_to, ReplyTo | dict) and _partition_of(reply_to) is None:
                # Only version 4 carries a partition-less reply address: a JSON producer
                # need not say so.
                data = {**data, "schema_version": 4}
            elif isinstance(body, ChatCompletionRequest | CompletionRequest | EmbeddingRequest):
                data = {**data, "schema_version": lowest_version(body)}
            elif isinstance(body, dict) and _body_kind(body) == "embedding":
                data = {**data, "schema_version": 3}
        return data

    @model_validator(mode="after")
    def _version_fits_body(self) -> ChatRequest:
        needed = lowest_version(self.body, self.reply_to, self.conversation_id)
        if self.schema_version < needed:
            raise ValueError(f"this request needs schema_version {needed}")
        if self.stream and self.is_embedding:
            raise ValueError("stream: embeddings are answered whole, never streamed")
        return self

    @property
    def is_chat(self) -> bool:
        return isinstance(self.body, ChatCompletionRequest)

    @property
    def is_embedding(self) -> bool:
        return isinstance(self.body, EmbeddingRequest)

    def facts(self) -> RequestFacts:
        return RequestFacts(
            created_at=self.created_at,
            model=self.body.model,
            lane="batch" if self.batch_id is not None else "interactive",
            tenant_id=self.tenant_id,
            user_id=self.user_id,
        )

    @property
    def kafka_key(self) -> str:
        """The record key: the conversation's, else the request's own id. A cancel must
        carry the same key to land behind its request."""
        return self.conversation_id or self.request_id

    @property
    def completion_id(self) -> str:
        """The id of the answer's OpenAI object and of every chunk of it."""
        prefix = "chatcmpl" if self.is_chat else "embd" if self.is_embedding else "cmpl"
        return f"{prefix}-{self.request_id}"

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
    """A piece of the answer; ``seq`` lets the client detect gaps and duplicates.

    ``content`` is the new text of the first choice; for version-2 requests ``chunk`` is
    the whole OpenAI chunk (every choice, tool-call fragments, logprobs)."""

    model_config = ConfigDict(frozen=True)

    schema_version: WireVersion = 1
    request_id: str
    seq: int = Field(ge=0)
    content: str
    chunk: dict[str, Any] | None = None


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True)

    queue_ms: float
    """From the request's created_at to the worker handing it to the engine."""
    ttft_ms: float | None
    """From created_at to the first generated token."""
    total_ms: float
    """From created_at to the final result being produced."""


class RequestFacts(BaseModel):
    """What a final says of its request, so the audit trail can file and count the final
    without the request's row: the request's creation time (the audit tables are
    partitioned by it) and the keys of the daily usage aggregates."""

    model_config = ConfigDict(frozen=True)

    created_at: AwareDatetime
    model: str = Field(max_length=256)
    lane: Literal["interactive", "batch"]
    tenant_id: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)


class ChatResult(BaseModel):
    """The successful final: an OpenAI ``chat.completion`` (or ``text_completion``, or
    embeddings ``list``) plus llmbus's timings."""

    model_config = ConfigDict(frozen=True)

    schema_version: WireVersion = 1
    request_id: str
    completion: Annotated[
        ChatCompletion | TextCompletion | EmbeddingList, Field(discriminator="object")
    ]
    timings: Timings
    worker_id: str
    finished_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    batch_id: str | None = None
    """The request's batch job or replay run: lets the auditor keep what the batch's
    output file is made of (embedding vectors) without waiting for the request's row."""
    request: RequestFacts | None = None
    """Absent from finals of older workers."""

    def text(self, index: int = 0) -> str:
        """The text of one choice (a chat answer's content, or a completion's text)."""
        if isinstance(self.completion, EmbeddingList):
            raise TypeError("an embeddings result has vectors, not text")
        choice = self.completion.choices[index]
        if isinstance(self.completion, ChatCompletion):
            return choice.message.content or ""  # type: ignore[union-attr]
        return choice.text  # type: ignore[union-attr]


class ErrorReply(BaseModel):
    """The failed final: a stable code clients can switch on, and a message for people."""

    model_config = ConfigDict(frozen=True)

    schema_version: WireVersion = 1
    request_id: str
    code: str
    message: str
    worker_id: str | None = None
    finished_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    request: RequestFacts | None = None
    """Absent for a request too malformed to read, and from finals of older workers."""


class BatchCancellation(BaseModel):
    """Published on the control topic (key: the batch id); every worker reads it and
    skips or aborts the batch's requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str = Field(min_length=1, max_length=128)
    cancelled_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

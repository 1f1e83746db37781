"""OpenAI's chat-completions request, as its clients send it, and the response shapes.

Every field of OpenAI's current request is either honoured (declared here) or refused
with an error that names it (``refused`` below, or ``extra="forbid"`` for names nobody
has heard of). docs/openai-compatibility.md says which and why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmbus.schemas.openai_parts import (
    MAX_N,
    FunctionTool,
    ResponseFormat,
    StreamOptions,
    ToolCall,
    ToolChoice,
    bounded_stop,
    check_refused,
    text_content,
    token_biases,
)

MAX_MESSAGES = 256
"""More turns than any real conversation; bounds validation work on hostile input."""
MAX_TOOLS = 128
"""OpenAI's own limit on ``tools``."""

REFUSED_CHAT_FIELDS = {
    "audio": "audio output is not served: the served models produce text only",
    "prediction": "predicted outputs are not supported by the engine",
    "web_search_options": "llmbus has no web search: prompts never leave the network",
    "functions": "deprecated by OpenAI: send `tools` instead",
    "function_call": "deprecated by OpenAI: send `tool_choice` instead",
    "reasoning_effort": "the served models do not reason; it would have no effect",
    "verbosity": "the served models take no verbosity setting; it would have no effect",
    "prompt_cache_retention": "the engine keeps its prefix cache in memory only",
}
"""Known OpenAI fields llmbus cannot honour, each with the reason the 400 gives."""


AUDIT_ONLY_FIELDS = frozenset(
    {"user", "safety_identifier", "metadata", "store", "service_tier", "prompt_cache_key",
     "modalities", "stream_options"}
)  # fmt: skip
"""Kept in the audit trail; they change nothing in the answer (``service_tier`` sets the
engine priority, ``stream_options`` is the gateway's)."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    """A string, or a list of parts; only ``text`` (and an assistant's ``refusal``) parts
    are served, any other part type is refused by name."""
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=256)
    refusal: str | None = None

    @field_validator("content")
    @classmethod
    def _served_parts(
        cls, value: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        if isinstance(value, list):
            text_content(value)  # raises on a part type that is not served
        return value

    @model_validator(mode="after")
    def _role_rules(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content may be null only in an assistant turn with tool_calls")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

    def text(self) -> str:
        """The message's text, whatever form its content took (for search and display)."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else text_content(self.content)


class ChatCompletionRequest(BaseModel):
    """The request body as an OpenAI client sends it (``stream`` travels in the envelope)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    # Sampling. None leaves the choice to the engine (the model's generation config, as
    # vLLM's own server does).
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """OpenAI's current name; wins over the deprecated ``max_tokens``."""
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=1024)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # vLLM's extras, as its server accepts them.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    min_tokens: int | None = Field(default=None, ge=0)
    # Structured outputs and tools.
    response_format: ResponseFormat | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Kept in the audit trail; they change nothing in the answer.
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: bool | None = None
    """Every call is audited whatever this says (the trail is what llmbus is for)."""
    service_tier: Literal["auto", "default", "flex"] | None = None
    """``flex`` runs at batch priority; ``priority`` and ``scale`` cannot be promised."""
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    modalities: list[Literal["text"]] | None = None
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        return check_refused(data, REFUSED_CHAT_FIELDS)

    _stop = field_validator("stop")(bounded_stop)
    _biases = field_validator("logit_bias")(token_biases)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.n > 1 and self.temperature == 0:
            raise ValueError(
                "n above 1 needs a temperature above 0: greedy decoding has one answer"
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice needs tools")
        name = getattr(self.tool_choice, "name", None)
        if name is not None and name not in {t.function.name for t in self.tools or ()}:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools")
        limit = self.completion_limit()
        if self.min_tokens is not None and limit is not None and self.min_tokens > limit:
            raise ValueError("min_tokens is above max_completion_tokens")
        return self

    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_fields(self) -> dict[str, Any]:
        """The body for the engine: what shapes the answer, without what only the audit
        trail and the gateway read."""
        return self.model_dump(mode="json", exclude_none=True, exclude=set(AUDIT_ONLY_FIELDS))

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ToolCallOut(ToolCall):
    model_config = ConfigDict(frozen=True, extra="allow")


class AssistantMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    refusal: str | None = None


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    index: int = 0
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """An OpenAI ``chat.completion`` object."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage

"""OpenAI's legacy text completions (``/v1/completions``): request and response."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmbus.schemas.chat import Usage
from llmbus.schemas.openai_parts import (
    MAX_N,
    StreamOptions,
    bounded_stop,
    check_refused,
    token_biases,
)

MAX_PROMPTS = 2048
"""OpenAI's own limit on a list of prompts."""

REFUSED_COMPLETION_FIELDS = {
    "suffix": "insertion (fill-in-the-middle) is not supported by the engine",
    "best_of": "the engine samples n completions and keeps them all; ask for n instead",
}


class CompletionRequest(BaseModel):
    """The body of ``POST /v1/completions`` (``stream`` travels in the envelope)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    """OpenAI's default for this endpoint is 16 tokens."""
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=1024)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    """OpenAI's limit for this endpoint."""
    echo: bool = False
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    min_tokens: int | None = Field(default=None, ge=0)
    user: str | None = Field(default=None, max_length=256)
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        return check_refused(data, REFUSED_COMPLETION_FIELDS)

    @field_validator("prompt")
    @classmethod
    def _bounded_prompt(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt is empty")
            many = value and isinstance(value[0], str | list)
            if many and len(value) > MAX_PROMPTS:
                raise ValueError(f"at most {MAX_PROMPTS} prompts in one request")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CompletionRequest:
        if self.n > 1 and self.temperature == 0:
            raise ValueError(
                "n above 1 needs a temperature above 0: greedy decoding has one answer"
            )
        return self

    _stop = field_validator("stop")(bounded_stop)
    _biases = field_validator("logit_bias")(token_biases)

    def prompts(self) -> list[str]:
        """The text prompts (token-id prompts are listed as their ids)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [str(self.prompt)]
        return [p if isinstance(p, str) else str(p) for p in self.prompt]

    def completion_limit(self) -> int | None:
        return self.max_tokens

    def engine_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"user", "stream_options"})


class TextChoice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    index: int = 0
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None


class TextCompletion(BaseModel):
    """An OpenAI ``text_completion`` object."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage

"""OpenAI's embeddings (``/v1/embeddings``): request and response.

Every field of OpenAI's request is honoured or refused by name: ``dimensions`` travels to
the engine, which refuses it for a model that cannot shorten its vectors (only
Matryoshka-trained models can); unknown names are refused by ``extra="forbid"``.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbus.schemas.chat import Usage

MAX_INPUTS = 2048
"""OpenAI's own limit on the inputs of one request."""
MAX_INPUT_TOKENS_PER_REQUEST = 300_000
"""OpenAI's own limit on the tokens of all inputs of one request (token-array inputs are
counted here; text is counted by the engine's tokenizer against the model's context)."""


class EmbeddingRequest(BaseModel):
    """The body of ``POST /v1/embeddings``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _bounded_input(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("input is empty")
        if isinstance(items[0], int):
            items = [items]
        if len(items) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs in one request")
        if any(len(item) == 0 for item in items):
            raise ValueError("input holds an empty string or token array")
        tokens = sum(len(item) for item in items if isinstance(item, list))
        if tokens > MAX_INPUT_TOKENS_PER_REQUEST:
            raise ValueError(f"at most {MAX_INPUT_TOKENS_PER_REQUEST} input tokens per request")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One entry per vector asked for."""
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], int):
            return [list(self.input)]
        return list(self.input)

    def completion_limit(self) -> int | None:
        """Nothing is generated."""
        return None

    def engine_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"user"})


def base64_to_floats(listing: dict[str, Any]) -> dict[str, Any]:
    """An embeddings response (JSON) with base64 vectors turned into lists of floats: the
    same float32 values the ``float`` format carries."""
    data = []
    for item in listing.get("data", ()):
        vector = item.get("embedding")
        if isinstance(vector, str):
            raw = base64.b64decode(vector)
            item = {**item, "embedding": list(struct.unpack(f"<{len(raw) // 4}f", raw))}
        data.append(item)
    return {**listing, "data": data}


class Embedding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """Floats, or with ``encoding_format: base64`` the little-endian float32 bytes."""

    def dimensions(self) -> int:
        if isinstance(self.embedding, str):
            return len(base64.b64decode(self.embedding)) // 4
        return len(self.embedding)


class EmbeddingList(BaseModel):
    """OpenAI's embeddings response: one vector per input, in input order."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[Embedding]
    usage: Usage

    def without_vectors(self) -> dict[str, Any]:
        """This response as JSON with each vector replaced by its length: what the audit
        trail keeps unless told to store vectors."""
        body = self.model_dump(mode="json")
        for item, embedding in zip(body["data"], self.data, strict=True):
            del item["embedding"]
            item["dimensions"] = embedding.dimensions()
        return body

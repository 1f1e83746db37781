"""Pieces shared by OpenAI's request shapes: tools, response formats, content parts."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 128
"""Hard ceiling on ``n`` on the wire; deployments set a lower one (``LLMBUS_MAX_N``)."""
MAX_STOP_SEQUENCES = 4
"""OpenAI's own limit on ``stop``."""
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
"""OpenAI's rule for function names."""

SERVED_PART_TYPES = frozenset({"text", "refusal"})


def text_content(parts: list[dict[str, Any]]) -> str:
    """The text of a list of content parts; any part type the models cannot take is
    refused by name (``image_url``, ``input_audio``, ``file``, ...)."""
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in SERVED_PART_TYPES:
            raise ValueError(
                f"content part type {kind!r} is not supported: the served models take text only"
            )
        value = part.get(kind)
        if not isinstance(value, str):
            raise ValueError(f"a {kind!r} part needs a string {kind!r}")
        texts.append(value)
    return "\n".join(texts)


def check_refused(data: Any, refused: dict[str, str]) -> Any:
    """Refuse, by name and with the reason, a known field that cannot be honoured."""
    if isinstance(data, dict):
        for name, why in refused.items():
            if data.get(name) is not None:
                raise ValueError(f"{name} is not supported: {why}")
    return data


def bounded_stop(value: str | list[str] | None) -> str | list[str] | None:
    if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    return value


def token_biases(value: dict[str, float] | None) -> dict[str, float] | None:
    for token, bias in (value or {}).items():
        if not token.isdigit() or not -100 <= bias <= 100:
            raise ValueError("logit_bias keys are token ids, values between -100 and 100")
    return value


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from None
    return schema


class StreamOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool | None = None
    """OpenAI pads chunks against length side channels; a private network needs none."""


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class FunctionTool(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionCall(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class NamedFunction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["function"]
    function: NamedFunction

    @property
    def name(self) -> str:
        return self.function.name


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaSpec(BaseModel):
    # "schema" shadows a BaseModel attribute, hence the alias; serialised by it always.
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True
    )

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_schema(value)


class ResponseFormat(BaseModel):
    """``text``, ``json_object`` or ``json_schema``; the last two are enforced by the
    engine's grammar-constrained decoding, so the output parses whatever the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema goes with type 'json_schema', and only with it")
        return self

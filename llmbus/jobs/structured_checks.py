"""How many structured-output answers are valid JSON, and valid against the schema they
were asked for, for the originals and for their replay."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from referencing.exceptions import Unresolvable


@dataclass(frozen=True)
class ValidShares:
    asked: int
    """Answered requests that asked for JSON (``response_format`` json_object/json_schema)."""
    valid_json: int
    with_schema: int
    """Of those, the ones that gave a JSON schema."""
    schema_valid: int


@dataclass(frozen=True)
class StructuredShares:
    original: ValidShares
    replay: ValidShares


def structured_shares(rows: list[dict[str, Any]]) -> StructuredShares | None:
    """None when no request of the run (or its originals) asked for structured output."""
    original = _shares(rows, "original_")
    replay = _shares(rows, "")
    if original.asked == replay.asked == 0:
        return None
    return StructuredShares(original, replay)


def _shares(rows: list[dict[str, Any]], prefix: str) -> ValidShares:
    asked = valid = with_schema = schema_valid = 0
    for row in rows:
        params = row.get(f"{prefix}params") or {}
        fmt = params.get("response_format") or {}
        if row.get(f"{prefix}status") != "ok" or fmt.get("type") not in (
            "json_object",
            "json_schema",
        ):
            continue
        asked += 1
        schema = (fmt.get("json_schema") or {}).get("schema")
        with_schema += schema is not None
        try:
            value = json.loads(row.get(f"{prefix}output") or "")
        except ValueError:
            continue
        valid += 1
        if schema is not None and _conforms(value, schema):
            schema_valid += 1
    return ValidShares(asked, valid, with_schema, schema_valid)


def _conforms(value: Any, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    except (jsonschema.SchemaError, Unresolvable):
        return False  # a schema the engine took but jsonschema cannot read proves nothing
    return True

"""``llmbus contract``: the published contract of llmbus's topics, for producers and
consumers in any language: ``docs/asyncapi.yaml`` and one JSON Schema per message kind
in ``docs/schemas/``. Generated, never edited by hand; a test compares the committed
files with a fresh generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from llmbus.contract.asyncapi import CHANNELS, DeadLetter, asyncapi_document

ASYNCAPI_FILE = "asyncapi.yaml"
SCHEMAS_DIR = "schemas"


def contract_files() -> dict[str, str]:
    """Relative path -> content of every contract file."""
    files = {
        ASYNCAPI_FILE: yaml.safe_dump(
            asyncapi_document(), sort_keys=False, allow_unicode=True, width=100
        )
    }
    kinds: dict[str, tuple[type[BaseModel], bool]] = {}
    for channel in CHANNELS:
        for message in channel.messages:
            if message.model is not DeadLetter:
                kinds[message.kind] = (message.model, channel.action == "receive")
    for kind, (model, received) in sorted(kinds.items()):
        # What llmbus receives is described as a producer may write it (defaults optional);
        # what it sends, as it is written (every field present).
        schema: dict[str, Any] = model.model_json_schema(
            mode="validation" if received else "serialization"
        )
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        files[f"{SCHEMAS_DIR}/{kind}.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return files


def write_contract(out_dir: Path) -> list[Path]:
    written = []
    for relative, content in contract_files().items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written

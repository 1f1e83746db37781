"""The published contract: committed files equal a fresh generation, every reference in
the AsyncAPI document resolves, and the examples in docs/kafka-api.md are valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmbus.contract import ASYNCAPI_FILE, contract_files
from llmbus.schemas import ChatRequest, decode_request

DOCS = Path(__file__).parents[2] / "docs"


def test_committed_contract_is_the_generated_one() -> None:
    generated = contract_files()
    stale = [p for p, text in generated.items() if _read(DOCS / p) != text]
    assert not stale, f"run `make contract` and commit: {stale} differ from the generation"
    committed = {str(p.relative_to(DOCS)) for p in (DOCS / "schemas").glob("*.json")}
    assert committed == {p for p in generated if p.startswith("schemas/")}


def test_every_reference_in_the_asyncapi_document_resolves() -> None:
    doc = yaml.safe_load(contract_files()[ASYNCAPI_FILE])
    assert doc["asyncapi"] == "3.0.0"
    refs = list(_refs(doc))
    assert len(refs) > 50
    for ref in refs:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    # Each channel's messages name their kind's header and their Kafka key.
    for name, channel in doc["channels"].items():
        if name == "dead-letter":
            continue  # a dead letter keeps its original record's headers, kind included
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            assert message["headers"]["properties"]["llmbus-kind"]["const"] == message["name"]
            assert message["bindings"]["kafka"]["key"]["description"]
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"{prefix}.requests.{model}", "{prefix}.replies.{name}", "{prefix}.events"} <= addresses


def test_the_request_examples_in_kafka_api_md_follow_the_schema() -> None:
    text = (DOCS / "kafka-api.md").read_text(encoding="utf-8")
    examples = [json.loads(b) for b in re.findall(r"```json request\n(.*?)```", text, re.S)]
    assert len(examples) >= 2
    schema = json.loads(contract_files()["schemas/request.schema.json"])
    for example in examples:
        jsonschema.validate(example, schema)
        request = decode_request(json.dumps(example).encode(), None)
        assert isinstance(request, ChatRequest)
    # The schema is a real check: a request without a reply address is refused by it.
    broken = {k: v for k, v in examples[0].items() if k != "reply_to"}
    with pytest.raises(jsonschema.ValidationError, match="reply_to"):
        jsonschema.validate(broken, schema)


def _refs(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None

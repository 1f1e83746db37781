"""Proof from outside Python: Kafka's own console producer sends a request written from
the contract alone (docs/kafka-api.md), a real worker on the real model answers, and
Kafka's console consumer reads the answer from a named results topic."""

from __future__ import annotations

import asyncio
import json
import shutil

import jsonschema
import pytest

from llmbus.bus import ensure_topics
from llmbus.consumers.engine import Engine
from llmbus.contract import contract_files
from tests.conftest import Bus

pytestmark = pytest.mark.integration

_TOOL_TIMEOUT_S = 120
"""A JVM tool starts in seconds; the consumer also waits out the model's answer."""


async def run_tool(bus: Bus, cls: str, *args: str, stdin: bytes = b"") -> str:
    java = shutil.which("java")
    assert java, "java is installed by `make setup` (Kafka needs it)"
    libs = bus.stack.kafka.libs
    proc = await asyncio.create_subprocess_exec(
        java, "-Xmx256m", "-cp", f"{libs}/*", cls, "--bootstrap-server",
        bus.settings.kafka_bootstrap, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), _TOOL_TIMEOUT_S)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


async def test_console_producer_request_is_answered_on_a_named_topic(
    bus: Bus, engine: Engine
) -> None:
    s = bus.settings
    results = f"{s.topic_prefix}.replies.console"
    await ensure_topics(s.kafka_bootstrap, {results: 2})
    await bus.start_worker(engine)
    request = {
        "request_id": "console-1",
        "reply_to": {"topic": results},
        "body": {
            "model": s.model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24,
            "temperature": 0,
        },
    }
    jsonschema.validate(request, json.loads(contract_files()["schemas/request.schema.json"]))
    line = f"llmbus-kind:request\tconsole-1\t{json.dumps(request)}\n"
    await run_tool(
        bus, "org.apache.kafka.tools.ConsoleProducer",
        "--topic", s.requests_topic,
        "--property", "parse.key=true", "--property", "parse.headers=true",
        stdin=line.encode(),
    )  # fmt: skip
    out = await run_tool(
        bus, "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--topic", results, "--from-beginning", "--max-messages", "1",
        "--timeout-ms", str(_TOOL_TIMEOUT_S * 1000 - 10_000),
        "--property", "print.key=true", "--property", "print.headers=true",
    )  # fmt: skip
    headers, key, value = out.strip().split("\t", 2)
    assert key == "console-1"
    assert "llmbus-kind:result" in headers and "llmbus-request-id:console-1" in headers
    answer = json.loads(value)
    jsonschema.validate(answer, json.loads(contract_files()["schemas/result.schema.json"]))
    assert answer["completion"]["object"] == "chat.completion"
    assert "Paris" in answer["completion"]["choices"][0]["message"]["content"]

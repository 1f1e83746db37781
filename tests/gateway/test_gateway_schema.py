"""schemathesis against the gateway's own OpenAPI schema: whatever it is sent, no 5xx and
no answer that breaks the schema it publishes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Bus
from tests.gateway.keys import create_key

pytestmark = pytest.mark.integration


async def test_no_server_errors_and_no_schema_violations(bus: Bus, tmp_path: Path) -> None:
    # A stand-in engine keeps the generated chats fast; the HTTP side is the subject here.
    bus.spawn_worker_process("schema-worker", step_s=0.01)
    url = await bus.start_gateway({"LLMBUS_GATEWAY_MAX_TOKENS": "16"})
    key = await create_key(bus, "schema")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples", "25",
        "--request-timeout", "60",
        "--generation-deterministic",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # schemathesis keeps a cache folder in its working directory
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=900)
    report = out.decode()
    print(report[-4000:])
    assert proc.returncode == 0, report[-6000:]
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{url}/metrics")).text
    answered = [
        line for line in metrics.splitlines()
        if line.startswith('llmbus_gateway_calls_total{route="/v1/chat/completions",status="200"}')
    ]  # fmt: skip
    assert answered and float(answered[0].split()[-1]) > 0, "no generated chat reached a worker"

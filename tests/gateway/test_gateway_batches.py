"""OpenAI's Files and Batches API through the gateway, with the official SDK, mapped onto
llmbus batch jobs (real worker on the default model), scoped to the caller's tenant."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai.types import Batch, FileObject

from llmbus.consumers.engine import Engine
from tests.conftest import Bus
from tests.gateway.keys import create_key

pytestmark = pytest.mark.integration


async def run_batch(
    client: openai.AsyncOpenAI, lines: list[dict[str, Any]], endpoint: str
) -> tuple[FileObject, Batch, list[dict[str, Any]]]:
    """Upload ``lines``, run them as a batch to completion with every line answered, and
    return the upload, the batch and its output lines."""
    upload = await client.files.create(
        file=("in.jsonl", "\n".join(json.dumps(x) for x in lines).encode()), purpose="batch"
    )
    assert upload.id.startswith("file-") and upload.bytes > 0
    batch = await client.batches.create(
        input_file_id=upload.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    assert batch.request_counts is not None and batch.request_counts.total == len(lines)
    for _ in range(300):
        batch = await client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        await asyncio.sleep(0.5)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(lines), 0)
    assert batch.output_file_id is not None
    output = await client.files.content(batch.output_file_id)
    return upload, batch, [json.loads(line) for line in output.text.splitlines()]


async def test_batch_lifecycle_with_the_sdk(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    url = await bus.start_gateway()
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=await create_key(bus, "team-a"), max_retries=0
    )
    other = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=await create_key(bus, "team-b"), max_retries=0
    )
    lines = [
        {
            "custom_id": f"c-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": bus.settings.model,
                "messages": [{"role": "user", "content": f"Say the number {i}."}],
                "max_tokens": 8,
                "temperature": 0,
            },
        }
        for i in range(5)
    ]
    upload, batch, results = await run_batch(client, lines, "/v1/chat/completions")
    assert sorted(r["custom_id"] for r in results) == [f"c-{i}" for i in range(5)]
    assert all(r["response"]["status_code"] == 200 for r in results)
    listed = await client.batches.list()
    assert batch.id in [b.id for b in listed.data]

    # Another tenant sees none of it.
    with pytest.raises(openai.NotFoundError):
        await other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await other.files.content(upload.id)
    with pytest.raises(openai.NotFoundError):
        await other.batches.cancel(batch.id)
    assert batch.id not in [b.id for b in (await other.batches.list()).data]

    bad = await client.files.create(file=("bad.jsonl", b"{oops\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="line 1"):
        await client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

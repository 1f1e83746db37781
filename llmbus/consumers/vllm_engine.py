"""vLLM's async engine behind llmbus's ``Engine`` protocol: the only module importing vllm.

vLLM batches continuously: every ``generate`` call joins the running batch at the next
step, so the worker simply keeps up to ``max_num_seqs`` calls open at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llmbus.consumers.engine import Chunk, GenerationParams
from llmbus.errors import EngineDeadError, EngineRequestError, NotStartedError


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
    ) -> None:
        self.model_path = model_path
        self.served_model = served_model
        self._max_num_seqs = max_num_seqs
        self._max_model_len = max_model_len
        self._kv_cache_gib = kv_cache_gib
        self._dtype = dtype
        self._llm: Any = None
        self._tokenizer: Any = None

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
        from vllm import AsyncEngineArgs
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
        self._tokenizer = self._llm.get_tokenizer()

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
            llm.shutdown()

    def _started(self) -> Any:
        if self._llm is None:
            raise NotStartedError("VllmEngine used before start()")
        return self._llm

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        self._started()
        encoded = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True
        )
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return list(ids)

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError as VllmDeadError

        llm = self._started()
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            seed=params.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        produced = 0
        try:
            async for out in llm.generate(
                {"prompt_token_ids": prompt_token_ids},
                sampling,
                request_id,
                priority=params.priority,
            ):
                completion = out.outputs[0]
                produced += len(completion.token_ids)
                yield Chunk(completion.text, produced, completion.finish_reason)
        except VllmDeadError as exc:
            raise EngineDeadError("vLLM engine died") from exc
        except (ValueError, RuntimeError) as exc:
            if llm.errored:
                raise EngineDeadError("vLLM engine died") from exc
            raise EngineRequestError(f"engine rejected the request: {exc}") from exc

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

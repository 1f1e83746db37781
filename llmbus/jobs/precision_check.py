"""``llmbus precision-check``: the precision eval run on the real engine in float32, then in
bfloat16, and the verdict ``dtype=auto`` reads stored in the cache."""

from __future__ import annotations

import logging

from llmbus.consumers.precision_eval import (
    EVAL_MAX_TOKENS,
    EvalRun,
    PrecisionVerdict,
    load_eval,
    make_verdict,
    run_eval,
    save_verdict,
)
from llmbus.settings import Settings
from llmbus.stack.model_cache import resolve_model_path

log = logging.getLogger(__name__)


async def eval_in_dtype(
    settings: Settings, model_path: str, dtype: str, *, max_tokens: int = EVAL_MAX_TOKENS
) -> EvalRun:
    """One engine in ``dtype``, started for the eval and stopped after it."""
    from llmbus.consumers.vllm_engine import VllmEngine

    # The eval asks plain questions: no tool calls to parse.
    evaluated = settings.model_copy(update={"dtype": dtype, "tool_call_parser": ""})
    engine = VllmEngine.from_settings(evaluated, model_path)
    await engine.start()
    try:
        return await run_eval(engine, load_eval(), model=settings.model, max_tokens=max_tokens)
    finally:
        await engine.stop()


async def check_precision(
    settings: Settings, *, max_tokens: int = EVAL_MAX_TOKENS
) -> PrecisionVerdict:
    """Score the settings' model in float32 and in bfloat16, one engine at a time (two
    would share the CPU and the KV cache space), and store the verdict."""
    model_path = resolve_model_path(settings.model, settings.model_path, settings.cache_dir)
    fp32 = await eval_in_dtype(settings, model_path, "float32", max_tokens=max_tokens)
    log.info("precision eval float32: %d/%d", fp32.score, fp32.total)
    bf16 = await eval_in_dtype(settings, model_path, "bfloat16", max_tokens=max_tokens)
    log.info("precision eval bfloat16: %d/%d", bf16.score, bf16.total)
    verdict = make_verdict(model_path, fp32, bf16)
    path = save_verdict(settings.cache_dir, verdict)
    log.info("precision verdict stored in %s", path)
    return verdict

"""``make bench-precision``: the default model in float32 and in bfloat16, for speed and
for answers.

(1) ``llmbus precision-check``: the shipped eval through llmbus's engine in each dtype,
scored, and the verdict stored where ``dtype=auto`` reads it; (2) throughput of vLLM's
offline engine in each dtype (the same prompts, greedy, fixed max_tokens, as
bench/throughput.py). The last line says what ``dtype=auto`` now picks on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench import save_report
from bench.throughput import prompts, run_offline
from llmbus.consumers.precision_eval import (
    EVAL_MAX_TOKENS,
    allowed_drop,
    choose_dtype,
    cpu_has_avx512_bf16,
)
from llmbus.jobs.precision_check import check_precision
from llmbus.settings import Settings
from llmbus.stack.model_cache import resolve_model_path

DTYPES = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=128, help="throughput prompts")
    parser.add_argument("--max-tokens", type=int, default=64, help="per throughput prompt")
    parser.add_argument("--eval-max-tokens", type=int, default=EVAL_MAX_TOKENS)
    args = parser.parse_args()
    # The CPU build's KV cache (GiB), as in bench/throughput.py: set before any engine.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    settings = Settings()
    model_path = resolve_model_path(settings.model, settings.model_path, settings.cache_dir)

    print(f"[bench] eval in {' and '.join(DTYPES)} (llmbus precision-check)", flush=True)
    verdict = asyncio.run(check_precision(settings, max_tokens=args.eval_max_tokens))
    throughput: dict[str, dict[str, float]] = {}
    for dtype in DTYPES:
        print(
            f"[bench] vLLM offline engine in {dtype}, {args.n} prompts, "
            f"max_tokens={args.max_tokens}",
            flush=True,
        )
        throughput[dtype] = run_offline(model_path, prompts(args.n), args.max_tokens, dtype=dtype)
    import torch

    choice = choose_dtype(
        "auto",
        model_path,
        settings.cache_dir,
        cuda=torch.cuda.is_available(),
        cpu_bf16=cpu_has_avx512_bf16(),
    )
    ratio = throughput["bfloat16"]["tok_s"] / throughput["float32"]["tok_s"]
    report = {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "eval_max_tokens": args.eval_max_tokens,
        "throughput": throughput,
        "ratio": ratio,
        "verdict": verdict.model_dump(mode="json"),
        "auto": {"dtype": choice.dtype, "reason": choice.reason},
    }
    save_report("precision", report)

    total = verdict.total
    for dtype, eval_score in (("float32", verdict.fp32_score), ("bfloat16", verdict.bf16_score)):
        run = throughput[dtype]
        print(
            f"{dtype:<8}: {run['tokens']:6.0f} tokens in {run['wall_s']:6.1f} s "
            f"= {run['tok_s']:6.1f} tok/s; eval score {eval_score}/{total}"
        )
    print(f"bf16 keeps the score: {verdict.keeps_score} (tolerance {allowed_drop(total)})")
    print(f"dtype=auto: {choice.dtype} ({choice.reason})")
    print(
        f"precision: bf16/fp32 throughput ratio {ratio:.3f}, "
        f"score fp32 {verdict.fp32_score} bf16 {verdict.bf16_score}, auto picks {choice.dtype}"
    )


if __name__ == "__main__":
    main()

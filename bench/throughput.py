"""``make bench``: the same N prompts through (a) vLLM's offline engine directly and
(b) llmbus end to end (client -> Kafka -> worker process -> Kafka -> client), in one run.

Runs ``--rounds`` alternating rounds (offline, llmbus, offline, ...) and prints output
tokens/s of each side per round, the median ratio (b)/(a) with its spread, and p50/p95
end-to-end latency.
Both sides use the same model, dtype, batch size (max_num_seqs), greedy sampling and a
fixed max_tokens; each gets a warm-up request outside the timed window.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    child_pids,
    cpu_seconds,
    machine_cpu,
    offline_llm,
    running_stack,
    save_report,
    stop_processes,
)
from llmbus.settings import Settings
from llmbus.stack.model_cache import resolve_model_path
from llmbus.stack.processes import free_port

MAX_NUM_SEQS = 64
MAX_MODEL_LEN = 2048


def prompts(n: int) -> list[str]:
    topics = ["the sea", "a city", "music", "trees", "the moon", "coffee", "trains", "rain"]
    return [
        f"Write two sentences about {topics[i % len(topics)]} and the number {i}." for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_offline(
    model_path: str, questions: list[str], max_tokens: int, *, dtype: str = "float32"
) -> dict[str, float]:
    llm = offline_llm(
        model=model_path,
        max_num_seqs=MAX_NUM_SEQS,
        max_model_len=MAX_MODEL_LEN,
        dtype=dtype,
        disable_log_stats=True,
    )
    from vllm import SamplingParams  # after offline_llm, which must come before vllm's import

    tok = llm.get_tokenizer()
    prompts_ids = []
    for q in questions:
        enc = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
        )
        prompts_ids.append(
            {"prompt_token_ids": list(enc["input_ids"] if hasattr(enc, "keys") else enc)}
        )
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    llm.generate(prompts_ids[:1], params, use_tqdm=False)  # warm-up
    own_before, machine_before = cpu_seconds([os.getpid()]), machine_cpu()
    start = time.perf_counter()
    outs = llm.generate(prompts_ids, params, use_tqdm=False)
    wall = time.perf_counter() - start
    own = cpu_seconds([os.getpid()]) - own_before
    machine = window(machine_before, machine_cpu(), own)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, **machine}


def window(before: dict[str, float], after: dict[str, float], measured: float) -> dict[str, float]:
    """The machine over a timed window: steal as a share of it, and the CPU seconds that
    processes other than the ``measured`` ones took (PostgreSQL, the OS, anything else)."""
    spent = {k: after[k] - before[k] for k in after}
    return {
        "steal_pct": 100 * spent["steal"] / max(sum(spent.values()), 1e-9),
        "cpu_other_s": spent["busy"] - measured,
    }


def bench_settings() -> Settings:
    """A throwaway stack of its own: fresh ports and a temporary state directory."""
    kafka_port = free_port()
    return Settings(
        state_dir=Path(tempfile.mkdtemp(prefix="llmbus-bench-")),
        kafka_port=kafka_port,
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        request_partitions=4,
        reply_partitions=4,
        topic_prefix="bench",
    )


def start_worker(
    settings: Settings, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LLMBUS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LLMBUS_TOPIC_PREFIX": settings.topic_prefix,
        "LLMBUS_MAX_NUM_SEQS": str(MAX_NUM_SEQS),
        "LLMBUS_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "LLMBUS_STATE_DIR": str(settings.state_dir),
        # The baselines run in float32; "auto" could pick bfloat16 on a CPU where
        # `llmbus precision-check` found it keeps the model's answers.
        "LLMBUS_DTYPE": os.environ.get("LLMBUS_DTYPE", "float32"),
        **(extra_env or {}),
    }
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "llmbus.cli", "worker"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def cpu_by_process(broker_pid: int | None, worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of each process on the llmbus side (the engine is the worker's
    child process, or the worker itself when vLLM runs it in-process)."""
    return {
        "broker": cpu_seconds([broker_pid] if broker_pid else []),
        "worker": cpu_seconds([worker_pid]),
        "engine": cpu_seconds(child_pids(worker_pid)),
        "client": cpu_seconds([os.getpid()]),
    }


async def run_llmbus(
    settings: Settings,
    questions: list[str],
    max_tokens: int,
    worker: subprocess.Popen[bytes],
    broker_pid: int | None = None,
) -> dict[str, float]:
    from llmbus.producers import LlmbusClient

    try:
        async with LlmbusClient.from_settings(settings, timeout_s=900) as client:
            await client.chat("warm up", max_tokens=4, temperature=0.0)  # waits for the worker
            latencies: list[float] = []

            async def one(q: str) -> int:
                t0 = time.perf_counter()
                result = await client.chat(q, max_tokens=max_tokens, temperature=0.0)
                latencies.append(time.perf_counter() - t0)
                return result.completion.usage.completion_tokens

            cpu_before, machine_before = cpu_by_process(broker_pid, worker.pid), machine_cpu()
            start = time.perf_counter()
            tokens = sum(await asyncio.gather(*(one(q) for q in questions)))
            wall = time.perf_counter() - start
            cpu_after, machine_after = cpu_by_process(broker_pid, worker.pid), machine_cpu()
    finally:
        stop_processes(worker)
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return {
        "wall_s": wall,
        "tokens": tokens,
        "tok_s": tokens / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
        **{f"cpu_{name}_s": seconds for name, seconds in cpu.items()},
        **window(machine_before, machine_after, sum(cpu.values())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=256, help="number of prompts (>= 200)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    base = Settings()
    model_path = resolve_model_path(base.model, base.model_path, base.cache_dir)
    questions = prompts(args.n)
    settings = bench_settings()
    state = settings.state_dir
    rounds: list[dict[str, dict[str, float]]] = []
    with running_stack(settings) as stack:
        # Alternating rounds (offline, llmbus, offline, ...): this machine drifts by a few
        # percent between runs, and a ratio of neighbours cancels most of the drift.
        for r in range(1, args.rounds + 1):
            print(f"[bench] round {r}: (a) vLLM offline, {args.n} prompts", flush=True)
            offline = run_offline(model_path, questions, args.max_tokens)
            print(f"[bench] round {r}: (b) llmbus end to end", flush=True)
            worker = start_worker(settings, state / f"worker-{r}.log")
            e2e = asyncio.run(
                run_llmbus(settings, questions, args.max_tokens, worker, stack.kafka.nodes[0].pid())
            )
            rounds.append({"offline": offline, "llmbus": e2e})
            print(
                f"[bench] round {r}: {offline['tok_s']:.1f} vs {e2e['tok_s']:.1f} tok/s, "
                f"ratio {e2e['tok_s'] / offline['tok_s']:.3f}",
                flush=True,
            )

    ratios = [x["llmbus"]["tok_s"] / x["offline"]["tok_s"] for x in rounds]
    ratio = statistics.median(ratios)
    report = {
        "n": args.n,
        "max_tokens": args.max_tokens,
        "max_num_seqs": MAX_NUM_SEQS,
        "rounds": rounds,
        "ratios": ratios,
        "ratio": ratio,
    }
    save_report("throughput", report)
    for r, x in enumerate(rounds, 1):
        offline, e2e = x["offline"], x["llmbus"]
        print(
            f"round {r}: (a) vLLM offline {offline['tok_s']:6.1f} tok/s, (b) llmbus e2e "
            f"{e2e['tok_s']:6.1f} tok/s ({e2e['tokens']} tokens; p50 {e2e['p50_s']:.2f} s, "
            f"p95 {e2e['p95_s']:.2f} s), ratio {ratios[r - 1]:.3f}; CPU s in (b)'s window: "
            f"engine {e2e['cpu_engine_s']:.1f}, broker {e2e['cpu_broker_s']:.1f}, "
            f"worker {e2e['cpu_worker_s']:.1f}, client {e2e['cpu_client_s']:.1f}, rest of the "
            f"machine {e2e['cpu_other_s']:.1f} (in (a)'s {offline['cpu_other_s']:.1f}); steal "
            f"{e2e['steal_pct']:.1f} % in (b), {offline['steal_pct']:.1f} % in (a)"
        )
    print(
        f"ratio (b)/(a)    : {ratio:.3f} (median of {len(ratios)} rounds, "
        f"spread {min(ratios):.3f}-{max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()

"""``make bench-affinity``: conversation keys against request-id keys, on two workers.

Two worker processes on the default model (one CPU core each, the default 2 GiB of KV
cache each) on a fresh local stack. 40 conversations of 5 turns each, all at once (40
users of a chat service); every conversation
opens with its own ~1,500-token document and asks short questions about it, the earlier
answers kept in the history, as a chat client does. Run once keyed by conversation (every
turn goes to the worker that has the conversation in its prefix cache) and once keyed by
request id (each turn lands on either worker), each with documents of its own so neither
run warms the other's cache. Printed: time to first token of turns 2-5 (p50/p90) and the
engines' prefix-cache hit rate, for both.

The regime this measures: the 40 histories (~75,000 tokens of KV) do not fit one engine's
cache (~46,000 tokens of float32 KV in 2 GiB), their halves do. Keyed, each engine holds
its own conversations; by request id, each engine sees all of them and evicts what the
next turn needs, besides the turns that land on the engine that never saw the history.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from typing import Any

from bench import metric_sums, running_stack, save_report, stop_processes
from bench.throughput import bench_settings, percentile, start_worker
from llmbus.producers import LlmbusClient
from llmbus.schemas import ChatResult
from llmbus.settings import Settings
from llmbus.stack.processes import free_port

TURNS = 5
WORDS = (
    "river", "mountain", "ledger", "invoice", "turbine", "harbor", "lantern", "copper",
    "meadow", "signal", "orbit", "garden", "quarry", "violet", "engine", "archive", "parcel",
    "summit", "canyon", "beacon", "timber", "crystal", "market", "anchor", "falcon", "marble",
    "pepper", "saddle", "thunder", "velvet", "willow", "zephyr",
)  # fmt: skip
QUESTIONS = [
    "Summarise the document in one sentence.",
    "Which word appears first?",
    "Name two places it mentions.",
    "Is the text about nature or machines?",
    "Give it a short title.",
]


def document(seed: int, words: int) -> str:
    rng = random.Random(seed)
    sentences = []
    for _ in range(words // 12):
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + ".")
    return f"Document {seed}.\n" + " ".join(sentences)


async def conversation(
    client: LlmbusClient, seed: int, keyed: bool, args: argparse.Namespace
) -> list[float]:
    """TTFT in ms of turns 2..TURNS of one conversation."""
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "Answer briefly about this document.\n\n"
         + document(seed, args.doc_words)},
    ]  # fmt: skip
    ttfts = []
    for turn in range(TURNS):
        messages.append({"role": "user", "content": QUESTIONS[turn]})
        final: ChatResult | None = None
        async for reply in client.stream(
            list(messages),
            max_tokens=args.max_tokens,
            temperature=0.0,
            conversation_id=f"conv-{seed}" if keyed else None,
        ):
            if isinstance(reply, ChatResult):
                final = reply
        assert final is not None
        assert final.timings.ttft_ms is not None
        if turn > 0:
            ttfts.append(final.timings.ttft_ms)
        messages.append({"role": "assistant", "content": final.text()})
    return ttfts


async def run_mode(
    settings: Settings, keyed: bool, first_seed: int, args: argparse.Namespace
) -> list[float]:
    async with LlmbusClient.from_settings(settings, timeout_s=1800) as client:
        gate = asyncio.Semaphore(args.concurrency)

        async def one(seed: int) -> list[float]:
            async with gate:
                return await conversation(client, seed, keyed, args)

        results = await asyncio.gather(*(one(first_seed + i) for i in range(args.conversations)))
    return [t for ttfts in results for t in ttfts]


def prefix_cache(ports: list[int]) -> tuple[float, float]:
    """(hits, queries) summed over the workers' vLLM counters, in tokens."""
    hits = queries = 0.0
    for port in ports:
        sums = metric_sums(port) or {}
        hits += sums.get("vllm:prefix_cache_hits_total", 0.0)
        queries += sums.get("vllm:prefix_cache_queries_total", 0.0)
    return hits, queries


async def measure(settings: Settings, ports: list[int], args: argparse.Namespace) -> Any:
    async with LlmbusClient.from_settings(settings, timeout_s=1800) as client:
        for _ in range(2):  # both workers joined and warm (any partition, any worker)
            await client.chat("warm up", max_tokens=2, temperature=0.0)
    figures: dict[str, Any] = {}
    for mode, keyed, seed in (("random", False, 1000), ("keyed", True, 2000)):
        before = prefix_cache(ports)
        ttfts = await run_mode(settings, keyed, seed, args)
        after = prefix_cache(ports)
        hits, queries = after[0] - before[0], after[1] - before[1]
        figures[mode] = {
            "ttft_ms": ttfts,
            "p50": percentile(ttfts, 0.5),
            "p90": percentile(ttfts, 0.9),
            "hit_rate": hits / queries if queries else 0.0,
        }
        print(
            f"[bench] affinity {mode:6}: ttft p50 {figures[mode]['p50']:.0f} ms, "
            f"p90 {figures[mode]['p90']:.0f} ms, prefix-cache hit rate "
            f"{figures[mode]['hit_rate']:.1%}",
            flush=True,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=40, help="conversations at once")
    parser.add_argument("--doc-words", type=int, default=1100, help="about 1,500 tokens")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument(
        "--chunk", type=int, default=None, help="LLMBUS_MAX_NUM_BATCHED_TOKENS of the workers"
    )
    args = parser.parse_args()
    settings = bench_settings()
    ports = [free_port(), free_port()]
    workers = []
    with running_stack(settings):
        try:
            for n, port in enumerate(ports):
                env = {
                    "LLMBUS_WORKER_ID": f"w{n}",
                    "LLMBUS_METRICS_PORT": str(port),
                    "LLMBUS_MAX_MODEL_LEN": "4096",
                    "LLMBUS_MAX_NUM_SEQS": "32",
                    **({"LLMBUS_MAX_NUM_BATCHED_TOKENS": str(args.chunk)} if args.chunk else {}),
                    # One core each: two engines sharing both cores would spend it on
                    # contention.
                    "VLLM_CPU_OMP_THREADS_BIND": str(n % max(1, os.cpu_count() or 1)),
                }
                log = settings.state_dir / f"worker{n}.log"
                workers.append(start_worker(settings, log, env))
            figures = asyncio.run(measure(settings, ports, args))
        finally:
            stop_processes(*workers)
    keyed, rand = figures["keyed"], figures["random"]
    save_report("affinity", {**vars(args), **figures})
    ratio = rand["p50"] / keyed["p50"]
    print(
        f"affinity: ttft p50 ratio {ratio:.2f} (keyed {keyed['p50']:.0f} ms, random "
        f"{rand['p50']:.0f} ms, hit rate {keyed['hit_rate']:.1%})"
    )


if __name__ == "__main__":
    main()

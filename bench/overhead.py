"""``make bench-overhead``: the latency llmbus adds over vLLM itself, at low load.

In one run, on the same machine and the same prompts:

* (floor) a bare aiokafka request/reply round trip on the bench's broker: acks=all,
  idempotent producers, two topics, an 800-byte payload; what any Kafka hop costs;
* (a) ``LlmbusClient`` -> Kafka -> ``llmbus worker`` (separate process) -> Kafka -> client,
  sequential chats (one at a time), ``max_tokens`` 1 and 16, greedy;
* (b) the same chats on an in-process ``AsyncLLM`` (same model, dtype, batch size), the
  chat template applied inside the timed window as any server must.

Added latency is (a) minus (b) at p50 and p99, per length; the last line prints the worst
of the two lengths. (b) runs after the worker stopped, so the two never share the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import save_report
from bench.throughput import MAX_MODEL_LEN, MAX_NUM_SEQS, bench_settings, percentile, start_worker
from llmbus.bus.admin import ensure_topics
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack
from llmbus.stack.model_cache import resolve_model_path

LENGTHS = (1, 16)


def questions(n: int) -> list[str]:
    subjects = ["rivers", "bread", "chess", "owls", "glass", "kites", "maps", "snow"]
    return [f"Tell me one fact about {subjects[i % len(subjects)]} (#{i})." for i in range(n)]


def summary(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99), "n": len(ms)}


async def kafka_floor(bootstrap: str, rounds: int) -> dict[str, float]:
    """Round trips through two topics with a responder in the same process."""
    ask, answer = f"floor-ask-{uuid.uuid4().hex[:6]}", f"floor-answer-{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, {ask: 1, answer: 1})
    common: dict[str, Any] = {"bootstrap_servers": bootstrap}
    producers = [AIOKafkaProducer(**common, acks="all", enable_idempotence=True) for _ in "ab"]
    consumers = [AIOKafkaConsumer(t, **common, auto_offset_reset="earliest") for t in (ask, answer)]
    for part in (*producers, *consumers):
        await part.start()
    requester, responder = producers
    asks, answers = consumers

    async def respond() -> None:
        async for msg in asks:
            await responder.send_and_wait(answer, msg.value)

    responding = asyncio.create_task(respond())
    payload = os.urandom(800)
    latencies = []
    try:
        for i in range(rounds + 10):  # the first 10 warm up connections and metadata
            t0 = time.perf_counter()
            await requester.send_and_wait(ask, payload)
            await answers.getone()
            if i >= 10:
                latencies.append(time.perf_counter() - t0)
    finally:
        responding.cancel()
        for part in (*producers, *consumers):
            await part.stop()
    return summary(latencies)


async def through_llmbus(
    settings: Settings, n: int, floor_rounds: int
) -> tuple[dict[int, list[float]], dict[str, float]]:
    out: dict[int, list[float]] = {}
    async with LlmbusClient.from_settings(settings, timeout_s=900) as client:
        for _ in range(5):  # the first waits for the worker; the rest warm the path
            await client.chat("warm up", max_tokens=4, temperature=0.0)
        # Measured with the worker started and idle, as the chats below find the machine.
        floor = await kafka_floor(settings.kafka_bootstrap, floor_rounds)
        print(f"[bench] kafka floor p50 {floor['p50_ms']:.1f} ms", flush=True)
        for max_tokens in LENGTHS:
            out[max_tokens] = []
            for q in questions(n):
                t0 = time.perf_counter()
                await client.chat(q, max_tokens=max_tokens, temperature=0.0)
                out[max_tokens].append(time.perf_counter() - t0)
    return out, floor


async def in_process(model_path: str, n: int) -> dict[int, list[float]]:
    from vllm import AsyncEngineArgs, SamplingParams
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=model_path,
        max_num_seqs=MAX_NUM_SEQS,
        max_model_len=MAX_MODEL_LEN,
        dtype="float32",
        scheduling_policy="priority",
    )
    llm = AsyncLLM.from_engine_args(args)
    tokenizer = llm.tokenizer

    async def one(q: str, max_tokens: int) -> None:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        params = SamplingParams(
            max_tokens=max_tokens, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY
        )
        async for _ in llm.generate(prompt, params, request_id=uuid.uuid4().hex):
            pass

    out: dict[int, list[float]] = {}
    try:
        for _ in range(5):
            await one("warm up", 4)
        for max_tokens in LENGTHS:
            out[max_tokens] = []
            for q in questions(n):
                t0 = time.perf_counter()
                await one(q, max_tokens)
                out[max_tokens].append(time.perf_counter() - t0)
    finally:
        llm.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100, help="sequential chats per length")
    parser.add_argument("--floor-rounds", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    base = Settings()
    model_path = resolve_model_path(base.model, base.model_path, base.cache_dir)
    settings = bench_settings()
    stack = LocalStack(settings, fast_unsafe=True)
    print("[bench] overhead: starting Kafka + PostgreSQL + worker", flush=True)
    asyncio.run(stack.up())
    try:
        worker = start_worker(settings, settings.state_dir / "worker.log")
        try:
            bus, floor = asyncio.run(through_llmbus(settings, args.n, args.floor_rounds))
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        print("[bench] (b) in-process AsyncLLM", flush=True)
        local = asyncio.run(in_process(model_path, args.n))
    finally:
        stack.down(purge=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)

    report: dict[str, Any] = {"n": args.n, "kafka_floor": floor, "lengths": {}}
    added_p50, added_p99 = 0.0, 0.0
    for max_tokens in LENGTHS:
        a, b = summary(bus[max_tokens]), summary(local[max_tokens])
        p50, p99 = a["p50_ms"] - b["p50_ms"], a["p99_ms"] - b["p99_ms"]
        added_p50, added_p99 = max(added_p50, p50), max(added_p99, p99)
        report["lengths"][max_tokens] = {"llmbus": a, "in_process": b, "added_p50_ms": p50}
        print(
            f"max_tokens {max_tokens:2d}: llmbus p50 {a['p50_ms']:7.1f} ms p99 {a['p99_ms']:7.1f}"
            f" | in-process p50 {b['p50_ms']:7.1f} ms p99 {b['p99_ms']:7.1f}"
            f" | added p50 {p50:5.1f} ms p99 {p99:5.1f} ms"
        )
    print(f"kafka floor: p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms")
    save_report("overhead", report)
    print(
        f"overhead: added p50 {added_p50:.1f} ms p99 {added_p99:.1f} ms "
        f"(kafka floor p50 {floor['p50_ms']:.1f} ms)"
    )


if __name__ == "__main__":
    main()

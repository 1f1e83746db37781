"""``make bench`` (second figure): interactive latency behind a batch backlog.

One worker process on the default model. (a) ``-n`` interactive requests, one after
another, on an idle queue; (b) the same requests while a backlog of ``--backlog`` batch
requests is queued on the batch lane and the engine is busy with it. Prints p50/p95 of
both and the ratio (b)/(a) of the medians; the backlog is cancelled afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.throughput import bench_settings, percentile, start_worker
from llmbus.bus import BusProducer
from llmbus.producers import LlmbusClient
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.schemas import ChatCompletionRequest, ChatMessage, ChatRequest, Priority
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack

QUESTION = "Give one tip for writing clear emails."


async def interactive(client: LlmbusClient, n: int, max_tokens: int) -> list[float]:
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.chat(QUESTION, max_tokens=max_tokens, temperature=0.0)
        latencies.append(time.perf_counter() - t0)
    return latencies


async def measure(settings: Settings, n: int, backlog: int, max_tokens: int) -> dict[str, float]:
    async with (
        LlmbusClient.from_settings(settings, timeout_s=900) as client,
        BusProducer(
            settings.kafka_bootstrap, client_id="bench", max_request_bytes=1_000_000
        ) as producer,
    ):
        await client.chat("warm up", max_tokens=4, temperature=0.0)  # waits for the worker
        idle = await interactive(client, n, max_tokens)
        publisher = BatchPublisher(
            producer,
            topic_prefix=settings.topic_prefix,
            replies_topic=settings.replies_topic,
            control_topic=settings.control_topic,
        )
        batch_id = "bench-backlog"
        reply_to = await publisher.reply_to(batch_id)
        now = datetime.now(UTC)
        await publisher.publish(
            [
                ChatRequest(
                    request_id=f"{batch_id}-{i}",
                    created_at=now,
                    reply_to=reply_to,
                    priority=Priority.LOW,
                    batch_id=batch_id,
                    body=ChatCompletionRequest(
                        model=settings.model,
                        messages=[ChatMessage(role="user", content=f"Write a story about {i}.")],
                        max_tokens=64,
                        temperature=0.0,
                    ),
                )
                for i in range(backlog)
            ]
        )
        await asyncio.sleep(5)  # let the worker fill the engine with batch work
        busy = await interactive(client, n, max_tokens)
        await publisher.cancel(batch_id)
    return {
        "idle_p50_s": statistics.median(idle),
        "idle_p95_s": percentile(idle, 0.95),
        "backlog_p50_s": statistics.median(busy),
        "backlog_p95_s": percentile(busy, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20, help="interactive requests per phase")
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    settings = bench_settings()
    stack = LocalStack(settings, fast_unsafe=True)
    print("[bench] interactive latency: starting Kafka + PostgreSQL + worker", flush=True)
    asyncio.run(stack.up())
    worker = start_worker(settings, settings.state_dir / "worker.log")
    try:
        figures = asyncio.run(measure(settings, args.n, args.backlog, args.max_tokens))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        stack.down(purge=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)
    ratio = figures["backlog_p50_s"] / figures["idle_p50_s"]
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    report = {**vars(args), **figures, "ratio_p50": ratio}
    (out / "interactive_latency.json").write_text(json.dumps(report, indent=2))
    print(
        f"interactive, idle queue      : p50 {figures['idle_p50_s']:.2f} s, "
        f"p95 {figures['idle_p95_s']:.2f} s ({args.n} requests, max_tokens={args.max_tokens})"
    )
    print(
        f"interactive, {args.backlog} batch queued: p50 {figures['backlog_p50_s']:.2f} s, "
        f"p95 {figures['backlog_p95_s']:.2f} s"
    )
    print(f"ratio p50 (backlog)/(idle)   : {ratio:.2f}")


if __name__ == "__main__":
    main()

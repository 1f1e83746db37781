"""``make bench-mixed``: interactive latency behind a batch backlog, with default settings.

One worker process on the default model, on a fresh local stack:

1. ``-n`` interactive chats, one after another, on an idle engine;
2. ``--backlog`` batch requests queued on the batch lane; once the engine is full of them,
   batch-only throughput over ``--window`` seconds (no interactive traffic, so the
   ``BatchThrottle`` is idle);
3. the same ``-n`` interactive chats with the backlog still queued (the backlog p50);
4. the batch cancelled, and the same ``-n`` chats on the idle engine again. The idle p50
   is that of phases 1 and 4 together: on a shared 2-core machine an idle phase alone
   moved by a quarter from run to run, and one on each side of the backlog halves the
   drift between them.

The batch requests ask for 48 to 80 tokens (64 on average), so that they do not finish
in waves: with one length for all, requests admitted together finish together, and a
window's token count moved by whole waves (56 x 64 tokens at a time).

Then, unless ``--no-baseline``, the same backlog on a second fresh worker with the
throttle off (``LLMBUS_INTERACTIVE_SLOWDOWN=1``: the behaviour before it existed), for
the batch-only throughput it is compared with, and that worker's interactive p50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench import save_report
from bench.throughput import bench_settings, percentile, start_worker
from llmbus.bus import BusProducer, PartitionReader
from llmbus.producers import LlmbusClient
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.schemas import ChatCompletionRequest, ChatMessage, ChatRequest, ChatResult, Priority
from llmbus.schemas.wire import decode
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack

QUESTION = "Give one tip for writing clear emails."
FILL_S = 8.0
"""After queueing the backlog: the worker fills the engine, and any interactive request of
phase 1 is past the throttle's hold (5 s by default), before anything is measured. After
cancelling it, the same wait lets the worker abort and skip the rest."""

BATCH_TOKENS = (48, 80)
"""Range of the batch requests' ``max_tokens`` (mean 64, the throughput bench's length)."""


async def interactive(client: LlmbusClient, n: int, max_tokens: int) -> list[float]:
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.chat(QUESTION, max_tokens=max_tokens, temperature=0.0)
        latencies.append(time.perf_counter() - t0)
    return latencies


async def batch_tokens_per_s(reader: PartitionReader, window_s: float) -> float:
    """Completion tokens of batch finals landing on the batch's reply partition."""
    tokens, end = 0, time.monotonic() + window_s
    while (left := end - time.monotonic()) > 0:
        for record in await reader.getmany(timeout_ms=int(min(left, 1.0) * 1000)):
            message = decode(record.value, record.headers)
            if isinstance(message, ChatResult):
                tokens += message.completion.usage.completion_tokens
    return tokens / window_s


async def run_phases(
    settings: Settings, args: argparse.Namespace, *, measure_idle: bool
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with (
        LlmbusClient.from_settings(settings, timeout_s=900) as client,
        BusProducer(
            settings.kafka_bootstrap, client_id="bench", max_request_bytes=1_000_000
        ) as producer,
    ):
        await client.chat("warm up", max_tokens=4, temperature=0.0)  # waits for the worker
        if measure_idle:
            figures["idle"] = await interactive(client, args.n, args.max_tokens)
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
                        max_tokens=BATCH_TOKENS[0] + i % (BATCH_TOKENS[1] - BATCH_TOKENS[0] + 1),
                        temperature=0.0,
                    ),
                )
                for i in range(args.backlog)
            ]
        )
        await asyncio.sleep(FILL_S)
        async with PartitionReader(
            settings.kafka_bootstrap,
            topic=reply_to.topic,
            partition=reply_to.partition,
            client_id="bench-batch-reader",
        ) as reader:
            figures["batch_tok_s"] = await batch_tokens_per_s(reader, args.window)
        figures["backlog"] = await interactive(client, args.n, args.max_tokens)
        await publisher.cancel(batch_id)
        if measure_idle:
            await asyncio.sleep(FILL_S)
            figures["idle_after"] = await interactive(client, args.n, args.max_tokens)
    return figures


def one_worker(args: argparse.Namespace, env: dict[str, str], *, measure_idle: bool) -> Any:
    settings = bench_settings()
    stack = LocalStack(settings, fast_unsafe=True)
    asyncio.run(stack.up())
    try:
        worker = start_worker(settings, settings.state_dir / "worker.log", env)
        try:
            return asyncio.run(run_phases(settings, args, measure_idle=measure_idle))
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    finally:
        stack.down(purge=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20, help="interactive chats per phase")
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--window", type=float, default=60.0, help="batch-only seconds")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    print("[bench] mixed: default settings", flush=True)
    ours = one_worker(args, {}, measure_idle=True)
    base = None
    if not args.no_baseline:
        print("[bench] mixed: baseline worker, throttle off", flush=True)
        base = one_worker(args, {"LLMBUS_INTERACTIVE_SLOWDOWN": "1"}, measure_idle=False)
    idle_chats = ours["idle"] + ours["idle_after"]
    idle, busy = statistics.median(idle_chats), statistics.median(ours["backlog"])
    report: dict[str, Any] = {**vars(args), "default": ours, "throttle_off": base}
    print(
        f"interactive, idle engine       : p50 {idle:.2f} s, p95 "
        f"{percentile(idle_chats, 0.95):.2f} s ({2 * args.n} chats, max_tokens="
        f"{args.max_tokens}; p50 {statistics.median(ours['idle']):.2f} s before the backlog, "
        f"{statistics.median(ours['idle_after']):.2f} s after)"
    )
    print(
        f"interactive, {args.backlog} batch queued: p50 {busy:.2f} s, p95 "
        f"{percentile(ours['backlog'], 0.95):.2f} s"
    )
    if base is not None:
        batch_ratio = ours["batch_tok_s"] / base["batch_tok_s"]
        report["batch_only_ratio"] = batch_ratio
        print(
            f"throttle off (before)          : interactive p50 "
            f"{statistics.median(base['backlog']):.2f} s with the backlog"
        )
        print(
            f"batch-only throughput          : {ours['batch_tok_s']:.1f} tok/s, throttle off "
            f"{base['batch_tok_s']:.1f} tok/s, ratio {batch_ratio:.3f}"
        )
    save_report("mixed", report)
    ratio = busy / idle
    print(
        f"mixed: interactive p50 ratio {ratio:.2f} (idle {idle:.2f} s, with backlog {busy:.2f} s)"
    )


if __name__ == "__main__":
    main()

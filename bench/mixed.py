"""``make bench-mixed``: interactive latency behind a batch backlog, with default settings.

One worker process on the default model, on a fresh local stack:

1. ``-n`` interactive chats, one after another, on an idle engine;
2. ``--backlog`` batch requests queued on the batch lane, and once the engine is full of
   them, the same ``-n`` chats (the backlog p50);
3. the batch cancelled, and the same ``-n`` chats on the idle engine again. The idle p50
   is that of phases 1 and 3 together: on a shared 2-core machine an idle phase alone
   moved by a quarter from run to run, and one on each side of the backlog halves the
   drift between them.

The batch requests ask for 48 to 80 tokens (64 on average), so that they do not finish
in waves (requests admitted together would finish together).

Then, unless ``--no-baseline``:

* the same backlog chats on a second fresh worker with the throttle off
  (``LLMBUS_INTERACTIVE_SLOWDOWN=1``: the behaviour before it existed);
* batch-only throughput, the goal's other half: on one more stack, ``--rounds``
  alternating rounds, each after ``--backlog`` more batch requests are queued (a worker
  drains about 450 in its turn where vLLM runs at 650 tok/s, so one backlog for all the
  rounds ran dry before the last), of a default worker and a throttle-off one
  (ABBA order, and an even number of rounds: a machine drifting steadily, or a second
  worker of a pair reading faster, then favours neither side), each started fresh and
  given ``--window`` seconds once its batch lane is full. What is counted is the
  engine's generated tokens (vLLM's own counter, from the worker's metrics endpoint),
  not finished answers: an answer lands only after 48-80 steps, so a window of finals
  moved with the ramp-up and the timing of completions. With no interactive request in
  flight the throttle is idle, so both sides should read the same; one window of one
  worker each moved by 20 % between runs of the same code, hence the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench import child_pids, metric_sums, running_stack, save_report, stop_processes
from bench.throughput import bench_settings, percentile, start_worker
from llmbus.bus import BusProducer, ensure_topics
from llmbus.producers import LlmbusClient
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.schemas import ChatCompletionRequest, ChatMessage, ChatRequest, Priority
from llmbus.settings import Settings
from llmbus.stack.processes import free_port, wait_gone

QUESTION = "Give one tip for writing clear emails."
FILL_S = 8.0
"""After queueing the backlog: the worker fills the engine, and any interactive request of
phase 1 is past the throttle's hold (5 s by default), before anything is measured. After
cancelling it, the same wait lets the worker abort and skip the rest."""

BATCH_TOKENS = (48, 80)
"""Range of the batch requests' ``max_tokens`` (mean 64, the throughput bench's length)."""

SETTLE_S = 5.0
"""From a full batch lane to the window: the lane's 56 prompts are prefilled in the first
steps, a cost that a worker running for hours pays only as requests come and go."""

FILL_TIMEOUT_S = 600.0
"""A worker's start (engine load, compile cache) and its batch lane filling: two minutes
on this machine; a worker not there by then is broken, not slow."""

THROTTLE_OFF = {"LLMBUS_INTERACTIVE_SLOWDOWN": "1"}
"""The worker's behaviour before the batch throttle existed."""

SIDES: tuple[tuple[str, dict[str, str]], ...] = (("default", {}), ("throttle_off", THROTTLE_OFF))


async def interactive(client: LlmbusClient, n: int, max_tokens: int) -> list[float]:
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.chat(QUESTION, max_tokens=max_tokens, temperature=0.0)
        latencies.append(time.perf_counter() - t0)
    return latencies


async def queue_backlog(
    settings: Settings, producer: BusProducer, n: int, batch_id: str
) -> BatchPublisher:
    """``n`` batch requests of ``batch_id`` on the batch lane; the publisher can cancel it."""
    publisher = BatchPublisher.from_settings(producer, settings)
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
            for i in range(n)
        ]
    )
    return publisher


def bench_producer(settings: Settings) -> BusProducer:
    return BusProducer(settings.kafka_bootstrap, client_id="bench", max_request_bytes=1_000_000)


async def run_phases(
    settings: Settings, args: argparse.Namespace, *, measure_idle: bool
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with (
        LlmbusClient.from_settings(settings, timeout_s=900) as client,
        bench_producer(settings) as producer,
    ):
        await client.chat("warm up", max_tokens=4, temperature=0.0)  # waits for the worker
        if measure_idle:
            figures["idle"] = await interactive(client, args.n, args.max_tokens)
        publisher = await queue_backlog(settings, producer, args.backlog, "bench-backlog")
        await asyncio.sleep(FILL_S)
        figures["backlog"] = await interactive(client, args.n, args.max_tokens)
        await publisher.cancel("bench-backlog")
        if measure_idle:
            await asyncio.sleep(FILL_S)
            figures["idle_after"] = await interactive(client, args.n, args.max_tokens)
    return figures


def one_worker(args: argparse.Namespace, env: dict[str, str], *, measure_idle: bool) -> Any:
    settings = bench_settings()
    with running_stack(settings):
        worker = start_worker(settings, settings.state_dir / "worker.log", env)
        try:
            return asyncio.run(run_phases(settings, args, measure_idle=measure_idle))
        finally:
            stop_processes(worker)


def lane_full(sums: dict[str, float] | None) -> bool:
    if not sums:
        return False
    limit = sums.get("llmbus_batch_slot_limit", 0.0)
    return limit > 0 and sums.get("llmbus_requests_inflight", 0.0) >= limit


def generated_tokens_per_s(port: int, window_s: float) -> float:
    """The engine's generated tokens per second over ``window_s``, once the worker serving
    metrics on ``port`` has filled its batch lane."""
    deadline = time.monotonic() + FILL_TIMEOUT_S
    while not lane_full(metric_sums(port)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not fill its batch lane in {FILL_TIMEOUT_S} s")
        time.sleep(1.0)
    time.sleep(SETTLE_S)
    before, t0 = metric_sums(port), time.monotonic()
    time.sleep(window_s)
    after, t1 = metric_sums(port), time.monotonic()
    if before is None or after is None:
        raise RuntimeError("the worker stopped serving metrics during the window")
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    return generated / (t1 - t0)


def batch_only_rate(settings: Settings, name: str, env: dict[str, str], window_s: float) -> float:
    port = free_port()
    worker = start_worker(
        settings,
        settings.state_dir / f"worker-{name}.log",
        # No grace on stop: the next round's worker takes over the unanswered requests.
        {**env, "LLMBUS_METRICS_PORT": str(port), "LLMBUS_SHUTDOWN_GRACE_S": "0"},
    )
    try:
        return generated_tokens_per_s(port, window_s)
    finally:
        engines = child_pids(worker.pid)
        stop_processes(worker)
        for pid in engines:  # the next worker's engine must not share the cores with it
            wait_gone(pid, timeout_s=60)


def batch_rounds(args: argparse.Namespace) -> dict[str, list[float]]:
    """Batch-only generated tokens/s of each side, in alternating rounds on one stack."""
    rates: dict[str, list[float]] = {name: [] for name, _ in SIDES}
    settings = bench_settings()
    with running_stack(settings):

        async def queue(batch_id: str) -> None:
            async with bench_producer(settings) as producer:
                await queue_backlog(settings, producer, args.backlog, batch_id)

        # Before any worker runs (a worker creates them where they are missing).
        asyncio.run(ensure_topics(settings.kafka, settings.topics()))
        for round_ in range(args.rounds):
            asyncio.run(queue(f"bench-batch-only-{round_ + 1}"))
            for name, env in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                rate = batch_only_rate(settings, name, env, args.window)
                rates[name].append(rate)
                print(f"[bench] mixed: batch-only round {round_ + 1} {name}: {rate:.1f} tok/s")
    return rates


def round_ratios(rates: dict[str, list[float]]) -> list[float]:
    """Each round's default / throttle-off generated tokens per second."""
    return [d / o for d, o in zip(rates["default"], rates["throttle_off"], strict=True)]


def fmt(values: list[float], digits: int) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20, help="interactive chats per phase")
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=4, help="batch-only rounds, a pair each (even: ABBA)"
    )
    parser.add_argument("--window", type=float, default=30.0, help="batch-only seconds")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--batch-only", action="store_true", help="only the alternating batch-only rounds"
    )
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if args.batch_only:
        only = batch_rounds(args)
        pairs = round_ratios(only)
        save_report("mixed-batch-only", {**vars(args), "batch_only_tok_s": only})
        print(f"batch-only: ratio median {statistics.median(pairs):.3f} ({fmt(pairs, 3)})")
        return
    print("[bench] mixed: default settings", flush=True)
    ours = one_worker(args, {}, measure_idle=True)
    base = rates = None
    if not args.no_baseline:
        print("[bench] mixed: baseline worker, throttle off", flush=True)
        base = one_worker(args, THROTTLE_OFF, measure_idle=False)
        print("[bench] mixed: batch-only throughput, alternating rounds", flush=True)
        rates = batch_rounds(args)
    idle_chats = ours["idle"] + ours["idle_after"]
    idle, busy = statistics.median(idle_chats), statistics.median(ours["backlog"])
    report: dict[str, Any] = {
        **vars(args),
        "default": ours,
        "throttle_off": base,
        "batch_only_tok_s": rates,
    }
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
    if base is not None and rates is not None:
        print(
            f"throttle off (before)          : interactive p50 "
            f"{statistics.median(base['backlog']):.2f} s with the backlog"
        )
        pairs = round_ratios(rates)
        report["batch_only_ratio"] = statistics.median(pairs)
        print(
            f"batch-only throughput          : default {fmt(rates['default'], 1)} tok/s, "
            f"throttle off {fmt(rates['throttle_off'], 1)} tok/s; ratio median "
            f"{report['batch_only_ratio']:.3f} ({fmt(pairs, 3)})"
        )
    save_report("mixed", report)
    ratio = busy / idle
    print(
        f"mixed: interactive p50 ratio {ratio:.2f} (idle {idle:.2f} s, with backlog {busy:.2f} s)"
    )


if __name__ == "__main__":
    main()

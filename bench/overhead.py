"""``make bench-overhead``: the latency llmbus adds over vLLM itself, at low load.

In one run, on the same machine and the same prompts, interleaved chat by chat (so a
machine that slows down midway slows all three alike):

* (floor) a bare aiokafka request/reply round trip on the bench's broker: acks=all,
  idempotent producers, two topics, an 800-byte payload; what any Kafka hop costs;
* (a) ``LlmbusClient`` -> Kafka -> ``llmbus worker`` (separate process) -> Kafka -> client,
  sequential chats (one at a time), ``max_tokens`` 1 and 16, greedy;
* (b) the same chats on an in-process ``AsyncLLM`` (same model, dtype, batch size), the
  chat template applied inside the timed window as any server must.

Added latency, per length: p50 is the median of each chat's own added time (its prompt
through llmbus less the same prompt in-process, measured back to back), p99 is (a)'s p99
less (b)'s; a round's figure is the worse of the two lengths. The run measures several
rounds on the same stack and engines, and the last line prints the median of the rounds'
figures (one round's p50 moved by 2 ms from one run to the next on this machine). Both
engines are loaded at once but only one computes at a time: the chats are sequential.
Before measuring, the broker is warmed with round trips: a broker in service has compiled
its request path, a freshly started JVM interprets it (here the floor's p50 fell from 2.4
to 1.1 ms over its first 8,000 round trips).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import keep_compiled, running_stack, save_report, stop_processes, worker_executor
from bench.throughput import MAX_MODEL_LEN, MAX_NUM_SEQS, bench_settings, percentile, start_worker
from llmbus.bus.admin import ensure_topics
from llmbus.consumers.engine_executor import executor_env
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings
from llmbus.stack.model_cache import resolve_model_path

LENGTHS = (1, 16)


def questions(n: int) -> list[str]:
    subjects = ["rivers", "bread", "chess", "owls", "glass", "kites", "maps", "snow"]
    return [f"Tell me one fact about {subjects[i % len(subjects)]} (#{i})." for i in range(n)]


def summary(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99), "n": len(ms)}


class KafkaFloor:
    """Round trips through two topics with a responder in the same process."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._payload = os.urandom(800)
        self._parts: list[Any] = []
        self._responding: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaFloor:
        ask, answer = f"floor-ask-{uuid.uuid4().hex[:6]}", f"floor-answer-{uuid.uuid4().hex[:6]}"
        await ensure_topics(self._bootstrap, {ask: 1, answer: 1})
        common: dict[str, Any] = {"bootstrap_servers": self._bootstrap}
        producers = [AIOKafkaProducer(**common, acks="all", enable_idempotence=True) for _ in "ab"]
        consumers = [
            AIOKafkaConsumer(t, **common, auto_offset_reset="earliest") for t in (ask, answer)
        ]
        self._parts = [*producers, *consumers]
        for part in self._parts:
            await part.start()
        self._ask, self._requester, self._answers = ask, producers[0], consumers[1]
        responder, asks = producers[1], consumers[0]

        async def respond() -> None:
            async for msg in asks:
                await responder.send_and_wait(answer, msg.value)

        self._responding = asyncio.create_task(respond())
        for _ in range(10):  # connections and metadata
            await self.round_trip()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._responding is not None:
            self._responding.cancel()
        for part in self._parts:
            await part.stop()

    async def warm(self, rounds: int) -> None:
        """Round trips until the broker's request path is compiled (see the module doc)."""
        print(f"[bench] warming the broker: {rounds} round trips", flush=True)
        for _ in range(rounds):
            await self.round_trip()

    async def round_trip(self) -> float:
        t0 = time.perf_counter()
        await self._requester.send_and_wait(self._ask, self._payload)
        await self._answers.getone()
        return time.perf_counter() - t0


class InProcess:
    """The same chats on an ``AsyncLLM`` in this process (the baseline)."""

    def __init__(self, model_path: str) -> None:
        keep_compiled()
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        # The worker's own executor choice: what is measured is llmbus's path, not where
        # vLLM runs the model.
        backend = worker_executor()
        args = AsyncEngineArgs(
            model=model_path,
            max_num_seqs=MAX_NUM_SEQS,
            max_model_len=MAX_MODEL_LEN,
            dtype="float32",
            scheduling_policy="priority",
            distributed_executor_backend=backend,
        )
        with executor_env(backend):
            self._llm = AsyncLLM.from_engine_args(args)
        self._params = partial(
            SamplingParams, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY
        )

    async def chat(self, q: str, max_tokens: int) -> None:
        prompt = self._llm.tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        params = self._params(max_tokens=max_tokens)
        async for _ in self._llm.generate(prompt, params, request_id=uuid.uuid4().hex):
            pass

    def shutdown(self) -> None:
        # Released here: this object outlives the bench (a frame of vLLM's lazy imports in
        # __init__ keeps it), and an AsyncLLM left to the interpreter's teardown fails in
        # its __del__, printing a traceback after the figure's line.
        llm, self._llm = self._llm, None
        llm.shutdown()


Series = dict[str, dict[int, list[float]]]


async def measure(
    settings: Settings, model_path: str, n: int, rounds: int, warm_rounds: int, warm_chats: int
) -> list[Series]:
    """Per round and length, the three latencies of each prompt, taken one after another
    in a rotating order (no side always runs first, after the other's cache traffic)."""
    out: list[Series] = []
    local = InProcess(model_path)
    try:
        async with (
            LlmbusClient.from_settings(settings, timeout_s=900) as client,
            KafkaFloor(settings.kafka_bootstrap) as floor,
        ):
            # The first waits for the worker. A fresh stack stalled one chat per request
            # partition for ~50 ms somewhere in its first 30 chats, never after 60 (a
            # start-up cost, not the steady state measured here).
            for i in range(warm_chats):
                await client.chat(f"warm up {i}", max_tokens=1, temperature=0.0)
                await local.chat(f"warm up {i}", 1)
            await floor.warm(warm_rounds)
            for r in range(rounds):
                print(f"[bench] round {r + 1} of {rounds}", flush=True)
                out.append(await measure_round(client, local, floor, n))
    finally:
        local.shutdown()
    return out


async def measure_round(
    client: LlmbusClient, local: InProcess, floor: KafkaFloor, n: int
) -> Series:
    out: Series = {side: {m: [] for m in LENGTHS} for side in ("llmbus", "in_process", "floor")}
    for max_tokens in LENGTHS:
        sides: list[tuple[str, Callable[[str], Awaitable[Any]]]] = [
            ("llmbus", partial(client.chat, max_tokens=max_tokens, temperature=0.0)),
            ("in_process", partial(local.chat, max_tokens=max_tokens)),
            ("floor", lambda _: floor.round_trip()),
        ]
        for i, q in enumerate(questions(n)):
            for side, call in sides[i % 3 :] + sides[: i % 3]:
                t0 = time.perf_counter()
                await call(q)
                out[side][max_tokens].append(time.perf_counter() - t0)
    return out


def added(series: Series) -> dict[str, Any]:
    """One round's figures: per length, and the worse of the two lengths."""
    report: dict[str, Any] = {"lengths": {}}
    worst_p50, worst_p99 = -math.inf, -math.inf
    for max_tokens in LENGTHS:
        bus, local = series["llmbus"][max_tokens], series["in_process"][max_tokens]
        a, b = summary(bus), summary(local)
        # Each chat's own added time: its prompt through llmbus less the same prompt
        # in-process, taken back to back; the tails compare as tails.
        p50 = statistics.median(x - y for x, y in zip(bus, local, strict=True)) * 1000
        p99 = a["p99_ms"] - b["p99_ms"]
        worst_p50, worst_p99 = max(worst_p50, p50), max(worst_p99, p99)
        report["lengths"][max_tokens] = {
            "llmbus": a,
            "in_process": b,
            "added_p50_ms": p50,
            "added_p99_ms": p99,
            "p50_difference_ms": a["p50_ms"] - b["p50_ms"],
        }
        print(
            f"max_tokens {max_tokens:2d}: llmbus p50 {a['p50_ms']:7.1f} ms p99 {a['p99_ms']:7.1f}"
            f" | in-process p50 {b['p50_ms']:7.1f} ms p99 {b['p99_ms']:7.1f}"
            f" | added p50 {p50:5.1f} ms (difference of p50s {a['p50_ms'] - b['p50_ms']:5.1f})"
            f" p99 {p99:5.1f} ms"
        )
    floor = summary([x for m in LENGTHS for x in series["floor"][m]])
    print(f"kafka floor: p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms")
    report |= {"kafka_floor": floor, "added_p50_ms": worst_p50, "added_p99_ms": worst_p99}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100, help="sequential chats per length")
    parser.add_argument("--rounds", type=int, default=3, help="rounds on the same stack")
    parser.add_argument(
        "--warm-rounds", type=int, default=8000, help="broker round trips before measuring"
    )
    parser.add_argument("--warm-chats", type=int, default=60, help="chats on each side first")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    base = Settings()
    model_path = resolve_model_path(base.model, base.model_path, base.cache_dir)
    settings = bench_settings()
    print("[bench] overhead: starting Kafka + PostgreSQL + worker", flush=True)
    with running_stack(settings):
        worker = start_worker(settings, settings.state_dir / "worker.log")
        try:
            rounds = asyncio.run(
                measure(
                    settings, model_path, args.n, args.rounds, args.warm_rounds, args.warm_chats
                )
            )
        finally:
            stop_processes(worker)

    reports = []
    for r, series in enumerate(rounds, start=1):
        print(f"round {r} of {len(rounds)}:")
        reports.append(added(series))
    p50 = statistics.median(x["added_p50_ms"] for x in reports)
    p99 = statistics.median(x["added_p99_ms"] for x in reports)
    floor = statistics.median(x["kafka_floor"]["p50_ms"] for x in reports)
    spread = ", ".join(f"{x['added_p50_ms']:.1f} / {x['added_p99_ms']:.1f}" for x in reports)
    print(f"added p50 / p99 per round (ms): {spread}")
    save_report(
        "overhead",
        {"n": args.n, "rounds": reports, "added_p50_ms": p50, "added_p99_ms": p99},
    )
    print(f"overhead: added p50 {p50:.1f} ms p99 {p99:.1f} ms (kafka floor p50 {floor:.1f} ms)")


if __name__ == "__main__":
    main()

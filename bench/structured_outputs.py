"""``make bench-structured``: what grammar-constrained JSON costs.

One worker process on the default model. The same ``-n`` prompts are sent all at once
through ``LlmbusClient``, in alternating rounds (plain, json_schema, plain, json_schema,
...), so drift of a shared machine hits both alike. Prints each round's generated
tokens/s and the median of the json_schema/plain ratios of neighbouring rounds; the last
line is ``structured: json_schema/plain throughput ratio R (plain P tok/s, json_schema J
tok/s, V/N finished and valid)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import jsonschema

from bench import running_stack, save_report, stop_processes
from bench.throughput import bench_settings, start_worker
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings

SCHEMA = {
    "type": "object",
    # Bounded, so an answer fits max_tokens and a cut-short one is rare, as in real use.
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
        "facts": {
            "type": "array",
            "items": {"type": "string", "maxLength": 60},
            "maxItems": 3,
        },
    },
    "required": ["city", "country", "facts"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": SCHEMA}}
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Perth"]


def prompts(n: int) -> list[str]:
    return [
        f"Describe {CITIES[i % len(CITIES)]} (request {i}) as JSON: city, country and up to "
        "three short facts."
        for i in range(n)
    ]


async def one_round(
    client: LlmbusClient, questions: list[str], max_tokens: int, structured: bool
) -> tuple[float, int]:
    extra: dict[str, Any] = {"response_format": FORMAT} if structured else {}

    async def one(q: str) -> tuple[int, bool]:
        result = await client.chat(q, max_tokens=max_tokens, temperature=0.0, **extra)
        valid = False
        if structured and result.completion.choices[0].finish_reason != "length":
            try:
                jsonschema.validate(json.loads(result.text()), SCHEMA)
                valid = True
            except (ValueError, jsonschema.ValidationError):
                valid = False
        return result.completion.usage.completion_tokens, valid

    start = time.perf_counter()
    done = await asyncio.gather(*(one(q) for q in questions))
    wall = time.perf_counter() - start
    return sum(t for t, _ in done) / wall, sum(v for _, v in done)


async def measure(settings: Settings, n: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    questions = prompts(n)
    plain: list[float] = []
    shaped: list[float] = []
    valid = 0
    async with LlmbusClient.from_settings(settings, timeout_s=1800) as client:
        await client.chat("warm up", max_tokens=4, temperature=0.0)  # waits for the worker
        # The first grammar of a schema is compiled once and cached: not what is measured.
        await client.chat("warm up", max_tokens=8, temperature=0.0, response_format=FORMAT)
        for r in range(rounds):
            tok_s, _ = await one_round(client, questions, max_tokens, structured=False)
            plain.append(tok_s)
            print(f"[bench] round {r + 1}: plain       {tok_s:7.1f} tok/s", flush=True)
            tok_s, ok = await one_round(client, questions, max_tokens, structured=True)
            shaped.append(tok_s)
            valid += ok
            print(
                f"[bench] round {r + 1}: json_schema {tok_s:7.1f} tok/s, {ok}/{n} finished "
                "and valid (the rest cut short by max_tokens)"
            )
    ratios = [s / p for s, p in zip(shaped, plain, strict=True)]
    return {
        "plain_tok_s": statistics.median(plain),
        "json_schema_tok_s": statistics.median(shaped),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "valid": valid,
        "structured_requests": n * rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=256, help="prompts per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    settings = bench_settings()
    print("[bench] structured outputs: starting Kafka + PostgreSQL + worker", flush=True)
    with running_stack(settings):
        worker = start_worker(settings, settings.state_dir / "worker.log")
        try:
            figures = asyncio.run(measure(settings, args.n, args.rounds, args.max_tokens))
        finally:
            stop_processes(worker)
    save_report("structured_outputs", {**vars(args), **figures})
    print(
        f"structured: json_schema/plain throughput ratio {figures['ratio']:.3f} "
        f"(plain {figures['plain_tok_s']:.1f} tok/s, json_schema "
        f"{figures['json_schema_tok_s']:.1f} tok/s, "
        f"{figures['valid']}/{figures['structured_requests']} finished and valid)"
    )


if __name__ == "__main__":
    main()

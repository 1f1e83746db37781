"""Benchmarks (``make bench-…``): each prints its figure as its last line and keeps its
report in ``bench/results/<name>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path("bench/results")


def save_report(name: str, report: dict[str, Any]) -> None:
    """Write ``report`` to ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))


def worker_executor() -> str | None:
    """The ``distributed_executor_backend`` a worker's engine gets on this machine with
    the default settings (``engine_executor.py``): what the benchmarks' own vLLM baselines
    get too, so they compare llmbus with vLLM on the same executor."""
    import torch

    from llmbus.consumers.engine_executor import choose_executor
    from llmbus.settings import Settings

    return choose_executor(Settings().engine_executor, cuda=torch.cuda.is_available())


def offline_llm(**kwargs: Any) -> Any:
    """vLLM's offline ``LLM`` with the model where the worker runs it. With "uni" its
    engine runs inside this process."""
    from vllm import LLM

    from llmbus.consumers.engine_executor import executor_env

    backend = worker_executor()
    with executor_env(backend):
        return LLM(**kwargs, distributed_executor_backend=backend)

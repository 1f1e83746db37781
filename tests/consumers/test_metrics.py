"""What a worker exports: llmbus's own metrics and vLLM's engine statistics, after real
requests on the default model."""

from __future__ import annotations

import asyncio
import re

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from llmbus.consumers.engine import Engine
from llmbus.consumers.worker import Worker, WorkerConfig
from llmbus.metrics import ForwardedRegistry, WorkerMetrics
from llmbus.schemas import ChatResult
from tests.conftest import Bus
from tests.test_dashboard import dashboard_metrics

pytestmark = pytest.mark.integration


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")) and not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_worker_exports_its_metrics_and_vllms(bus: Bus, engine: Engine) -> None:
    registry = CollectorRegistry()
    registry.register(ForwardedRegistry(REGISTRY))
    worker = Worker(
        WorkerConfig.from_settings(bus.settings, "metrics-w"), engine, WorkerMetrics(registry)
    )
    bus.tasks.append((worker, asyncio.create_task(worker.run())))
    async with bus.client() as client:
        for n in range(3):
            result = await client.chat(f"Count to {n + 3}.", max_tokens=12, temperature=0)
            assert isinstance(result, ChatResult)
        replies = [r async for r in client.stream("Say hi.", max_tokens=8, temperature=0)]
    assert isinstance(replies[-1], ChatResult)
    text = generate_latest(registry).decode()
    model = bus.settings.model
    assert sample(text, "llmbus_requests_completed_total", model=model) == 4
    assert sample(text, "llmbus_lane_finals_total", lane="interactive", outcome="ok") == 4
    # Token timings come from streamed requests (the three others were answered whole);
    # vLLM's own vllm:time_to_first_token_seconds counts every request.
    assert sample(text, "llmbus_time_per_output_token_seconds_count") == 1
    assert sample(text, "llmbus_time_to_first_token_seconds_count") == 1
    # By model: the session's embedding engine, when loaded, exports the same names.
    assert sample(text, "vllm:time_to_first_token_seconds_count", model_name=model) >= 4
    assert sample(text, "llmbus_completion_tokens_total", model=model) > 4
    # vLLM's own statistics, forwarded from the global registry.
    vllm_names = sorted(set(re.findall(r"^(vllm:[a-z_:]+)", text, flags=re.M)))
    print("vLLM metrics exported:", vllm_names)
    assert "vllm:num_requests_running" in vllm_names
    assert sample(text, "vllm:generation_tokens_total", model_name=model) > 0
    # The dashboard's vLLM panels ask only for what this vLLM exports.
    missing = dashboard_metrics("vllm:") - set(vllm_names)
    assert not missing, f"dashboard queries vLLM metrics that do not exist: {sorted(missing)}"

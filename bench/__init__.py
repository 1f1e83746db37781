"""Benchmarks (``make bench-…``): each prints its figure as its last line and keeps its
report in ``bench/results/<name>.json``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbus.settings import Settings
    from llmbus.stack.local_stack import LocalStack

RESULTS = Path("bench/results")


def save_report(name: str, report: dict[str, Any]) -> None:
    """Write ``report`` to ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))


@contextlib.contextmanager
def running_stack(
    settings: Settings,
    *,
    fast_unsafe: bool = True,
    kafka_ports: list[tuple[int, int]] | None = None,
) -> Iterator[LocalStack]:
    """A local stack (Kafka, PostgreSQL) up for the block on ``settings``' ports, then
    down with its data and ``settings.state_dir`` removed, whatever the block raised: a
    bench's stack is throwaway, and one left behind would skew the next bench's CPU."""
    from llmbus.stack.local_stack import LocalStack

    stack = LocalStack(settings, fast_unsafe=fast_unsafe, kafka_ports=kafka_ports)
    try:
        asyncio.run(stack.up())
        yield stack
    finally:
        stack.down(purge=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def stop_processes(*procs: subprocess.Popen[bytes], group: bool = False) -> None:
    """SIGTERM to every one (they shut down side by side), then wait for each, and SIGKILL
    one still there after 60 s. On SIGTERM a worker finishes or hands back its in-flight
    requests and commits, and vLLM stops its engine process within seconds: 60 s means it
    hung, and a stray engine would skew the next phase. ``group``: also kill what is left
    of each one's process group (a server started in a session of its own leaves its
    engine process there)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def metric_sums(port: int) -> dict[str, float] | None:
    """Each metric's value summed over its series, as a process's metrics endpoint on
    127.0.0.1:``port`` serves them now; None while it does not answer (still starting)."""
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    except OSError:
        return None
    sums: dict[str, float] = {}
    for line in page.decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU (all threads) the processes have used so far (Linux /proc); a
    process already gone counts 0. Children are not included: a worker's vLLM engine
    process is a pid of its own (``child_pids``)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> dict[str, float]:
    """Seconds so far of the whole machine's CPU (all cores; Linux /proc/stat): ``busy``
    (user, nice, system, irq, softirq), ``steal`` (time the hypervisor gave to another
    guest while this one wanted to run) and ``idle``. A window's steal and the busy time
    of processes other than the measured ones tell a slow round caused by the machine
    from one caused by llmbus."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "busy": (user + nice + system + irq + softirq) / tick,
        "steal": steal / tick,
        "idle": (idle + iowait) / tick,
    }


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (a worker's engine process among them)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(c) for c in fh.read().split())
    except OSError:
        return found
    return found


def worker_executor() -> str | None:
    """The ``distributed_executor_backend`` a worker's engine gets on this machine with
    the default settings (``engine_executor.py``): what the benchmarks' own vLLM baselines
    get too, so they compare llmbus with vLLM on the same executor."""
    import torch

    from llmbus.consumers.engine_executor import choose_executor
    from llmbus.settings import Settings

    return choose_executor(Settings().engine_executor, cuda=torch.cuda.is_available())


def keep_compiled() -> None:
    """The worker's compile cache for the baselines' engines too (``compile_cache.py``):
    only their start-up changes, not what is timed. Call before importing vllm."""
    import torch

    from llmbus.consumers.compile_cache import keep_compiled_model
    from llmbus.settings import Settings

    keep_compiled_model(Settings().cache_dir, cuda=torch.cuda.is_available())


def offline_llm(**kwargs: Any) -> Any:
    """vLLM's offline ``LLM`` with the model where the worker runs it. With "uni" its
    engine runs inside this process."""
    keep_compiled()
    from vllm import LLM

    from llmbus.consumers.engine_executor import executor_env

    backend = worker_executor()
    with executor_env(backend):
        return LLM(**kwargs, distributed_executor_backend=backend)

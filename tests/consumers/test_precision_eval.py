"""The precision eval and ``dtype=auto``'s choice, without an engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from llmbus.consumers.engine import Endpoint, EngineCall
from llmbus.consumers.precision_eval import (
    EvalItem,
    EvalRun,
    PrecisionVerdict,
    allowed_drop,
    choose_dtype,
    is_right,
    keeps_score,
    load_eval,
    load_verdict,
    make_verdict,
    model_key,
    run_eval,
    save_verdict,
    score,
)

SEVEN = EvalItem("How many days are in a week?", ("7", "seven"))
EIGHT = EvalItem("How many legs does a spider have?", ("8", "eight"))
PARIS = EvalItem("What is the capital of France?", ("paris",))


def model_dir(root: Path, name: str, config: str) -> str:
    directory = root / name
    directory.mkdir()
    (directory / "config.json").write_text(config)
    (directory / "model.safetensors").write_bytes(b"\0" * 16)
    (directory / "tokenizer.json").write_text("{}")
    return str(directory)


def verdict(path: str, fp32: int, bf16: int, total: int = 40) -> PrecisionVerdict:
    def run(s: int) -> EvalRun:
        return EvalRun(answers=[], score=s, total=total, wall_s=2.0, completion_tokens=100)

    return make_verdict(path, run(fp32), run(bf16))


# --- scoring -------------------------------------------------------------------------


def test_answers_count_as_whole_words_in_any_case() -> None:
    assert is_right("A spider has 8 legs.", EIGHT)
    assert is_right("Eight.", EIGHT)
    assert is_right("The capital of France is PARIS", PARIS)
    assert not is_right("18", EIGHT)
    assert not is_right("8th", EIGHT)
    assert not is_right("eighteen", EIGHT)
    assert not is_right("Parisian food", PARIS)


def test_any_accepted_answer_counts() -> None:
    assert is_right("seven days", SEVEN)
    assert is_right("7", SEVEN)
    assert not is_right("seventy", SEVEN)


def test_score_counts_right_answers_in_order() -> None:
    items = [SEVEN, EIGHT, PARIS]
    assert score(["7", "8", "Paris"], items) == 3
    assert score(["8", "7", "Paris"], items) == 1
    assert score(["", "", ""], items) == 0


def test_score_needs_one_answer_per_item() -> None:
    with pytest.raises(ValueError, match="longer"):
        score(["7"], [SEVEN, EIGHT])


def test_tolerance_is_five_percent_and_at_least_one() -> None:
    assert allowed_drop(40) == 2
    assert allowed_drop(10) == 1
    assert allowed_drop(3) == 1
    assert keeps_score(30, 28, 40)
    assert not keeps_score(30, 27, 40)
    assert keeps_score(30, 35, 40)


# --- the shipped eval ------------------------------------------------------------------


def test_shipped_eval_loads_with_answers() -> None:
    items = load_eval()
    assert len(items) >= 30
    for item in items:
        assert item.question.strip()
        assert item.answers
        assert all(a.strip() for a in item.answers)


def test_no_question_gives_its_own_answer_away() -> None:
    # A model echoing the question must not score: no accepted answer is in its question.
    for item in load_eval():
        assert not is_right(item.question, item), item.question


# --- verdicts --------------------------------------------------------------------------


def test_model_key_differs_between_model_dirs(tmp_path: Path) -> None:
    a = model_dir(tmp_path, "a", '{"hidden_size": 576}')
    b = model_dir(tmp_path, "b", '{"hidden_size": 960}')
    same_as_a = model_dir(tmp_path, "c", '{"hidden_size": 576}')
    assert model_key(a) != model_key(b)
    assert model_key(a) == model_key(same_as_a)


def test_model_key_follows_weight_files(tmp_path: Path) -> None:
    a = model_dir(tmp_path, "a", "{}")
    before = model_key(a)
    (Path(a) / "model.safetensors").write_bytes(b"\0" * 32)
    assert model_key(a) != before


def test_model_key_of_a_hub_name_is_the_name() -> None:
    assert model_key("org/model-a") != model_key("org/model-b")


def test_verdict_roundtrips_through_the_cache(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "m", "{}")
    saved = verdict(path, 30, 29)
    stored = save_verdict(tmp_path / "cache", saved)
    assert stored == tmp_path / "cache" / "precision" / f"{model_key(path)}.json"
    assert load_verdict(tmp_path / "cache", path) == saved
    assert saved.keeps_score
    assert saved.fp32_tok_s == 50.0


def test_another_model_dir_has_no_verdict(tmp_path: Path) -> None:
    a = model_dir(tmp_path, "a", '{"x": 1}')
    b = model_dir(tmp_path, "b", '{"x": 2}')
    save_verdict(tmp_path / "cache", verdict(a, 30, 30))
    assert load_verdict(tmp_path / "cache", b) is None


# --- choose_dtype ----------------------------------------------------------------------


def test_explicit_dtype_is_kept(tmp_path: Path) -> None:
    choice = choose_dtype("float16", "m", tmp_path, cuda=False, cpu_bf16=True)
    assert choice.dtype == "float16"


def test_auto_on_gpu_is_the_models_own(tmp_path: Path) -> None:
    choice = choose_dtype("auto", "m", tmp_path, cuda=True, cpu_bf16=False)
    assert choice.dtype == "auto"


def test_auto_on_cpu_without_bf16_is_float32(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "m", "{}")
    save_verdict(tmp_path, verdict(path, 30, 30))
    choice = choose_dtype("auto", path, tmp_path, cuda=False, cpu_bf16=False)
    assert choice.dtype == "float32"
    assert "AVX512-BF16" in choice.reason


def test_auto_picks_bf16_when_the_verdict_keeps_the_score(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "m", "{}")
    save_verdict(tmp_path, verdict(path, 30, 29))
    choice = choose_dtype("auto", path, tmp_path, cuda=False, cpu_bf16=True)
    assert choice.dtype == "bfloat16"
    assert "bf16 29/40" in choice.reason
    assert "fp32 30/40" in choice.reason


def test_auto_stays_float32_when_bf16_loses_answers(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "m", "{}")
    save_verdict(tmp_path, verdict(path, 30, 3))
    choice = choose_dtype("auto", path, tmp_path, cuda=False, cpu_bf16=True)
    assert choice.dtype == "float32"
    assert "bf16 3/40" in choice.reason


def test_auto_without_a_verdict_is_float32_and_says_how_to_get_one(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "m", "{}")
    choice = choose_dtype("auto", path, tmp_path, cuda=False, cpu_bf16=True)
    assert choice.dtype == "float32"
    assert choice.reason == (
        "no bf16 quality verdict for this model; run `llmbus precision-check` to measure it"
    )


def test_a_verdict_from_another_vllm_or_a_damaged_one_counts_as_none(tmp_path: Path) -> None:
    path = model_dir(tmp_path, "m", "{}")
    stale = verdict(path, 30, 30).model_copy(update={"vllm_version": "0.0.1"})
    save_verdict(tmp_path, stale)
    choice = choose_dtype("auto", path, tmp_path, cuda=False, cpu_bf16=True)
    assert choice.dtype == "float32" and "vLLM 0.0.1" in choice.reason
    verdict_file = next((tmp_path / "precision").glob("*.json"))
    verdict_file.write_text("{not json")
    assert load_verdict(tmp_path, path) is None
    assert choose_dtype("auto", path, tmp_path, cuda=False, cpu_bf16=True).dtype == "float32"


# --- run_eval against a stand-in engine ------------------------------------------------


class KnowsSomeAnswersEngine:
    """Answers from a table, one word a chunk; a question it does not know gets "I don't
    know". Records the calls so the request bodies can be checked."""

    def __init__(self, table: dict[str, str]) -> None:
        self._table = table
        self.calls: list[EngineCall] = []

    @property
    def max_model_len(self) -> int:
        return 2048

    @property
    def max_num_seqs(self) -> int:
        return 64

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS})

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def serve(self, call: EngineCall) -> AsyncGenerator[dict[str, Any], None]:
        self.calls.append(call)
        question = call.body["messages"][-1]["content"]
        words = self._table.get(question, "I don't know").split()
        for i, word in enumerate(words):
            await asyncio.sleep(0)
            delta = {"content": ("" if i == 0 else " ") + word}
            yield {"id": call.request_id, "choices": [{"index": 0, "delta": delta}]}
        usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 0}
        yield {"id": call.request_id, "choices": [], "usage": usage}


async def test_run_eval_scores_the_engines_answers() -> None:
    engine = KnowsSomeAnswersEngine(
        {SEVEN.question: "There are seven days.", EIGHT.question: "Spiders have 18 legs."}
    )
    run = await run_eval(engine, [SEVEN, EIGHT, PARIS], model="tiny", max_tokens=12)
    assert run.answers == ["There are seven days.", "Spiders have 18 legs.", "I don't know"]
    assert run.score == 1
    assert run.total == 3
    assert run.completion_tokens == 4 + 4 + 3
    assert run.tok_s > 0
    assert {c.endpoint for c in engine.calls} == {Endpoint.CHAT}
    assert len({c.request_id for c in engine.calls}) == 3
    body = engine.calls[0].body
    assert body["model"] == "tiny"
    assert body["max_tokens"] == 12
    assert body["temperature"] == 0

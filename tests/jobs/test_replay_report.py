"""The replay report's facts, terminal text and page, from rows shaped as ReplayQuery gives
them; the page is opened in headless Chromium. Real runs: test_replay_judge.py."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy
import pytest

from llmbus.jobs.judge_verdicts import Verdict, parse_verdict, tally, wilson
from llmbus.jobs.pair_text import text_similarity
from llmbus.jobs.replay_csv import COLUMNS, write_csv
from llmbus.jobs.replay_page import render_page
from llmbus.jobs.replay_report import build_report
from llmbus.jobs.replay_text import render_text
from tests.browser import HeadlessChromium

RUN = {
    "batch_id": "replay_x",
    "kind": "replay",
    "created_at": datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
    "params": {"filter": {"tenant_id": "acme"}, "target_model": None, "overrides": {}},
}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def row(rid: str, out: str | None, orig: str | None, **kw: Any) -> dict[str, Any]:
    """A pair: the original queued 60 s and answered in 1 s; the replay did not queue."""
    side = {
        "status": kw.get("status", "ok" if out is not None else None),
        "output": out,
        "completion_tokens": kw.get("tokens", 11),
        "queue_ms": 5.0,
        "ttft_ms": 25.0,
        "total_ms": 125.0,
        "error_code": kw.get("error_code"),
        "error_message": kw.get("error_message"),
    }
    if out is None and "status" not in kw:
        side |= {"completion_tokens": None, "queue_ms": None, "ttft_ms": None, "total_ms": None}
    original = {
        "status": kw.get("orig_status", "ok"),
        "output": orig,
        "completion_tokens": kw.get("orig_tokens", 21),
        "queue_ms": 60_000.0,
        "ttft_ms": 60_050.0,
        "total_ms": 61_050.0,
    }
    fmt = kw.get("response_format")
    return {
        "request_id": rid,
        "replay_of": f"orig-{rid}",
        "tenant_id": kw.get("tenant", "acme"),
        "model": "m2",
        "params": {"temperature": 0.9, "max_tokens": 16}
        | ({"response_format": fmt} if fmt else {}),
        "messages": [{"role": "user", "content": f"question {rid}"}],
        **side,
        "original_model": "m1",
        "original_params": {"temperature": 0, "max_tokens": 32}
        | ({"response_format": fmt} if fmt else {}),
        **{f"original_{k}": v for k, v in original.items()},
    }


def sample() -> list[dict[str, Any]]:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    return [
        row("a", "same words", "same words"),
        row("b", "quite different <b>text</b>", "an original answer", tenant="beta"),
        row("c", None, "x"),
        row("d", None, "x", status="error", error_code="engine_error", error_message="boom"),
        row("e", '{"a": 1}', '{"a": "no"}', response_format=fmt),
        row("f", "not json", '{"a": 2}', response_format=fmt),
    ]


def test_the_report_splits_latency_and_counts_every_state() -> None:
    verdicts = {"b": Verdict("replay", "clearer", "original")}
    r = build_report(RUN, sample(), status="in_progress", verdicts=verdicts, judge_model="m3")
    assert r.counts == {
        "requests": 6,
        "compared": 4,
        "identical": 1,
        "failed": 1,
        "original failed": 0,
        "pending": 1,
        "no text": 0,
    }
    queue, ttft, tpot, tokens = r.measures
    # The original's minute in a queue is its queue wait, not slower engine time.
    assert (queue.original.p50, queue.replay.p50) == (60_000.0, 5.0)
    assert (ttft.original.p50, ttft.replay.p50) == (50.0, 20.0)
    assert tpot.original.p50 == pytest.approx(1000 / 20) and tpot.replay.p50 == 10.0
    assert (tokens.original.n, tokens.replay.p95) == (4, 11.0)
    assert ("model", "m1", "m2") in r.settings
    assert ("temperature", "0", "0.9") in r.settings
    assert r.structured is not None
    assert (r.structured.original.valid_json, r.structured.original.schema_valid) == (2, 1)
    assert (r.structured.replay.valid_json, r.structured.replay.schema_valid) == (1, 1)
    assert r.judge is not None and (r.judge.judged, r.judge.unjudged) == (1, 3)
    assert r.errors == [("engine_error: boom", 1)]

    text = render_text(r)
    assert "requests 6: compared 4, identical 1 (25%), failed 1" in text
    assert "still running: 1 of 6 not answered yet" in text
    assert "queue wait" in text and "p50 60000  p95 60000 ms" in text
    assert "judge m3, 1 pairs, 3 without a verdict" in text
    assert "failed 1x: engine_error: boom" in text


def test_quantiles_interpolate_as_numpy_does() -> None:
    rows = [
        row(str(n), "x", "y") | {"queue_ms": float(q), "ttft_ms": float(q) + t}
        for n, (q, t) in enumerate([(3, 10), (90, 40), (7, 25), (400, 12), (12, 90)])
    ]
    queue, ttft, *_ = build_report(RUN, rows, status="completed").measures
    for measure, values in ((queue, [3, 90, 7, 400, 12]), (ttft, [10, 40, 25, 12, 90])):
        assert measure.replay.p50 == pytest.approx(numpy.percentile(values, 50))
        assert measure.replay.p95 == pytest.approx(numpy.percentile(values, 95))


def test_similarity_counts_words_even_in_long_answers() -> None:
    long = " ".join(f"word{n % 37}" for n in range(300))
    edited = long.replace("word5 ", "changed ", 1)
    # difflib's autojunk would call every frequent word junk here and score near 0.
    assert text_similarity(long, edited) > 0.99
    assert text_similarity("a b c", "x y z") == 0.0
    assert text_similarity("a  b\nc", "a b c") == 1.0


def test_an_empty_run_says_nothing_matched() -> None:
    r = build_report(RUN, [], status="completed")
    assert r.counts["requests"] == 0 and r.measures[0].original.n == 0
    assert "matched no logged conversation" in render_text(r)
    assert "matched no logged conversation" in render_page(r)


def test_verdicts_follow_the_order_shown_and_tally_with_wilson_intervals() -> None:
    assert parse_verdict('{"better": "A", "reason": "r"}', "replay") == Verdict(
        "replay", "r", "replay"
    )
    assert parse_verdict('{"better": "A", "reason": "r"}', "original").winner == "original"
    assert parse_verdict('{"better": "B", "reason": "r"}', "original").winner == "replay"  # type: ignore[union-attr]
    assert parse_verdict('{"better": "tie", "reason": ""}', "original").winner == "tie"  # type: ignore[union-attr]
    assert parse_verdict("not json", "original") is None
    assert parse_verdict('{"better": "C"}', "original") is None
    # Wilson's interval for 8 of 10 (a textbook value).
    share = wilson(8, 10)
    assert share.rate == 0.8 and share.low == pytest.approx(0.4902, abs=1e-4)
    assert share.high == pytest.approx(0.9433, abs=1e-4)
    t = tally("m", [Verdict("tie", "", "replay"), None, Verdict("replay", "", "original")])
    assert (t.judged, t.unjudged, t.tie.count, t.replay_better.count, t.replay_first) == (
        2,
        1,
        1,
        1,
        1,
    )


def test_csv_holds_every_pair(tmp_path: Path) -> None:
    r = build_report(RUN, sample(), status="completed")
    out = tmp_path / "pairs.csv"
    assert write_csv(r, out) == 6
    with out.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert list(lines[0]) == list(COLUMNS)
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["b"]["replay_output"] == "quite different <b>text</b>"
    assert by_id["d"]["state"] == "failed" and by_id["c"]["state"] == "pending"


def test_csv_quotes_what_a_spreadsheet_would_run(tmp_path: Path) -> None:
    rows = [row("a", "=HYPERLINK(1)", "-5 is the answer")]
    out = tmp_path / "pairs.csv"
    write_csv(build_report(RUN, rows, status="completed"), out)
    with out.open(newline="") as fh:
        (line,) = list(csv.DictReader(fh))
    assert line["replay_output"] == "'=HYPERLINK(1)"
    assert line["original_output"] == "'-5 is the answer"


async def test_the_page_renders_sorts_filters_and_escapes(
    chromium: HeadlessChromium, tmp_path: Path
) -> None:
    verdicts = {"b": Verdict("replay", "clearer", "original")}
    hostile = row("h", "See: <!--<script> and </script><img src=x onerror=alert(1)>", "ok")
    hostile["tenant_id"] = "o'neil\" <x>"
    hostile["messages"] = [{"role": "user", "content": "</script><script>alert(2)</script>"}]
    rows = [*sample(), hostile]
    r = build_report(RUN, rows, status="completed", verdicts=verdicts, judge_model="m3")
    path = tmp_path / "report.html"
    path.write_text(render_page(r), encoding="utf-8")
    page = await chromium.open(path)
    assert page.errors == []
    # Both scripts survive any text (a "<!--<script>" would otherwise swallow the second).
    assert await page.evaluate("document.scripts.length") == 2
    assert await page.evaluate("document.querySelectorAll('img').length") == 0
    # Model text is shown, never run: the <b> of an answer stays text.
    shown = await page.evaluate(
        "Array.from(document.querySelectorAll('#pairs pre')).map(p => p.textContent).join('|')"
    )
    assert "<b>text</b>" in shown
    assert (
        await page.evaluate(
            "Array.from(document.querySelectorAll('#pairs b')).some(b => b.textContent === 'text')"
        )
        is False
    )
    labels = await page.evaluate(
        "Array.from(document.querySelectorAll('svg.chart')).map(s => "
        "s.querySelectorAll('.axis-label').length)"
    )
    assert labels == [2, 2, 2, 2]
    ids = (
        "Array.from(document.querySelectorAll('#pairs tr.pair')).filter(r => !r.hidden)"
        ".map(r => r.dataset.id)"
    )
    await page.evaluate("document.querySelector(\"th[data-key='similarity']\").click()")
    by_similarity = sorted(r.compared, key=lambda p: p.similarity or 0.0)
    # Ascending, the pairs without a similarity (pending, failed) last.
    assert (await page.evaluate(ids))[:5] == [p.request_id for p in by_similarity]
    await page.evaluate(
        "const t = document.getElementById('tenant'); t.value = 'beta';"
        "t.dispatchEvent(new Event('input'))"
    )
    assert await page.evaluate(ids) == ["b"]
    assert await page.evaluate("document.getElementById('shown').textContent") == "1"
    await page.evaluate(
        "{ const t = document.getElementById('tenant'); t.value = `o'neil\" <x>`;"
        "t.dispatchEvent(new Event('input')) }"
    )
    assert await page.evaluate(ids) == ["h"]
    data = json.loads(await page.evaluate("document.getElementById('pairs-data').textContent"))
    assert data["columns"] == list(COLUMNS) and len(data["rows"]) == 7
    (hostile_row,) = [r for r in data["rows"] if r[0] == "h"]
    assert hostile_row[-1].startswith("See: <!--<script>")
    await page.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000

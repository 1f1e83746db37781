from typing import Any

from llmbus.jobs.replay_report import render_html, render_table, summarize


def row(
    rid: str, out: str | None, orig: str, tokens: int, orig_tokens: int, **kw: Any
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "replay_of": f"orig-{rid}",
        "model": "m",
        "status": kw.get("status", "ok" if out is not None else None),
        "output": out,
        "completion_tokens": tokens,
        "total_ms": kw.get("ms", 100.0),
        "original_output": orig,
        "original_completion_tokens": orig_tokens,
        "original_total_ms": kw.get("orig_ms", 50.0),
    }


def test_summary_counts_identical_changes_and_most_different() -> None:
    rows = [
        row("a", "same", "same", 5, 5),
        row("b", "quite different text", "<b>original</b>", 3, 9, ms=300.0),
        row("c", None, "x", 0, 1),
        row("d", "", "x", 0, 1, status="error"),
    ]
    s = summarize("run1", rows)
    assert (s.total, s.compared, s.identical, s.pending, s.failed) == (4, 2, 1, 1, 1)
    assert s.token_change_mean == -3.0
    assert s.token_change_p95 == 0.0
    assert s.latency_change_mean_ms == 150.0
    assert s.most_different[0].request_id == "b"
    table = render_table(s)
    assert "identical outputs           1 (50%)" in table
    page = render_html(s)
    assert "<svg" in page and page.count("<circle") == 2
    assert "&lt;b&gt;original&lt;/b&gt;" in page and "<b>original" not in page

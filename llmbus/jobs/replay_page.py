"""The replay report as one self-contained HTML page: inline SVG charts, the pairs side by
side with their differences marked, and a small inline script (``report_assets``) that
sorts, filters and downloads them as CSV. Nothing is loaded from elsewhere: analysts on a
private network have no internet, and a report mailed around must open anywhere."""

from __future__ import annotations

import html
import json
from importlib import resources

from llmbus.jobs import report_charts
from llmbus.jobs.replay_csv import COLUMNS, pair_record
from llmbus.jobs.replay_pairs_html import pairs_table
from llmbus.jobs.replay_report import Pair, ReplayReport, side_values
from llmbus.jobs.replay_text import describe_selection, judge_line

MAX_ROWS = 2000
"""Pairs rendered on the page (most different first): a browser stays responsive with a
few thousand rows and their texts; the CSV (``--csv``) holds every pair."""

esc = html.escape


def render_page(r: ReplayReport) -> str:
    assets = resources.files("llmbus.jobs") / "report_assets"
    css = (assets / "report.css").read_text(encoding="utf-8")
    script = (assets / "report.js").read_text(encoding="utf-8")
    shown = sorted(r.pairs, key=_order)[:MAX_ROWS]
    data = {
        "filename": f"{r.run_id}-pairs.csv",
        "columns": list(COLUMNS),
        "rows": [pair_record(p) for p in shown],
    }
    # No "<", ">" or "&" may reach the script element: "</script>" would end it early and
    # "<!--<script>" would swallow the page's own script. Escaped, the JSON reads the same.
    payload = json.dumps(data, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        payload = payload.replace(char, escaped)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>llmbus replay {esc(r.run_id)}</title><style>{css}</style></head><body>"
        f"<h1>Replay {esc(r.run_id)}</h1>{_facts(r)}{_settings(r)}{_measures(r)}"
        f"{_charts(r)}{_structured(r)}{_judge(r)}{_errors(r)}{pairs_table(r, shown)}"
        f"<script type='application/json' id='pairs-data'>{payload}</script>"
        f"<script>{script}</script></body></html>"
    )


def _order(p: Pair) -> tuple[int, float]:
    return (0 if p.state == "compared" else 1, p.similarity if p.similarity is not None else 2)


def _table(header: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><tr>{head}</tr>{body}</table>"


def _facts(r: ReplayReport) -> str:
    created = f"{r.created_at:%Y-%m-%d %H:%M:%S %Z}" if r.created_at else "unknown"
    rows = [["status", r.status], ["created", created]]
    rows += [["selection", describe_selection(r.selection)]]
    rows += [[k, str(v)] for k, v in r.counts.items()]
    out = "<h2>Run</h2>" + _table(["", ""], rows, cls="facts")
    if not r.pairs:
        out += (
            "<p class='note'>The selection matched no logged conversation: "
            "nothing was replayed.</p>"
        )
    elif r.counts["pending"]:
        out += (
            f"<p class='note'>Still running: {r.counts['pending']} of {r.total} requests are "
            "not answered yet. The figures cover the answered pairs.</p>"
        )
    return out


def _settings(r: ReplayReport) -> str:
    if not r.settings:
        return ""
    rows = [[k, a, b] for k, a, b in r.settings]
    return "<h2>What the replay changed</h2>" + _table(["field", "original", "replay"], rows)


def _measures(r: ReplayReport) -> str:
    def cell(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    rows = [
        [
            m.name + f" ({m.unit})",
            cell(m.original.p50),
            cell(m.original.p95),
            cell(m.replay.p50),
            cell(m.replay.p95),
            f"{m.original.n} / {m.replay.n}",
        ]
        for m in r.measures
    ]
    header = ["", "original p50", "original p95", "replay p50", "replay p95", "pairs with it"]
    return "<h2>Latency and length</h2>" + _table(header, rows, cls="measures")


def _charts(r: ReplayReport) -> str:
    compared = r.compared
    sims = [p.similarity for p in compared if p.similarity is not None]

    charts = [
        report_charts.histogram(
            sims,
            title="Similarity of replay to original",
            x_label="similarity (1 = identical)",
            y_label="pairs",
            lo=0.0,
            hi=1.0,
        ),
        report_charts.scatter(
            [
                (float(p.original.completion_tokens), float(p.replay.completion_tokens))
                for p in compared
                if p.original.completion_tokens is not None
                and p.replay.completion_tokens is not None
            ],
            title="Output length",
            x_label="original output tokens",
            y_label="replay output tokens",
        ),
        report_charts.paired_histogram(
            side_values(compared, "original", "ttft_ms"),
            side_values(compared, "replay", "ttft_ms"),
            title="Time to first token (on a worker)",
            x_label="ms",
        ),
        report_charts.paired_histogram(
            side_values(compared, "original", "tpot_ms"),
            side_values(compared, "replay", "tpot_ms"),
            title="Time per output token",
            x_label="ms",
        ),
    ]
    return "<h2>Charts</h2><div class='charts'>" + "".join(charts) + "</div>"


def _structured(r: ReplayReport) -> str:
    s = r.structured
    if s is None:
        return ""
    o, n = s.original, s.replay
    rows = [
        ["valid JSON", _share(o.valid_json, o.asked), _share(n.valid_json, n.asked)],
        [
            "schema-valid",
            _share(o.schema_valid, o.with_schema),
            _share(n.schema_valid, n.with_schema),
        ],
    ]
    return "<h2>Structured outputs</h2>" + _table(["", "original", "replay"], rows)


def _share(good: int, asked: int) -> str:
    return f"{good} of {asked} ({good / asked:.0%})" if asked else "not asked"


def _judge(r: ReplayReport) -> str:
    if r.judge is None:
        return ""
    j = r.judge
    rows = [
        [name, str(s.count), f"{s.rate:.0%}", f"{s.low:.0%} to {s.high:.0%}"]
        for name, s in (
            ("replay better", j.replay_better),
            ("tie", j.tie),
            ("original better", j.original_better),
        )
    ]
    return (
        f"<h2>Judge: {esc(j.model)}</h2><p>{esc(judge_line(j))}. The replay was shown first "
        f"in {j.replay_first} of {j.judged} verdicts (order drawn at random).</p>"
        + _table(["verdict", "pairs", "share", "95% confidence interval"], rows, cls="judge")
    )


def _errors(r: ReplayReport) -> str:
    if not r.errors:
        return ""
    rows = [[str(n), e] for e, n in r.errors[:10]]
    return "<h2>Failed requests</h2>" + _table(["requests", "error"], rows)

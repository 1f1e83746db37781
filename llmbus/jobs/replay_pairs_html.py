"""The pairs of a replay report as an HTML table: one row per pair (its data-* attributes are
what the page's script sorts and filters on) and a hidden row beneath with the prompt and
both answers side by side, words only in the original in <del>, only in the replay in
<ins>. Every text is escaped: prompts and answers are shown, never run."""

from __future__ import annotations

import difflib
import html

from llmbus.jobs.pair_text import words
from llmbus.jobs.replay_report import Pair, ReplayReport

esc = html.escape


def pairs_table(r: ReplayReport, shown: list[Pair]) -> str:
    if not r.pairs:
        return ""

    def options(values: set[str]) -> str:
        return "<option value=''>all</option>" + "".join(
            f"<option>{esc(v)}</option>" for v in sorted(values)
        )

    def select(name: str, values: set[str]) -> str:
        return f"<label>{name}<select id='{name}'>{options(values)}</select></label>"

    number = "type='number' min='0' max='1' step='0.05'"
    controls = (
        "<div class='controls'>"
        f"<label>similarity from<input id='sim-min' {number}></label>"
        f"<label>to<input id='sim-max' {number}></label>"
        + select("tenant", {p.tenant_id or "" for p in shown})
        + select("model", {p.model for p in shown})
        + select("state", {p.state for p in shown})
        + "<label>text<input id='search' type='search'></label>"
        "<button id='csv' type='button'>Download CSV</button>"
        f"<span>showing <b id='shown'>{len(shown)}</b> of {r.total}</span></div>"
    )
    cols = [
        ("n", "#", "number"),
        ("original", "original id", ""),
        ("tenant", "tenant", ""),
        ("model", "model", ""),
        ("state", "state", ""),
        ("similarity", "similarity", "number"),
        ("verdict", "judge", ""),
        # Sorted by the replay's value; the original's follows in brackets.
        ("tokens", "replay tokens (original)", "number"),
        ("ttft", "replay TTFT ms (original)", "number"),
    ]
    head = "".join(f"<th data-key='{k}' data-type='{t}'>{esc(label)}</th>" for k, label, t in cols)
    body = "".join(_pair_rows(n, p) for n, p in enumerate(shown, start=1))
    return (
        "<h2>Pairs</h2><p>Click a row to see both answers side by side; click a heading to "
        f"sort.</p>{controls}<table id='pairs'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _pair_rows(n: int, p: Pair) -> str:
    o, r = p.original, p.replay
    sim = "" if p.similarity is None else f"{p.similarity:.3f}"
    verdict = p.verdict.winner if p.verdict else ""
    data = {
        "id": p.request_id,
        "n": str(n),
        "original": p.replay_of,
        "tenant": p.tenant_id or "",
        "model": p.model,
        "state": p.state,
        "similarity": sim,
        "verdict": verdict,
        "tokens": str(r.completion_tokens if r.completion_tokens is not None else ""),
        "ttft": "" if r.ttft_ms is None else f"{r.ttft_ms:.1f}",
        "detail": f"d{n}",
    }
    attrs = " ".join(f"data-{k}='{esc(v)}'" for k, v in data.items())
    cells = [
        str(n),
        p.replay_of,
        p.tenant_id or "",
        p.model,
        p.state,
        sim,
        verdict,
        f"{_num(r.completion_tokens)} ({_num(o.completion_tokens)})",
        f"{_num(r.ttft_ms)} ({_num(o.ttft_ms)})",
    ]
    row = f"<tr class='pair' {attrs}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
    old, new = _marked(o.output or "", r.output or "")
    reason = f"<p><b>judge:</b> {esc(p.verdict.reason)}</p>" if p.verdict else ""
    error = f"<p><b>error:</b> {esc(r.error)}</p>" if r.error else ""
    detail = (
        f"<tr class='detail' id='d{n}' hidden><td colspan='9'><div class='prompt'>"
        f"<b>asked:</b> {esc(p.prompt)}</div>{reason}{error}<div class='side'>"
        f"<div><b>original</b><pre>{old}</pre></div><div><b>replay</b><pre>{new}</pre></div>"
        "</div></td></tr>"
    )
    return row + detail


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _marked(a: str, b: str) -> tuple[str, str]:
    """Both texts escaped, words only in the original in <del>, only in the replay in <ins>."""
    wa, wb = words(a), words(b)
    old: list[str] = []
    new: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        left, right = esc("".join(wa[i1:i2])), esc("".join(wb[j1:j2]))
        if op == "equal":
            old.append(left)
            new.append(right)
            continue
        if left:
            old.append(f"<del>{left}</del>")
        if right:
            new.append(f"<ins>{right}</ins>")
    return "".join(old), "".join(new)

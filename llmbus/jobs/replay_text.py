"""The replay report in short form, for the terminal: the same facts as the page."""

from __future__ import annotations

from llmbus.jobs.judge_verdicts import JudgeTally, Share
from llmbus.jobs.replay_report import Quantiles, ReplayReport
from llmbus.jobs.structured_checks import ValidShares

MOST_DIFFERENT = 5
"""Pairs quoted: enough to see what changed without a wall of text."""


def render_text(r: ReplayReport) -> str:
    created = f"{r.created_at:%Y-%m-%d %H:%M:%S %Z}" if r.created_at else "unknown"
    c = r.counts
    lines = [
        f"replay run {r.run_id}: {r.status}, created {created}",
        f"selection: {describe_selection(r.selection)}",
        f"requests {c['requests']}: compared {c['compared']}, identical {c['identical']}"
        f" ({c['identical'] / max(c['compared'], 1):.0%}), failed {c['failed']}, "
        f"original failed {c['original failed']}, pending {c['pending']}"
        + (f", no text {c['no text']}" if c["no text"] else ""),
    ]
    if not r.pairs:
        lines.append("the selection matched no logged conversation: nothing was replayed")
        return "\n".join(lines)
    if c["pending"]:
        lines.append(
            f"still running: {c['pending']} of {c['requests']} not answered yet; "
            "the figures below cover the answered pairs"
        )
    settings = [(k, printable(a), printable(b)) for k, a, b in r.settings]
    rows = [("", "original", "replay"), *settings]
    rows += [(m.name, _q(m.original, m.unit), _q(m.replay, m.unit)) for m in r.measures]
    sim = r.similarity
    rows.append(("similarity", "", f"p50 {_num(sim.p50)}  p95 {_num(sim.p95)}"))
    if r.structured:
        s = r.structured
        rows.append(("valid JSON", _share(s.original, False), _share(s.replay, False)))
        rows.append(("schema-valid", _share(s.original, True), _share(s.replay, True)))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines += ["", *(f"{a:<{width[0]}}  {b:<{width[1]}}  {c_}".rstrip() for a, b, c_ in rows)]
    if r.judge:
        lines += ["", judge_line(r.judge)]
    for error, count in r.errors[:3]:
        lines.append(f"failed {count}x: {_clip(error, 110)}")
    different = [p for p in r.compared if p.similarity is not None and p.similarity < 1.0]
    compared = sorted(different, key=lambda p: p.similarity or 0.0)[:MOST_DIFFERENT]
    if compared:
        lines += ["", "most different pairs (similarity, original id):"]
        for p in compared:
            lines.append(f"  {p.similarity:4.2f}  {p.replay_of}")
            lines.append(f"        original: {_clip(p.original.output or '', 100)}")
            lines.append(f"        replay:   {_clip(p.replay.output or '', 100)}")
    return "\n".join(lines)


def describe_selection(selection: dict[str, object]) -> str:
    if not selection:
        return "every logged conversation answered successfully"
    return printable(", ".join(f"{k}={v}" for k, v in selection.items()))


def printable(text: str) -> str:
    """Control characters (C0, C1) as spaces: stored text must not drive a terminal."""
    return text.translate(_CONTROL)


def judge_line(j: JudgeTally) -> str:
    def part(name: str, s: Share) -> str:
        return f"{name} {s.rate:.0%} [{s.low:.0%}-{s.high:.0%}]"

    pending = f", {j.unjudged} without a verdict" if j.unjudged else ""
    if j.failed:
        pending += f" ({j.failed} failed for good)"
    return (
        f"judge {j.model}, {j.judged} pairs{pending} (95% CI): "
        f"{part('replay better', j.replay_better)}, {part('tie', j.tie)}, "
        f"{part('original better', j.original_better)}"
    )


def _q(q: Quantiles, unit: str) -> str:
    if q.n == 0:
        return "not recorded"
    return f"p50 {_num(q.p50)}  p95 {_num(q.p95)} {unit}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _share(v: ValidShares, schema: bool) -> str:
    asked = v.with_schema if schema else v.asked
    good = v.schema_valid if schema else v.valid_json
    return f"{good}/{asked} ({good / asked:.0%})" if asked else "not asked"


_CONTROL = dict.fromkeys([*range(32), *range(127, 160)], " ")
"""C0 and C1 control characters: model output must not drive the analyst's terminal."""


def _clip(text: str, width: int) -> str:
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"

"""How a replay differs from its originals: a terminal table and a standalone HTML page."""

from __future__ import annotations

import difflib
import html
import statistics
from dataclasses import dataclass, field
from typing import Any

TOP_DIFFERENT = 5
"""Pairs shown in full: enough to see what changed without a wall of text."""


@dataclass(frozen=True)
class Pair:
    request_id: str
    replay_of: str
    output: str
    original: str
    tokens: int
    original_tokens: int
    latency_ms: float
    original_latency_ms: float
    similarity: float


@dataclass(frozen=True)
class ReplaySummary:
    run_id: str
    total: int
    compared: int
    """Pairs where both the replay and its original have a successful output."""
    identical: int
    failed: int
    pending: int
    token_change_mean: float
    token_change_p95: float
    latency_change_mean_ms: float
    latency_change_p95_ms: float
    most_different: list[Pair] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)


def summarize(run_id: str, rows: list[dict[str, Any]]) -> ReplaySummary:
    pairs: list[Pair] = []
    failed = pending = 0
    for row in rows:
        if row["status"] is None:
            pending += 1
            continue
        if row["status"] != "ok" or row["original_output"] is None:
            failed += 1
            continue
        output, original = row["output"] or "", row["original_output"] or ""
        pairs.append(
            Pair(
                request_id=row["request_id"],
                replay_of=row["replay_of"],
                output=output,
                original=original,
                tokens=row["completion_tokens"] or 0,
                original_tokens=row["original_completion_tokens"] or 0,
                latency_ms=row["total_ms"] or 0.0,
                original_latency_ms=row["original_total_ms"] or 0.0,
                similarity=difflib.SequenceMatcher(None, original, output).ratio(),
            )
        )
    token_changes = [p.tokens - p.original_tokens for p in pairs]
    latency_changes = [p.latency_ms - p.original_latency_ms for p in pairs]
    return ReplaySummary(
        run_id=run_id,
        total=len(rows),
        compared=len(pairs),
        identical=sum(p.output == p.original for p in pairs),
        failed=failed,
        pending=pending,
        token_change_mean=_mean(token_changes),
        token_change_p95=_p95(token_changes),
        latency_change_mean_ms=_mean(latency_changes),
        latency_change_p95_ms=_p95(latency_changes),
        most_different=sorted(pairs, key=lambda p: p.similarity)[:TOP_DIFFERENT],
        pairs=pairs,
    )


def _mean(values: list[int] | list[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def _p95(values: list[int] | list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_table(s: ReplaySummary) -> str:
    rows = [
        ("replay run", s.run_id),
        ("requests", str(s.total)),
        ("compared", str(s.compared)),
        ("identical outputs", f"{s.identical} ({s.identical / max(s.compared, 1):.0%})"),
        ("failed / pending", f"{s.failed} / {s.pending}"),
        ("output tokens change, mean", f"{s.token_change_mean:+.1f}"),
        ("output tokens change, p95", f"{s.token_change_p95:+.1f}"),
        ("latency change, mean", f"{s.latency_change_mean_ms:+.0f} ms"),
        ("latency change, p95", f"{s.latency_change_p95_ms:+.0f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if s.most_different:
        lines += ["", "most different pairs (similarity, original -> replay):"]
        for p in s.most_different:
            lines.append(f"  {p.similarity:4.2f}  {p.replay_of}")
            lines.append(f"        original: {_clip(p.original, 100)}")
            lines.append(f"        replay:   {_clip(p.output, 100)}")
    return "\n".join(lines)


def render_html(s: ReplaySummary) -> str:
    """One self-contained page (inline SVG, no scripts, no external assets)."""
    esc = html.escape
    table = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
        for k, v in [
            ("requests", str(s.total)),
            ("compared", str(s.compared)),
            ("identical outputs", str(s.identical)),
            ("failed / pending", f"{s.failed} / {s.pending}"),
            (
                "output tokens change, mean / p95",
                f"{s.token_change_mean:+.1f} / {s.token_change_p95:+.1f}",
            ),
            (
                "latency change, mean / p95",
                f"{s.latency_change_mean_ms:+.0f} / {s.latency_change_p95_ms:+.0f} ms",
            ),
        ]
    )
    different = "".join(
        f"<tr><td>{p.similarity:.2f}</td><td>{esc(p.replay_of)}</td>"
        f"<td>{esc(p.original)}</td><td>{esc(p.output)}</td></tr>"
        for p in s.most_different
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>llmbus replay {esc(s.run_id)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        "</style></head><body>"
        f"<h1>Replay {esc(s.run_id)}</h1><table>{table}</table>"
        "<h2>Output tokens: original vs replay</h2>"
        f"{_scatter_svg(s.pairs)}"
        "<h2>Most different pairs</h2><table><tr><th>similarity</th><th>original id</th>"
        f"<th>original</th><th>replay</th></tr>{different}</table></body></html>"
    )


def _scatter_svg(pairs: list[Pair], size: int = 320, pad: int = 36) -> str:
    top = max([1, *(p.tokens for p in pairs), *(p.original_tokens for p in pairs)])
    span = size - 2 * pad

    def xy(orig: int, new: int) -> tuple[float, float]:
        return pad + orig / top * span, size - pad - new / top * span

    dots = "".join(
        "<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='#36c' fill-opacity='0.6'/>".format(
            *xy(p.original_tokens, p.tokens)
        )
        for p in pairs
    )
    x0, y0 = xy(0, 0)
    x1, y1 = xy(top, top)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' "
        "role='img' aria-label='output tokens, original against replay'>"
        f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y1}' stroke='#999' stroke-dasharray='4'/>"
        f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y0}' stroke='#000'/>"
        f"<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{y1}' stroke='#000'/>"
        f"<text x='{size / 2}' y='{size - 6}' text-anchor='middle'>original tokens (max {top})"
        "</text>"
        f"<text x='12' y='{size / 2}' transform='rotate(-90 12 {size / 2})' "
        "text-anchor='middle'>replay tokens</text>"
        f"{dots}</svg>"
    )

"""The pairs of a replay report as CSV rows: written by ``--csv`` and offered for download
by the page (which exports the rows its filters leave)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from llmbus.jobs.replay_report import Pair, ReplayReport

COLUMNS = (
    "request_id",
    "replay_of",
    "tenant_id",
    "model",
    "original_model",
    "state",
    "similarity",
    "verdict",
    "verdict_reason",
    "original_tokens",
    "replay_tokens",
    "original_queue_ms",
    "replay_queue_ms",
    "original_ttft_ms",
    "replay_ttft_ms",
    "original_tpot_ms",
    "replay_tpot_ms",
    "error",
    "original_output",
    "replay_output",
)


def pair_record(p: Pair) -> list[Any]:
    o, r = p.original, p.replay
    return [
        p.request_id,
        p.replay_of,
        p.tenant_id,
        p.model,
        p.original_model,
        p.state,
        None if p.similarity is None else round(p.similarity, 4),
        p.verdict.winner if p.verdict else None,
        p.verdict.reason if p.verdict else None,
        o.completion_tokens,
        r.completion_tokens,
        *(_ms(v) for v in (o.queue_ms, r.queue_ms, o.ttft_ms, r.ttft_ms, o.tpot_ms, r.tpot_ms)),
        r.error,
        o.output,
        r.output,
    ]


def write_csv(report: ReplayReport, path: Path) -> int:
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        out.writerows([spreadsheet_safe(v) for v in pair_record(p)] for p in report.pairs)
    return len(report.pairs)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a cell starts that a spreadsheet would run as a formula (OWASP's CSV injection)."""


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula, quoted with a leading apostrophe: prompts
    and answers are anybody's text. The page's download does the same (report.js)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

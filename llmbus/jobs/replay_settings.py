"""What a replay changed: each request field that decides an answer, the originals' values
(with how many requests had each) beside the replay's."""

from __future__ import annotations

from collections import Counter
from typing import Any

SETTING_KEYS = (
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "response_format",
    "tools",
)
"""The request fields a replay can change that decide an answer; shown side by side."""


def settings_changed(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    out = []
    for key in SETTING_KEYS:
        before = _values(
            row.get("original_model")
            if key == "model"
            else (row.get("original_params") or {}).get(key)
            for row in rows
        )
        after = _values(
            row.get("model") if key == "model" else (row.get("params") or {}).get(key)
            for row in rows
        )
        if before != "—" or after != "—":
            out.append((key, before, after))
    return out


def _values(values: Any) -> str:
    """Distinct values with how many requests had each: ``0.7 (12), unset (3)``."""
    counts = Counter("unset" if v is None else _short(v) for v in values)
    if set(counts) <= {"unset"}:
        return "—"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{v} ({n})" for v, n in counts.most_common(4)) + (
        f", {len(counts) - 4} more" if len(counts) > 4 else ""
    )


def _short(value: Any) -> str:
    if isinstance(value, dict) and "type" in value:
        return str(value["type"])  # a response_format: its kind is what changed
    if isinstance(value, list):
        return f"{len(value)} item(s)"
    return str(value)

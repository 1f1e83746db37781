"""Benchmarks (``make bench-…``): each prints its figure as its last line and keeps its
report in ``bench/results/<name>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path("bench/results")


def save_report(name: str, report: dict[str, Any]) -> None:
    """Write ``report`` to ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))

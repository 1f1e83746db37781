"""Selected conversations to a file for analysts' own tools: JSONL, or Parquet when
pyarrow is installed."""

from __future__ import annotations

import importlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from llmbus.errors import InvalidRequestError


def export_rows(rows: list[dict[str, Any]], path: Path) -> int:
    """Write ``rows`` to ``path``; the suffix picks the format (.jsonl or .parquet)."""
    records = [_plain(row) for row in rows]
    if path.suffix == ".parquet":
        _write_parquet(records, path)
    elif path.suffix in (".jsonl", ".ndjson"):
        with path.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        raise InvalidRequestError(f"unknown export format {path.suffix!r}: use .jsonl or .parquet")
    return len(records)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise InvalidRequestError(
            "Parquet export needs pyarrow (pip install pyarrow); .jsonl works without it"
        ) from None
    # Nested JSON (messages, params, metadata) is stored as JSON text: one flat schema
    # every Parquet reader understands.
    flat = [
        {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()}
        for r in records
    ]
    pq.write_table(pa.Table.from_pylist(flat), str(path))

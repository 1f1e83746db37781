"""``llmbus audit maintain`` and ``llmbus usage``: argument parsing and output; the work
is done by ``AuditMaintenance`` and ``UsageQuery``."""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import astuple, fields
from datetime import date
from typing import Any

from llmbus.errors import DatabaseUnavailableError, SetupError
from llmbus.settings import Settings
from llmbus.store.audit_partitions import AuditMaintenance
from llmbus.store.database import Database, mapped
from llmbus.store.usage_query import UsageQuery, UsageRow


async def cmd_audit_maintain(settings: Settings, args: argparse.Namespace) -> int:
    """Partitions ahead, then retention, then content retention; exits 1 (and is simply
    run again) when the database is away, since every step that finished committed."""
    if settings.migration_database_url is None:
        raise SetupError(
            "LLMBUS_MIGRATION_DATABASE_URL is not set: maintenance drops and rewrites audit "
            "partitions, which only the schema owner may do"
        )
    try:
        async with Database(settings.migration_database_url.get_secret_value()) as db:
            maintenance = AuditMaintenance(db.engine)
            report = await mapped(
                lambda: maintenance.run(
                    ahead_days=settings.audit_partitions_ahead_days,
                    retention_days=settings.audit_retention_days,
                    content_retention_days=settings.audit_content_retention_days,
                )
            )
    except DatabaseUnavailableError as exc:
        print(f"llmbus audit maintain: {exc}; nothing half-done, run it again", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


async def cmd_usage(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.analyst_database_url or settings.database_url
    if url is None:
        raise SetupError("LLMBUS_DATABASE_URL is not set (run `llmbus up` or set it)")
    async with Database(url.get_secret_value()) as db:
        rows = await UsageQuery(db).fetch(
            since=args.since, until=args.until, tenant_id=args.tenant, model=args.model
        )
    if args.csv:
        out = csv.writer(sys.stdout)
        out.writerow(f.name for f in fields(UsageRow))
        out.writerows(astuple(row) for row in rows)
        return 0
    print(_table(rows))
    return 0


def _table(rows: list[UsageRow]) -> str:
    head = ("day", "tenant", "user", "model", "lane", "requests", "errors", "prompt", "completion")
    body = [
        (r.day.isoformat(), r.tenant_id or "-", r.user_id or "-", r.model, r.lane,
         str(r.requests), str(r.errors), str(r.prompt_tokens), str(r.completion_tokens))
        for r in rows
    ]  # fmt: skip
    total = ("total", "", "", "", "", *(str(sum(getattr(r, k) for r in rows)) for k in (
        "requests", "errors", "prompt_tokens", "completion_tokens")))  # fmt: skip
    lines = [head, *body, total]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i >= 5 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def add_parsers(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit trail's partitions and retention")
    asub = audit.add_subparsers(dest="action", required=True)
    asub.add_parser(
        "maintain",
        help="make partitions ahead, drop those past LLMBUS_AUDIT_RETENTION_DAYS, remove "
        "content past LLMBUS_AUDIT_CONTENT_RETENTION_DAYS (schema owner's connection)",
    ).set_defaults(func=cmd_audit_maintain)
    usage = sub.add_parser("usage", help="requests and tokens per day, tenant, user and model")
    usage.add_argument("--since", type=date.fromisoformat, help="first day (YYYY-MM-DD, UTC)")
    usage.add_argument("--until", type=date.fromisoformat, help="day after the last (YYYY-MM-DD)")
    usage.add_argument("--tenant")
    usage.add_argument("--model")
    usage.add_argument("--csv", action="store_true", help="CSV on standard output")
    usage.set_defaults(func=cmd_usage)

"""``llmbus notifier`` (started by the CLI with its metrics registry) and ``llmbus
webhooks …``: argument parsing and output."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from llmbus.bus import BusProducer, ensure_topics
from llmbus.errors import SetupError
from llmbus.jobs.batch_events import BatchEvents
from llmbus.jobs.notifier import NOTIFIER_LOCK, Notifier
from llmbus.jobs.webhook_sender import WebhookSender
from llmbus.metrics import NotifierMetrics
from llmbus.schemas.events import BatchEventType
from llmbus.settings import Settings
from llmbus.store.batch_notices import BatchNoticeStore
from llmbus.store.batch_store import BatchStore
from llmbus.store.database import Database
from llmbus.store.leader_lease import LeaderLease
from llmbus.store.webhooks import WebhookStore


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise SetupError("LLMBUS_DATABASE_URL is not set (run `llmbus up` or set it)")
    return settings.database_url.get_secret_value()


async def run_notifier(settings: Settings, registry: CollectorRegistry) -> int:
    metrics = NotifierMetrics(registry)
    await ensure_topics(settings.kafka, {settings.events_topic: 1}, layout=settings.topic_layout)
    producer = BusProducer(
        settings.kafka, client_id="llmbus-notifier", max_request_bytes=settings.max_request_bytes
    )
    async with (
        Database(_database_url(settings), pool_size=3) as db,
        producer,
        httpx.AsyncClient(timeout=settings.webhook_timeout_s) as http,
    ):
        notifier = Notifier(
            LeaderLease(db, NOTIFIER_LOCK),
            BatchEvents(
                BatchStore(db),
                BatchNoticeStore(db),
                producer,
                bootstrap=settings.kafka,
                topic=settings.events_topic,
                metrics=metrics,
            ),
            WebhookSender(
                WebhookStore(db), http, retry_s=settings.webhook_retry_s, metrics=metrics
            ),
            metrics,
            poll_s=settings.notifier_poll_s,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, notifier.stop)
        print(f"notifier running: events to {settings.events_topic}", flush=True)
        await notifier.run()
    return 0


async def cmd_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    async with Database(_database_url(settings)) as db:
        store = WebhookStore(db)
        if args.action == "add":
            endpoint_id, secret = await store.add(args.tenant, args.url, args.event)
            print(endpoint_id)
            print(secret)
            print(
                f"endpoint {endpoint_id} for tenant {args.tenant}: the signing secret is "
                "shown once, store it now",
                file=sys.stderr,
            )
        elif args.action == "list":
            for e in await store.endpoints(include_disabled=args.all):
                state = f"disabled {e.disabled_at:%Y-%m-%d}" if e.disabled_at else "active"
                events = ",".join(e.event_types) if e.event_types else "all events"
                print(f"{e.endpoint_id}  tenant={e.tenant_id} {e.url} ({events}) {state}")
        elif args.action == "remove":
            await store.disable(args.endpoint_id)
            print(f"endpoint {args.endpoint_id} disabled")
    return 0


def add_parsers(sub: Any) -> None:
    hooks = sub.add_parser("webhooks", help="tenants' signed webhook endpoints")
    hsub = hooks.add_subparsers(dest="action", required=True)
    add = hsub.add_parser("add", help="print a new endpoint's id and signing secret once")
    add.add_argument("--tenant", required=True)
    add.add_argument("--url", required=True, help="https:// (http:// to loopback only)")
    add.add_argument(
        "--event",
        action="append",
        choices=[t.value for t in BatchEventType],
        help="repeatable; default: every batch event",
    )
    hsub.add_parser("list").add_argument("--all", action="store_true", help="disabled too")
    hsub.add_parser("remove").add_argument("endpoint_id")
    hooks.set_defaults(func=cmd_webhooks)

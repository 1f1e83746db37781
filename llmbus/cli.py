"""The ``llmbus`` command. Reads the settings once and passes them down."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from llmbus import logs
from llmbus.consumers.batch_throttle import StepCostModel
from llmbus.errors import EngineDeadError, LlmbusError, RemoteError
from llmbus.settings import Settings, default_state_dir
from llmbus.startup_heap import freeze_startup_heap
from llmbus.store.redaction import Redactor

if TYPE_CHECKING:
    from llmbus.bus.topic_check import TopicWatch


def load_settings() -> Settings:
    """Environment first; ``<state>/llmbus.env`` (written by ``llmbus up``) fills the rest."""
    state = Path(os.environ.get("LLMBUS_STATE_DIR") or default_state_dir())
    env_file = state / "llmbus.env"
    return Settings(_env_file=env_file if env_file.exists() else None)


def _registry(settings: Settings, *, forward_global: bool = False) -> CollectorRegistry:
    """Our metrics; with ``forward_global``, also what libraries put in prometheus_client's
    global registry (vLLM's engine statistics, process metrics)."""
    registry = CollectorRegistry()
    if forward_global:
        from prometheus_client import REGISTRY

        from llmbus.metrics import ForwardedRegistry

        registry.register(ForwardedRegistry(REGISTRY))
    if settings.metrics_port:
        from llmbus.metrics import serve_metrics

        serve_metrics(registry, settings.metrics_port)
    return registry


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.stack.local_stack import LocalStack

    stack = LocalStack(settings, fast_unsafe=args.fast_unsafe, brokers=args.brokers)
    report = await stack.up()
    if report.already_running:
        print(
            f"llmbus stack already running (Kafka {stack.kafka.bootstrap}, "
            f"PostgreSQL 127.0.0.1:{settings.postgres_port})"
        )
    else:
        print(
            f"llmbus stack up: Kafka {stack.kafka.bootstrap} "
            f"(KRaft, {len(stack.kafka.nodes)} node(s)), "
            f"PostgreSQL 127.0.0.1:{settings.postgres_port}, topics and migrations current"
        )
    print(
        f"settings for other shells (credentials inside, mode 0600):\n"
        f"  source {report.env_file}\n  # sets: {' '.join(stack.env())}"
    )
    return 0


async def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.stack.kafka_cluster import formatted_nodes
    from llmbus.stack.local_stack import LocalStack

    # Every node the state folder holds, whatever LLMBUS_KAFKA_BROKERS says now.
    stack = LocalStack(settings, brokers=formatted_nodes(settings.state_dir) or None)
    kafka, postgres = stack.down(purge=args.purge)
    print(
        f"Kafka {'stopped' if kafka else 'was not running'}; "
        f"PostgreSQL {'stopped' if postgres else 'was not running'}"
    )
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.store.migrate import upgrade_to_head

    if settings.migration_database_url is None:
        print("LLMBUS_MIGRATION_DATABASE_URL is not set", file=sys.stderr)
        return 2
    await asyncio.to_thread(upgrade_to_head, settings.migration_database_url.get_secret_value())
    print("migrations at head")
    return 0


async def cmd_model_path(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.stack.model_cache import resolve_model_path

    print(resolve_model_path(settings.model, settings.model_path, settings.cache_dir))
    return 0


async def cmd_contract(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.contract import write_contract

    for path in write_contract(args.out):
        print(path)
    return 0


def make_engine(
    settings: Settings, spec: str | None, step_costs: StepCostModel | None = None
) -> Any:
    """The real vLLM engine, or ``module:factory`` (called with the settings) for tests."""
    if spec:
        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module), attr)(settings)
    from llmbus.consumers.vllm_engine import VllmEngine
    from llmbus.stack.model_cache import resolve_model_path

    model_path = resolve_model_path(settings.model, settings.model_path, settings.cache_dir)
    return VllmEngine.from_settings(settings, model_path, step_costs)


async def cmd_precision_check(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.consumers.precision_eval import choose_dtype, cpu_has_avx512_bf16
    from llmbus.jobs.precision_check import check_precision

    verdict = await check_precision(settings, max_tokens=args.max_tokens)
    total = verdict.total
    print(f"float32 : score {verdict.fp32_score}/{total}, {verdict.fp32_tok_s:.1f} tok/s")
    print(f"bfloat16: score {verdict.bf16_score}/{total}, {verdict.bf16_tok_s:.1f} tok/s")
    import torch

    cuda = torch.cuda.is_available()
    choice = choose_dtype(
        "auto", verdict.model_path, settings.cache_dir, cuda=cuda, cpu_bf16=cpu_has_avx512_bf16()
    )
    print(f"dtype=auto picks {choice.dtype} for {verdict.model_path}: {choice.reason}")
    return 0


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.bus import ensure_topics
    from llmbus.consumers.worker import Worker, WorkerConfig
    from llmbus.metrics import WorkerMetrics

    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    await ensure_topics(settings.kafka, settings.topics(), layout=settings.topic_layout)
    registry = _registry(settings, forward_global=True)
    async with _topic_watch(settings, registry):
        step_costs = StepCostModel()
        engine = make_engine(settings, args.engine, step_costs)
        await engine.start()
        worker = Worker(
            WorkerConfig.from_settings(settings, worker_id),
            engine,
            WorkerMetrics(registry),
            step_costs,
        )
        freeze_startup_heap()
        _on_signals(worker.stop)
        print(
            f"worker {worker_id} serving {settings.model} from {settings.requests_topic}",
            flush=True,
        )
        try:
            await worker.run()
        except EngineDeadError:
            return 3
        finally:
            await engine.stop()
    return 0


def _topic_watch(settings: Settings, registry: CollectorRegistry) -> TopicWatch:
    """Checks the model's topics at start-up (warn or refuse) and exports their health."""
    from llmbus.bus.topic_check import TopicWatch
    from llmbus.metrics import TopicMetrics

    return TopicWatch(
        settings.kafka, settings.topics(), settings.topic_layout, TopicMetrics(registry)
    )


async def cmd_auditor(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.consumers.auditor import Auditor, AuditorConfig
    from llmbus.metrics import AuditMetrics
    from llmbus.store.audit_rows import RowPolicy
    from llmbus.store.audit_writer import AuditWriter

    if settings.database_url is None:
        print("LLMBUS_DATABASE_URL is not set", file=sys.stderr)
        return 2
    registry = _registry(settings)
    auditor = Auditor(
        AuditorConfig(
            bootstrap=settings.kafka,
            group_id=f"{settings.topic_prefix}-auditor",
            topics=None,
            pattern=settings.audit_pattern,
            batch_size=settings.audit_batch_size,
            flush_interval_s=settings.audit_flush_interval_s,
            max_request_bytes=settings.max_request_bytes,
            policy=RowPolicy(
                redactor=_redactor(settings),
                content_retention_days=settings.audit_content_retention_days,
                store_vectors=settings.audit_store_vectors,
            ),
            partitions_ahead_days=settings.audit_partitions_ahead_days,
        ),
        AuditWriter(settings.database_url.get_secret_value()),
        AuditMetrics(registry),
    )
    _on_signals(auditor.stop)
    async with _topic_watch(settings, registry):
        print("auditor running", flush=True)
        await auditor.run()
    return 0


async def cmd_notifier(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.jobs.notifier_commands import run_notifier

    return await run_notifier(settings, _registry(settings))


async def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.producers import LlmbusClient
    from llmbus.schemas import ChatResult, StreamDelta

    params: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.seed is not None:
        params["seed"] = args.seed
    async with LlmbusClient.from_settings(settings) as client:
        try:
            if args.stream:
                async for reply in client.stream(args.question, model=args.model, **params):
                    if isinstance(reply, StreamDelta):
                        print(reply.content, end="", flush=True)
                    elif isinstance(reply, ChatResult):
                        print()
            else:
                result = await client.chat(args.question, model=args.model, **params)
                print(result.text())
        except RemoteError as exc:
            print(f"error: {exc.remote_code}: {exc.message}", file=sys.stderr)
            return 1
    return 0


async def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.gateway.app import create_app
    from llmbus.gateway.server import make_server
    from llmbus.gateway.service import GatewayService

    service = GatewayService(settings, _registry(settings))
    server = make_server(create_app(service), settings)
    scheme = "https" if settings.gateway_tls_cert else "http"
    print(
        f"gateway on {scheme}://{settings.gateway_host}:{settings.gateway_port} "
        f"serving {', '.join(settings.served_models())}",
        flush=True,
    )
    await server.serve()
    return 0


async def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from llmbus.store.api_keys import KeyStore
    from llmbus.store.database import Database

    if settings.database_url is None:
        print("LLMBUS_DATABASE_URL is not set", file=sys.stderr)
        return 2
    async with Database(settings.database_url.get_secret_value()) as db:
        keys = KeyStore(db)
        if args.action == "create":
            key, info = await keys.create(
                tenant_id=args.tenant, user_id=args.user, rpm=args.rpm, tpm=args.tpm
            )
            print(key)
            print(
                f"key id {info.key_id} for tenant {info.tenant_id}: shown once, store it now",
                file=sys.stderr,
            )
        elif args.action == "list":
            for k in await keys.keys(include_revoked=args.all):
                state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                print(
                    f"{k.key_id}  tenant={k.tenant_id} user={k.user_id or '-'} "
                    f"rpm={k.rpm or 'default'} tpm={k.tpm or 'default'} {state}"
                )
        elif args.action == "revoke":
            await keys.revoke(args.key_id)
            print(f"key {args.key_id} revoked (gateways stop accepting it within "
                  f"{settings.gateway_key_cache_s:.0f} s)")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local Kafka (KRaft) and PostgreSQL stack")
    up.add_argument(
        "--fast-unsafe",
        action="store_true",
        help="PostgreSQL without fsync (throwaway test stacks only)",
    )
    up.add_argument(
        "--brokers",
        type=int,
        choices=range(1, 10),
        metavar="N",
        help="Kafka nodes (default: LLMBUS_KAFKA_BROKERS, 1); 3 gives replicated topics",
    )
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the local stack")
    down.add_argument(
        "--purge", action="store_true", help="also delete the database's and Kafka's files"
    )
    down.set_defaults(func=cmd_down)
    sub.add_parser("migrate", help="run database migrations").set_defaults(func=cmd_migrate)
    contract = sub.add_parser(
        "contract", help="write the AsyncAPI document and JSON Schemas of llmbus's topics"
    )
    contract.add_argument("--out", type=Path, default=Path("docs"), help="default: docs/")
    contract.set_defaults(func=cmd_contract)
    sub.add_parser("model-path", help="prepare and print the model directory").set_defaults(
        func=cmd_model_path
    )
    from llmbus.consumers.precision_eval import EVAL_MAX_TOKENS

    precision = sub.add_parser(
        "precision-check",
        help="score the model in float32 and bfloat16 and store whether bf16 keeps the score",
    )
    precision.add_argument("--max-tokens", type=int, default=EVAL_MAX_TOKENS, help="per answer")
    precision.set_defaults(func=cmd_precision_check)
    worker = sub.add_parser("worker", help="serve the model's request topic with vLLM")
    worker.add_argument("--engine", help="module:factory of another engine (tests)")
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("auditor", help="copy requests and results into PostgreSQL").set_defaults(
        func=cmd_auditor
    )
    sub.add_parser(
        "notifier", help="publish batch lifecycle events and deliver signed webhooks"
    ).set_defaults(func=cmd_notifier)
    chat = sub.add_parser("chat", help="ask one question through Kafka")
    chat.add_argument("question")
    chat.add_argument("--stream", action="store_true")
    chat.add_argument("--model")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--seed", type=int)
    chat.set_defaults(func=cmd_chat)
    sub.add_parser("gateway", help="serve the OpenAI-compatible HTTP API").set_defaults(
        func=cmd_gateway
    )
    keys = sub.add_parser("keys", help="the gateway's API keys")
    ksub = keys.add_subparsers(dest="action", required=True)
    create = ksub.add_parser("create", help="print a new key once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--user")
    create.add_argument("--rpm", type=int, help="requests per minute (default from settings)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default from settings)")
    ksub.add_parser("list").add_argument("--all", action="store_true", help="revoked too")
    ksub.add_parser("revoke").add_argument("key_id")
    keys.set_defaults(func=cmd_keys)
    from llmbus.jobs import audit_commands, commands, notifier_commands

    commands.add_parsers(sub)
    notifier_commands.add_parsers(sub)
    audit_commands.add_parsers(sub)
    return parser


def _redactor(settings: Settings) -> Redactor | None:
    return Redactor(settings.redact_patterns) if settings.redact else None


def event_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``settings.event_loop`` (None: asyncio's default loop)."""
    if settings.event_loop == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    logs.configure(settings.log_level)
    try:
        redactor = _redactor(settings)
    except ValueError as exc:
        print(f"llmbus: LLMBUS_REDACT_PATTERNS: {exc}", file=sys.stderr)
        return 2
    if redactor is not None:
        logs.install_redaction(redactor.redact)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
            code: int = runner.run(args.func(settings, args))
    except LlmbusError as exc:
        print(f"llmbus: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

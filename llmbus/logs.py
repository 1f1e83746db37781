"""One-line JSON logs. Every line logged while a request is handled carries its request
id, tenant, model and trace id: the handler binds them once (``bind``) and every record
created in that task picks them up."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = ("request_id", "tenant_id", "model", "batch_id", "trace_id")
_bound: ContextVar[dict[str, str] | None] = ContextVar("llmbus_log_fields", default=None)


def bind(**fields: str | None) -> None:
    """Attach fields to every log record created from now on in this task (asyncio gives
    each task its own copy, so requests handled side by side do not mix)."""
    current = dict(_bound.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    _bound.set(current)


def install_record_fields() -> None:
    """Stamp bound fields onto records at creation (so they reach every handler)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "llmbus_fields", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # Under a name of its own: logging refuses `extra` keys a record already has.
        record.llmbus_fields = dict(_bound.get() or {})
        return record

    factory.llmbus_fields = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        bound = getattr(record, "llmbus_fields", {})
        for key in FIELDS:
            value = getattr(record, key, None) or bound.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str) -> None:
    install_record_fields()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR; ours already say what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # Alembic narrates every plugin it loads; migrations that run are logged at WARNING+.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def install_redaction(redact: Callable[[str], str]) -> None:
    """Pass every log record's message (and its traceback) through ``redact`` when it is
    created, before any handler sees it: with redaction on, prompts and answers quoted in
    an error reach no log line, whatever the handler or its format."""
    previous = logging.getLogRecordFactory()
    plain = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact(plain.formatException(record.exc_info))
        return record

    factory.llmbus_fields = getattr(previous, "llmbus_fields", False)  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)

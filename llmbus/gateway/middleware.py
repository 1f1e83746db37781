"""Two ASGI layers around every call: a body-size limit, and the call audit + metrics."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from llmbus.gateway.openai_errors import GatewayError
from llmbus.metrics import GatewayMetrics
from llmbus.store.call_log import CallLog

Scope = dict[str, Any]
Receive = Any
Send = Any
App = Any

UNAUDITED = ("/healthz", "/readyz", "/metrics")
"""Probes and scrapes arrive every few seconds from the platform, not from clients."""


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuses bodies over the limit with 413, before they are read into memory when a
    Content-Length says so, and as soon as the limit is crossed when it does not."""

    def __init__(self, app: App, *, max_bytes: int, max_file_bytes: int) -> None:
        self._app = app
        self._max = max_bytes
        self._max_file = max_file_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._max_file if scope["path"] == "/v1/files" else self._max
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_error(send, _too_large(limit))
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_error(send, _too_large(limit))


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, "payload_too_large", f"request body over the {limit} byte limit")


async def _send_error(send: Send, error: GatewayError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CallAudit:
    """One ``gateway_calls`` row and one metrics sample per call, refused calls included.
    Handlers put what they know (caller, request id, model) in ``request.state``."""

    def __init__(self, app: App, *, calls: CallLog, metrics: GatewayMetrics) -> None:
        self._app = app
        self._calls = calls
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capturing_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, capturing_send)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self._metrics.calls.labels(route, str(status)).inc()
            self._metrics.latency_seconds.labels(route).observe(elapsed)
            if status == 429:
                self._metrics.rate_limited.inc()
            if scope["path"] not in UNAUDITED:
                self._calls.record(_row(scope, status, elapsed))


def _row(scope: Scope, status: int, elapsed: float) -> dict[str, Any]:
    state = scope.get("state") or {}
    principal = state.get("principal")
    client = scope.get("client")
    return {
        "at": datetime.now(UTC),
        "key_id": getattr(principal, "key_id", None),
        "tenant_id": getattr(principal, "tenant_id", None),
        "user_id": getattr(principal, "user_id", None),
        "method": scope["method"][:8],
        "path": scope["path"][:256],
        "status": status,
        "request_id": state.get("request_id"),
        "model": state.get("model"),
        "latency_ms": elapsed * 1000,
        "client": client[0][:64] if client else None,
        "error_code": state.get("error_code"),
    }

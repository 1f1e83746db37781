"""The gateway's HTTP application: routes, error mapping, middleware."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmbus import logs, tracing
from llmbus.errors import LlmbusError
from llmbus.gateway.auth import Principal
from llmbus.gateway.batches_api import router as batches_router
from llmbus.gateway.chat import (
    Body,
    ChatCompletionBody,
    ChunkStream,
    CompletionBody,
    complete,
    conversation_key,
    prompt_chars,
    to_request,
)
from llmbus.gateway.middleware import BodyLimit, CallAudit
from llmbus.gateway.openai_errors import GatewayError, from_llmbus
from llmbus.gateway.openapi_schema import described_schema
from llmbus.gateway.routes_common import ERROR_RESPONSES, principal_of
from llmbus.gateway.service import GatewayService
from llmbus.producers import LlmbusClient
from llmbus.schemas import ChatRequest, EmbeddingRequest
from llmbus.startup_heap import freeze_startup_heap

_READY_TIMEOUT_S = 3.0
"""A readiness probe must answer quickly; a dependency slower than this counts as down."""
_MAX_FILE_BYTES = 200 * 1024 * 1024
"""OpenAI's own limit for a batch input file."""


def create_app(service: GatewayService) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with service:
            freeze_startup_heap()
            yield

    app = FastAPI(title="llmbus gateway", version="1", lifespan=lifespan)
    app.state.service = service
    app.include_router(batches_router)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        request.state.error_code = exc.code
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        request.state.error_code = "invalid_request"
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return GatewayError(400, "invalid_request", message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Framework-level refusals (unparsable body, unknown path, wrong method) in
        # OpenAI's shape too, so every client sees one error format.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        request.state.error_code = code
        error = GatewayError(
            exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
        )
        return error.response()

    @app.exception_handler(LlmbusError)
    async def _llmbus_error(request: Request, exc: LlmbusError) -> JSONResponse:
        error = from_llmbus(exc)
        request.state.error_code = error.code
        return error.response()

    _STREAMABLE = {
        **ERROR_RESPONSES,
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
    }

    @app.post("/v1/chat/completions", responses=_STREAMABLE)
    async def chat_completions(
        request: Request, body: ChatCompletionBody, who: Annotated[Principal, Depends(principal_of)]
    ) -> Response:
        return await _serve(request, body, who)

    @app.post("/v1/completions", responses=_STREAMABLE)
    async def completions(
        request: Request, body: CompletionBody, who: Annotated[Principal, Depends(principal_of)]
    ) -> Response:
        return await _serve(request, body, who)

    @app.post("/v1/embeddings", responses=ERROR_RESPONSES)
    async def embeddings(
        request: Request, body: EmbeddingRequest, who: Annotated[Principal, Depends(principal_of)]
    ) -> Response:
        return await _serve(request, body, who)

    async def _serve(request: Request, body: Body, who: Principal) -> Response:
        parts = service.parts
        request.state.model = body.model
        _check_model(body)
        tokens = prompt_chars(body) // 4
        if not isinstance(body, EmbeddingRequest):
            tokens += _check_generation(body)
        await parts.limiter.admit(who.subject, tokens, rpm=who.rpm, tpm=who.tpm)
        conversation = conversation_key(who, body, request.headers)
        chat = to_request(parts.client, body, who, deadline_s=None, conversation_id=conversation)
        request.state.request_id = chat.request_id
        logs.bind(request_id=chat.request_id, tenant_id=who.tenant_id, model=body.model)
        with tracing.attached(request.headers):
            return await _answer(parts.client, chat, body)

    def _check_model(body: Body) -> None:
        s = service.settings
        embedding = isinstance(body, EmbeddingRequest)
        wanted, other = s.served_models(), s.gateway_embedding_models
        if embedding:
            wanted, other = other, wanted
        if body.model in wanted:
            return
        if body.model in other:
            use = "/v1/chat/completions" if embedding else "/v1/embeddings"
            kind = "a generating" if embedding else "an embedding"
            raise GatewayError(
                400, "invalid_request", f"model {body.model!r} is {kind} model: use {use}",
                param="model",
            )  # fmt: skip
        raise GatewayError(
            404, "model_not_found", f"model {body.model!r} is not served", param="model"
        )

    def _check_generation(body: ChatCompletionBody | CompletionBody) -> int:
        """The bounds of a generating request; returns the tokens it may generate."""
        s = service.settings
        if isinstance(body, ChatCompletionBody) and len(body.messages) > s.gateway_max_messages:
            raise GatewayError(
                400, "invalid_request",
                f"at most {s.gateway_max_messages} messages per request", param="messages",
            )  # fmt: skip
        if body.n > s.max_n:
            raise GatewayError(400, "invalid_request", f"n is at most {s.max_n}", param="n")
        max_tokens = body.completion_limit() or s.gateway_max_tokens
        if max_tokens > s.gateway_max_tokens:
            raise GatewayError(
                400, "invalid_request",
                f"max_tokens is at most {s.gateway_max_tokens}", param="max_tokens",
            )  # fmt: skip
        # ~4 characters per token (prompt_chars): a cheap, conservative estimate made
        # before the call; every one of the n choices may use max_tokens.
        return max_tokens * body.n

    async def _answer(client: LlmbusClient, chat: ChatRequest, body: Body) -> Response:
        if isinstance(body, EmbeddingRequest) or not body.stream:
            return JSONResponse(await complete(client, chat))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = ChunkStream(client, chat, include_usage)
        await stream.open()
        return StreamingResponse(
            stream.events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Request-Id": chat.request_id},
        )

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models(who: Annotated[Principal, Depends(principal_of)]) -> dict[str, Any]:
        s = service.settings
        kinds = {m: "chat" for m in s.served_models()} | {
            m: "embedding" for m in s.gateway_embedding_models
        }
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "llmbus", "kind": kind}
                for m, kind in kinds.items()
            ],
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
    async def readyz() -> JSONResponse:
        checks = {"kafka": await _kafka_ok(service), "postgres": await _postgres_ok(service)}
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = described_schema(app, service.settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    audited = CallAudit(app, calls=service.calls, metrics=service.metrics)
    return BodyLimit(
        audited, max_bytes=service.settings.gateway_max_body_bytes, max_file_bytes=_MAX_FILE_BYTES
    )


async def _kafka_ok(service: GatewayService) -> bool:
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            return await service.parts.producer.ping()
    except (LlmbusError, TimeoutError):
        return False


async def _postgres_ok(service: GatewayService) -> bool:
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            async with service.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False

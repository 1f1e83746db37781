"""One request, from its Kafka record to its acknowledged final reply."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from llmbus.bus import BusProducer, Record
from llmbus.consumers.engine import Engine, GenerationParams
from llmbus.errors import (
    ContextLengthExceededError,
    DeadlineExceededError,
    EngineDeadError,
    LlmbusError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from llmbus.metrics import WorkerMetrics
from llmbus.schemas import (
    ChatCompletion,
    ChatRequest,
    ChatResult,
    Choice,
    ErrorReply,
    ReplyTo,
    StreamDelta,
    Timings,
    Usage,
    WireDecodeError,
    decode_request,
    encode,
)
from llmbus.schemas.chat import AssistantMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessorConfig:
    served_model: str
    worker_id: str
    max_request_bytes: int


class RequestProcessor:
    """Decodes, validates, generates and replies. Never raises for a bad request: every
    request ends with exactly one final (result or error) on its reply address, unless
    the engine or the broker is gone (EngineDeadError / BrokerUnavailableError propagate).
    """

    def __init__(
        self,
        engine: Engine,
        producer: BusProducer,
        config: ProcessorConfig,
        metrics: WorkerMetrics,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._config = config
        self._metrics = metrics

    async def process(self, record: Record) -> None:
        try:
            request = self._decode(record)
        except WireDecodeError as exc:
            reply_to, request_id = _salvage_reply_address(record.value)
            log.warning(
                "undecodable request at %s:%s: %s",
                record.topic,
                record.offset,
                exc.reason,
                extra={"request_id": request_id},
            )
            self._metrics.failed.labels(self._config.served_model, exc.code).inc()
            if reply_to is not None and request_id is not None:
                await self._reply_error(reply_to, request_id, exc.code, exc.reason)
            return
        try:
            await self._answer(request)
        except EngineDeadError:
            raise
        except LlmbusError as exc:
            self._metrics.failed.labels(self._config.served_model, exc.code.value).inc()
            log.info("request failed: %s", exc, extra={"request_id": request.request_id})
            await self._reply_error(request.reply_to, request.request_id, exc.code.value, str(exc))

    def _decode(self, record: Record) -> ChatRequest:
        size = len(record.value or b"")
        if size > self._config.max_request_bytes:
            raise WireDecodeError(
                f"request of {size} bytes exceeds the {self._config.max_request_bytes} limit",
                code=PayloadTooLargeError.code.value,
            )
        return decode_request(record.value, record.headers)

    def _params(self, request: ChatRequest, prompt_len: int) -> GenerationParams:
        body = request.body
        room = self._engine.max_model_len - prompt_len
        if room <= 0 or (body.max_tokens is not None and body.max_tokens > room):
            raise ContextLengthExceededError(
                f"prompt has {prompt_len} tokens, max_tokens {body.max_tokens}; the model's "
                f"context is {self._engine.max_model_len} tokens"
            )
        return GenerationParams(
            max_tokens=body.max_tokens or room,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(body.stop_list()),
            seed=body.seed,
        )

    async def _answer(self, request: ChatRequest) -> None:
        cfg = self._config
        rid = request.request_id
        if request.body.model != cfg.served_model:
            raise ModelNotFoundError(
                f"model {request.body.model!r} is not served here (this worker serves "
                f"{cfg.served_model!r})"
            )
        now = datetime.now(UTC)
        if request.deadline is not None and request.deadline <= now:
            raise DeadlineExceededError("deadline passed before the request reached the engine")
        prompt_ids = self._engine.encode_chat([m.model_dump() for m in request.body.messages])
        params = self._params(request, len(prompt_ids))
        created = request.created_at
        queue_ms = max(0.0, (now - created).total_seconds() * 1000)
        start = time.monotonic()
        ttft_ms: float | None = None
        parts: list[str] = []
        finish_reason: str | None = None
        tokens = 0
        seq = 0
        self._metrics.queue_seconds.observe(queue_ms / 1000)
        async for chunk in self._engine.generate(rid, prompt_ids, params):
            if ttft_ms is None and chunk.completion_tokens > 0:
                ttft_ms = queue_ms + (time.monotonic() - start) * 1000
            tokens = chunk.completion_tokens
            finish_reason = chunk.finish_reason or finish_reason
            if chunk.text:
                parts.append(chunk.text)
                if request.stream:
                    # Not awaited: deltas share the final's partition and producer, so the
                    # final's acknowledgement below implies theirs.
                    delta = StreamDelta(request_id=rid, seq=seq, content=chunk.text)
                    value, headers = encode(delta)
                    await self._producer.enqueue(
                        request.reply_to.topic, value, headers, partition=request.reply_to.partition
                    )
                    seq += 1
        total_ms = queue_ms + (time.monotonic() - start) * 1000
        completion = ChatCompletion(
            id=f"chatcmpl-{rid}",
            created=int(time.time()),
            model=cfg.served_model,
            choices=[
                Choice(
                    message=AssistantMessage(content="".join(parts)),
                    finish_reason=_finish(finish_reason),
                )
            ],
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=tokens,
                total_tokens=len(prompt_ids) + tokens,
            ),
        )
        result = ChatResult(
            request_id=rid,
            completion=completion,
            timings=Timings(queue_ms=queue_ms, ttft_ms=ttft_ms, total_ms=total_ms),
            worker_id=cfg.worker_id,
        )
        value, headers = encode(result)
        await self._producer.send(
            request.reply_to.topic, value, headers, partition=request.reply_to.partition
        )
        self._metrics.completed.labels(cfg.served_model).inc()
        self._metrics.tokens_out.labels(cfg.served_model).inc(tokens)
        self._metrics.tokens_in.labels(cfg.served_model).inc(len(prompt_ids))
        self._metrics.latency_seconds.observe(total_ms / 1000)
        if ttft_ms is not None:
            self._metrics.ttft_seconds.observe(ttft_ms / 1000)

    async def _reply_error(self, reply_to: ReplyTo, rid: str, code: str, message: str) -> None:
        value, headers = encode(
            ErrorReply(request_id=rid, code=code, message=message, worker_id=self._config.worker_id)
        )
        await self._producer.send(reply_to.topic, value, headers, partition=reply_to.partition)


def _finish(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "abort") else "stop"


def _salvage_reply_address(value: bytes | None) -> tuple[ReplyTo | None, str | None]:
    """Best effort: find where to send an error for a request that failed validation."""
    try:
        data = json.loads(value or b"")
        reply_to = ReplyTo.model_validate(data["reply_to"])
        rid = data["request_id"]
    except (ValueError, KeyError, TypeError):
        return None, None
    if not isinstance(rid, str) or not 0 < len(rid) <= 128:
        return None, None
    return reply_to, rid

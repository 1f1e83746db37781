"""One request, from its Kafka record to its acknowledged final reply."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from llmbus.background import cancel_and_wait
from llmbus.bus import BusProducer, Record
from llmbus.consumers.answered_log import AnsweredLog, Suspicion
from llmbus.consumers.dead_letters import DeadLetters
from llmbus.consumers.engine import Engine, GenerationParams
from llmbus.consumers.engine_gate import EngineGate
from llmbus.consumers.recent_finals import Headers
from llmbus.consumers.request_control import RequestControl
from llmbus.errors import (
    BrokerUnavailableError,
    ContextLengthExceededError,
    DeadlineExceededError,
    EngineDeadError,
    EngineKillerError,
    HandedBackError,
    InvalidRequestError,
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
    Priority,
    ReplyTo,
    StreamDelta,
    Timings,
    Usage,
    WireDecodeError,
    decode_request,
    encode,
)
from llmbus.schemas.chat import AssistantMessage
from llmbus.schemas.wire import header
from llmbus.tracing import TRACEPARENT, continued

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "abort"]

_SEND_RETRY_S = 300.0
"""How long a final is retried while Kafka is unreachable before the worker gives up on it
(the offset then stays uncommitted and the request is redone by whoever owns it next)."""


_ENGINE_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
"""vLLM schedules lower values first and preempts higher values first."""


@dataclass(frozen=True)
class ProcessorConfig:
    served_model: str
    worker_id: str
    max_request_bytes: int


@dataclass
class _Generated:
    text: str
    completion_tokens: int
    finish_reason: FinishReason
    ttft_ms: float | None


class RequestProcessor:
    """Decodes, validates, generates and replies. Never raises for a bad request: every
    request ends with exactly one final (result or error) on its reply address, and poison
    goes to the dead-letter topic, unless the engine or the broker is gone
    (EngineDeadError / BrokerUnavailableError propagate and the offset stays uncommitted).
    """

    def __init__(
        self,
        engine: Engine,
        producer: BusProducer,
        config: ProcessorConfig,
        metrics: WorkerMetrics,
        dead_letters: DeadLetters,
        answered: Mapping[str, AnsweredLog],
        gate: EngineGate,
    ) -> None:
        self._engine = engine
        self._gate = gate
        self._producer = producer
        self._config = config
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._answered = answered
        """One answered log per request topic (lane), co-partitioned with it."""

    async def decode(self, record: Record) -> ChatRequest | None:
        """The request, or None after dead-lettering (and answering, if possible) poison."""
        try:
            size = len(record.value or b"")
            if size > self._config.max_request_bytes:
                raise WireDecodeError(
                    f"request of {size} bytes exceeds the {self._config.max_request_bytes} "
                    "byte limit",
                    code=PayloadTooLargeError.code.value,
                )
            return decode_request(record.value, record.headers)
        except WireDecodeError as exc:
            reply_to, rid = _salvage_reply_address(record.value)
            log.warning(
                "poison record at %s:%s:%s: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.reason,
                extra={"request_id": rid},
            )
            await self._poison(record, exc.code, exc.reason, reply_to, rid)
            return None

    async def process(self, record: Record, request: ChatRequest, control: RequestControl) -> None:
        """Answer ``request``. Raises HandedBackError (no reply sent) when its partition was
        revoked mid-generation, EngineDeadError when the engine is gone."""
        rid = request.request_id
        answered = self._answered[record.topic]
        replay = answered.get(rid)
        if replay is not None:
            # Answered before (a redelivery or a client retry): resend, never recompute.
            log.info("resending stored final", extra={"request_id": rid})
            await self._send(request.reply_to, *replay)
            return
        outcome = "ok"
        incoming = header(record.headers, TRACEPARENT)
        with continued(incoming, "llmbus.worker.request") as traceparent:
            trace = [(TRACEPARENT, traceparent.encode())]
            try:
                suspicion = answered.suspicion(rid)
                if suspicion is Suspicion.CULPRIT:
                    raise EngineKillerError(
                        "this request crashed the inference engine again while it ran alone "
                        "in it; it is not run again"
                    )
                if suspicion is Suspicion.SUSPECT:
                    log.warning(
                        "was in the engine when it died; running it alone",
                        extra={"request_id": rid},
                    )
                alone = suspicion is Suspicion.SUSPECT
                value, headers = await self._answer(record, request, control, trace, alone)
            except (EngineDeadError, HandedBackError):
                raise
            except InvalidRequestError as exc:
                await self._poison(record, exc.code.value, str(exc), request.reply_to, rid)
                return
            except LlmbusError as exc:
                outcome = "cancelled" if exc.code.value == "cancelled" else "error"
                self._metrics.failed.labels(self._config.served_model, exc.code.value).inc()
                log.info("request failed: %s", exc, extra={"request_id": rid})
                value, headers = self._error_final(rid, exc.code.value, str(exc))
            headers = [*headers, *trace]
        # Counted when the final is made, like ``completed``: counted after the send, a
        # requester could see its answer before the counter moved.
        lane = "batch" if request.batch_id is not None else "interactive"
        self._metrics.lane_finals.labels(lane, outcome).inc()
        # Answered log first: a crash between the two sends leaves a final the next owner
        # resends from the log, never one that was sent but is unknown to the group.
        await answered.record(record, rid, value, headers)
        await self._send(request.reply_to, value, headers)

    async def _poison(
        self, record: Record, code: str, reason: str, reply_to: ReplyTo | None, rid: str | None
    ) -> None:
        self._metrics.failed.labels(self._config.served_model, code).inc()
        self._metrics.dead_letters.inc()
        await self._dead_letters.publish(record, code, reason)
        if reply_to is not None and rid is not None:
            await self._reply_error(reply_to, rid, code, reason)

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
            priority=_ENGINE_PRIORITY[request.priority],
        )

    async def _answer(
        self,
        record: Record,
        request: ChatRequest,
        control: RequestControl,
        trace: Headers,
        alone: bool,
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        cfg = self._config
        if request.body.model != cfg.served_model:
            raise ModelNotFoundError(
                f"model {request.body.model!r} is not served here (this worker serves "
                f"{cfg.served_model!r})"
            )
        now = datetime.now(UTC)
        if request.deadline is not None and request.deadline <= now:
            raise DeadlineExceededError("deadline passed before the request reached the engine")
        control.raise_if_stopped("before it reached the engine")
        prompt_ids = self._engine.encode_chat([m.model_dump() for m in request.body.messages])
        params = self._params(request, len(prompt_ids))
        queue_ms = max(0.0, (now - request.created_at).total_seconds() * 1000)
        self._metrics.queue_seconds.observe(queue_ms / 1000)
        start = time.monotonic()
        out = await self._generate(
            record, request, prompt_ids, params, control, queue_ms, start, trace, alone
        )
        total_ms = queue_ms + (time.monotonic() - start) * 1000
        completion = ChatCompletion(
            id=f"chatcmpl-{request.request_id}",
            created=int(time.time()),
            model=cfg.served_model,
            choices=[
                Choice(message=AssistantMessage(content=out.text), finish_reason=out.finish_reason)
            ],
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=out.completion_tokens,
                total_tokens=len(prompt_ids) + out.completion_tokens,
            ),
        )
        result = ChatResult(
            request_id=request.request_id,
            completion=completion,
            timings=Timings(queue_ms=queue_ms, ttft_ms=out.ttft_ms, total_ms=total_ms),
            worker_id=cfg.worker_id,
        )
        value, headers = encode(result)
        m = self._metrics
        m.completed.labels(cfg.served_model).inc()
        m.tokens_out.labels(cfg.served_model).inc(out.completion_tokens)
        m.tokens_in.labels(cfg.served_model).inc(len(prompt_ids))
        m.latency_seconds.observe(total_ms / 1000)
        if out.ttft_ms is not None:
            m.ttft_seconds.observe(out.ttft_ms / 1000)
            if out.completion_tokens > 1:
                first_s = (out.ttft_ms - queue_ms) / 1000
                rest_s = (total_ms - queue_ms) / 1000 - first_s
                m.tpot_seconds.observe(max(0.0, rest_s) / (out.completion_tokens - 1))
        return value, headers

    async def _generate(
        self,
        record: Record,
        request: ChatRequest,
        prompt_ids: list[int],
        params: GenerationParams,
        control: RequestControl,
        queue_ms: float,
        start: float,
        trace: Headers,
        alone: bool,
    ) -> _Generated:
        """Stream from the engine until done, cancelled (abort) or past the deadline (abort)."""
        rid = request.request_id
        parts: list[str] = []
        ttft_ms: float | None = None
        tokens = 0
        finish: str | None = None
        seq = 0
        loop = asyncio.get_running_loop()
        when = None
        if request.deadline is not None:
            when = loop.time() + (request.deadline - datetime.now(UTC)).total_seconds()
        watcher = asyncio.create_task(self._abort_when_set(control.stop, rid))
        try:
            async with (
                asyncio.timeout_at(when),
                self._gate.enter(rid, record, alone=alone, stop=control.stop),
            ):
                control.raise_if_stopped("before it reached the engine")
                async for chunk in self._engine.generate(rid, prompt_ids, params):
                    if ttft_ms is None and chunk.completion_tokens > 0:
                        ttft_ms = queue_ms + (time.monotonic() - start) * 1000
                    tokens = chunk.completion_tokens
                    finish = chunk.finish_reason or finish
                    if chunk.text:
                        parts.append(chunk.text)
                        if request.stream:
                            # Not awaited: deltas share the final's partition and producer,
                            # so the final's acknowledgement implies theirs.
                            delta = StreamDelta(request_id=rid, seq=seq, content=chunk.text)
                            value, headers = encode(delta)
                            await self._producer.enqueue(
                                request.reply_to.topic,
                                value,
                                [*headers, *trace],
                                partition=request.reply_to.partition,
                            )
                            seq += 1
        except TimeoutError:
            await self._engine.abort(rid)
            raise DeadlineExceededError(
                f"deadline passed during generation after {tokens} tokens; aborted"
            ) from None
        finally:
            await cancel_and_wait(watcher)
        control.raise_if_stopped(f"after {tokens} tokens")
        reason: FinishReason = finish if finish in ("stop", "length", "abort") else "stop"  # type: ignore[assignment]
        return _Generated("".join(parts), tokens, reason, ttft_ms)

    async def _abort_when_set(self, stop: asyncio.Event, rid: str) -> None:
        await stop.wait()
        await self._engine.abort(rid)

    async def _send(
        self, reply_to: ReplyTo, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publish a final, retrying while the broker is away (a restart takes seconds);
        the idempotent producer keeps a retried final from being written twice."""
        give_up = time.monotonic() + _SEND_RETRY_S
        delay = 0.5
        while True:
            try:
                await self._producer.send(
                    reply_to.topic, value, headers, partition=reply_to.partition
                )
                return
            except BrokerUnavailableError as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("reply not delivered (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _error_final(self, rid: str, code: str, message: str) -> tuple[bytes, Headers]:
        error = ErrorReply(
            request_id=rid, code=code, message=message, worker_id=self._config.worker_id
        )
        return encode(error)

    async def _reply_error(self, reply_to: ReplyTo, rid: str, code: str, message: str) -> None:
        await self._send(reply_to, *self._error_final(rid, code, message))


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

"""One request, from its Kafka record to its acknowledged final reply."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from llmbus.background import cancel_and_wait
from llmbus.bus import BusProducer, Outgoing, Record
from llmbus.consumers.answer_stream import AnswerStream, endpoint_of
from llmbus.consumers.answered_log import AnsweredLog, Suspicion
from llmbus.consumers.dead_letters import DeadLetters
from llmbus.consumers.engine import Engine
from llmbus.consumers.engine_gate import EngineGate
from llmbus.consumers.recent_finals import Headers
from llmbus.consumers.reply_topics import ReplyTopics
from llmbus.consumers.request_control import RequestControl
from llmbus.errors import (
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
    ChatRequest,
    ChatResult,
    ErrorReply,
    Priority,
    ReplyTo,
    RequestFacts,
    Timings,
    Usage,
    WireDecodeError,
    decode_request,
    encode,
)
from llmbus.schemas.wire import header
from llmbus.tracing import TRACEPARENT, continued

log = logging.getLogger(__name__)

_SEND_RETRY_S = 300.0
"""How long a final is retried while Kafka is unreachable before the worker gives up on it
(the offset then stays uncommitted and the request is redone by whoever owns it next)."""

REPLY_TOPIC_REFUSED = "reply_topic_refused"
"""Dead-letter code of a request whose reply address workers may not write to; it gets no
reply (sending one there is what is refused)."""

_ENGINE_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 2, Priority.LOW: 4}
"""vLLM schedules lower values first and preempts higher values first. Two apart, so that a
continuing conversation's turn can go one ahead of new requests of its own priority
(``engine_priority``) and never ahead of a higher one."""


def engine_priority(request: ChatRequest) -> int:
    """The request's priority in vLLM's scheduler. A later turn of a conversation, on the
    worker its conversation key sends it to, finds its history in the prefix cache: its
    prefill is the new turn, where a new conversation's is its whole prompt. Shortest first
    lowers the wait of both on average, and the turns a user is waiting on come first."""
    lane = (
        Priority.LOW if getattr(request.body, "service_tier", None) == "flex" else request.priority
    )
    base = _ENGINE_PRIORITY[lane]
    messages = getattr(request.body, "messages", ())
    if request.conversation_id is not None and any(m.role == "assistant" for m in messages):
        return base - 1
    return base


@dataclass(frozen=True)
class ProcessorConfig:
    served_model: str
    worker_id: str
    max_request_bytes: int
    max_n: int = 8
    """Choices per request (``n``): each is a sequence in the engine's batch."""


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
        reply_topics: ReplyTopics,
    ) -> None:
        self._engine = engine
        self._reply_topics = reply_topics
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
            request = decode_request(record.value, record.headers)
        except WireDecodeError as exc:
            reply_to, rid = _salvage_reply_address(record.value)
            if reply_to is not None and await self._reply_topics.refusal(reply_to):
                reply_to = None
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
        refusal = await self._reply_topics.refusal(request.reply_to)
        if refusal is not None:
            log.warning("refused: %s", refusal, extra={"request_id": request.request_id})
            await self._poison(record, REPLY_TOPIC_REFUSED, refusal, None, None)
            return None
        return request

    async def process(self, record: Record, request: ChatRequest, control: RequestControl) -> None:
        """Answer ``request``. Raises HandedBackError (no reply sent) when its partition was
        revoked mid-generation, EngineDeadError when the engine is gone."""
        rid = request.request_id
        answered = self._answered[record.topic]
        replay = answered.get(rid)
        if replay is not None:
            # Answered before (a redelivery or a client retry): resend, never recompute.
            log.info("resending stored final", extra={"request_id": rid})
            await self._send(request.reply_to, rid, *replay)
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
                await self._poison(
                    record, exc.code.value, str(exc), request.reply_to, rid, request.facts()
                )
                return
            except LlmbusError as exc:
                outcome = "cancelled" if exc.code.value == "cancelled" else "error"
                self._metrics.failed.labels(self._config.served_model, exc.code.value).inc()
                log.info("request failed: %s", exc, extra={"request_id": rid})
                value, headers = self._error_final(rid, exc.code.value, str(exc), request.facts())
            headers = [*headers, *trace]
        # Counted when the final is made, like ``completed``: counted after the send, a
        # requester could see its answer before the counter moved.
        lane = "batch" if request.batch_id is not None else "interactive"
        self._metrics.lane_finals.labels(lane, outcome).inc()
        # The answered log and the requester get the final together (one produce request
        # where their partitions share a leader): the requester waits one acknowledged
        # write, not two in a row. If the log's write fails alone and the worker dies
        # before its retry lands, the final is out but unlogged: the next owner computes
        # it again, and requesters and the audit trail keep the first (docs/guarantees.md).
        await self._send(
            request.reply_to,
            rid,
            value,
            headers,
            also=answered.entry(record, rid, value, headers),
            on_also=lambda: answered.remember(rid, value, headers),
        )

    async def _poison(
        self,
        record: Record,
        code: str,
        reason: str,
        reply_to: ReplyTo | None,
        rid: str | None,
        facts: RequestFacts | None = None,
    ) -> None:
        self._metrics.failed.labels(self._config.served_model, code).inc()
        self._metrics.dead_letters.inc()
        await self._dead_letters.publish(record, code, reason)
        if reply_to is not None and rid is not None:
            await self._send(reply_to, rid, *self._error_final(rid, code, reason, facts))

    async def _answer(
        self,
        record: Record,
        request: ChatRequest,
        control: RequestControl,
        trace: Headers,
        alone: bool,
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        cfg = self._config
        body = request.body
        if body.model != cfg.served_model:
            raise ModelNotFoundError(
                f"model {body.model!r} is not served here (this worker serves {cfg.served_model!r})"
            )
        endpoint = endpoint_of(request)
        if endpoint not in self._engine.endpoints:
            served = ", ".join(sorted(self._engine.endpoints))
            raise InvalidRequestError(f"model {body.model!r} serves {served} only, not {endpoint}")
        if getattr(body, "n", 1) > cfg.max_n:
            raise InvalidRequestError(f"n is at most {cfg.max_n} here")
        limit = body.completion_limit()
        if limit is not None and limit >= self._engine.max_model_len:
            raise ContextLengthExceededError(
                f"max_tokens {limit} does not fit the model's context of "
                f"{self._engine.max_model_len} tokens"
            )
        now = datetime.now(UTC)
        if request.deadline is not None and request.deadline <= now:
            raise DeadlineExceededError("deadline passed before the request reached the engine")
        control.raise_if_stopped("before it reached the engine")
        priority = engine_priority(request)
        queue_ms = max(0.0, (now - request.created_at).total_seconds() * 1000)
        self._metrics.queue_seconds.observe(queue_ms / 1000)
        answer = AnswerStream(self._engine, self._producer, request, queue_ms=queue_ms, trace=trace)
        await self._generate(record, request, answer, priority, control, alone)
        total_ms = answer.elapsed_ms()
        result = ChatResult(
            schema_version=request.schema_version,
            request_id=request.request_id,
            completion=answer.completion(cfg.served_model),
            timings=Timings(queue_ms=queue_ms, ttft_ms=answer.ttft_ms, total_ms=total_ms),
            worker_id=cfg.worker_id,
            batch_id=request.batch_id,
            request=request.facts(),
        )
        value, headers = encode(result)
        if len(value) > cfg.max_request_bytes:
            # The producer (and the broker) refuse a record this large; retrying could not
            # help, so the requester learns why now.
            raise PayloadTooLargeError(
                f"the answer is {len(value)} bytes, over the {cfg.max_request_bytes}-byte "
                "limit of one Kafka record; ask for fewer inputs or choices per request"
                + (", or base64 vectors" if request.is_embedding else "")
            )
        # Token timings of interactive streams only: a batch answer's TTFT holds its queue.
        interactive = answer.streamed and request.batch_id is None
        self._observe(answer.usage(), answer.ttft_ms if interactive else None, queue_ms, total_ms)
        return value, headers

    def _observe(
        self, usage: Usage, ttft_ms: float | None, queue_ms: float, total_ms: float
    ) -> None:
        m, model = self._metrics, self._config.served_model
        m.completed.labels(model).inc()
        m.tokens_out.labels(model).inc(usage.completion_tokens)
        m.tokens_in.labels(model).inc(usage.prompt_tokens)
        m.latency_seconds.observe(total_ms / 1000)
        if ttft_ms is not None:
            m.ttft_seconds.observe(ttft_ms / 1000)
            if usage.completion_tokens > 1:
                first_s = (ttft_ms - queue_ms) / 1000
                rest_s = (total_ms - queue_ms) / 1000 - first_s
                m.tpot_seconds.observe(max(0.0, rest_s) / (usage.completion_tokens - 1))

    async def _generate(
        self,
        record: Record,
        request: ChatRequest,
        answer: AnswerStream,
        priority: int,
        control: RequestControl,
        alone: bool,
    ) -> None:
        """Read the answer until done, cancelled or past the deadline; the last two close
        the engine's stream, which aborts the request in the engine."""
        rid = request.request_id
        loop = asyncio.get_running_loop()
        when = None
        if request.deadline is not None:
            when = loop.time() + (request.deadline - datetime.now(UTC)).total_seconds()
        try:
            async with (
                asyncio.timeout_at(when),
                self._gate.enter(rid, record, alone=alone, stop=control.stop),
            ):
                control.raise_if_stopped("before it reached the engine")
                reading = asyncio.create_task(answer.run(priority))
                stopped = asyncio.create_task(control.stop.wait())
                try:
                    await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait(stopped)
                    await cancel_and_wait(reading)  # re-raises the engine's error, if any
        except TimeoutError:
            raise DeadlineExceededError(
                f"deadline passed during generation after {answer.steps} tokens; aborted"
            ) from None
        control.raise_if_stopped(f"after {answer.steps} tokens")

    async def _send(
        self,
        reply_to: ReplyTo,
        rid: str,
        value: bytes,
        headers: list[tuple[str, bytes]],
        also: Outgoing | None = None,
        on_also: Callable[[], None] | None = None,
    ) -> None:
        """Publish a final (and ``also``, its answered-log entry, queued first; ``on_also``
        runs once that is acknowledged), retrying what was not acknowledged while the
        broker is away (a restart takes seconds). A record sent again here after an error
        may be written twice (the idempotent producer dedupes its own retries only):
        requesters keep the first final of an id, and a log entry twice is harmless. Keyed
        by request id: without a partition in the address, the key places it (behind the
        request's deltas)."""
        give_up = time.monotonic() + _SEND_RETRY_S
        delay = 0.5
        final = Outgoing(
            reply_to.topic, value, headers, key=rid.encode(), partition=reply_to.partition
        )
        pending = [final] if also is None else [also, final]
        while True:
            failures = await self._producer.send_together(pending)
            results = list(zip(pending, failures, strict=True))
            if on_also is not None and any(out is also and not err for out, err in results):
                on_also()
            pending = [out for out, err in results if err]
            errors = [err for _, err in results if err]
            if not errors:
                return
            if time.monotonic() > give_up:
                raise errors[0]
            log.warning("final not delivered (%s); retrying in %.1fs", errors[0], delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _error_final(
        self, rid: str, code: str, message: str, facts: RequestFacts | None
    ) -> tuple[bytes, Headers]:
        error = ErrorReply(
            request_id=rid,
            code=code,
            message=message,
            worker_id=self._config.worker_id,
            request=facts,
        )
        return encode(error)


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

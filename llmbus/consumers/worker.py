"""``llmbus worker``: a consumer-group member that keeps vLLM's batch full.

Flow control: up to ``max_inflight`` requests are open in the engine at once (its batch
size plus a little headroom, so a freed slot is refilled at the next engine step), of which
batch-lane requests may take at most ``batch_slots``, fewer while interactive requests
run (see ``lanes.py`` and ``batch_throttle.py``). At a limit the worker takes no
more records: a full lane's stay in the consumer's fetch buffer (``_fetch``), and the next
fetch is planned as soon as a request finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from llmbus import logs
from llmbus.background import cancel_and_wait
from llmbus.bus import BusProducer, GroupConsumer, Kafka, Record, TopicPartition
from llmbus.consumers.answered_log import AnsweredLog
from llmbus.consumers.batch_cancellations import BatchCancellations
from llmbus.consumers.batch_throttle import BatchThrottle, StepCostModel, batch_limit_log_level
from llmbus.consumers.conversation_queue import ConversationQueue
from llmbus.consumers.dead_letters import DeadLetters
from llmbus.consumers.engine import Engine
from llmbus.consumers.engine_gate import EngineGate
from llmbus.consumers.lag_gauge import report_lag
from llmbus.consumers.lanes import LaneAdmission
from llmbus.consumers.offsets import OffsetTracker
from llmbus.consumers.reply_topics import ReplyTopics
from llmbus.consumers.request_control import RequestControl
from llmbus.consumers.request_processor import ProcessorConfig, RequestProcessor
from llmbus.errors import (
    BrokerUnavailableError,
    EngineDeadError,
    HandedBackError,
    LlmbusError,
    NotStartedError,
)
from llmbus.metrics import WorkerMetrics
from llmbus.schemas import Kind
from llmbus.schemas.wire import H_KIND, H_REQUEST_ID, header
from llmbus.settings import Settings
from llmbus.tracing import TRACEPARENT, trace_id

log = logging.getLogger(__name__)

_HANDBACK_WAIT_S = 10.0
"""How long a revocation waits for handed-back requests to stop (an abort takes one
engine step); bounded so a stuck send cannot hold up the group's rebalance forever."""

_FETCH_WAIT_MS = 1000
"""Longest a fetch waits for records before the plan is made again. Freed slots and
``stop()`` wake the loop sooner; this bounds how late it sees what changes only with time
(the batch throttle's hold running out, 5 s by default) or with a rebalance (a fetch takes
only the partitions assigned when it was planned). It was a 100 ms poll: ten wake-ups
a second of an idle worker, a third of its idle CPU (2026-11-29)."""

_EMBEDDING_QUEUE_DEPTH = 8
"""Requests per engine slot a worker of an embedding model keeps open: enough that vLLM
has the next steps' inputs queued while the worker replies and fetches (measured in
``make bench-embeddings``); each is answered in one step, so an interactive request that
joins the queue waits a few steps at most (vLLM schedules it first by priority)."""

_DEATH_MARKS_WAIT_S = 10.0
"""How long a worker whose engine died tries to record which requests were in it before
it exits anyway (Kafka may be away too); without the marks, the next owner runs those
requests normally instead of alone."""


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: Kafka
    requests_topic: str
    batch_topic: str
    dead_letter_topic: str
    answered_topic: str
    batch_answered_topic: str
    control_topic: str
    reply_topics: str
    """The pattern of topics this worker may answer on (``Settings.reply_topics``)."""
    reserved_slots: int
    answered_lookback_s: float
    group_id: str
    worker_id: str
    served_model: str
    max_request_bytes: int
    commit_interval_s: float
    shutdown_grace_s: float
    max_n: int = 8
    conversation_concurrency: int = 2
    interactive_slowdown: float = 1.25
    interactive_hold_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings, worker_id: str) -> WorkerConfig:
        return cls(
            bootstrap=settings.kafka,
            requests_topic=settings.requests_topic,
            batch_topic=settings.batch_topic,
            dead_letter_topic=settings.dead_letter_topic,
            answered_topic=settings.answered_topic,
            batch_answered_topic=settings.batch_answered_topic,
            control_topic=settings.control_topic,
            reply_topics=settings.reply_topics,
            reserved_slots=settings.reserved_slots,
            answered_lookback_s=settings.answered_lookback_s,
            group_id=settings.worker_group,
            worker_id=worker_id,
            served_model=settings.model,
            max_request_bytes=settings.max_request_bytes,
            max_n=settings.max_n,
            conversation_concurrency=settings.conversation_concurrency,
            commit_interval_s=settings.commit_interval_s,
            shutdown_grace_s=settings.shutdown_grace_s,
            interactive_slowdown=settings.interactive_slowdown,
            interactive_hold_s=settings.interactive_hold_s,
        )


class Worker:
    """Fetch, generate, reply, commit.

    Commit order: (1) the final is produced to the answered log and to the requester
    together (usually one produce request), and both are acknowledged
    (``RequestProcessor.process`` returns after both), (2) the offset is marked finished,
    and the ``OffsetTracker`` lets the committed offset advance only over a contiguous run
    of finished requests. A crash therefore redelivers unanswered requests (never loses
    one), and a redelivered answered request is found in the answered log and resent, not
    recomputed (unless the crash came while the log's write was being retried alone: see
    ``docs/guarantees.md``).
    """

    def __init__(
        self,
        config: WorkerConfig,
        engine: Engine,
        metrics: WorkerMetrics,
        step_costs: StepCostModel | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._metrics = metrics
        self._tracker = OffsetTracker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._capacity = asyncio.Event()
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self._running: dict[str, RequestControl] = {}
        """Each request id in flight: a duplicate id never reaches vLLM twice (reusing a
        live id has crashed vLLM), and a cancel record or a revocation finds its request."""
        slots = engine.max_num_seqs
        if not any(endpoint.generates for endpoint in engine.endpoints):
            # An embedding request ends in the one step it runs in: a queue inside vLLM
            # keeps every step full while finals go out and the next records come in.
            slots *= _EMBEDDING_QUEUE_DEPTH
        max_batch = max(1, slots - config.reserved_slots)
        max_inflight = slots + max(4, slots // 4)
        self._conversations: ConversationQueue[tuple[Record, str | None, RequestControl]] = (
            ConversationQueue(
                per_key=config.conversation_concurrency,
                # Records waiting for their conversation hold memory, not engine slots:
                # as many as the worker runs at once, then it takes no more records.
                max_waiting=max_inflight,
            )
        )
        self._lanes = LaneAdmission(
            max_inflight=max_inflight,
            max_batch=max_batch,
            batch_topic=config.batch_topic,
            throttle=BatchThrottle(
                max_batch=max_batch,
                slowdown=config.interactive_slowdown,
                hold_s=config.interactive_hold_s,
                # Without step timings from the engine the model stays unfitted and the
                # batch lane keeps every slot it had before.
                costs=step_costs or StepCostModel(),
            ),
        )
        self._batch_limit = max_batch
        self._metrics.batch_slot_limit.set(max_batch)
        self._producer = BusProducer(
            config.bootstrap,
            client_id=f"worker-{config.worker_id}",
            max_request_bytes=config.max_request_bytes,
        )
        self._consumer = GroupConsumer(
            config.bootstrap,
            group_id=config.group_id,
            topics=[config.requests_topic, config.batch_topic],
            client_id=f"worker-{config.worker_id}",
            max_partition_fetch_bytes=config.max_request_bytes + 64 * 1024,
            on_revoked=self._on_revoked,
            # A worker keeps its partitions across a rebalance where it can, and with them
            # the conversations whose turns its engine has cached.
            sticky=True,
        )
        self._answers_loaded: set[TopicPartition] = set()
        self._load_locks: dict[TopicPartition, asyncio.Lock] = {}
        self._answered = {
            source: AnsweredLog(
                self._producer,
                bootstrap=config.bootstrap,
                topic=log_topic,
                lookback_s=config.answered_lookback_s,
            )
            for source, log_topic in (
                (config.requests_topic, config.answered_topic),
                (config.batch_topic, config.batch_answered_topic),
            )
        }
        self._cancellations = BatchCancellations(
            config.bootstrap,
            config.control_topic,
            self._cancel_batch,
            client_id=f"worker-{config.worker_id}-control",
        )
        self._gate = EngineGate()
        self._processor: RequestProcessor | None = None

    async def run(self) -> None:
        """Serve until ``stop()``; raises EngineDeadError if the engine died."""
        await self._producer.start()
        try:
            await self._cancellations.start()
            await self._consumer.start()
            self._processor = RequestProcessor(
                self._engine,
                self._producer,
                ProcessorConfig(
                    self._config.served_model,
                    self._config.worker_id,
                    self._config.max_request_bytes,
                    self._config.max_n,
                ),
                self._metrics,
                DeadLetters(
                    self._producer,
                    self._config.dead_letter_topic,
                    max_bytes=self._config.max_request_bytes,
                ),
                self._answered,
                self._gate,
                ReplyTopics(self._producer, self._config.reply_topics),
            )
            background = [
                asyncio.create_task(self._commit_loop()),
                asyncio.create_task(report_lag(self._consumer, self._metrics.consumer_lag)),
            ]
            try:
                await self._fetch_loop()
                await self._drain()
            finally:
                for task in background:
                    await cancel_and_wait(task)
            if self._fatal is None:
                await self._commit()
            elif isinstance(self._fatal, EngineDeadError):
                await self._mark_engine_death()
        finally:
            await self._consumer.stop()
            await self._cancellations.stop()
            await self._producer.stop()
        if self._fatal is not None:
            raise self._fatal

    def assignment(self) -> set[TopicPartition]:
        """The partitions this worker holds now (both lanes; none before it has joined)."""
        try:
            return self._consumer.assignment()
        except NotStartedError:
            return set()

    def stop(self) -> None:
        """Stop fetching; in-flight requests get ``shutdown_grace_s`` to finish."""
        self._stopping.set()
        self._capacity.set()

    async def _fetch_loop(self) -> None:
        while not self._stopping.is_set():
            assignment = self._consumer.assignment()
            plan = self._lanes.plan(assignment)
            self._note_batch_limit(plan.batch_limit)
            taken = assignment - plan.held
            if plan.max_records == 0 or self._conversations.full:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            if plan.held and not taken:
                # Only held partitions here (the other lane's went to other workers): no
                # fetch, but the plan is made again within the fetch wait, as a fetch
                # would be (a throttle's hold ends, the assignment changes).
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), _FETCH_WAIT_MS / 1000)
                continue
            try:
                records = await self._fetch(plan.max_records, taken)
            except BrokerUnavailableError as exc:
                log.warning("fetch failed, retrying: %s", exc)
                await asyncio.sleep(1)
                continue
            for record in records:
                self._spawn(record)

    async def _fetch(self, max_records: int, taken: set[TopicPartition]) -> list[Record]:
        """Records of the ``taken`` partitions for the free slots, or none once a slot
        frees or ``stop()`` is called (both set ``_capacity``): the plan is then made again
        at once instead of after a polling interval. A fetch cut short loses nothing: what
        aiokafka fetched stays in its buffer for the next call, and so do a held lane's
        records, which is why a full lane is held rather than paused: pausing a partition
        drops what was fetched for it, and a partition resumed while a fetch is in flight
        is fetched only once that fetch returns (up to ``fetch_max_wait_ms``), so a freed
        slot would wait that long for its next request."""
        self._capacity.clear()
        fetch = asyncio.ensure_future(
            self._consumer.getmany(
                timeout_ms=_FETCH_WAIT_MS, max_records=max_records, partitions=taken
            )
        )
        woken = asyncio.ensure_future(self._capacity.wait())
        try:
            await asyncio.wait({fetch, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not fetch.done():
                # Not cancel_and_wait(): its suppress would also swallow a cancel of
                # this loop arriving meanwhile.
                fetch.cancel()
                await asyncio.wait({fetch})
        return [] if fetch.cancelled() else fetch.result()

    def _note_batch_limit(self, limit: int) -> None:
        if limit != self._batch_limit:
            log.log(
                batch_limit_log_level(self._batch_limit, limit, self._lanes.max_batch),
                "batch lane limit %d -> %d (%d interactive in flight)",
                self._batch_limit,
                limit,
                self._lanes.interactive,
            )
            self._batch_limit = limit
            self._metrics.batch_slot_limit.set(limit)

    def _spawn(self, record: Record) -> None:
        self._tracker.track(record.tp, record.offset)
        rid = header(record.headers, H_REQUEST_ID)
        if header(record.headers, H_KIND) == Kind.CANCEL.value:
            control = self._running.get(rid) if rid else None
            if control is not None:
                log.info("cancelling", extra={"request_id": rid})
                control.cancel()
            self._tracker.finish(record.tp, record.offset)
            return
        self._metrics.received.labels(self._config.served_model).inc()
        if rid is not None and rid in self._running:
            # Same id already in flight (redelivery overlapping its first run, or a client
            # retry): the running one answers; this copy is done.
            log.info("duplicate of an in-flight request skipped", extra={"request_id": rid})
            self._tracker.finish(record.tp, record.offset)
            return
        control = RequestControl(record.tp)
        if rid is not None:
            self._running[rid] = control  # a waiting request is cancelled like a running one
        if self._conversations.admit(record.key, (record, rid, control)):
            self._start(record, rid, control)
        self._metrics.conversation_waiting.set(self._conversations.waiting)

    def _start(self, record: Record, rid: str | None, control: RequestControl) -> None:
        task = asyncio.create_task(self._handle(record, rid, control))
        control.task = task
        self._tasks.add(task)
        self._lanes.admit(record.tp)
        self._metrics.inflight.set(len(self._tasks))
        task.add_done_callback(lambda done: self._done(done, record))

    def _done(self, task: asyncio.Task[None], record: Record) -> None:
        self._tasks.discard(task)
        self._lanes.release(record.tp)
        following = self._conversations.release(record.key)
        if following is not None and not self._stopping.is_set():
            self._start(*following)
        self._metrics.conversation_waiting.set(self._conversations.waiting)
        self._metrics.inflight.set(len(self._tasks))
        self._capacity.set()

    async def _handle(self, record: Record, rid: str | None, control: RequestControl) -> None:
        if self._processor is None:
            raise NotStartedError("Worker not running")
        try:
            request = await self._processor.decode(record)
            if request is not None and request.request_id != rid:
                # The header disagreed with the body: the body's id is the one that counts.
                if rid is not None:
                    self._running.pop(rid, None)
                rid = request.request_id
                self._running.setdefault(rid, control)
            if request is not None:
                logs.bind(
                    request_id=request.request_id,
                    tenant_id=request.tenant_id,
                    model=request.body.model,
                    batch_id=request.batch_id,
                    trace_id=trace_id(header(record.headers, TRACEPARENT)),
                )
                control.batch_id = request.batch_id
                if self._cancellations.is_cancelled(request.batch_id):
                    control.cancel(f"batch {request.batch_id} was cancelled")
                await self._ensure_answered_loaded(record.tp)
                await self._processor.process(record, request, control)
        except EngineDeadError as exc:
            log.error("engine died; stopping without committing unfinished work")
            self._fatal = exc
            self.stop()
            return
        except HandedBackError:
            log.info("handed back to the partition's new owner", extra={"request_id": rid})
            return
        except BrokerUnavailableError as exc:
            # The final could not be acknowledged: leave the offset uncommitted so the
            # request is redelivered rather than lost.
            log.error("reply not acknowledged (%s); request will be redelivered", exc)
            return
        except Exception:
            log.exception("unexpected failure at %s:%s", record.topic, record.offset)
            return
        finally:
            if rid is not None and self._running.get(rid) is control:
                del self._running[rid]
        self._tracker.finish(record.tp, record.offset)

    async def _mark_engine_death(self) -> None:
        """Write an engine-death mark for each request that was in the engine, so the next
        owner runs them alone and the one that kills the engine is found and refused."""
        inside = self._gate.died_with or {}
        marks = [
            self._answered[record.topic].mark_engine_death(
                record, rid, in_engine=len(inside), worker_id=self._config.worker_id
            )
            for rid, record in inside.items()
        ]
        try:
            async with asyncio.timeout(_DEATH_MARKS_WAIT_S):
                await asyncio.gather(*marks)
        except (TimeoutError, BrokerUnavailableError) as exc:
            log.error("engine-death marks of %d requests not recorded: %r", len(inside), exc)
            return
        log.error("engine died with %d requests in it: %s", len(inside), ", ".join(sorted(inside)))

    def _cancel_batch(self, batch_id: str) -> None:
        for control in self._running.values():
            if control.batch_id == batch_id:
                control.cancel(f"batch {batch_id} was cancelled")

    async def _drain(self) -> None:
        if not self._tasks or self._fatal is not None:
            return
        log.info(
            "draining %d in-flight requests (grace %.0fs)",
            len(self._tasks),
            self._config.shutdown_grace_s,
        )
        _, pending = await asyncio.wait(self._tasks, timeout=self._config.shutdown_grace_s)
        for task in pending:
            task.cancel()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.commit_interval_s)
            try:
                await self._commit()
            except BrokerUnavailableError as exc:
                log.warning("commit failed, will retry: %s", exc)

    async def _commit(self, tps: set[TopicPartition] | None = None) -> None:
        offsets = self._tracker.committable(tps)
        if offsets:
            await self._consumer.commit(offsets)
            self._tracker.mark_committed(offsets)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Unfinished requests of revoked partitions are handed back: aborted here without
        # a reply, redone by the new owner. What is finished is committed before they move.
        for _, rid, _ in self._conversations.drop(lambda item: item[0].tp in revoked):
            self._running.pop(rid or "", None)  # never started: the new owner runs it
        handed = [c for c in self._running.values() if c.tp in revoked]
        for control in handed:
            control.hand_back()
        tasks = [c.task for c in handed if c.task is not None]
        if tasks:
            # Let them settle first: each either stops without a reply or, if its final
            # was already on its way, finishes and is committed below. The new owner then
            # never recomputes a request this worker answered.
            await asyncio.wait(tasks, timeout=_HANDBACK_WAIT_S)
        try:
            await self._commit(revoked)
        except BrokerUnavailableError as exc:
            log.warning("commit on revoke failed: %s", exc)
        self._tracker.forget(revoked)
        self._answers_loaded -= revoked

    async def _ensure_answered_loaded(self, tp: TopicPartition) -> None:
        """Before the first request of a newly owned partition: load what previous owners
        answered there but did not commit, so redeliveries are resent, not recomputed."""
        if tp in self._answers_loaded:
            return
        async with self._load_locks.setdefault(tp, asyncio.Lock()):
            if tp in self._answers_loaded:
                return
            try:
                started = time.monotonic()
                committed = await self._consumer.committed(tp)
                loaded = await self._answered[tp.topic].load(tp, committed)
                # Its duration too: the partition's first requests wait for the load.
                log.info(
                    "%d answered requests of %s:%s loaded in %.0f ms (committed offset %s)",
                    loaded,
                    tp.topic,
                    tp.partition,
                    (time.monotonic() - started) * 1000,
                    committed,
                )
            except LlmbusError as exc:
                log.warning(
                    "answered log of %s not loaded (%s); redeliveries may be recomputed", tp, exc
                )
            self._answers_loaded.add(tp)

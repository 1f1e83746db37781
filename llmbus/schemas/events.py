"""Batch lifecycle events: what the events topic carries and webhooks deliver.

The shape is OpenAI's webhook event (``object: "event"``, ``id``, ``type``,
``created_at``, ``data.id``); ``data`` adds what a consumer acts on without a second
call: status, counts and where the results are.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmbus.schemas.wire import CONTENT_TYPE, H_CONTENT_TYPE, H_KIND

H_EVENT_ID = "llmbus-event-id"
H_EVENT_TYPE = "llmbus-event-type"
EVENT_KIND = "batch-event"
"""The ``llmbus-kind`` header of an event record."""


class BatchEventType(StrEnum):
    CREATED = "batch.created"
    IN_PROGRESS = "batch.in_progress"
    COMPLETED = "batch.completed"
    FAILED = "batch.failed"
    EXPIRED = "batch.expired"
    CANCELLED = "batch.cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (BatchEventType.CREATED, BatchEventType.IN_PROGRESS)


class RequestCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int
    completed: int
    failed: int
    """Failed, cancelled and expired lines together (OpenAI counts them so)."""


class BatchEventData(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    """The batch id."""
    object: Literal["batch"] = "batch"
    status: str
    """The batch's status when the event was made: validating, in_progress, completed,
    failed, expired or cancelled."""
    kind: str
    """``batch`` (a batch job) or ``replay`` (a replay run)."""
    model: str
    tenant_id: str | None = None
    request_counts: RequestCounts
    output_file_id: str | None = None
    """For a finished batch: the gateway's output file (``GET /v1/files/{id}/content``)."""
    error_file_id: str | None = None
    results_command: str | None = None
    """For a finished batch: the command that writes its results (``llmbus batch
    results``); the results themselves are in the audit trail."""


class BatchEvent(BaseModel):
    """One lifecycle event of one batch; each type happens at most once per batch, and its
    ``id`` is the same wherever and however often it is delivered."""

    model_config = ConfigDict(frozen=True)

    object: Literal["event"] = "event"
    id: str = Field(pattern=r"^evt_[0-9a-f]{24}$")
    type: BatchEventType
    created_at: int
    """Unix seconds."""
    data: BatchEventData


def event_id(batch_id: str, event_type: BatchEventType) -> str:
    """The same id for the same batch and type, from any emitter: receivers deduplicate
    on it (``webhook-id``), and a second emitter racing the first cannot mint another."""
    digest = hashlib.sha256(f"{batch_id}\n{event_type.value}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def encode_event(event: BatchEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (H_KIND, EVENT_KIND.encode()),
        (H_EVENT_ID, event.id.encode()),
        (H_EVENT_TYPE, event.type.value.encode()),
    ]
    return event.model_dump_json().encode(), headers

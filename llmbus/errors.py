"""Every error llmbus raises, split by what the caller does next.

Two questions decide how an error is handled, and each class answers both:

* ``retriable``: may the same operation succeed if tried again later (a broker that is
  restarting, a database that is down)?  If not, retrying only wastes work.
* ``scope``: does the failure concern one request (answer it with an error reply and
  carry on) or the whole process (stop cleanly without committing unfinished work)?

Adapters around aiokafka, asyncpg and vLLM map those libraries' exceptions to these
classes with ``raise ... from exc``, so nothing above the adapters imports them.
This module imports nothing of ours: it sits beside ``schemas`` at the bottom.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Scope(StrEnum):
    REQUEST = "request"
    PROCESS = "process"


class ErrorCode(StrEnum):
    """Stable codes carried in error replies; clients may switch on them."""

    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_SCHEMA = "unsupported_schema_version"
    MODEL_NOT_FOUND = "model_not_found"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    ENGINE_ERROR = "engine_error"
    INTERNAL = "internal_error"


class LlmbusError(Exception):
    """Base of every llmbus error."""

    retriable: ClassVar[bool] = False
    scope: ClassVar[Scope] = Scope.REQUEST
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL


# --- one request is wrong: answer it with an error, never retry ---------------------


class InvalidRequestError(LlmbusError):
    code = ErrorCode.INVALID_REQUEST


class UnsupportedSchemaError(InvalidRequestError):
    code = ErrorCode.UNSUPPORTED_SCHEMA


class PayloadTooLargeError(InvalidRequestError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class BatchInputError(InvalidRequestError):
    """A batch input file has invalid lines; ``problems`` names the first few by number."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class NotFoundError(InvalidRequestError):
    """No such batch, replay run or key."""


class ModelNotFoundError(InvalidRequestError):
    code = ErrorCode.MODEL_NOT_FOUND


class ContextLengthExceededError(InvalidRequestError):
    code = ErrorCode.CONTEXT_LENGTH_EXCEEDED


class EngineKillerError(InvalidRequestError):
    """The request killed the engine again while it ran alone in it: poison for the engine,
    refused and dead-lettered instead of killing every worker that takes it."""

    code = ErrorCode.ENGINE_ERROR


class DeadlineExceededError(LlmbusError):
    code = ErrorCode.DEADLINE_EXCEEDED


class RequestCancelledError(LlmbusError):
    code = ErrorCode.CANCELLED


class HandedBackError(LlmbusError):
    """The request's partition moved to another worker mid-generation: it was aborted here
    without a reply and is redone by the new owner."""


class EngineRequestError(LlmbusError):
    """The engine failed on this one request; the engine itself is still healthy."""

    code = ErrorCode.ENGINE_ERROR


class RemoteError(LlmbusError):
    """An error reply received from a worker; ``code`` is set per instance."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.remote_code = code
        self.message = message


# --- the process cannot go on ------------------------------------------------------


class EngineDeadError(LlmbusError):
    """The inference engine itself died: stop without committing unfinished work."""

    scope = Scope.PROCESS
    code = ErrorCode.ENGINE_ERROR


class NotStartedError(LlmbusError):
    """A long-lived component was used before ``start()`` (a programming error)."""

    scope = Scope.PROCESS


class SetupError(LlmbusError):
    """The local stack or model cache could not be prepared."""

    scope = Scope.PROCESS


class TopicLayoutError(SetupError):
    """Existing topics do not match the settings (too few partitions or replicas, or
    under-replicated) and ``topic_check`` is "refuse"; retried, it passes once an operator
    (or a returning broker) mends the topics."""


# --- infrastructure is away: retry with backoff -------------------------------------


class BrokerUnavailableError(LlmbusError):
    retriable = True
    scope = Scope.PROCESS


class DatabaseUnavailableError(LlmbusError):
    retriable = True
    scope = Scope.PROCESS


class RequestTimeoutError(LlmbusError):
    """No final reply arrived in time; the request may still complete later."""

    retriable = True
    code = ErrorCode.DEADLINE_EXCEEDED

"""Errors in OpenAI's body shape, with the status codes OpenAI clients expect."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from llmbus.errors import (
    BrokerUnavailableError,
    DatabaseUnavailableError,
    LlmbusError,
    NotFoundError,
    RemoteError,
)

_STATUS_BY_CODE = {
    "invalid_request": 400,
    "unsupported_schema_version": 400,
    "context_length_exceeded": 400,
    "model_not_found": 404,
    "payload_too_large": 413,
    "deadline_exceeded": 504,
    "cancelled": 409,
    "engine_error": 500,
    "internal_error": 500,
}

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPE_BY_STATUS.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_llmbus(exc: LlmbusError) -> GatewayError:
    """Map an llmbus error (local or a worker's error reply) to its HTTP form."""
    if isinstance(exc, RemoteError):
        code = exc.remote_code
        return GatewayError(_STATUS_BY_CODE.get(code, 500), code, exc.message)
    if isinstance(exc, NotFoundError):
        return GatewayError(404, "not_found", str(exc))
    if isinstance(exc, BrokerUnavailableError):
        return GatewayError(503, "service_unavailable", "the message bus is unreachable")
    if isinstance(exc, DatabaseUnavailableError):
        return GatewayError(503, "service_unavailable", "the database is unreachable")
    code = exc.code.value
    return GatewayError(_STATUS_BY_CODE.get(code, 500), code, str(exc))

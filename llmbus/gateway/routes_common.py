"""What every route shares: the service, the authenticated caller, documented errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from llmbus.gateway.auth import Principal
from llmbus.gateway.service import GatewayService

_bearer = HTTPBearer(auto_error=False, description="an llmbus API key or an OIDC JWT")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (400, "invalid request"),
        (401, "missing, invalid or revoked credentials"),
        (404, "unknown model, batch or file"),
        (409, "cancelled"),
        (413, "body too large"),
        (429, "rate limit reached (see Retry-After)"),
        (500, "internal error"),
        (503, "Kafka or PostgreSQL unreachable"),
        (504, "deadline passed or no answer in time"),
    ]
}


def service_of(request: Request) -> GatewayService:
    service: GatewayService = request.app.state.service
    return service


async def principal_of(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    header = f"Bearer {credentials.credentials}" if credentials else None
    principal = await service_of(request).parts.auth.authenticate(header)
    request.state.principal = principal
    return principal

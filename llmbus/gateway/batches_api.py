"""OpenAI's Files and Batches endpoints, mapped onto llmbus batch jobs; every object is
scoped to the caller's tenant (another tenant's id answers 404, never 403)."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from llmbus.errors import BatchInputError, NotFoundError
from llmbus.gateway.auth import Principal
from llmbus.gateway.openai_errors import GatewayError
from llmbus.gateway.routes_common import ERROR_RESPONSES, principal_of, service_of
from llmbus.jobs.batch_jobs import SubmitOptions
from llmbus.schemas.batch_input import BATCH_URL, BatchUrl
from llmbus.store.batch_store import OPENAI_STATUS, BatchStatus

router = APIRouter()


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: BatchUrl
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = None


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def batch_object(s: BatchStatus) -> dict[str, Any]:
    return {
        "id": s.batch_id,
        "object": "batch",
        "endpoint": s.endpoint or BATCH_URL,
        "errors": None,
        "input_file_id": s.source or "",
        "completion_window": "24h",
        "status": OPENAI_STATUS[s.status],
        "output_file_id": f"{s.batch_id}-output" if s.finished_at else None,
        "error_file_id": f"{s.batch_id}-errors" if s.finished_at else None,
        "created_at": _ts(s.created_at),
        "in_progress_at": _ts(s.published_at),
        "completed_at": _ts(s.finished_at) if s.status == "completed" else None,
        "cancelling_at": _ts(s.cancel_requested_at),
        "cancelled_at": _ts(s.finished_at) if s.status == "cancelled" else None,
        "expires_at": _ts(s.expires_at),
        "expired_at": _ts(s.finished_at) if s.status == "expired" else None,
        "failed_at": _ts(s.failed_at),
        "request_counts": {
            "total": s.total,
            "completed": s.completed,
            "failed": s.failed + s.cancelled + s.expired,
        },
        "metadata": {},
    }


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["file_id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": _ts(row["created_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
    }


async def _owned_batch(request: Request, batch_id: str, who: Principal) -> BatchStatus:
    status = await service_of(request).parts.batch_store.status(batch_id)
    if status.tenant_id != who.tenant_id:
        raise GatewayError(404, "not_found", f"no batch {batch_id!r}")
    return status


Caller = Annotated[Principal, Depends(principal_of)]


@router.post("/v1/files", responses=ERROR_RESPONSES)
async def upload_file(
    request: Request,
    who: Caller,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[Literal["batch"], Form()],
) -> dict[str, Any]:
    content = await file.read()
    row = await service_of(request).parts.files.save(
        tenant_id=who.tenant_id, filename=file.filename or "upload.jsonl", purpose=purpose,
        content=content,
    )  # fmt: skip
    return file_object(row)


@router.get("/v1/files/{file_id}/content", responses=ERROR_RESPONSES)
async def file_content(request: Request, file_id: str, who: Caller) -> Response:
    parts = service_of(request).parts
    for suffix, want_ok in (("-output", True), ("-errors", False)):
        if file_id.endswith(suffix):
            batch_id = file_id.removesuffix(suffix)
            await _owned_batch(request, batch_id, who)
            out = io.StringIO()
            async for ok, line in parts.batches.output_lines(batch_id):
                if ok == want_ok:
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
            return Response(out.getvalue(), media_type="application/jsonl")
    row = await parts.files.get(file_id, tenant_id=who.tenant_id)  # 404 via the app's handler
    return Response(row["content"], media_type="application/jsonl")


@router.post("/v1/batches", responses=ERROR_RESPONSES)
async def create_batch(request: Request, body: CreateBatch, who: Caller) -> dict[str, Any]:
    parts = service_of(request).parts
    try:
        row = await parts.files.get(body.input_file_id, tenant_id=who.tenant_id)
    except NotFoundError as exc:
        raise GatewayError(404, "not_found", str(exc), param="input_file_id") from exc
    options = SubmitOptions(tenant_id=who.tenant_id, user_id=who.user_id, endpoint=body.endpoint)
    try:
        submitted = await parts.batches.submit_lines(
            io.BytesIO(row["content"]), body.input_file_id, options
        )
    except BatchInputError as exc:
        detail = "; ".join(exc.problems[:5])
        raise GatewayError(
            400, "invalid_request", f"{exc}: {detail}", param="input_file_id"
        ) from exc
    request.state.request_id = submitted.batch_id
    return batch_object(await parts.batch_store.status(submitted.batch_id))


@router.get("/v1/batches/{batch_id}", responses=ERROR_RESPONSES)
async def get_batch(request: Request, batch_id: str, who: Caller) -> dict[str, Any]:
    return batch_object(await _owned_batch(request, batch_id, who))


@router.get("/v1/batches", responses=ERROR_RESPONSES)
async def list_batches(request: Request, who: Caller, limit: int = 20) -> dict[str, Any]:
    limit = max(1, min(limit, 100))
    found = await service_of(request).parts.batch_store.recent(limit=limit, tenant_id=who.tenant_id)
    data = [batch_object(s) for s in found]
    return {"object": "list", "data": data, "has_more": len(data) == limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}  # fmt: skip


@router.post("/v1/batches/{batch_id}/cancel", responses=ERROR_RESPONSES)
async def cancel_batch(request: Request, batch_id: str, who: Caller) -> dict[str, Any]:
    await _owned_batch(request, batch_id, who)
    return batch_object(await service_of(request).parts.batches.cancel(batch_id))

"""Runs: upload (JSON array, NDJSON or a file in any ingest format), list with filters and cursor, get one."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from collector.formats import FORMATS
from collector.schema import (
    RunStatus,
    TaskType,
    canonical_dataset,
    canonical_method,
    canonical_model_id,
    from_row,
)
from collector.store import rows_within
from service.api._json import jsonable
from service.api.deps import KB, MetricsDep, ReadKey, SettingsDep, StreamedBody, WriteKey, Writer
from service.api.routes._common import ERROR_RESPONSES, MULTIPART, api_router, is_json, media_type
from service.api.schemas import ErrorBody, RunPage, RunRecord, UploadResult
from service.errors import BadRequest, NotFound, UnsupportedMediaType
from service.uploads import BodyReader, Upload, read_file

router = api_router(prefix="/v1", tags=["runs"])

NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

_UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "description": "Runs as a JSON array of records, as NDJSON (one record per line), or as a file in any format "
                   "`metaml ingest` reads (multipart field `file`, optional field `format` to skip detection).",
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/RunRecord"}}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "One JSON record per line."}},
        MULTIPART: {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "The file; its name's suffix is used to detect the format."},
                "format": {"type": "string", "enum": list(FORMATS),
                           "description": "Read the file in this format instead of detecting it."},
            },
        }},
    },
}


#: Bytes of body gathered before they are parsed (in a worker thread, off the event loop).
_FEED_BYTES = 256 * 1024
#: A whole body up to this size is parsed on the event loop (a few records: less work than a worker thread's hop).
_INLINE_BYTES = 16 * 1024


async def _read_upload(request: Request, upload: Upload) -> None:
    """Read the request's records into ``upload`` as the body arrives."""
    media = media_type(request)
    if is_json(media) or media in NDJSON_TYPES:
        reader = BodyReader(upload, ndjson=media in NDJSON_TYPES)
        pending: list[bytes] = []
        size, fed = 0, False
        async for chunk in request.stream():
            pending.append(chunk)
            size += len(chunk)
            if size >= _FEED_BYTES:
                await run_in_threadpool(reader.feed, b"".join(pending))
                pending, size, fed = [], 0, True
        if fed or size > _INLINE_BYTES:
            await run_in_threadpool(reader.finish, b"".join(pending))
        else:
            reader.finish(b"".join(pending))
        return
    if media == MULTIPART:
        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException:  # the request gate's size and time limits
            raise
        except Exception as e:  # starlette's multipart errors have no public base class
            raise BadRequest(f"malformed multipart body: {e}") from None
        file_part, fmt = form.get("file"), form.get("format")
        if not isinstance(file_part, UploadFile):
            raise BadRequest("a multipart upload needs the file in a part named 'file'")
        if fmt is not None and (not isinstance(fmt, str) or fmt not in FORMATS):
            raise BadRequest(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        try:
            await run_in_threadpool(read_file, upload, file_part.file, file_part.filename, fmt or None)
        finally:
            await file_part.close()
        return
    raise UnsupportedMediaType(
        f"cannot read a body of type {media or '(none)'!r}; send application/json (an array of records), "
        "application/x-ndjson (one record per line) or multipart/form-data (a file)",
        details={"accepted": ["application/json", "application/x-ndjson", MULTIPART]})


@router.post("/runs", operation_id="upload_runs", response_model=UploadResult, responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": _UPLOAD_BODY}, dependencies=[StreamedBody])
async def upload_runs(request: Request, key: WriteKey, writer: Writer, settings: SettingsDep,
                      metrics: MetricsDep) -> UploadResult:
    """Upload runs; answer what was accepted, what was a duplicate and what was rejected (and why), per record.

    Each record is validated on its own as the body arrives (a bad one is rejected with its place, field and
    reason; the others are stored), and the upload is refused (422) as soon as it passes the record limit. The
    valid records are stored in one transaction (shared with uploads arriving at the same moment), committed before
    the answer: every record answered `accepted` is in the knowledge base. The server records the key's holder as
    `provenance.uploader` and stores the runs under the source `upload:<holder>` (an admin key's records keep the
    source they name). Needs the `write` scope.
    """
    upload = Upload(holder=key.name, admin=key.allows("admin"), limits=settings.record_limits,
                    max_records=settings.max_batch_records)
    await _read_upload(request, upload)
    rows = upload.valid_rows()
    upload.settle(set() if rows is None else await asyncio.wrap_future(writer.submit(rows)))
    result = upload.result()
    metrics.count_upload(result.accepted, result.duplicates, result.rejected)
    return result


def encode_cursor(run_id: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(run_id)).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
    return raw.hex()


@router.get("/runs", operation_id="list_runs", response_model=RunPage, responses=ERROR_RESPONSES)
def list_runs(
    kb: KB,
    _key: ReadKey,
    settings: SettingsDep,
    dataset: Annotated[str | None, Query(max_length=500, description="Dataset name (canonicalized).")] = None,
    model: Annotated[str | None, Query(max_length=500, description="Model id (canonicalized).")] = None,
    method: Annotated[str | None, Query(max_length=100, description="Method name (canonicalized).")] = None,
    source: Annotated[str | None, Query(max_length=100, description="provenance.source.")] = None,
    task_type: TaskType | None = None,
    status: RunStatus | None = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False, description="outcome.score >= this.")] = None,
    max_score: Annotated[float | None, Query(allow_inf_nan=False, description="outcome.score <= this.")] = None,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Runs per page.")] = 100,
) -> JSONResponse:
    """Runs matching every filter given, ordered by run id, one page at a time.

    A page holds `limit` runs, or fewer when their data would pass the server's answer size (`max_answer_bytes`);
    `next_cursor` then leads to the rest."""
    filters: dict[str, Any] = {}
    if dataset:
        filters["dataset_name"] = canonical_dataset(dataset)
    if model:
        filters["model_id"] = canonical_model_id(model)
    if method:
        filters["method_name"] = canonical_method(method) or method
    if source:
        filters["provenance_source"] = source
    if task_type is not None:
        filters["task_type"] = task_type.value
    if status is not None:
        filters["outcome_status"] = status.value
    ranges = {"outcome_score": (min_score, max_score)} if min_score is not None or max_score is not None else None
    after = decode_cursor(cursor) if cursor else None
    table = kb.scan(filters=filters, ranges=ranges, after=after, limit=limit + 1)
    keep = max(rows_within(table, settings.max_answer_bytes, limit), min(1, table.num_rows))
    more = table.num_rows > keep
    rows = table.slice(0, keep).to_pylist()
    page = {"runs": [from_row(r) for r in rows], "count": len(rows),
            "next_cursor": encode_cursor(rows[-1]["run_id"]) if more else None}
    return JSONResponse(jsonable(page))


@router.get("/runs/{run_id}", operation_id="get_run", response_model=RunRecord,
            responses={404: {"model": ErrorBody, "description": "No run has this id."}, **ERROR_RESPONSES})
def get_run(run_id: str, kb: KB, _key: ReadKey) -> JSONResponse:
    """One run in its nested record shape."""
    row = kb.get(run_id) if _RUN_ID.match(run_id) else None
    if row is None:
        raise NotFound(f"no run {run_id!r} in the knowledge base")
    return JSONResponse(jsonable(from_row(row)))

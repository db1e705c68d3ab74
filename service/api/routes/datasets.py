"""Datasets: meta-features of a labelled text dataset, sent inline or as a file; optionally stored."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from collector.errors import CollectorError
from collector.features import compute_meta_features, load_text_dataset
from collector.schema import DatasetMeta, canonical_dataset
from collector.store import KnowledgeBase
from service.api.deps import KB, AnyKeyWhenReadsClosed, SettingsDep, StreamedBody, check_scope
from service.api.routes._common import ERROR_RESPONSES, MULTIPART, api_router, is_json, media_type
from service.api.schemas import DescribeRequest, DescribeResult
from service.errors import BadRequest, UnsupportedMediaType
from service.uploads import safe_filename

router = api_router(prefix="/v1/datasets", tags=["datasets"])

_FORM_FIELDS = ("name", "store", "domain", "landmark_sample", "seed", "split", "text_column", "label_column",
                "text_pair_column")

_DESCRIBE_BODY: dict[str, Any] = {
    "required": True,
    "description": "Texts and labels inline (JSON), or a CSV/TSV/JSONL/Parquet file with text and label columns "
                   "(multipart field `file`; columns are found by name unless given).",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/DescribeRequest"}},
        MULTIPART: {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "name": {"type": "string"},
                "store": {"type": "boolean"},
                "domain": {"type": "string"},
                "landmark_sample": {"type": "integer", "minimum": 0, "maximum": 10000},
                "seed": {"type": "integer", "minimum": 0},
                "split": {"type": "string"},
                "text_column": {"type": "string"},
                "label_column": {"type": "string"},
                "text_pair_column": {"type": "string"},
            },
        }},
    },
}


def _describe_file(upload: UploadFile, fields: dict[str, str], params: DescribeRequest) -> tuple[str, DatasetMeta,
                                                                                                int]:
    """Save the upload under its own name (its suffix selects the reader), read it, compute its features."""
    with tempfile.TemporaryDirectory(prefix="metaml-describe-") as tmp:
        path = Path(tmp) / safe_filename(upload.filename, "dataset")
        with open(path, "wb") as f:
            while chunk := upload.file.read(1 << 20):
                f.write(chunk)
        try:
            ds = load_text_dataset(path, split=fields.get("split") or "train",
                                   text_column=fields.get("text_column") or None,
                                   label_column=fields.get("label_column") or None,
                                   text_pair_column=fields.get("text_pair_column") or None)
        except CollectorError as e:
            raise BadRequest(str(e).replace(tmp + "/", "")) from None
    return ds.name, _compute(ds.texts, ds.labels, ds.text_pairs, params), len(ds.texts)


def _compute(texts: Any, labels: Any, pairs: Any, params: DescribeRequest) -> DatasetMeta:
    try:
        return compute_meta_features(texts, labels, text_pairs=pairs, landmark_sample=params.landmark_sample,
                                     seed=params.seed, domain=params.domain)
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _params_from_form(fields: dict[str, str]) -> DescribeRequest:
    data: dict[str, Any] = {"texts": ["-"]}
    for k in ("name", "domain", "landmark_sample", "seed"):
        if fields.get(k):
            data[k] = fields[k]
    if fields.get("store"):
        data["store"] = fields["store"]
    return _validated(data)


def _validated(data: Any) -> DescribeRequest:
    from fastapi.exceptions import RequestValidationError

    try:
        return DescribeRequest.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(
            [{"loc": ("body", *err["loc"]), "msg": err["msg"], "type": err["type"]} for err in e.errors()]) from None


@router.post("/describe", operation_id="describe_dataset", response_model=DescribeResult, responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": _DESCRIBE_BODY}, dependencies=[StreamedBody])
async def describe_dataset(request: Request, kb: KB, key: AnyKeyWhenReadsClosed, settings: SettingsDep
                           ) -> DescribeResult:
    """Dataset meta-features (sizes, class balance, text lengths, vocabulary, language, TF-IDF landmark).

    With `store: true` and a `name`, the features are stored in the knowledge base's datasets table under the
    canonical name and attached to that dataset's runs (needs the `write` scope). Without storing, the call is a
    read (it needs a `read` key only when the server requires keys for reads).
    """
    media = media_type(request)
    upload: UploadFile | None = None
    if is_json(media):
        try:
            data = await request.json()
        except ValueError as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        params = _validated(data)
    elif media == MULTIPART:
        try:
            form = await request.form(max_files=1, max_fields=20)
        except HTTPException:  # the request gate's size and time limits
            raise
        except Exception as e:  # starlette's multipart errors have no public base class
            raise BadRequest(f"malformed multipart body: {e}") from None
        file_part = form.get("file")
        if not isinstance(file_part, UploadFile):
            raise BadRequest("a multipart request needs the dataset file in a part named 'file'")
        upload = file_part
        fields = {k: v for k in _FORM_FIELDS if isinstance(v := form.get(k), str)}
        params = _params_from_form(fields)
    else:
        raise UnsupportedMediaType(f"cannot read a body of type {media or '(none)'!r}; send application/json or "
                                   "multipart/form-data", details={"accepted": ["application/json", MULTIPART]})
    if params.store:
        check_scope(key, "write")
        if not params.name:
            raise BadRequest("storing the features needs the dataset's `name`")
    elif settings.read_requires_key:
        check_scope(key, "read")

    if upload is not None:
        try:
            _, meta, n_rows = await run_in_threadpool(_describe_file, upload, fields, params)
        finally:
            await upload.close()
        name = canonical_dataset(params.name) if params.name else None
    else:
        if params.labels is not None and len(params.labels) != len(params.texts):
            raise BadRequest(f"{len(params.labels)} labels for {len(params.texts)} texts")
        meta = await run_in_threadpool(_compute, params.texts, params.labels, params.text_pairs, params)
        n_rows = len(params.texts)
        name = canonical_dataset(params.name) if params.name else None
    stored = False
    if params.store and name:
        await run_in_threadpool(_store, kb, name, meta, key.name if key else "api")
        stored = True
    return DescribeResult(name=name, n_rows=n_rows, meta=meta, stored=stored)


def _store(kb: KnowledgeBase, name: str, meta: DatasetMeta, uploader: str) -> None:
    kb.upsert_datasets({name: meta}, source=f"api:{uploader}")

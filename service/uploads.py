"""Uploads: turn a request body or an uploaded file into items, then validate, store and account for each one.

Reading uses the collector's formats (``collector.formats``) for files, and parses JSON arrays and NDJSON bodies
directly into the same items (``RawRecord`` / ``Rejected``). Validation is the collector's
(:func:`collector.ingest.validate`); storing is one transaction for the whole upload
(shared with the uploads that arrive at the same moment, see :mod:`service.writer`), committed before the caller
answers. Every item gets one status, in input order:

* ``accepted`` — stored by this upload;
* ``duplicate`` — its run is already in the knowledge base, or earlier in the same upload;
* ``rejected`` — not a valid record (with the field and the reason).

The service sets ``provenance.uploader`` (the API key's name) and ``provenance.ingested_at`` itself, whatever the
record says; ``provenance.source`` defaults to ``upload`` for bodies and to the format's source for files.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pyarrow as pa

from collector.errors import CollectorError
from collector.formats import RawRecord, Rejected, get_format, plan_inputs
from collector.ingest import Reject, validate
from collector.schema import RowBuffer, RunRecord
from collector.store import KnowledgeBase
from service.errors import BadRequest, BatchTooLarge

Status = Literal["accepted", "duplicate", "rejected"]

#: ``provenance.source`` of records uploaded as a JSON or NDJSON body that do not name one.
UPLOAD_SOURCE = "upload"


@dataclass
class SourcedItem:
    """An item read from an upload, with the ``provenance.source`` it gets when it names none."""

    item: RawRecord | Rejected
    source: str


@dataclass
class RecordStatus:
    """What happened to one uploaded item."""

    index: int
    locator: str
    status: Status
    run_id: str | None = None
    uri: str | None = None
    field: str | None = None
    reason: str | None = None


@dataclass
class UploadResult:
    """Statuses of every item of one upload, in input order, and their totals."""

    records: list[RecordStatus] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.records if r.status == status)


# ------------------------------------------------------------------------------------------------------- reading


def items_from_json(body: bytes) -> list[SourcedItem]:
    """Items of a JSON body: an array of records (``item <i>``) or one record.

    Raises:
        BadRequest: not JSON, or neither an object nor an array.
    """
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise BadRequest(f"expected a JSON array of records (or one record), got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        loc = f"item {i}"
        item: RawRecord | Rejected = (RawRecord(v, loc) if isinstance(v, dict)
                                      else Rejected(loc, f"expected a JSON object, got {type(v).__name__}"))
        out.append(SourcedItem(item, UPLOAD_SOURCE))
    return out


def items_from_ndjson(body: bytes) -> list[SourcedItem]:
    """Items of an NDJSON body: one record per line (``line <n>``); blank lines are skipped, bad lines rejected."""
    out = []
    for lineno, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        loc = f"line {lineno}"
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            out.append(SourcedItem(Rejected(loc, f"invalid JSON: {e}"), UPLOAD_SOURCE))
            continue
        item = RawRecord(value, loc) if isinstance(value, dict) else Rejected(
            loc, f"expected a JSON object, got {type(value).__name__}")
        out.append(SourcedItem(item, UPLOAD_SOURCE))
    return out


def safe_filename(name: str | None, default: str = "upload") -> str:
    """The base name of an uploaded file, reduced to ``[A-Za-z0-9._-]`` (keeps the suffixes formats detect by)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._\-]", "_", base).lstrip(".")
    return base[:200] or default


def items_from_file(stream: BinaryIO, filename: str | None, fmt: str | None, *,
                    max_items: int) -> list[SourcedItem]:
    """Items of an uploaded file in any format ``metaml ingest`` reads.

    The file is saved under its own (sanitized) name in a private temporary folder, so that formats that detect by
    file name (``*_tuning.results.jsonl``, ``.csv``, ``.parquet``...) recognize it; items then name the file as the
    client called it, never the temporary path.

    Raises:
        BadRequest: no format recognizes the file, or the file as a whole is unreadable (nothing is stored then).
        BatchTooLarge: the file holds more than ``max_items`` items.
    """
    name = safe_filename(filename)
    with tempfile.TemporaryDirectory(prefix="metaml-upload-") as tmp:
        path = Path(tmp) / name
        with open(path, "wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
        try:
            plan = plan_inputs(path, fmt)
            out: list[SourcedItem] = []
            for planned in plan:
                if planned.fmt is None:
                    continue
                reader = get_format(planned.fmt)
                for item in reader.read(planned.path):
                    item.uri = _public_uri(item.uri, tmp)
                    if isinstance(item, RawRecord):
                        _rewrite_uri(item, tmp)
                    out.append(SourcedItem(item, reader.source))
                    if len(out) > max_items:
                        raise BatchTooLarge(f"the file holds more than {max_items:,} records, the most one upload "
                                            "may hold; split it", details={"max_batch_records": max_items})
        except CollectorError as e:
            raise BadRequest(_public_uri(str(e), tmp) or "unreadable file") from None
    if not out:
        raise BadRequest(f"{name}: no records found in the file")
    return out


def _public_uri(uri: str | None, tmp: str) -> str | None:
    return uri.replace(tmp + "/", "").replace(tmp, "") if uri else uri


def _rewrite_uri(item: RawRecord, tmp: str) -> None:
    prov = item.data.get("provenance")
    if isinstance(prov, dict) and isinstance(prov.get("uri"), str) and tmp in prov["uri"]:
        item.data["provenance"] = {**prov, "uri": _public_uri(prov["uri"], tmp)}


# ------------------------------------------------------------------------------------------------------- storing


def _stamped(raw: RawRecord, uploader: str, now: datetime) -> RawRecord:
    """``raw`` with the uploader and ingestion time the service vouches for (a non-object provenance is left for
    validation to reject)."""
    data: dict[str, Any] = dict(raw.data)
    prov = data.get("provenance")
    if prov is None:
        prov = {}
    if isinstance(prov, dict):
        data["provenance"] = {**prov, "uploader": uploader, "ingested_at": now}
    return RawRecord(data, raw.locator, raw.uri)


Append = Callable[[pa.Table], Collection[str]]


def direct_append(kb: KnowledgeBase) -> Append:
    """An ``append`` for :func:`store_items` that writes straight to ``kb`` (one transaction per call)."""
    return lambda table: set(kb.append(table).inserted)


def store_items(append: Append, items: Sequence[SourcedItem], *, uploader: str) -> UploadResult:
    """Validate every item and store the valid, new ones in one transaction.

    Args:
        append: stores a batch of validated rows in one transaction and returns the run ids it inserted:
            :meth:`service.writer.GroupWriter.append`, or :func:`direct_append` of a knowledge base.
        items: what was read, in input order.
        uploader: the API key's name, recorded as ``provenance.uploader``.

    Returns:
        One status per item, in input order. When this returns, every ``accepted`` record is committed.

    Raises:
        StoreError: the write failed (and was rolled back: nothing of this upload is stored).
        StoreBusy: the knowledge base stayed locked past its lock timeout (nothing stored).
    """
    now = datetime.now(UTC)
    result = UploadResult()
    rows = RowBuffer()
    first_seen: dict[str, int] = {}
    pending: list[RecordStatus] = []
    for index, sourced in enumerate(items):
        item = sourced.item
        if isinstance(item, Rejected):
            result.records.append(RecordStatus(index, item.locator, "rejected", uri=item.uri, field=item.field,
                                               reason=item.reason))
            continue
        outcome: RunRecord | Reject = validate(_stamped(item, uploader, now), source=sourced.source,
                                               uploader=uploader, now=now)
        if isinstance(outcome, Reject):
            result.records.append(RecordStatus(index, item.locator, "rejected", uri=item.uri, field=outcome.field,
                                               reason=outcome.reason))
            continue
        run_id = outcome.run_id
        assert run_id is not None
        if run_id in first_seen:
            result.records.append(RecordStatus(index, item.locator, "duplicate", run_id, item.uri,
                                               reason=f"same run as record {first_seen[run_id]} of this upload"))
            continue
        first_seen[run_id] = index
        rows.append(outcome)
        status = RecordStatus(index, item.locator, "accepted", run_id, item.uri)
        pending.append(status)
        result.records.append(status)
    if len(rows):
        inserted = append(rows.to_arrow())
        for status in pending:
            if status.run_id not in inserted:
                status.status = "duplicate"
                status.reason = "already in the knowledge base"
    return result

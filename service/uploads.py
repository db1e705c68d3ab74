"""Uploads: read a request body or an uploaded file record by record, validate each as it is read, store the valid,
new ones in one transaction, and account for every item.

Reading never holds more than one record's text at a time: JSON arrays and NDJSON bodies go through the collector's
streaming splitters (``collector.formats``) as the body arrives, files through the formats ``metaml ingest`` uses.
Each record is validated on its own (:func:`collector.ingest.validate`, with the server's
:class:`~collector.schema.RecordLimits`) as soon as it is read, and only its row is kept; the upload is refused as
soon as it passes ``max_records`` items. Storing is one transaction for the whole upload (shared with the uploads
that arrive at the same moment, see :mod:`service.writer`), committed before the caller answers. Every item gets
one status, in input order:

* ``accepted`` — stored by this upload;
* ``duplicate`` — its run is already in the knowledge base, or earlier in the same upload;
* ``rejected`` — not a valid record (with the field and the reason).

The statuses are the API's own answer models (:class:`service.api.schemas.RecordStatus`, :class:`UploadResult`).
Duplicates are found once, by the store, in the transaction that stores the upload (a run repeated within the upload
included): this module only reads back which rows were inserted.

Provenance is the server's to say: ``provenance.uploader`` is the API key's holder and ``provenance.ingested_at``
the time of the upload, whatever the record says. ``provenance.source`` is ``upload:<holder>``
(:func:`collector.schema.upload_source`) for every record a non-admin key uploads, so that no upload can pass for a
curated source (``opda``, ``taskweb``...); an admin key's records keep the source they name (a file's records the
source of the format that read it), and default to ``upload:<holder>``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from collector.errors import CollectorError, FormatError
from collector.formats import (
    JsonArraySplitter,
    LineSplitter,
    RawRecord,
    Rejected,
    get_format,
    parse_piece,
    plan_inputs,
)
from collector.ingest import Reject, validate
from collector.schema import RecordLimits, RowBuffer, RunRecord, upload_source
from service.api.schemas import RecordStatus, UploadResult
from service.errors import BadRequest, BatchTooLarge

#: Validated rows are turned into Arrow (compact) every this many records.
_ROWS_PER_TABLE = 1000
#: Formats that read records in their own JSON shape, and take the server's record limits.
_JSON_FORMATS = ("jsonl", "json")


def _status(index: int, locator: str, status: str, run_id: str | None = None, uri: str | None = None,
            field: str | None = None, reason: str | None = None) -> RecordStatus:
    # built from values this module produced: no validation needed per record
    return RecordStatus.model_construct(index=index, locator=locator, status=status, run_id=run_id, uri=uri,
                                        field=field, reason=reason)


class Upload:
    """The items of one upload, validated one by one as they are read.

    Args:
        holder: the API key's holder (``provenance.uploader``, and the ``upload:<holder>`` source).
        admin: whether the key is an admin key (its records may name any source).
        limits: what each record is held to.
        max_records: most items the upload may hold.
    """

    def __init__(self, *, holder: str, admin: bool, limits: RecordLimits, max_records: int) -> None:
        self.holder = holder
        self.admin = admin
        self.limits = limits
        self.max_records = max_records
        self.source = upload_source(holder)
        self.now = datetime.now(UTC)
        self.records: list[RecordStatus] = []
        self._rows = RowBuffer()
        self._tables: list[pa.Table] = []

    def add(self, item: RawRecord | Rejected, source: str | None = None) -> None:
        """Validate ``item`` and record its status (its row kept when it is valid and new to this upload).

        Args:
            item: what was read.
            source: the source an admin key's record gets when it names none (default ``upload:<holder>``).

        Raises:
            BatchTooLarge: this item passes ``max_records``.
        """
        index = len(self.records)
        if index >= self.max_records:
            raise BatchTooLarge(f"the upload holds more than {self.max_records:,} records, the most one request may "
                                "hold: split it", details={"max_batch_records": self.max_records})
        statuses = self.records
        if isinstance(item, Rejected):
            statuses.append(_status(index, item.locator, "rejected", uri=item.uri, field=item.field,
                                    reason=item.reason))
            return
        default = (source or self.source) if self.admin else self.source
        outcome: RunRecord | Reject = validate(self._stamped(item), source=default, uploader=self.holder,
                                               now=self.now, limits=self.limits)
        if isinstance(outcome, Reject):
            statuses.append(_status(index, item.locator, "rejected", uri=item.uri, field=outcome.field,
                                    reason=outcome.reason))
            return
        self._rows.append(outcome)
        if len(self._rows) >= _ROWS_PER_TABLE:
            self._tables.append(self._rows.to_arrow())
            self._rows.clear()
        statuses.append(_status(index, item.locator, "accepted", outcome.run_id, item.uri))

    def _stamped(self, raw: RawRecord) -> RawRecord:
        """``raw`` with the provenance the server vouches for (a non-object provenance is left for validation to
        reject)."""
        data: dict[str, Any] = dict(raw.data)
        prov = data.get("provenance")
        if prov is None:
            prov = {}
        if isinstance(prov, dict):
            prov = {**prov, "uploader": self.holder, "ingested_at": self.now}
            if not self.admin:
                prov["source"] = self.source
            data["provenance"] = prov
        return RawRecord(data, raw.locator, raw.uri)

    def valid_rows(self) -> pa.Table | None:
        """The rows of the valid records read so far (a run repeated in the upload included: the store keeps the
        first), to store in one transaction; None when there are none."""
        if len(self._rows):
            self._tables.append(self._rows.to_arrow())
            self._rows.clear()
        if not self._tables:
            return None
        if len(self._tables) > 1:
            self._tables = [pa.concat_tables(self._tables)]
        return self._tables[0]

    def settle(self, inserted: Collection[str]) -> list[RecordStatus]:
        """Settle the statuses once :meth:`valid_rows` are committed and the store said which runs it ``inserted``:
        it keeps the first of each run new to the knowledge base; a later record of the same run in this upload is
        a duplicate of that first one, any other not inserted was already in the knowledge base.

        Returns:
            One status per item, in input order.
        """
        self._tables = []
        first: dict[str, int] = {}
        for status in self.records:
            if status.status != "accepted":
                continue
            if status.run_id in first:
                status.status = "duplicate"
                status.reason = f"same run as record {first[status.run_id]} of this upload"
                continue
            first[status.run_id] = status.index  # type: ignore[index]
            if status.run_id not in inserted:
                status.status = "duplicate"
                status.reason = "already in the knowledge base"
        return self.records

    def result(self) -> UploadResult:
        """The answer: every status (after :meth:`settle`) and their totals."""
        counts = {s: sum(1 for r in self.records if r.status == s) for s in ("accepted", "duplicate", "rejected")}
        return UploadResult.model_construct(
            total=len(self.records), accepted=counts["accepted"], duplicates=counts["duplicate"],
            rejected=counts["rejected"], uploader=self.holder, source=self.source, records=self.records)


# ------------------------------------------------------------------------------------------------------- reading


class BodyReader:
    """Feeds a JSON array (``item <i>``) or NDJSON (``line <n>``) body, chunk by chunk, into an :class:`Upload`."""

    def __init__(self, upload: Upload, *, ndjson: bool) -> None:
        limits = upload.limits
        self.upload = upload
        self.splitter: JsonArraySplitter | LineSplitter = (
            LineSplitter(max_line_bytes=limits.max_record_bytes) if ndjson
            else JsonArraySplitter(max_item_bytes=limits.max_record_bytes, max_depth=limits.max_depth))

    def feed(self, data: bytes) -> None:
        """Read the records that end in ``data``.

        Raises:
            BadRequest: the body is not a JSON array or object (a missing bracket or comma...).
            BatchTooLarge: the body holds more than ``max_records`` records.
        """
        self._take(lambda: self.splitter.feed(data))

    def finish(self, data: bytes = b"") -> None:
        """Read the last part of the body, ``data``, and what the end of the body completes.

        Raises:
            BadRequest: the body is not a JSON array or object, is empty, or ends before its array does.
            BatchTooLarge: the body holds more than ``max_records`` records.
        """
        self.feed(data)
        self._take(self.splitter.close)

    def _take(self, pieces: Callable[[], Iterator[Any]]) -> None:
        depth = self.upload.limits.max_depth
        try:
            for piece in pieces():
                self.upload.add(parse_piece(piece, max_depth=depth))
        except FormatError as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None


def safe_filename(name: str | None, default: str = "upload") -> str:
    """The base name of an uploaded file, reduced to ``[A-Za-z0-9._-]`` (keeps the suffixes formats detect by)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._\-]", "_", base).lstrip(".")
    return base[:200] or default


def read_file(upload: Upload, stream: BinaryIO, filename: str | None, fmt: str | None) -> None:
    """Read an uploaded file in any format ``metaml ingest`` reads into ``upload``, record by record.

    The file is saved under its own (sanitized) name in a private temporary folder, so that formats that detect by
    file name (``*_tuning.results.jsonl``, ``.csv``, ``.parquet``...) recognize it; items then name the file as the
    client called it, never the temporary path.

    Raises:
        BadRequest: no format recognizes the file, or the file as a whole is unreadable (nothing is stored then).
        BatchTooLarge: the file holds more than the upload's ``max_records`` items.
    """
    name = safe_filename(filename)
    before = len(upload.records)
    with tempfile.TemporaryDirectory(prefix="metaml-upload-") as tmp:
        path = Path(tmp) / name
        with open(path, "wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
        try:
            for planned in plan_inputs(path, fmt):
                if planned.fmt is None:
                    continue
                options = {"limits": upload.limits} if planned.fmt in _JSON_FORMATS else {}
                reader = get_format(planned.fmt, **options)
                if planned.fmt == "parquet" and (rows := reader.estimate(planned.path) or 0) > upload.max_records:
                    raise BatchTooLarge(f"the file holds {rows:,} records; at most {upload.max_records:,} are "
                                        "accepted in one request: split it",
                                        details={"max_batch_records": upload.max_records})
                for item in reader.read(planned.path):
                    item.uri = _public_uri(item.uri, tmp)
                    if isinstance(item, RawRecord):
                        _rewrite_uri(item, tmp)
                    upload.add(item, reader.source)
        except CollectorError as e:
            raise BadRequest(_public_uri(str(e), tmp) or "unreadable file") from None
    if len(upload.records) == before:
        raise BadRequest(f"{name}: no records found in the file")


def _public_uri(uri: str | None, tmp: str) -> str | None:
    return uri.replace(tmp + "/", "").replace(tmp, "") if uri else uri


def _rewrite_uri(item: RawRecord, tmp: str) -> None:
    prov = item.data.get("provenance")
    if isinstance(prov, dict) and isinstance(prov.get("uri"), str) and tmp in prov["uri"]:
        item.data["provenance"] = {**prov, "uri": _public_uri(prov["uri"], tmp)}

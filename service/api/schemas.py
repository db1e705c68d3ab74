"""Request and answer models of the HTTP API. Runs are the collector's :class:`~collector.schema.RunRecord` itself;
dataset meta-features are its :class:`~collector.schema.DatasetMeta`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from collector.schema import DatasetMeta, RunRecord

Label = str | int | float | bool | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(_Model):
    code: str = Field(description="Stable machine-readable code, e.g. unauthorized, batch_too_large, query_refused.")
    message: str = Field(description="What went wrong, for a person.")
    details: Any = Field(None, description="Structured details (validation errors, limits), when any.")


class ErrorBody(_Model):
    """The body of every error answer."""

    error: ErrorInfo


class RecordStatus(_Model):
    """What happened to one uploaded record."""

    index: int = Field(description="Position of the item in the upload (0-based, in reading order).")
    locator: str = Field(description="Where it was: 'item 3' (JSON array), 'line 4' (NDJSON, files), 'row 2 ...'.")
    status: Literal["accepted", "duplicate", "rejected"]
    run_id: str | None = Field(None, description="The run's content-derived id (not for rejected records).")
    uri: str | None = Field(None, description="The uploaded file (or archive member) it came from.")
    field: str | None = Field(None, description="The first offending field of a rejected record.")
    reason: str | None = Field(None, description="Why it was rejected, or why it is a duplicate.")


class UploadResult(_Model):
    """Per-record statuses of an upload and their totals. Every accepted record is committed."""

    total: int
    accepted: int
    duplicates: int
    rejected: int
    uploader: str = Field(description="The API key name recorded as provenance.uploader.")
    records: list[RecordStatus]


class RunPage(_Model):
    """One page of runs in their nested record shape."""

    runs: list[RunRecord]
    count: int = Field(description="Runs on this page.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class DescribeRequest(_Model):
    """A labelled text dataset, sent inline."""

    texts: list[str] = Field(min_length=1, description="One text per row.")
    labels: list[Label] | None = Field(None, description="One label per row (null entries are unlabelled rows).")
    text_pairs: list[str] | None = Field(None, description="Second text of each row, for sentence-pair datasets.")
    name: str | None = Field(None, min_length=1, max_length=200,
                             description="Dataset name (canonicalized, e.g. SST-2 -> glue/sst2); needed to store.")
    store: bool = Field(False, description="Store the features under `name` in the knowledge base (write scope).")
    domain: str | None = Field(None, max_length=100, description="news, reviews, social...; never guessed.")
    landmark_sample: int = Field(2000, ge=0, le=10_000, description="Rows of the TF-IDF landmark (0 skips it).")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class DescribeResult(_Model):
    """Dataset meta-features, and whether they were stored."""

    name: str | None = Field(None, description="The canonical dataset name, when one was given.")
    n_rows: int
    meta: DatasetMeta
    stored: bool


class SqlRequest(_Model):
    """One read-only statement (SELECT / WITH / EXPLAIN) in DuckDB SQL over the tables runs, datasets, models."""

    query: str = Field(min_length=1, max_length=100_000)
    max_rows: int | None = Field(None, ge=1, description="At most this many rows (capped by the server's limit).")


class SqlColumn(_Model):
    name: str
    type: str = Field(description="Arrow type of the column.")


class SqlResult(_Model):
    """Rows of a query. Values are JSON: timestamps as ISO 8601, NaN and infinities as null, bytes as base64."""

    columns: list[SqlColumn]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="True when the query had more rows than were returned.")


class KbStats(_Model):
    """Counts of the knowledge base."""

    schema_version: str | None
    runs: int
    datasets: int
    models: int
    by_source: dict[str, int]
    by_task_type: dict[str, int]
    by_method: dict[str, int]
    by_model_family: dict[str, int]
    by_status: dict[str, int]
    coverage: dict[str, float]
    described_datasets: int
    registered_models: int


class Health(_Model):
    status: Literal["ok"]


class Readiness(_Model):
    status: Literal["ready", "unavailable"]
    reason: str | None = None

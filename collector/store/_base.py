"""The knowledge base: runs, datasets and models, behind one interface whatever the backend.

Backends (chosen by location, see :mod:`collector.store._uri`): one DuckDB file (:mod:`._duckdb`, the embedded
default) and a DuckLake lakehouse whose catalog lives in PostgreSQL and whose data are Parquet files
(:mod:`._ducklake`). Both are read and written through DuckDB, so the SQL below is shared; a backend provides the
connections, the schema's constraints, the write retries, the version token and the SQL sandbox's connection.

Rules every caller can rely on, on every backend:

* **Transactions.** :meth:`KnowledgeBase.append` writes one batch in one transaction: all of it or none of it.
  A process killed mid-write (even by SIGKILL) leaves the knowledge base as it was before that batch.
* **Many writers, many readers, many processes.** Writers in several processes (and threads) neither fail nor lose
  runs: the file queues them behind its lock, the lakehouse commits them optimistically and retries a transaction
  that conflicted with a concurrent one. No connection or lock outlives a call that returns.
* **Identity.** ``run_id`` identifies a run; appending a run already present is a no-op reported as a duplicate,
  also when two writers append the same run at the same time.
* **Read-only SQL.** :meth:`KnowledgeBase.sql` runs one ``SELECT`` on a separate connection that sees the knowledge
  base read-only and has every file system access (but the lakehouse's own data files), extension loading and
  configuration change disabled.
* **Change signal.** :meth:`KnowledgeBase.version` changes whenever a write commits (a cheap check).

Scans return Arrow tables in the schema of :func:`collector.schema.arrow_schema`. ``KnowledgeBase(location)`` opens
the backend that ``location`` names (as :func:`collector.store.open_kb` does).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from collector.errors import QueryRefused, QueryTimeout, StoreBusy, StoreError
from collector.schema import SCHEMA_VERSION, DatasetMeta, Model, arrow_schema, duckdb_ddl
from collector.schema import columns as record_columns
from collector.schema._derive import _column_type
from collector.store._uri import KbLocation, backend_class, parse_kb_location

#: Column that numbers a batch's rows while its first row per run is picked.
_POSITION = "__metaml_position"
#: Memory a sandboxed query may use inside DuckDB, and the size of its answer, by default.
DEFAULT_SQL_MEMORY_MB = 512
DEFAULT_SQL_MAX_BYTES = 64 * 1024 * 1024
#: Rows per Arrow batch read from a sandboxed query (the answer-size limit is checked per batch).
_SQL_BATCH_ROWS = 2048


def sandbox_settings(memory_limit_mb: int) -> tuple[str, ...]:
    """Settings of every SQL sandbox, applied after the knowledge base is attached; the last one locks them."""
    return (f"SET memory_limit = '{int(memory_limit_mb)}MB'", "SET temp_directory = ''",
            "SET enable_external_access = false", "SET autoload_known_extensions = false",
            "SET autoinstall_known_extensions = false", "SET allow_community_extensions = false",
            "SET TimeZone = 'UTC'", "SET lock_configuration = true")
#: Functions a sandboxed query may not call (name prefixes): the postgres extension's (they reach any server, and
#: write through the catalog's session), DuckLake's maintenance functions, SQL run from strings, and the lists of
#: attached databases and secrets (they show connection strings).
SANDBOX_DENIED_FUNCTIONS = ("postgres_", "ducklake_", "query", "json_execute_serialized_sql", "duckdb_databases",
                            "duckdb_secrets")
#: Read-only DuckLake functions allowed despite the prefix.
SANDBOX_ALLOWED_FUNCTIONS = frozenset({"ducklake_snapshots", "ducklake_current_snapshot", "ducklake_table_info",
                                       "ducklake_list_files", "ducklake_table_changes", "ducklake_table_insertions",
                                       "ducklake_table_deletions"})
#: Schemas or catalogs a sandboxed query may not name (prefixes): the lakehouse's catalog database itself.
SANDBOX_DENIED_CATALOGS = ("__ducklake_metadata",)
_T = TypeVar("_T")

_DATASET_FIELDS = list(DatasetMeta.model_fields)
_MODEL_FIELDS = [name for name in Model.model_fields if name not in ("id", "revision")]
#: Up to this many rows, an append with a primary key first inserts every run with a plain ``INSERT`` (a group of
#: single-run uploads: about a third of the transaction's cost less than ``INSERT OR IGNORE``), and only when one is
#: present runs the transaction again skipping those; a larger batch (a re-ingested file) skips them at once.
OPTIMISTIC_ROWS = 1_000
#: Inserts the runs of the view ``{source}`` (``{verb}``: ``INSERT``, or ``INSERT OR IGNORE`` to skip the runs present).
_PLAIN_INSERT = "{verb} INTO runs BY NAME SELECT * FROM {source}"
#: The same with the runs' missing features filled from the side tables (as ``_attach`` does).
_ATTACHING_INSERT = (
    "{verb} INTO runs BY NAME SELECT f.* REPLACE ("
    + ", ".join([f"coalesce(f.dataset_meta_{c}, d.{c}) AS dataset_meta_{c}" for c in _DATASET_FIELDS]
                + [f"coalesce(f.model_{c}, m.{c}) AS model_{c}" for c in _MODEL_FIELDS])
    + ") FROM {source} f LEFT JOIN datasets d ON d.name = f.dataset_name LEFT JOIN models m ON m.model_id = f.model_id")


def _side_table_ddl(table: str, key: str, model: type, fields: Sequence[str], extra: str = "", *,
                    primary_key: bool = True) -> str:
    cols = [f"{key} VARCHAR{' PRIMARY KEY' if primary_key else ''}"]
    cols += [f"{name} {_column_type(model.model_fields[name].annotation)[1]}" for name in fields]
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {', '.join(cols)}{extra}\n)"


@dataclass
class AppendResult:
    """What one :meth:`KnowledgeBase.append` did."""

    inserted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


@dataclass
class SqlResult:
    """Rows of a read-only query, cut at ``max_rows`` (``truncated`` says whether more existed)."""

    table: pa.Table
    truncated: bool


def first_rows(batch: pa.Table) -> pa.Table:
    """``batch`` without the rows that repeat an earlier row's ``run_id`` (order kept)."""
    if pc.count_distinct(batch.column("run_id")).as_py() == batch.num_rows:
        return batch  # no run repeated (the usual batch): nothing to group
    numbered = batch.append_column(_POSITION, pa.array(range(batch.num_rows), pa.int64()))
    first = numbered.group_by("run_id", use_threads=False).aggregate([(_POSITION, "min")]).column(f"{_POSITION}_min")
    return batch.take(pc.take(first, pc.sort_indices(first)))


class KnowledgeBase(ABC):
    """A knowledge base (see the module docstring for the rules).

    ``KnowledgeBase(location, lock_timeout=...)`` returns the backend's store for ``location``: a DuckDB file path
    (or ``duckdb:PATH``), or a ``ducklake:postgres:...`` lakehouse URI.

    Args:
        location: where the knowledge base lives; created with its tables on the first write.
        lock_timeout: seconds an operation waits for the knowledge base (another writer, conflicting commits) before
            :class:`StoreBusy`.
    """

    #: Whether tables declare ``run_id`` and the side tables' keys as primary keys.
    primary_keys: bool = True

    def __new__(cls, location: str | Path | None = None, **options: Any) -> KnowledgeBase:
        if cls is KnowledgeBase:
            if location is None:
                raise TypeError("KnowledgeBase() needs a location")
            cls = backend_class(location)
        return super().__new__(cls)

    def __init__(self, location: str | Path, *, lock_timeout: float = 300.0) -> None:
        self.where: KbLocation = parse_kb_location(location)
        self.lock_timeout = lock_timeout

    @property
    def location(self) -> str:
        """The location this store was opened with (``KnowledgeBase(kb.location)`` opens it again)."""
        return self.where.text

    @property
    def home(self) -> Path:
        """The local directory of the knowledge base's companions (API keys, rejects reports, model artifacts)."""
        return self.where.home

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where.redacted!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _reopen, (self.location, self.lock_timeout)

    def __str__(self) -> str:
        return self.where.redacted

    # -- what a backend provides -----------------------------------------------------------------------------------

    @abstractmethod
    def _connect(self, *, write: bool) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A connection whose default catalog is the knowledge base (tables created when ``write``).

        Raises:
            KnowledgeBaseNotFound: reading a knowledge base that does not exist.
            StoreBusy: it could not be had within ``lock_timeout``.
            StoreError: it cannot be opened.
        """

    @abstractmethod
    def _sandbox(self, memory_limit_mb: int) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A connection for :meth:`sql` that sees the knowledge base read-only, with :func:`sandbox_settings`."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the knowledge base has been created."""

    @abstractmethod
    def version(self) -> str | None:
        """A token that changes whenever a write commits (None while the knowledge base does not exist)."""

    def _conflicted(self, error: duckdb.Error) -> bool:
        """Whether ``error`` aborted a transaction that may succeed when run again (optimistic backends)."""
        return False

    def _guard_append(self, con: duckdb.DuckDBPyConnection) -> None:  # noqa: B027 - optional hook
        """Called inside an append that inserts runs: make concurrent appends conflict (optimistic backends)."""

    def _after_append(self, inserted: int) -> None:  # noqa: B027 - optional hook
        """Called after an append committed ``inserted`` new runs."""

    def compact(self) -> dict[str, int]:
        """Reorganize storage (the lakehouse merges small files); returns what was done."""
        return {}

    def keep_open(self, idle_s: float = 1.0) -> None:  # noqa: B027 - optional
        """Ask this process to keep the knowledge base open between writes (a process that writes often: a
        server's group writer), until ``idle_s`` seconds pass without a write; :meth:`close` ends it. The lakehouse
        always keeps its connection; a DuckDB file gives way to other processes as soon as they wait for it."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what this process keeps open for this location (the lakehouse's connections; any later call
        opens them again). Nothing is kept open for a DuckDB file."""

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, called again (with a growing random pause) while it fails with an error that the backend
        says a concurrent commit caused.

        Raises:
            StoreBusy: it still conflicted after ``lock_timeout`` seconds.
        """
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                return attempt()
            except duckdb.Error as e:
                if not self._conflicted(e):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StoreBusy(f"knowledge base {self} kept conflicting with concurrent writers for "
                                    f"{self.lock_timeout:.0f}s; retry later") from e
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.25)

    def _write(self, work: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        """Run ``work`` in one write transaction (again, from the start, after a conflict with a concurrent commit).

        Raises:
            StoreBusy: the knowledge base could not be had, or kept conflicting, for ``lock_timeout`` seconds.
            StoreError: it failed; nothing of it was stored.
        """
        def attempt() -> _T:
            with self._connect(write=True) as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    out = work(con)
                    con.execute("COMMIT")
                    return out
                except duckdb.Error:
                    with suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    raise

        try:
            return self._retrying(attempt)
        except duckdb.Error as e:
            raise StoreError(f"write to {self} failed and was rolled back: {_first_line(e)}") from e

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the tables, or add the columns a newer schema version introduced (additive migration)."""
        pk = self.primary_keys
        con.execute(f"CREATE TABLE IF NOT EXISTS kb_meta (key VARCHAR{' PRIMARY KEY' if pk else ''}, value VARCHAR)")
        con.execute(duckdb_ddl("runs", primary_key=pk))
        con.execute(_side_table_ddl("datasets", "name", DatasetMeta, _DATASET_FIELDS, ", fingerprint VARCHAR, "
                                    "source VARCHAR, computed_at TIMESTAMPTZ", primary_key=pk))
        con.execute(_side_table_ddl("models", "model_id", Model, _MODEL_FIELDS, ", feature_source VARCHAR",
                                    primary_key=pk))
        existing = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE runs)").fetchall()}
        for c in record_columns():
            if c.name not in existing:
                con.execute(f"ALTER TABLE runs ADD COLUMN {c.name} {c.duckdb}")
        for key, value in (("schema_version", SCHEMA_VERSION), ("created_at", datetime.now(UTC).isoformat()),
                           ("appended_at", "")):
            con.execute("INSERT INTO kb_meta SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM kb_meta WHERE key = ?)",
                        [key, value, key])
        con.execute("UPDATE kb_meta SET value = ? WHERE key = 'schema_version' AND value <> ?",
                    [SCHEMA_VERSION, SCHEMA_VERSION])

    def create(self) -> KnowledgeBase:
        """Create the knowledge base and its tables if missing (idempotent)."""
        with self._connect(write=True):
            pass
        return self

    # -- writes ----------------------------------------------------------------------------------------------------

    def append(self, batch: pa.Table, *, attach_features: bool = False,
               models: Mapping[str, Mapping[str, Any]] | None = None) -> AppendResult:
        """Insert the runs of ``batch`` that are not stored yet, in one transaction.

        This is the one place duplicates are decided on the ingest path: callers pass every row they read (a run
        repeated within the batch included). The first row of each run id is kept (an Arrow group-by over the
        batch); of those, the ones the knowledge base holds already are found in the same transaction that inserts
        the rest.

        Args:
            batch: rows in :func:`arrow_schema` (extra columns are refused, missing ones are null).
            attach_features: fill the inserted runs' missing dataset meta-features and model features from the
                ``datasets`` and ``models`` tables (as :meth:`attach_features` does for every run).
            models: model id -> features (``collector.enrich.model_features``) to add to the ``models`` table where
                it has no row for the id yet, in the same transaction (before the features are attached).

        Returns:
            The ids inserted, and one id per row that was not (already present, or repeating an earlier row of the
            batch), both in batch order.
        """
        result = AppendResult()
        if batch.num_rows == 0:
            return result
        ids = batch.column("run_id").to_pylist()
        batch = first_rows(batch)

        insert = _ATTACHING_INSERT if attach_features else _PLAIN_INSERT

        def keyed(con: duckdb.DuckDBPyConnection, verb: str = "INSERT OR IGNORE") -> set[str]:
            """With a primary key: one statement inserts the runs absent and says which (a group of single-run
            uploads spends most of its transaction on per-statement work over the 101 columns); ``verb`` ``INSERT``:
            every run, failing on one that is present."""
            con.register("incoming", batch)
            try:
                if models:  # before the insert that attaches their features (kept when no run is new)
                    self._add_models(con, models)
                inserted = {r[0] for r in con.execute(
                    insert.format(verb=verb, source="incoming") + " RETURNING run_id").fetchall()}
                if inserted:
                    self._guard_append(con)
                return inserted
            finally:
                con.unregister("incoming")

        def probed(con: duckdb.DuckDBPyConnection) -> set[str]:
            """Without one (the lakehouse): the runs present are found first, the others inserted."""
            con.register("incoming", batch)
            con.register("incoming_ids", batch.select(["run_id"]))  # a scan of every column costs ~3 ms more
            try:
                present = {r[0] for r in con.execute(
                    "SELECT i.run_id FROM incoming_ids i JOIN runs r ON r.run_id = i.run_id").fetchall()}
                if len(present) < batch.num_rows:
                    # the runs this transaction found absent (writers are serialized: lock or conflicting guard)
                    fresh = batch if not present else batch.filter(
                        pc.invert(pc.is_in(batch.column("run_id"), value_set=pa.array(sorted(present)))))
                    if models:
                        self._add_models(con, models)
                    if present:
                        con.register("fresh", fresh)
                        con.execute(insert.format(verb="INSERT", source="fresh"))
                        con.unregister("fresh")
                    else:  # the common case: every run is new, ``incoming`` is what to insert
                        con.execute(insert.format(verb="INSERT", source="incoming"))
                    self._guard_append(con)
                return set(ids) - present
            finally:
                con.unregister("incoming")
                con.unregister("incoming_ids")

        if not self.primary_keys:
            fresh = self._write(probed)  # the ids inserted
        elif batch.num_rows <= OPTIMISTIC_ROWS:  # most small batches hold only new runs: a plain insert, and on a
            try:                                 # run present, the transaction again with INSERT OR IGNORE
                fresh = self._write(lambda con: keyed(con, "INSERT"))
            except StoreError as e:
                if not isinstance(e.__cause__, duckdb.ConstraintException):
                    raise
                fresh = self._write(keyed)
        else:
            fresh = self._write(keyed)
        for rid in ids:
            if rid in fresh:
                result.inserted.append(rid)
                fresh.discard(rid)
            else:
                result.duplicates.append(rid)
        self._after_append(len(result.inserted))
        return result

    def upsert_datasets(self, metas: Mapping[str, DatasetMeta], *, source: str, fingerprints: Mapping[str, str]
                        | None = None) -> int:
        """Store dataset meta-features by canonical dataset name (replacing earlier values), then attach them to
        the runs of those datasets. Returns the number of datasets written."""
        rows = []
        now = datetime.now(UTC)
        for name, meta in metas.items():
            row = meta.model_dump()
            row.update(name=name, source=source, computed_at=now, fingerprint=(fingerprints or {}).get(name))
            rows.append(row)
        if not rows:
            return 0
        cols = ["name", *_DATASET_FIELDS, "fingerprint", "source", "computed_at"]
        table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
        self._replace_rows("datasets", "name", cols, table)
        return len(rows)

    def upsert_models(self, features: Mapping[str, Mapping[str, Any]], *, feature_source: str = "registry") -> int:
        """Store model features by canonical model id, then fill the runs' missing model features from them."""
        if not features:
            return 0
        cols = ["model_id", *_MODEL_FIELDS, "feature_source"]
        table = self._models_table({mid: {"feature_source": feature_source, **f} for mid, f in features.items()})
        self._replace_rows("models", "model_id", cols, table)
        return table.num_rows

    @staticmethod
    def _models_table(features: Mapping[str, Mapping[str, Any]]) -> pa.Table:
        """Rows of the ``models`` table for ``features`` (model id -> features)."""
        cols = ["model_id", *_MODEL_FIELDS, "feature_source"]
        rows = [{"model_id": mid, **{c: f.get(c) for c in _MODEL_FIELDS}, "feature_source": f.get(
            "feature_source", "registry")} for mid, f in features.items()]
        schema = pa.schema([pa.field(c, _column_type(Model.model_fields[c].annotation)[0]) if c in Model.model_fields
                            else pa.field(c, pa.string()) for c in cols])
        return pa.Table.from_pylist(rows, schema=schema)

    def _add_models(self, con: duckdb.DuckDBPyConnection, features: Mapping[str, Mapping[str, Any]]) -> None:
        """Insert the models of ``features`` the ``models`` table has no row for (inside a write)."""
        cols = ", ".join(["model_id", *_MODEL_FIELDS, "feature_source"])
        con.register("incoming_models", self._models_table(features))
        try:
            con.execute(f"INSERT INTO models ({cols}) SELECT {cols} FROM incoming_models "
                        "WHERE model_id NOT IN (SELECT model_id FROM models)")
        finally:
            con.unregister("incoming_models")

    def _replace_rows(self, table: str, key: str, cols: Sequence[str], rows: pa.Table) -> None:
        """Replace the rows of side table ``table`` that ``rows`` names by ``key``, then attach them to the runs."""
        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.register("incoming", rows)
            try:
                con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM incoming)")
                con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM incoming")
                self._attach(con, table)
            finally:
                con.unregister("incoming")

        self._write(work)

    def attach_features(self) -> None:
        """Fill the runs' missing dataset meta-features and model features from the datasets and models tables."""
        def work(con: duckdb.DuckDBPyConnection) -> None:
            self._attach(con, "datasets")
            self._attach(con, "models")

        self._write(work)

    @staticmethod
    def _attach(con: duckdb.DuckDBPyConnection, table: str) -> None:
        """Fill missing run features from ``table``; only runs that gain a value are rewritten."""
        if table == "datasets":
            pairs = [(f"dataset_meta_{f}", f"d.{f}") for f in _DATASET_FIELDS]
            source, join = "datasets d", "runs.dataset_name = d.name"
        else:
            pairs = [(f"model_{f}", f"m.{f}") for f in _MODEL_FIELDS]
            source, join = "models m", "runs.model_id = m.model_id"
        sets = ", ".join(f"{col} = COALESCE(runs.{col}, {val})" for col, val in pairs)
        gains = " OR ".join(f"(runs.{col} IS NULL AND {val} IS NOT NULL)" for col, val in pairs)
        con.execute(f"UPDATE runs SET {sets} FROM {source} WHERE {join} AND ({gains})")

    # -- reads -----------------------------------------------------------------------------------------------------

    def count(self) -> int:
        with self._connect(write=False) as con:
            return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored."""
        if not ids or not self.exists():
            return set()
        with self._connect(write=False) as con:
            con.register("probe", pa.table({"run_id": pa.array(list(ids), pa.string())}))
            return {r[0] for r in con.execute("SELECT run_id FROM runs WHERE run_id IN (SELECT run_id FROM probe)"
                                              ).fetchall()}

    def scan(
        self,
        columns: Sequence[str] | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
        after: str | None = None,
        limit: int | None = None,
        ordered: bool = False,
    ) -> pa.Table:
        """Read runs as Arrow.

        Args:
            columns: column names to return (default: all), validated against the schema.
            filters: column -> value, or column -> list of values (any of).
            ranges: column -> (low, high) inclusive bounds, either may be None.
            after: only runs whose ``run_id`` sorts after this one (keyset pagination); results are then ordered by
                ``run_id``.
            limit: at most this many rows.
            ordered: order by ``run_id`` (also without ``after`` or ``limit``): the same rows in the same order
                whatever the backend and however they were written (a parallel insert stores rows in any order).
        """
        known = {c.name for c in record_columns()}
        cols = list(columns) if columns else [c.name for c in record_columns()]
        for name in [*cols, *(filters or {}), *(ranges or {})]:
            if name not in known:
                raise StoreError(f"unknown column {name!r}")
        where, params = [], []
        for name, value in (filters or {}).items():
            if isinstance(value, (list, tuple, set)):
                where.append(f"{name} IN ({', '.join('?' for _ in value)})")
                params.extend(value)
            else:
                where.append(f"{name} = ?")
                params.append(value)
        for name, (lo, hi) in (ranges or {}).items():
            if lo is not None:
                where.append(f"{name} >= ?")
                params.append(lo)
            if hi is not None:
                where.append(f"{name} <= ?")
                params.append(hi)
        if after is not None:
            where.append("run_id > ?")
            params.append(after)
        query = f"SELECT {', '.join(cols)} FROM runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        if ordered or after is not None or limit is not None:
            query += " ORDER BY run_id"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._connect(write=False) as con:
            table = con.sql(query, params=params).to_arrow_table() if params else con.sql(query).to_arrow_table()
        schema = pa.schema([arrow_schema().field(c) for c in cols])
        return table.cast(schema)

    def to_pandas(self, columns: Sequence[str] | None = None, **kwargs: Any):
        """:meth:`scan` as a pandas DataFrame."""
        return self.scan(columns, **kwargs).to_pandas()

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run as a flat row, or None."""
        rows = self.scan(filters={"run_id": run_id}).to_pylist()
        return rows[0] if rows else None

    def table(self, name: str) -> pa.Table:
        """A side table (``datasets`` or ``models``) as Arrow."""
        if name not in ("datasets", "models"):
            raise StoreError(f"unknown table {name!r}")
        with self._connect(write=False) as con:
            return con.sql(f"SELECT * FROM {name} ORDER BY 1").to_arrow_table()

    def stats(self) -> dict[str, Any]:
        """Counts by source, task type, method, model family and status; plus feature coverage."""
        with self._connect(write=False) as con:
            def group(col: str) -> dict[str, int]:
                rows = con.execute(f"SELECT coalesce({col}, '(none)'), count(*) FROM runs GROUP BY 1 ORDER BY 2 DESC"
                                   ).fetchall()
                return {str(k): int(v) for k, v in rows}

            total = int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
            n_datasets, n_models = con.execute(
                "SELECT count(DISTINCT dataset_name), count(DISTINCT model_id) FROM runs").fetchone()
            coverage = con.execute(
                "SELECT avg((dataset_meta_n_classes IS NOT NULL)::INT), avg((dataset_meta_landmark_tfidf_lr IS NOT "
                "NULL)::INT), avg((model_n_params IS NOT NULL)::INT), avg((outcome_runtime_s IS NOT NULL)::INT), "
                "avg((coalesce(len(outcome_curve), 0) > 0)::INT) FROM runs").fetchone()
            meta = dict(con.execute("SELECT key, value FROM kb_meta").fetchall())
            return {
                "path": str(self),
                "schema_version": meta.get("schema_version"),
                "runs": total,
                "datasets": int(n_datasets),
                "models": int(n_models),
                "by_source": group("provenance_source"),
                "by_task_type": group("task_type"),
                "by_method": group("method_name"),
                "by_model_family": group("model_family"),
                "by_status": group("outcome_status"),
                "coverage": dict(zip(
                    ["dataset_n_classes", "dataset_landmark", "model_n_params", "runtime", "learning_curve"],
                    [round(float(x or 0.0), 4) for x in coverage], strict=True)),
                "described_datasets": int(con.execute("SELECT count(*) FROM datasets").fetchone()[0]),
                "registered_models": int(con.execute("SELECT count(*) FROM models").fetchone()[0]),
            }

    def sql(self, query: str, *, max_rows: int = 10_000, timeout_s: float = 30.0,
            memory_limit_mb: int = DEFAULT_SQL_MEMORY_MB, max_bytes: int | None = DEFAULT_SQL_MAX_BYTES) -> SqlResult:
        """Run one read-only statement (``SELECT``/``WITH``/``EXPLAIN``) against the knowledge base.

        The statement runs on its own connection that sees the knowledge base read-only, with file access (but the
        lakehouse's own data files), extension loading, spilling to disk and configuration changes disabled.
        ``EXPLAIN [ANALYZE] stmt`` is allowed when ``stmt`` is. Functions and views that would show the server's
        paths, settings or connection strings, reach outside the knowledge base, or run SQL given as text
        (``duckdb_databases``, ``current_setting``, ``query``, ``postgres_*``...) are refused, and error messages never
        carry the server's paths.

        Args:
            query: one statement.
            max_rows: rows kept at most (``truncated`` says whether there were more).
            timeout_s: the query is interrupted after this many seconds.
            memory_limit_mb: memory the query may use inside DuckDB.
            max_bytes: the answer's size (its Arrow buffers) at most; rows past it are cut (``truncated``).

        Raises:
            QueryRefused: the statement is not a read, several statements were given, it touches files or hidden
                functions, it failed, needed more memory than allowed, or its first row alone passes ``max_bytes``.
            QueryTimeout: it ran past ``timeout_s``.
        """
        statements = _parse(query)
        if len(statements) != 1:
            raise QueryRefused(f"one statement at a time, got {len(statements)}")
        _check_read_only(query, statements[0])
        self._check_reach(query)
        scrub = _path_scrubber(self.home)
        with self._sandbox(memory_limit_mb) as con:
            timer = threading.Timer(timeout_s, con.interrupt)
            timer.start()
            try:
                reader = con.sql(query).to_arrow_reader(batch_size=min(max_rows + 1, _SQL_BATCH_ROWS))
                batches, n, size, cut = [], 0, 0, False
                for batch in reader:
                    if max_bytes is not None and size + batch.nbytes > max_bytes:
                        batch = batch.slice(0, rows_within(batch, max_bytes - size))
                        cut = True
                        if n == 0 and batch.num_rows == 0:
                            raise QueryRefused(f"the answer's first row alone is larger than the answer limit of "
                                               f"{max_bytes:,} bytes; select less")
                    batches.append(batch)
                    n += batch.num_rows
                    size += batch.nbytes
                    if n > max_rows or cut:
                        break
                schema = reader.schema
            except duckdb.InterruptException as e:
                raise QueryTimeout(f"query interrupted after {timeout_s:g}s") from e
            except duckdb.OutOfMemoryException as e:
                raise QueryRefused(f"the query needs more than the {int(memory_limit_mb):,} MB of memory a query "
                                   "may use") from e
            except duckdb.PermissionException as e:
                raise QueryRefused(f"query refused: {scrub(_first_line(e))}") from e
            except duckdb.Error as e:
                if not timer.is_alive():
                    raise QueryTimeout(f"query interrupted after {timeout_s:g}s") from e
                raise QueryRefused(f"query failed: {scrub(_first_line(e))}") from e
            finally:
                timer.cancel()
        table = pa.Table.from_batches(batches, schema=schema)
        return SqlResult(table.slice(0, max_rows), truncated=cut or table.num_rows > max_rows)

    def _check_reach(self, query: str) -> None:
        """Refuse a query that calls a function of :data:`SANDBOX_DENIED_FUNCTIONS` or names a catalog of
        :data:`SANDBOX_DENIED_CATALOGS` (checked on its syntax tree, subqueries and CTEs included).

        Raises:
            QueryRefused: it does, or its syntax tree cannot be read.
        """
        select = _EXPLAIN.sub("", query, count=1)
        tree = json.loads(duckdb.connect(":memory:").execute("SELECT json_serialize_sql(?)", [select]).fetchone()[0])
        if tree.get("error"):
            raise QueryRefused(f"query refused: it cannot be checked ({tree.get('error_message')})")
        for node in _nodes(tree):
            name = str(node.get("function_name", "")).lower()
            if name.startswith(SANDBOX_DENIED_FUNCTIONS) and name not in SANDBOX_ALLOWED_FUNCTIONS:
                raise QueryRefused(f"query refused: {name}() reaches outside the knowledge base")
            for key in ("catalog_name", "schema_name", "catalog", "schema"):
                value = node.get(key)
                if isinstance(value, str) and value.lower().startswith(SANDBOX_DENIED_CATALOGS):
                    raise QueryRefused(f"query refused: {value} is not part of the knowledge base")

    def export(self, dest: str | Path, *, fmt: str = "parquet", partition_by: Sequence[str] = ()) -> Path:
        """Write every run to ``dest``.

        Args:
            dest: a file (``parquet``, ``csv``, ``jsonl``) or, with ``partition_by``, a directory of hive-partitioned
                Parquet files (``provenance_source=transfergraph/data_0.parquet``).
            fmt: parquet, csv or jsonl (see ``collector.formats`` for the shapes).
            partition_by: columns to partition a Parquet export by.
        """
        dest = Path(dest)
        if partition_by and fmt != "parquet":
            raise StoreError("partitioned export is only available for parquet")
        known = {c.name for c in record_columns()}
        for name in partition_by:
            if name not in known:
                raise StoreError(f"unknown partition column {name!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._connect(write=False) as con:
            if fmt == "parquet":
                opts = "FORMAT parquet, COMPRESSION zstd"
                if partition_by:
                    opts += f", PARTITION_BY ({', '.join(partition_by)}), OVERWRITE_OR_IGNORE true"
                con.execute(f"COPY (SELECT * FROM runs ORDER BY run_id) TO '{_quote(str(dest))}' ({opts})")
            elif fmt == "csv":
                select = ", ".join(_csv_expression(c) for c in record_columns())
                con.execute(f"COPY (SELECT {select} FROM runs ORDER BY run_id) TO '{_quote(str(dest))}' "
                            "(FORMAT csv, HEADER true)")
            else:
                raise StoreError(f"export format {fmt!r} is handled by collector.formats, not the store")
        return dest

    def iter_batches(self, batch_size: int = 50_000) -> Iterator[pa.RecordBatch]:
        """Every run, as Arrow record batches in :func:`arrow_schema` (for streaming exports)."""
        with self._connect(write=False) as con:
            reader = con.sql("SELECT * FROM runs ORDER BY run_id").to_arrow_reader(batch_size)
            schema = arrow_schema()
            for batch in reader:
                yield batch.cast(schema)


def _csv_expression(c: Any) -> str:
    """How a column is written to canonical CSV: nested values as JSON text, timestamps as ISO 8601."""
    if not c.json and c.duckdb.endswith(("]", ")")):
        return f"to_json({c.name}) AS {c.name}"
    if c.duckdb == "TIMESTAMPTZ":
        return f"strftime({c.name}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {c.name}"
    return c.name


def _reopen(location: str, lock_timeout: float) -> KnowledgeBase:
    """Unpickle a store: open its location again (connections are never pickled)."""
    return KnowledgeBase(location, lock_timeout=lock_timeout)


_EXPLAIN = re.compile(r"^\s*EXPLAIN\s*(\([^)]*\))?\s*(ANALY[SZ]E\s+)?", re.IGNORECASE)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside ``tree`` (depth first)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


#: Names a sandboxed query may not use: they show the server's paths and settings, or run SQL given as text.
_HIDDEN_TABLES = frozenset({
    "duckdb_databases", "pragma_database_list", "duckdb_settings", "pg_settings", "duckdb_extensions",
    "duckdb_extension_repositories", "duckdb_temporary_files", "duckdb_secrets", "duckdb_secret_types",
    "duckdb_logs", "duckdb_log_contexts", "duckdb_external_file_cache",
})
_HIDDEN_FUNCTIONS = frozenset({
    "current_setting", "getenv", "getvariable", "which_secret", "query", "query_table",
    "json_execute_serialized_sql",
})
_IDENTIFIER_TOKENS = {duckdb.token_type.identifier, duckdb.token_type.keyword}


def _tokens(query: str) -> list[tuple[str, Any]]:
    """(text, type) of each token of ``query``, comments left out; quoted identifiers unquoted and lower-cased."""
    raw = duckdb.tokenize(query)
    out = []
    for i, (pos, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(query)
        if kind == duckdb.token_type.comment:
            continue
        text = query[pos:end].strip()
        if kind in _IDENTIFIER_TOKENS:
            text = text.strip('"').lower()
        out.append((text, kind))
    return out


def _check_read_only(query: str, statement: Any) -> None:
    """Refuse what a sandboxed query may not do: anything but a read, and the hidden names (see ``sql``)."""
    kind = statement.type.name
    if kind == "EXPLAIN":
        inner = _explained(query)
        inner_statements = _parse(inner) if inner.strip() else []
        if len(inner_statements) != 1:
            raise QueryRefused("EXPLAIN needs one statement to explain")
        inner_kind = inner_statements[0].type.name
        if inner_kind != "SELECT":
            raise QueryRefused(f"only read-only queries are allowed (SELECT, WITH, EXPLAIN of a read); got EXPLAIN "
                               f"of {inner_kind}")
    elif kind != "SELECT":
        raise QueryRefused(f"only read-only queries are allowed (SELECT, WITH, EXPLAIN); got {kind}")
    tokens = _tokens(query)
    for i, (text, token_kind) in enumerate(tokens):
        if token_kind not in _IDENTIFIER_TOKENS:
            continue
        called = i + 1 < len(tokens) and tokens[i + 1][0] == "("
        if text in _HIDDEN_TABLES or (called and text in _HIDDEN_FUNCTIONS):
            raise QueryRefused(f"{text} is not available to queries over the API or the command line sandbox: it "
                               "shows the server's files and settings, or runs SQL given as text")


def _explained(query: str) -> str:
    """The statement ``EXPLAIN [ANALYZE] [(options)] stmt`` explains (``stmt``), as text."""
    raw = [(pos, kind) for pos, kind in duckdb.tokenize(query) if kind != duckdb.token_type.comment]
    i = 1  # raw[0] is EXPLAIN
    if i < len(raw) and query[raw[i][0]:].lower().startswith(("analyze", "analyse")):
        i += 1
    if i < len(raw) and query[raw[i][0]] == "(":
        depth = 0
        while i < len(raw):
            token = query[raw[i][0]]
            depth += token == "("
            depth -= token == ")"
            i += 1
            if depth == 0:
                break
    return query[raw[i][0]:] if i < len(raw) else ""


def rows_within(data: pa.Table | pa.RecordBatch, budget: int, at_most: int | None = None) -> int:
    """How many of the first rows of ``data`` (at most ``at_most``) take at most ``budget`` bytes of Arrow buffers."""
    lo, hi = 0, data.num_rows if at_most is None else min(at_most, data.num_rows)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if data.slice(0, mid).nbytes <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _path_scrubber(home: Path) -> Any:
    """A function that replaces the server's paths (the knowledge base's folder, home, working and temporary
    folders) in a message with ``…``."""
    import os
    import tempfile

    candidates = {str(home), str(home.resolve()), str(home.resolve().parent), os.path.expanduser("~"), os.getcwd(),
                  tempfile.gettempdir()}
    found = sorted((c for c in candidates if c and c.strip("/") and c not in (".", "")), key=len, reverse=True)

    def scrub(message: str) -> str:
        for c in found:
            message = message.replace(c, "…")
        return message

    return scrub


def _parse(query: str) -> list[Any]:
    try:
        return duckdb.connect(":memory:").extract_statements(query)
    except duckdb.Error as e:
        raise QueryRefused(f"cannot parse query: {_first_line(e)}") from e


def _quote(s: str) -> str:
    return s.replace("'", "''")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

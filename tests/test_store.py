"""The knowledge base, on every backend (a DuckDB file, and a DuckLake lakehouse on a real PostgreSQL server):
transactions, dedup, scans, exports that round-trip, several writer processes, SIGKILL mid-ingest, the read-only SQL
sandbox, and the change signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from factories import record, write_jsonl

from collector.errors import KnowledgeBaseNotFound, QueryRefused, QueryTimeout, StoreError
from collector.formats.canonical import write_jsonl as export_jsonl
from collector.ingest import ingest_path
from collector.schema import RunRecord, arrow_schema, to_row
from collector.store import KnowledgeBase

METAML = [sys.executable, "-m", "service.cli"]


def _batch(ids: range) -> pa.Table:
    return pa.Table.from_pylist([to_row(RunRecord.model_validate(record(i))) for i in ids], schema=arrow_schema())


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("run_id")


@pytest.mark.parametrize("optimistic_rows", [1_000, 0])
def test_append_counts_inserted_and_duplicates(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch,
                                               optimistic_rows: int) -> None:
    """A first append inserts all; an overlapping one inserts only the new ids and reports the rest as duplicates,
    whether a small batch is first inserted whole (and, a run being present, again skipping those) or skips the runs
    present at once."""
    from collector.store import _base

    monkeypatch.setattr(_base, "OPTIMISTIC_ROWS", optimistic_rows)
    first = kb.append(_batch(range(10)))
    assert len(first.inserted) == 10 and not first.duplicates
    second = kb.append(_batch(range(5, 15)))
    assert len(second.inserted) == 5 and len(second.duplicates) == 5
    assert kb.count() == 15


def test_append_decides_every_duplicate_once(kb: KnowledgeBase) -> None:
    """A run repeated within one batch is stored once, from its first row (its provenance kept); the answer names
    one id per row, in batch order: the first row inserted, each repeat and each stored run a duplicate."""
    rows = [to_row(RunRecord.model_validate(record(i, provenance__locator=f"row {n}")))
            for n, i in enumerate([1, 2, 1, 3, 2, 1])]
    result = kb.append(pa.Table.from_pylist(rows, schema=arrow_schema()))
    ids = [r["run_id"] for r in rows]
    assert result.inserted == [ids[0], ids[1], ids[3]]
    assert result.duplicates == [ids[2], ids[4], ids[5]]
    stored = {r["run_id"]: r["provenance_locator"] for r in kb.scan(["run_id", "provenance_locator"]).to_pylist()}
    assert stored == {ids[0]: "row 0", ids[1]: "row 1", ids[3]: "row 3"}
    again = kb.append(pa.Table.from_pylist(rows[:2], schema=arrow_schema()))
    assert (again.inserted, again.duplicates) == ([], ids[:2])


def test_append_is_all_or_nothing(kb: KnowledgeBase) -> None:
    """A batch whose last row cannot be stored leaves the knowledge base exactly as it was."""
    kb.append(_batch(range(3)))
    good = _batch(range(100, 110)).to_pylist()
    good[-1]["provenance_ingested_at"] = "not a timestamp"
    bad = pa.Table.from_pylist(good, schema=pa.schema(
        [f if f.name != "provenance_ingested_at" else pa.field(f.name, pa.string()) for f in arrow_schema()]))
    with pytest.raises(StoreError, match="rolled back"):
        kb.append(bad)
    assert kb.count() == 3


def test_scan_filters_ranges_and_keyset_pagination(kb: KnowledgeBase) -> None:
    """Filters, inclusive ranges and run_id pagination return exactly the matching runs, each once; an ordered scan
    returns them by run id whatever order they were written in."""
    kb.append(_batch(range(30, 50)))
    kb.append(_batch(range(30)))
    assert kb.scan(filters={"hparams_seed": [1, 2, 3]}).num_rows == 3
    scores = kb.scan(["outcome_score"], ranges={"outcome_score": (0.51, 0.52)}).column(0).to_pylist()
    assert scores and all(0.51 <= s <= 0.52 for s in scores)
    seen, after = [], None
    while True:
        page = kb.scan(["run_id"], after=after, limit=7)
        if page.num_rows == 0:
            break
        seen += page.column(0).to_pylist()
        after = seen[-1]
    assert len(seen) == 50 == len(set(seen)) and seen == sorted(seen)
    assert kb.scan(["run_id"], ordered=True).column(0).to_pylist() == seen
    assert kb.scan(["run_id"], filters={"hparams_seed": [3, 1, 2]}, ordered=True).column(0).to_pylist() == sorted(
        kb.scan(["run_id"], filters={"hparams_seed": [1, 2, 3]}).column(0).to_pylist())
    with pytest.raises(StoreError, match="unknown column"):
        kb.scan(["nope"])


def test_reading_a_missing_kb_says_how_to_create_it(make_kb: Callable[..., KnowledgeBase]) -> None:
    """Opening a knowledge base that does not exist for reading fails with a message naming `metaml ingest`; it is
    reported missing, has no version, and reading it created nothing."""
    kb = make_kb("none")
    with pytest.raises(KnowledgeBaseNotFound, match="metaml ingest"):
        kb.count()
    with pytest.raises(KnowledgeBaseNotFound):
        kb.sql("SELECT 1")
    assert not kb.exists() and kb.version() is None


@pytest.mark.parametrize("fmt", ["parquet-partitioned", "parquet", "csv", "jsonl"])
def test_export_import_round_trip_loses_nothing(kb: KnowledgeBase, make_kb: Callable[..., KnowledgeBase],
                                                tmp_path: Path, fmt: str) -> None:
    """Exporting every run and importing it into a new knowledge base gives back identical rows, every column."""
    recs = [record(i) for i in range(30)]
    recs[3] = record(3, outcome__status="failed", outcome__error_kind="oom", outcome__score=None,
                     outcome__error_message="CUDA out of memory")
    recs[4] = record(4, provenance__source="transfergraph", method__config={"template": "*cls**sent_0*_It_was*mask*."})
    recs[5] = record(5, task__primary_metric="mae", outcome__score=75.2, outcome__metrics={"mae": 75.2})
    ingest_path(kb, write_jsonl(tmp_path / "in.jsonl", recs))
    if fmt == "parquet-partitioned":
        dest = kb.export(tmp_path / "export", partition_by=["provenance_source"])
        assert {p.name for p in dest.iterdir()} == {"provenance_source=upload", "provenance_source=transfergraph"}
    elif fmt == "jsonl":
        dest = tmp_path / "export.jsonl"
        export_jsonl(kb.iter_batches(), dest)
    else:
        dest = kb.export(tmp_path / f"export.{fmt}", fmt=fmt)
    other = make_kb("other")
    reports = ingest_path(other, dest)
    assert sum(r.ingested for r in reports) == 30 and not any(r.rejects for r in reports)
    assert _sorted(other.scan()).equals(_sorted(kb.scan()))


def test_attach_fills_missing_features_without_overwriting(kb: KnowledgeBase, tmp_path: Path) -> None:
    """Stored dataset and model features fill runs' missing values; values a run carries itself are kept."""
    from collector.schema import DatasetMeta

    ingest_path(kb, write_jsonl(tmp_path / "in.jsonl", [record(1), record(2, dataset__meta={"n_classes": 3})]))
    kb.upsert_datasets({"glue/sst2": DatasetMeta(n_classes=2, landmark_tfidf_lr=0.8)}, source="test")
    kb.upsert_models({"roberta-base": {"family": "roberta", "n_params": 124_645_632}})
    rows = kb.scan(["dataset_meta_n_classes", "dataset_meta_landmark_tfidf_lr", "model_family"]).to_pylist()
    assert sorted(r["dataset_meta_n_classes"] for r in rows) == [2, 3]
    assert all(r["dataset_meta_landmark_tfidf_lr"] == 0.8 and r["model_family"] == "roberta" for r in rows)


def test_several_writer_processes_neither_corrupt_nor_lose(kb: KnowledgeBase, tmp_path: Path) -> None:
    """Four processes ingest overlapping files at once: every distinct run lands exactly once, none fails."""
    files = []
    for p in range(4):
        files.append(write_jsonl(tmp_path / f"part{p}.jsonl", [record(i) for i in range(p * 300, p * 300 + 600)]))
    procs = [subprocess.Popen([*METAML, "ingest", str(f), "--kb", kb.location, "--json", "--chunk-size", "50"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-500:] for o in outs]
    import json

    summaries = [json.loads(o[0]) for o in outs]
    assert sum(s["ingested"] for s in summaries) == 1500
    assert sum(s["ingested"] + s["duplicates"] for s in summaries) == 2400
    assert kb.count() == 1500
    assert len(set(kb.scan(["run_id"]).column(0).to_pylist())) == 1500


def test_sigkill_mid_ingest_leaves_whole_chunks_and_a_rerun_completes(make_kb: Callable[..., KnowledgeBase],
                                                                      tmp_path: Path) -> None:
    """Killing an ingest with SIGKILL leaves only whole committed chunks; running it again stores the rest."""
    n, chunk = 40_000, 2_000
    src = write_jsonl(tmp_path / "big.jsonl", [record(i) for i in range(n)])
    kb = make_kb(lock_timeout=60)
    proc = subprocess.Popen([*METAML, "ingest", str(src), "--kb", kb.location, "--chunk-size", str(chunk)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if kb.exists() and kb.count() >= chunk:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = kb.count()
    assert 0 < stored < n, "the kill must land mid-ingest"
    assert stored % chunk == 0, "only whole transactions may be visible"
    reports = ingest_path(kb, src, chunk_size=chunk)
    assert reports[0].ingested == n - stored and reports[0].duplicates == stored
    assert kb.count() == n


@pytest.mark.parametrize("query", [
    "INSERT INTO runs (run_id) VALUES ('x')",
    "UPDATE runs SET outcome_score = 0",
    "DELETE FROM runs",
    "DROP TABLE runs",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH '/tmp/other.duckdb' AS o",
    "COPY runs TO '/tmp/leak.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_parquet('/tmp/*.parquet')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT 1; DROP TABLE runs",
    "SELEC nonsense",
    "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
    "EXPLAIN CREATE TABLE t (a INT)",
    "/* a comment */ EXPLAIN ANALYZE INSERT INTO runs (run_id) VALUES ('x')",
    "EXPLAIN (FORMAT json) DELETE FROM runs",
    "SELECT * FROM duckdb_databases()",
    "SELECT path FROM duckdb_databases",
    'SELECT * FROM system.main."DUCKDB_DATABASES"',
    "SELECT * FROM pragma_database_list",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM pg_catalog.pg_settings",
    "SELECT current_setting('allowed_paths')",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM query('SELECT path FROM duckdb_databases()')",
    "EXPLAIN SELECT * FROM duckdb_databases()",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM postgres_scan('host=127.0.0.1 dbname=postgres', 'public', 'pg_database')",
    "SELECT * FROM postgres_query('__ducklake_metadata_kb', 'SELECT set_config(''default_transaction_read_only'', "
    "''off'', false)')",
    "WITH s AS (SELECT * FROM postgres_query('__ducklake_metadata_kb', 'SELECT 1')) SELECT * FROM s",
    "SELECT count(*) FROM __ducklake_metadata_kb.ducklake_snapshot",
    "SELECT * FROM ducklake_flush_inlined_data('kb')",
    "SELECT * FROM duckdb_databases()",
    "EXPLAIN ANALYZE SELECT * FROM postgres_query('__ducklake_metadata_kb', 'SELECT 1')",
])
def test_sql_refuses_anything_but_reads(kb: KnowledgeBase, query: str) -> None:
    """Writes, attaches, installs, copies, settings, file reads and multi-statements are refused with a reason; so
    is EXPLAIN [ANALYZE] of any of them, and every function or view that shows the server's paths or settings or
    runs SQL given as text. No refusal names a server path."""
    kb.append(_batch(range(3)))
    with pytest.raises(QueryRefused) as refused:
        kb.sql(query)
    assert kb.count() == 3
    assert str(kb.home) not in str(refused.value) and os.path.expanduser("~") not in str(refused.value)


def test_sql_answers_never_show_server_paths(kb: KnowledgeBase) -> None:
    """Reads of the catalog and failed queries answer without the knowledge base's path, its folder or the home
    folder; EXPLAIN ANALYZE of a read runs."""
    kb.append(_batch(range(3)))
    secrets = [str(kb.home), str(kb.home.resolve()), os.path.expanduser("~")]
    for query in ["SELECT * FROM duckdb_tables()", "SELECT * FROM information_schema.schemata",
                  "SELECT * FROM duckdb_views()", "SELECT * FROM pg_catalog.pg_database",
                  "EXPLAIN ANALYZE SELECT count(*) FROM runs", "SELECT current_database()"]:
        text = str(kb.sql(query).table.to_pylist())
        assert not any(s in text for s in secrets), query
    for query in ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM nowhere", "SELECT 1 +"]:
        with pytest.raises(QueryRefused) as refused:
            kb.sql(query)
        assert not any(s in str(refused.value) for s in secrets), query


def test_sql_memory_and_answer_size_are_bounded(kb: KnowledgeBase) -> None:
    """A query needing more memory than its limit is refused (nothing spills to disk); an answer larger than the
    byte limit is cut at a row and marked truncated; a single row larger than the limit is refused."""
    kb.append(_batch(range(3)))
    with pytest.raises(QueryRefused, match="more than the 64 MB of memory"):
        kb.sql("SELECT list(range) FROM range(50000000)", memory_limit_mb=64)
    with pytest.raises(QueryRefused, match="first row alone is larger than the answer limit of 1,048,576 bytes"):
        kb.sql("SELECT repeat('x', 50000000) AS big", max_bytes=1 << 20)
    cut = kb.sql("SELECT range, repeat('x', 1000) AS s FROM range(100000)", max_rows=100_000, max_bytes=1 << 20)
    assert cut.truncated and 500 < cut.table.num_rows < 1100 and cut.table.nbytes <= 1 << 20
    whole = kb.sql("SELECT range FROM range(1000)", max_bytes=1 << 20)
    assert whole.table.num_rows == 1000 and not whole.truncated


def test_knowledge_base_files_are_private(tmp_path: Path) -> None:
    """The knowledge base file and its lock file are created readable by their owner only (0600)."""
    kb = KnowledgeBase(tmp_path / "data" / "kb.duckdb")
    kb.append(_batch(range(2)))
    for path in (kb.path, kb.path.with_name("kb.duckdb.lock")):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_sql_reads_limits_rows_and_times_out(kb: KnowledgeBase) -> None:
    """A SELECT answers; max_rows cuts and says so; a runaway query is interrupted at the time limit."""
    kb.append(_batch(range(20)))
    res = kb.sql("WITH s AS (SELECT method_name, outcome_score FROM runs) SELECT method_name, count(*) AS n FROM s "
                 "GROUP BY 1")
    assert res.table.to_pylist() == [{"method_name": "lora", "n": 20}] and not res.truncated
    cut = kb.sql("SELECT run_id FROM runs", max_rows=5)
    assert cut.table.num_rows == 5 and cut.truncated
    assert kb.sql("EXPLAIN SELECT count(*) FROM runs").table.num_rows >= 1
    assert kb.sql("SUMMARIZE SELECT outcome_score FROM runs").table.num_rows == 1
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        kb.sql("SELECT count(*) FROM range(100000000000) a", timeout_s=0.5)
    assert time.monotonic() - started < 20


def test_sql_sees_new_runs_and_reads_through_ducklake_functions(kb: KnowledgeBase) -> None:
    """The sandbox answers with what was committed before the query, also on a reused connection; the read-only
    DuckLake metadata functions are allowed on the lakehouse."""
    kb.append(_batch(range(3)))
    assert kb.sql("SELECT count(*) AS n FROM runs").table.to_pylist() == [{"n": 3}]
    kb.append(_batch(range(3, 5)))
    assert kb.sql("SELECT count(*) AS n FROM runs").table.to_pylist() == [{"n": 5}]
    if kb.where.scheme == "ducklake":
        snapshots = kb.sql("SELECT count(*) AS n FROM ducklake_snapshots('kb')").table.to_pylist()[0]["n"]
        assert snapshots >= 3


def test_version_changes_on_every_commit_and_only_then(kb: KnowledgeBase) -> None:
    """The change signal is stable while nothing is written, and moves with each committed write (also a write that
    only changes side tables); an append of duplicates only does not move it on the lakehouse."""
    from collector.schema import DatasetMeta

    kb.append(_batch(range(3)))
    first = kb.version()
    assert first is not None and kb.version() == first
    time.sleep(0.01)  # the file's signature has nanosecond mtimes, but some file systems round them
    kb.append(_batch(range(3, 4)))
    second = kb.version()
    assert second != first
    time.sleep(0.01)
    kb.upsert_datasets({"glue/sst2": DatasetMeta(n_classes=2)}, source="test")
    assert kb.version() != second
    if kb.where.scheme == "ducklake":
        third = kb.version()
        assert kb.append(_batch(range(4))).inserted == [] and kb.version() == third

"""The lakehouse backend beyond the contract every store passes (tests/test_store.py): locations, four `metaml serve`
processes writing one lakehouse at once without a file lock, a server SIGKILLed mid-upload losing no acknowledged
run, a plain DuckDB session reading the tables, and small uploads kept out of small files. All against a real
PostgreSQL server started by the tests."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from factories import record

from collector.errors import StoreError
from collector.schema import RunRecord, arrow_schema, to_row
from collector.store import KnowledgeBase, parse_kb_location
from service.keys import create_key
from service.testing import PostgresServer, ServerProcess


def _batch(ids: range) -> pa.Table:
    return pa.Table.from_pylist([to_row(RunRecord.model_validate(record(i))) for i in ids], schema=arrow_schema())


def _body(ids: list[int]) -> bytes:
    return json.dumps([record(i) for i in ids]).encode()


def test_locations_name_a_file_or_a_lakehouse_and_hide_passwords() -> None:
    """A path (or duckdb:PATH) is a DuckDB file; a ducklake:postgres: location gives the libpq pairs, the data path,
    the inlining limit; the password never shows; malformed locations say what is expected."""
    assert parse_kb_location("metaml-data/kb.duckdb").path == Path("metaml-data/kb.duckdb")
    assert parse_kb_location("duckdb:/srv/kb.duckdb").path == Path("/srv/kb.duckdb")
    where = parse_kb_location("ducklake:postgres:dbname=kb host=db port=5433 user=m password='s e\\'cret' "
                              "options='-c statement_timeout=0' data=/srv/lake inline=10")
    assert where.scheme == "ducklake" and where.data_path == "/srv/lake/" and where.inline_rows == 10
    assert where.conninfo == ("dbname=kb host=db port=5433 user=m password='s e\\'cret' "
                              "options='-c statement_timeout=0'")
    assert "cret" not in where.redacted and "password=***" in where.redacted and where.home == Path("metaml-data")
    assert where.conninfo_with_options("-c a=b").endswith("options='-c statement_timeout=0 -c a=b'")
    assert "cret" not in repr(KnowledgeBase(where.text))
    for bad, says in [("ducklake:postgres:dbname=kb", "data=DIR"), ("ducklake:sqlite:x data=/d", "ducklake:postgres"),
                      ("ducklake:postgres:data=/d", "connection"), ("ducklake:postgres:dbname=kb data=/d inline=-1",
                                                                     "inline="),
                      ("ducklake:postgres:dbname=kb 'x' data=/d", "KEY=VALUE"),
                      ("ducklake:postgres:dbname=kb data=s3://bucket/lake/", "object-store")]:
        with pytest.raises(StoreError, match=says):
            parse_kb_location(bad)


def _servers(location: str, keys: Path, n: int) -> list[ServerProcess]:
    servers = [ServerProcess(location, keys_db=keys, log_path=keys.parent / f"server{i}.log") for i in range(n)]
    threads = [threading.Thread(target=s.start, kwargs={"timeout": 120}) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in servers:
        if s.proc is None or s.proc.poll() is not None or not s.port:
            for other in servers:
                other.kill()
            raise RuntimeError(f"a server did not start: {s.log_path.read_text()[-2000:]}")
    return servers


def test_four_server_processes_accept_uploads_at_once(postgres: PostgresServer, tmp_path: Path) -> None:
    """Four `metaml serve` processes on one lakehouse (created by their four startups at once) take single-run and
    batch uploads from 16 clients at the same time; every run sent by two clients to two servers is stored once and
    credited once; the servers use no lock file."""
    location = postgres.lake(tmp_path / "lake")
    _, key = create_key(tmp_path / "keys.db", "writer", ["write"])
    servers = _servers(location, tmp_path / "keys.db", 4)
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(j: int) -> None:
        ids = list(range(j * 10, j * 10 + 20))  # each run is also sent by the next client, to another server
        url = servers[j % 4].url
        with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}",
                                                              "Content-Type": "application/json"}) as c:
            for start in range(0, 20, 10):
                chunk = ids[start:start + 10]
                bodies = [_body([i]) for i in chunk[:5]] + [_body(chunk[5:])]
                for body in bodies:
                    r = c.post("/v1/runs", content=body)
                    with lock:
                        (answers.append(r.json()) if r.status_code == 200 else failures.append(r.text[:300]))

    try:
        threads = [threading.Thread(target=client, args=(j,)) for j in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
        distinct = 16 * 10 + 10
        assert sum(a["accepted"] for a in answers) == distinct
        assert sum(a["accepted"] + a["duplicates"] for a in answers) == 16 * 20
        stats = httpx.get(f"{servers[3].url}/v1/stats").json()
        assert stats["runs"] == distinct
    finally:
        for s in servers:
            s.stop()
    kb = KnowledgeBase(location)
    ids = kb.scan(["run_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == distinct
    assert not list(tmp_path.rglob("*.lock")), "the lakehouse takes no file lock"
    kb.close()


def test_sigkill_of_a_server_during_uploads_loses_no_acknowledged_run(postgres: PostgresServer,
                                                                      tmp_path: Path) -> None:
    """While eight clients upload through four servers, one server is SIGKILLed; its clients move to the next server.
    Every run any server acknowledged is stored, and each upload that got no answer is stored whole or not at all."""
    location = postgres.lake(tmp_path / "lake")
    _, key = create_key(tmp_path / "keys.db", "writer", ["write"])
    servers = _servers(location, tmp_path / "keys.db", 4)
    acknowledged: set[int] = set()
    unanswered: list[list[int]] = []
    failures: list[str] = []
    answered_by_victim = [0]
    lock = threading.Lock()
    victim_acked = threading.Event()

    def client(j: int) -> None:
        target = j % 4
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        uploads = [[j * 1000 + k] if k % 4 else list(range(j * 1000 + k, j * 1000 + k + 4))
                   for k in range(0, 80, 4)]
        for ids in uploads:
            while True:
                try:
                    r = httpx.post(f"{servers[target].url}/v1/runs", content=_body(ids), headers=headers, timeout=60)
                except httpx.TransportError:
                    with lock:
                        unanswered.append(ids)
                    target = (target + 1) % 4  # the replica is gone: the client moves on, the upload is not retried
                    break
                with lock:
                    if r.status_code != 200:
                        failures.append(r.text[:300])
                        break
                    acknowledged.update(ids)
                    if target == 0:
                        answered_by_victim[0] += 1
                        if answered_by_victim[0] >= 6:
                            victim_acked.set()
                break

    threads = [threading.Thread(target=client, args=(j,)) for j in range(8)]
    try:
        for t in threads:
            t.start()
        assert victim_acked.wait(120), "the victim never answered"
        servers[0].kill()
        for t in threads:
            t.join()
    finally:
        for s in servers:
            s.stop()
    assert not failures, failures[:3]
    kb = KnowledgeBase(location)
    stored_ids = set(kb.scan(["run_id"]).column(0).to_pylist())
    run_id = {i: RunRecord.model_validate(record(i)).run_id for i in range(8000)}
    assert unanswered, "the kill must land while uploads were in flight"
    assert {run_id[i] for i in acknowledged} <= stored_ids
    for ids in unanswered:
        present = [run_id[i] in stored_ids for i in ids]
        assert all(present) or not any(present), "an upload is stored whole or not at all"
    assert len(stored_ids) == kb.count()
    kb.close()


PLAIN_SESSION = r"""
import json, sys, duckdb
import duckdb_extension_ducklake, duckdb_extension_postgres
from pathlib import Path
location, ext_dir = sys.argv[1], sys.argv[2]
con = duckdb.connect(config={"extension_directory": ext_dir})
for module, name in ((duckdb_extension_postgres, "postgres"), (duckdb_extension_ducklake, "ducklake")):
    shipped = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    con.execute(f"INSTALL '{shipped}'")
    con.execute(f"LOAD {name}")
con.execute(f"ATTACH 'ducklake:postgres:{location}' AS kb (READ_ONLY)")
rows = con.execute("SELECT count(*), count(DISTINCT run_id), max(len(outcome_curve)), "
                   "max(outcome_metrics['accuracy']) FROM kb.runs").fetchone()
tables = sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'kb'")
                .fetchall())
print(json.dumps({"rows": list(rows), "tables": tables}))
"""


def test_a_plain_duckdb_session_reads_the_tables(postgres: PostgresServer, tmp_path: Path) -> None:
    """What docs/lakehouse.md shows: a DuckDB session with no metaml code installs the two extensions from their
    PyPI packages' files, attaches the lakehouse read-only and reads every run, inlined and flushed alike, nested
    columns included."""
    location = postgres.lake(tmp_path / "lake")
    kb = KnowledgeBase(location)
    kb.append(_batch(range(3)))  # small: kept inlined in the catalog
    kb.append(_batch(range(3, 2003)))  # large: a Parquet file
    where = parse_kb_location(location)
    done = subprocess.run([sys.executable, "-c", PLAIN_SESSION, where.conninfo, str(tmp_path / "ext")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["rows"][:2] == [2003, 2003] and out["rows"][2] == 2 and out["rows"][3] == pytest.approx(0.91)
    assert {"runs", "datasets", "models"} <= set(out["tables"])
    assert list((tmp_path / "lake").rglob("*.parquet")), "the large append is a Parquet file"
    kb.close()


def test_small_uploads_are_inlined_then_flushed_into_few_files(postgres: PostgresServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """60 single-run appends write no Parquet file per run: they are kept in the catalog and written out in bulk
    every FLUSH_ROWS runs (lowered to 25 here); compaction merges the flushed files into one; nothing is lost."""
    from collector.store import _ducklake

    monkeypatch.setattr(_ducklake, "FLUSH_ROWS", 25)
    kb = KnowledgeBase(postgres.lake(tmp_path / "lake"))
    for i in range(60):
        assert len(kb.append(_batch(range(i, i + 1))).inserted) == 1
    run_files = sorted((tmp_path / "lake").rglob("runs/*.parquet"))
    assert len(run_files) == 2, run_files
    assert kb.count() == 60
    before = kb.data_files()
    done = kb.compact()
    assert done["data_files_before"] == before and done["data_files_after"] < before
    assert kb.count() == 60 and len(set(kb.scan(["run_id"]).column(0).to_pylist())) == 60
    kb.close()


def test_a_server_on_an_unreachable_catalog_starts_and_reports_unready(postgres: PostgresServer,
                                                                       tmp_path: Path) -> None:
    """With the catalog's server unreachable, `metaml serve` still starts; /readyz answers 503 and reads answer 503
    with a reason, not a crash."""
    location = f"ducklake:postgres:dbname=nowhere host=127.0.0.1 port=1 user=metaml data={tmp_path / 'lake'}"
    with ServerProcess(location, keys_db=tmp_path / "keys.db", settings={"read_requires_key": False}) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        stats = httpx.get(f"{server.url}/v1/stats", timeout=30)
        assert stats.status_code == 503 and stats.json()["error"]["code"] == "knowledge_base_unavailable"


#: The catalog query of docs/lakehouse.md: the Parquet files of the runs table's current snapshot.
CURRENT_FILES = """
SELECT CASE WHEN f.path_is_relative THEN m.value || s.path || t.path || f.path ELSE f.path END
FROM ducklake_data_file f
JOIN ducklake_table t ON t.table_id = f.table_id AND t.end_snapshot IS NULL
JOIN ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
JOIN ducklake_metadata m ON m.key = 'data_path'
WHERE t.table_name = 'runs' AND f.end_snapshot IS NULL
"""


def test_a_reader_without_duckdb_reads_the_current_snapshot_after_compaction(postgres: PostgresServer,
                                                                            tmp_path: Path) -> None:
    """What Spark or Trino do (docs/lakehouse.md): after `kb compact`, the catalog's tables, queried in PostgreSQL,
    list Parquet files that hold exactly the stored runs, updated features included (no inlined rows, no delete
    files left)."""
    import pyarrow.parquet as pq

    from collector.schema import DatasetMeta

    location = postgres.lake(tmp_path / "lake")
    kb = KnowledgeBase(location)
    kb.append(_batch(range(2000)))
    for i in range(2000, 2005):
        kb.append(_batch(range(i, i + 1)))  # inlined
    kb.upsert_datasets({"glue/sst2": DatasetMeta(n_classes=2)}, source="test")  # an update: deletes + inserts
    kb.compact()
    database = parse_kb_location(location).conninfo.split()[0].removeprefix("dbname=")
    listed = subprocess.run([str(postgres.bindir / "psql"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U",
                             "metaml", "-d", database, "-Atc", CURRENT_FILES], capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    assert listed and all(Path(f).is_file() for f in listed)
    table = pa.concat_tables([pq.read_table(f, columns=["run_id", "dataset_meta_n_classes"]) for f in listed])
    assert sorted(table.column("run_id").to_pylist()) == sorted(kb.scan(["run_id"]).column(0).to_pylist())
    assert set(table.column("dataset_meta_n_classes").to_pylist()) == {2}
    kb.close()

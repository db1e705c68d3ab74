"""Writes while others read, on both backends, over real HTTP: a long analyst query (over the API, and from another
process) while uploads keep being acknowledged at normal latency; a file kept open by a server's writer given way to
another process; uploaded runs getting the model and dataset features a command-line ingest gives them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from factories import record

from collector.enrich import enrich_models
from collector.ingest import ingest_path
from collector.schema import DatasetMeta, RunRecord
from collector.store import KnowledgeBase
from service.keys import create_key
from service.testing import ServerProcess

#: A query that runs until the server's time limit interrupts it (a cross join of 10^10 rows).
LONG_QUERY = "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b"
QUERY_SECONDS = 8


def _upload_while(busy: Callable[[], bool], url: str, key: str, first: int) -> list[tuple[float, float, int]]:
    """Upload one run at a time while ``busy()``: (sent at, latency, status) per upload."""
    out = []
    with httpx.Client(base_url=url, timeout=60.0, headers={"X-API-Key": key}) as c:
        i = first
        while busy():
            t0 = time.monotonic()
            r = c.post("/v1/runs", json=[record(i)])
            out.append((t0, time.monotonic() - t0, r.status_code))
            i += 1
    return out


@pytest.mark.parametrize("where", ["api", "process"])
def test_a_long_query_does_not_hold_up_uploads(make_kb: Callable[..., KnowledgeBase], backend: str, tmp_path: Path,
                                               where: str) -> None:
    """While an analyst's query runs for 8 s (over /v1/sql, or `KnowledgeBase.sql` in another process), single-run
    uploads to the server keep being acknowledged: several of them, none slower than a third of the query (a reader
    holding the file's lock for its whole run would stall one upload for the query's whole duration and let no other
    through; a lakehouse commit takes up to a second on a loaded machine, so counts are kept modest); every
    acknowledged run is stored."""
    kb = make_kb()
    kb.create()
    _, key = create_key(tmp_path / "keys.db", "writer", ["write", "analyst"])
    settings = {"sql_timeout_s": QUERY_SECONDS}
    with ServerProcess(kb.location, keys_db=tmp_path / "keys.db", settings=settings) as server:
        with httpx.Client(base_url=server.url, timeout=60.0, headers={"X-API-Key": key}) as c:
            assert c.post("/v1/runs", json=[record(0)]).status_code == 200  # the writer holds the file now
        answer: dict[str, object] = {}

        def query() -> None:
            t0 = time.monotonic()
            if where == "api":
                with httpx.Client(base_url=server.url, timeout=120.0, headers={"X-API-Key": key}) as c:
                    r = c.post("/v1/sql", json={"query": LONG_QUERY})
                    answer["code"] = r.json()["error"]["code"]
            else:
                code = (f"from collector.store import KnowledgeBase\nfrom collector.errors import QueryTimeout\n"
                        f"try:\n    KnowledgeBase({kb.location!r}).sql({LONG_QUERY!r}, timeout_s={QUERY_SECONDS})\n"
                        "except QueryTimeout:\n    print('query_timeout')\n")
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
                answer["code"] = done.stdout.strip() or done.stderr[-500:]
            answer["started"], answer["ended"] = t0, time.monotonic()

        thread = threading.Thread(target=query)
        thread.start()
        time.sleep(1.0)  # the query is running
        uploads = _upload_while(thread.is_alive, server.url, key, 1)
        thread.join()
    assert answer["code"] == "query_timeout", answer
    assert float(answer["ended"]) - float(answer["started"]) >= QUERY_SECONDS - 0.5  # type: ignore[arg-type]
    during = [u for u in uploads if u[0] + u[1] <= float(answer["ended"])]  # type: ignore[arg-type]
    assert {status for _, _, status in uploads} == {200}
    assert len(during) >= 4, f"only {len(during)} uploads acknowledged during the query"
    slowest = max(latency for _, latency, _ in during)
    assert slowest < QUERY_SECONDS / 3, f"an upload took {slowest:.1f}s while the query ran"
    ids = {RunRecord.model_validate(record(i)).run_id for i in range(len(uploads) + 1)}
    assert KnowledgeBase(kb.location).existing_ids(sorted(ids)) == ids


def test_a_kept_open_file_gives_way_to_another_process(tmp_path: Path) -> None:
    """A process keeping the file open between writes reads its own writes through its cursors and through SQL; a
    second process appends and reads meanwhile within seconds (the holder gives way); afterwards the holder writes
    again, and every run is stored once."""
    path = tmp_path / "kb.duckdb"
    kb = KnowledgeBase(path)
    kb.keep_open(idle_s=30.0)
    try:
        kb.append(_table(range(0, 10)))
        assert kb.count() == 10
        assert kb.sql("SELECT count(*) AS n FROM runs").table.column("n").to_pylist() == [10]
        code = ("import sys, time\nsys.path.insert(0, 'tests')\nfrom test_service_writes import _table\n"
                "from collector.store import KnowledgeBase\nt0 = time.monotonic()\n"
                f"kb = KnowledgeBase({str(path)!r}, lock_timeout=20)\nkb.append(_table(range(10, 20)))\n"
                "print(kb.count(), round(time.monotonic() - t0, 2))\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, done.stderr[-2000:]
        count, seconds = done.stdout.split()
        assert int(count) == 20 and float(seconds) < 10
        kb.append(_table(range(15, 25)))
        assert kb.count() == 25
        assert kb.sql("SELECT count(DISTINCT run_id) AS n FROM runs").table.column("n").to_pylist() == [25]
    finally:
        kb.close()


def _table(seeds: range) -> object:
    from collector.schema import RowBuffer

    rows = RowBuffer()
    for i in seeds:
        rows.append(RunRecord.model_validate(record(i)))
    return rows.to_arrow()


FEATURE_COLUMNS = ("dataset_meta_n_classes", "dataset_meta_tokens_mean", "dataset_meta_language", "model_n_params",
                   "model_n_layers", "model_family", "model_arch_type")


def test_uploaded_runs_get_the_features_an_ingest_gives(make_kb: Callable[..., KnowledgeBase], tmp_path: Path) -> None:
    """A run uploaded over HTTP gets the same dataset meta-features (from the datasets table) and model features
    (from the model registry, also added to the models table) as the same run ingested by the command line's steps
    (ingest, then enrich_models and attach_features); a value the record carries itself is kept."""
    meta = DatasetMeta(n_classes=2, tokens_mean=23.5, language="en", n_samples=67_349)
    records = [record(1), record(2, model__id="bert-base-uncased"), record(3, model__n_params=123)]
    for r in records:
        for part in ("meta",):
            r["dataset"].pop(part, None)
    cli_kb = KnowledgeBase(tmp_path / "cli.duckdb")
    cli_kb.create()
    cli_kb.upsert_datasets({records[0]["dataset"]["name"]: meta}, source="test")
    src = tmp_path / "runs.jsonl"
    src.write_text("\n".join(__import__("json").dumps(r) for r in records) + "\n")
    ingest_path(cli_kb, src)
    enrich_models(cli_kb)
    cli_kb.attach_features()
    expected = {row["hparams_seed"]: row for row in cli_kb.scan(["hparams_seed", *FEATURE_COLUMNS]).to_pylist()}
    assert expected[1]["model_n_params"] and expected[1]["dataset_meta_n_classes"] == 2
    assert expected[3]["model_n_params"] == 123

    kb = make_kb()
    kb.create()
    kb.upsert_datasets({records[0]["dataset"]["name"]: meta}, source="test")
    _, key = create_key(tmp_path / "keys.db", "writer", ["write", "read"])
    with ServerProcess(kb.location, keys_db=tmp_path / "keys.db") as server, \
            httpx.Client(base_url=server.url, timeout=60.0, headers={"X-API-Key": key}) as c:
        r = c.post("/v1/runs", json=records)
        assert r.status_code == 200 and r.json()["accepted"] == 3
        run = c.get(f"/v1/runs/{r.json()['records'][0]['run_id']}").json()
        assert run["dataset"]["meta"]["n_classes"] == 2 and run["model"]["n_params"] == expected[1]["model_n_params"]
    got = {row["hparams_seed"]: row for row in KnowledgeBase(kb.location).scan(["hparams_seed", *FEATURE_COLUMNS])
           .to_pylist()}
    assert got == expected
    models = {m["model_id"] for m in KnowledgeBase(kb.location).table("models").to_pylist()}
    assert {"roberta-base", "bert-base-uncased"} <= models


def test_concurrent_single_run_uploads_are_committed_together(make_kb: Callable[..., KnowledgeBase], tmp_path: Path
                                                             ) -> None:
    """Sixteen clients upload one run per request at once, every third request with a bad record beside the good one:
    every answer is 200 and comes after its commit (the run is readable as soon as it is acknowledged), the bad record
    is rejected at its place with its reason, every good run is stored once with its model features, and the server
    committed the uploads in fewer transactions than requests (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    kb = make_kb()
    kb.create()
    _, key = create_key(tmp_path / "keys.db", "writer", ["write", "read"])
    clients, per_client = 16, 12
    answers: list[tuple[int, dict, list[str]]] = []
    unseen: list[str] = []
    guard = threading.Lock()
    with ServerProcess(kb.location, keys_db=tmp_path / "keys.db") as server:
        def client(c_id: int) -> None:
            with httpx.Client(base_url=server.url, timeout=120.0, headers={"X-API-Key": key}) as c:
                for j in range(per_client):
                    seed = 1000 * c_id + j
                    body = [record(seed)]
                    if j % 3 == 0:
                        body.append(record(seed, method__name="telepathy"))
                    r = c.post("/v1/runs", json=body)
                    got = r.json()
                    ids = [x["run_id"] for x in got.get("records", []) if x["status"] == "accepted"]
                    missing = [i for i in ids if c.get(f"/v1/runs/{i}").status_code != 200]
                    with guard:
                        answers.append((r.status_code, got, ids))
                        unseen.extend(missing)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        page = httpx.get(f"{server.url}/metrics").text
    assert [s for s, _, _ in answers] == [200] * clients * per_client
    assert not unseen, f"{len(unseen)} acknowledged runs were not readable right after their answer"
    for _, body, _ in answers:
        assert body["accepted"] == 1
        if len(body["records"]) == 2:
            bad = body["records"][1]
            assert bad["status"] == "rejected" and bad["index"] == 1 and "unknown method" in bad["reason"], bad
    good = {RunRecord.model_validate(record(1000 * c + j)).run_id for c in range(clients) for j in range(per_client)}
    assert {i for _, _, ids in answers for i in ids} == good
    stored = KnowledgeBase(kb.location)
    assert stored.count() == len(good) and stored.existing_ids(sorted(good)) == good
    assert all(v is not None for v in stored.scan(["model_n_params"]).column(0).to_pylist())
    samples = {s.name: s.value for f in text_string_to_metric_families(page) for s in f.samples}
    transactions, uploads = samples["metaml_kb_commit_uploads_count"], samples["metaml_kb_commit_uploads_sum"]
    assert uploads == clients * per_client
    assert transactions < uploads, f"{transactions:.0f} transactions for {uploads:.0f} uploads"

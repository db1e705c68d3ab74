"""The HTTP API over real HTTP (uvicorn in a child process on loopback) against a real DuckDB file: every endpoint,
per-record upload statuses, pagination, describe, SQL, stats, metrics and the error body."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from factories import record
from prometheus_client.parser import text_string_to_metric_families

from collector.store import KnowledgeBase
from service.keys import create_key
from service.testing import ServerProcess


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-api")


@pytest.fixture(scope="module")
def keys(workdir: Path) -> dict[str, str]:
    """One key per role, in the server's key file."""
    db = workdir / "keys.db"
    return {name: create_key(db, name, scopes)[1] for name, scopes in
            {"writer": ["write"], "reader": ["read"], "analyst": ["analyst"], "root": ["admin"]}.items()}


@pytest.fixture(scope="module")
def server(workdir: Path, keys: dict[str, str]) -> Iterator[ServerProcess]:
    """A server with the default settings (reads need no key)."""
    with ServerProcess(workdir / "kb.duckdb", settings={"sql_max_rows": 50}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


def _upload(client: httpx.Client, key: str, records: list, **kwargs) -> httpx.Response:
    return client.post("/v1/runs", json=records, headers=_auth(key), **kwargs)


def _series(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_health_and_readiness(client: httpx.Client) -> None:
    """/healthz answers ok and /readyz says ready once the knowledge base file exists (the server creates it)."""
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_upload_json_array_gives_a_status_per_record(client: httpx.Client, keys: dict[str, str],
                                                     server: ServerProcess) -> None:
    """A JSON array answers accepted / duplicate (within the upload) / rejected with field and reason per index;
    the key's name becomes provenance.uploader even when the record claims another, and accepted runs are stored."""
    claimed = record(100, provenance__uploader="mallory")
    records = [claimed, record(101), record(100), record(102, outcome__score=1.7), "not an object",
               record(103, method__name="no-such-method")]
    r = _upload(client, keys["writer"], records)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["accepted"], body["duplicates"], body["rejected"]) == (6, 2, 1, 3)
    assert body["uploader"] == "writer"
    statuses = [(x["index"], x["locator"], x["status"]) for x in body["records"]]
    assert statuses == [(0, "item 0", "accepted"), (1, "item 1", "accepted"), (2, "item 2", "duplicate"),
                        (3, "item 3", "rejected"), (4, "item 4", "rejected"), (5, "item 5", "rejected")]
    assert body["records"][2]["run_id"] == body["records"][0]["run_id"]
    assert body["records"][3]["field"] == "outcome.score" or "outcome.score" in body["records"][3]["reason"]
    assert "method" in body["records"][5]["reason"]
    run = client.get(f"/v1/runs/{body['records'][0]['run_id']}").json()
    assert run["provenance"]["uploader"] == "writer"
    assert run["provenance"]["source"] == "upload:writer"
    stored = KnowledgeBase(server.kb).existing_ids([x["run_id"] for x in body["records"][:2]])
    assert len(stored) == 2


def test_upload_ndjson_reports_line_numbers(client: httpx.Client, keys: dict[str, str]) -> None:
    """NDJSON bodies are read line by line: blank lines are skipped, a bad line is rejected with its line number."""
    lines = [json.dumps(record(200)), "", json.dumps(record(201)), "{not json", json.dumps([1, 2])]
    r = client.post("/v1/runs", content="\n".join(lines) + "\n",
                    headers={**_auth(keys["writer"]), "Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    recs = r.json()["records"]
    assert [(x["locator"], x["status"]) for x in recs] == [
        ("line 1", "accepted"), ("line 3", "accepted"), ("line 4", "rejected"), ("line 5", "rejected")]
    assert "invalid JSON" in recs[2]["reason"]


def test_reupload_answers_all_duplicate(client: httpx.Client, keys: dict[str, str]) -> None:
    """Uploading the same runs again stores nothing new and answers every record duplicate."""
    records = [record(i) for i in range(300, 320)]
    first = _upload(client, keys["writer"], records).json()
    assert first["accepted"] == 20
    again = _upload(client, keys["root"], records).json()
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 20, 0)
    assert {x["reason"] for x in again["records"]} == {"already in the knowledge base"}
    assert [x["run_id"] for x in again["records"]] == [x["run_id"] for x in first["records"]]


def test_upload_canonical_csv_file(client: httpx.Client, keys: dict[str, str]) -> None:
    """A canonical CSV uploaded as a multipart file is read by the CSV format: rows become runs, a row outside its
    metric's scale is rejected with its row locator, and provenance names the file as the client called it."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task_primary_metric", "dataset_name", "model_id", "method_name", "hparams_learning_rate",
                "hparams_seed", "outcome_score", "outcome_curve"])
    w.writerow(["accuracy", "SST-2", "FacebookAI/roberta-base", "full", "2e-5", "1", "0.93",
                json.dumps([{"epoch": 1, "metric": "accuracy", "value": 0.9}])])
    w.writerow(["f1", "glue/mrpc", "bert-base-uncased", "LoRA", "3e-4", "2", "0.88", ""])
    w.writerow(["accuracy", "glue/rte", "bert-base-uncased", "bitfit", "1e-3", "3", "1.5", ""])
    r = client.post("/v1/runs", files={"file": ("my results.csv", buf.getvalue().encode(), "text/csv")},
                    headers=_auth(keys["writer"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["records"]] == ["accepted", "accepted", "rejected"]
    assert body["records"][2]["locator"].startswith("row 3")
    assert body["records"][0]["uri"] == "my_results.csv"
    run = client.get(f"/v1/runs/{body['records'][0]['run_id']}").json()
    assert run["dataset"]["name"] == "glue/sst2" and run["model"]["id"] == "roberta-base"
    assert run["provenance"]["source"] == "upload:writer" and run["provenance"]["uri"] == "my_results.csv"
    assert run["outcome"]["curve"] == [{"epoch": 1.0, "metric": "accuracy", "value": 0.9}]


def test_upload_real_opda_file(client: httpx.Client, keys: dict[str, str], public_data: Path) -> None:
    """The real OPDA DeBERTa results file, uploaded as multipart with an admin key, is detected by its name and all
    1,024 runs are accepted with source opda (an admin key's upload keeps the format's source); uploading it again
    with a write key answers 1,024 duplicates."""
    path = public_data / "metadatasets" / "opda_deberta" / "deberta-base_tuning.results.jsonl"
    with open(path, "rb") as f:
        r = client.post("/v1/runs", files={"file": (path.name, f)}, headers=_auth(keys["root"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["accepted"], body["rejected"]) == (1024, 1024, 0)
    assert body["records"][0]["uri"] == path.name
    stats = client.get("/v1/stats").json()
    assert stats["by_source"]["opda"] == 1024
    page = client.get("/v1/runs", params={"source": "opda", "limit": 3}).json()
    assert page["count"] == 3 and page["runs"][0]["model"]["id"] == "microsoft/deberta-base"
    assert page["runs"][0]["outcome"]["curve"]
    with open(path, "rb") as f:
        again = client.post("/v1/runs", files={"file": (path.name, f)}, headers=_auth(keys["writer"])).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1024)


def test_upload_file_format_detection_and_override(client: httpx.Client, keys: dict[str, str]) -> None:
    """A file no format recognizes is a 400 that says so; naming its format in the `format` field reads it."""
    content = "\n".join(json.dumps(record(i)) for i in range(400, 403)).encode()
    r = client.post("/v1/runs", files={"file": ("runs.txt", content)}, headers=_auth(keys["writer"]))
    assert r.status_code == 400 and "format" in r.json()["error"]["message"]
    assert "/tmp" not in r.json()["error"]["message"]
    r = client.post("/v1/runs", files={"file": ("runs.txt", content)}, data={"format": "jsonl"},
                    headers=_auth(keys["writer"]))
    assert r.status_code == 200 and r.json()["accepted"] == 3
    r = client.post("/v1/runs", files={"file": ("runs.txt", content)}, data={"format": "nope"},
                    headers=_auth(keys["writer"]))
    assert r.status_code == 400
    r = client.post("/v1/runs", data={"format": "jsonl"}, headers=_auth(keys["writer"]))
    assert r.status_code in (400, 415)


def test_upload_bad_bodies(client: httpx.Client, keys: dict[str, str]) -> None:
    """Malformed JSON and a JSON scalar are 400, an unsupported Content-Type is 415; each with the error body."""
    h = _auth(keys["writer"])
    cases = [(b"[{", "application/json", 400), (b"42", "application/json", 400),
             (b"<runs/>", "application/xml", 415), (b"x", "text/plain", 415)]
    for body, ctype, status in cases:
        r = client.post("/v1/runs", content=body, headers={**h, "Content-Type": ctype})
        assert r.status_code == status, (ctype, r.text)
        assert set(r.json()["error"]) == {"code", "message", "details"}


def test_list_runs_filters_and_cursor_pagination(client: httpx.Client, keys: dict[str, str]) -> None:
    """Cursor pages walk every matching run exactly once in run-id order; dataset/method/model/score filters and the
    canonical names apply; a bad cursor is 400 and an out-of-range limit 422."""
    records = [record(500 + i, dataset__name="paging/ds", method__name="lora" if i % 2 else "full",
                      method__lora_r=8 if i % 2 else None, method__lora_alpha=16 if i % 2 else None,
                      method__target_modules=["q"] if i % 2 else None) for i in range(23)]
    body = _upload(client, keys["writer"], records).json()
    assert body["accepted"] == 23, body
    expected = sorted(x["run_id"] for x in body["records"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"dataset": "paging/ds", "limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/runs", params=params).json()
        seen += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    lora = client.get("/v1/runs", params={"dataset": "paging/ds", "method": "LoRA", "limit": 100}).json()
    assert lora["count"] == 11 and {r["method"]["name"] for r in lora["runs"]} == {"lora"}
    by_model = client.get("/v1/runs", params={"dataset": "paging/ds", "model": "FacebookAI/roberta-base"}).json()
    assert by_model["count"] == 23
    scores = sorted(r["outcome"]["score"] for r in records)
    lo, hi = scores[5], scores[15]
    ranged = client.get("/v1/runs", params={"dataset": "paging/ds", "min_score": lo, "max_score": hi}).json()
    assert ranged["count"] == 11 and all(lo <= r["outcome"]["score"] <= hi for r in ranged["runs"])
    assert client.get("/v1/runs", params={"cursor": "!!"}).status_code == 400
    assert client.get("/v1/runs", params={"limit": 1001}).status_code == 422
    assert client.get("/v1/runs", params={"min_score": "nan"}).status_code == 422


def test_get_run_and_missing_run(client: httpx.Client, keys: dict[str, str]) -> None:
    """GET /v1/runs/{id} returns the nested record as uploaded (normalized); an unknown id is a 404 error body."""
    body = _upload(client, keys["writer"], [record(600, task__metric_scale="percent", outcome__score=91.5,
                                                   outcome__metrics={"accuracy": 91.5})]).json()
    run_id = body["records"][0]["run_id"]
    run = client.get(f"/v1/runs/{run_id}").json()
    assert run["run_id"] == run_id and run["outcome"]["score"] == pytest.approx(0.915)
    assert run["method"]["kind"] and run["provenance"]["ingested_at"]
    r = client.get("/v1/runs/" + "0" * 32)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_reads_are_open_by_default_but_a_bad_key_is_refused(client: httpx.Client) -> None:
    """With read_requires_key off, reads need no key; a key that is sent must still be valid (401)."""
    assert client.get("/v1/stats").status_code == 200
    r = client.get("/v1/stats", headers={"X-API-Key": "mk_000000000000_" + "x" * 43})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_describe_inline_and_store(client: httpx.Client, keys: dict[str, str]) -> None:
    """Describe computes meta-features without a key; storing needs a name and the write scope, then the features
    are in the datasets table under the canonical name and attached to that dataset's runs."""
    texts = ["a fine movie", "a dull film", "great acting and a fine plot", "boring, slow, and dull"] * 15
    labels = [1, 0, 1, 0] * 15
    r = client.post("/v1/datasets/describe", json={"texts": texts, "labels": labels})
    assert r.status_code == 200, r.text
    meta = r.json()["meta"]
    assert meta["n_samples"] == 60 and meta["n_classes"] == 2 and r.json()["stored"] is False
    store = {"texts": texts, "labels": labels, "name": "describe/demo", "store": True}
    assert client.post("/v1/datasets/describe", json=store).status_code == 401
    assert client.post("/v1/datasets/describe", json=store, headers=_auth(keys["reader"])).status_code == 403
    no_name = client.post("/v1/datasets/describe", json={**store, "name": None}, headers=_auth(keys["writer"]))
    assert no_name.status_code == 400
    _upload(client, keys["writer"], [record(700, dataset__name="describe/demo")])
    r = client.post("/v1/datasets/describe", json=store, headers=_auth(keys["writer"]))
    assert r.status_code == 200 and r.json()["stored"] is True and r.json()["name"] == "describe/demo"
    rows = client.post("/v1/sql", json={"query": "SELECT n_classes, source FROM datasets WHERE name = "
                                                 "'describe/demo'"}, headers=_auth(keys["analyst"])).json()["rows"]
    assert rows == [[2, "api:writer"]]
    run = client.get("/v1/runs", params={"dataset": "describe/demo"}).json()["runs"][0]
    assert run["dataset"]["meta"]["n_classes"] == 2


def test_describe_uploaded_file(client: httpx.Client, public_data: Path) -> None:
    """A real TSV text dataset (GLUE SST-2 dev split) uploaded as a file is described like `metaml describe`."""
    path = public_data / "text" / "glue_sst2" / "dev.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, "rb") as f:
        r = client.post("/v1/datasets/describe", files={"file": (path.name, f)},
                        data={"name": "SST-2", "landmark_sample": "300"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "glue/sst2" and body["n_rows"] == 872
    assert body["meta"]["n_classes"] == 2 and body["meta"]["language"] == "en"


def test_describe_bad_input(client: httpx.Client) -> None:
    """Mismatched labels are 400, an empty text list 422, an unreadable file 400, another media type 415."""
    assert client.post("/v1/datasets/describe", json={"texts": ["a", "b"], "labels": [1]}).status_code == 400
    assert client.post("/v1/datasets/describe", json={"texts": []}).status_code == 422
    r = client.post("/v1/datasets/describe", files={"file": ("data.csv", b"foo,bar\n1,2\n")})
    assert r.status_code == 400 and "/tmp" not in r.json()["error"]["message"]
    assert client.post("/v1/datasets/describe", content=b"x", headers={"Content-Type": "text/plain"}
                       ).status_code == 415


def test_sql_answers_columns_rows_and_truncation(client: httpx.Client, keys: dict[str, str]) -> None:
    """A read query answers typed columns and rows; rows past the server's limit (50 here) are cut and flagged;
    NaN and timestamps come back as JSON null and ISO 8601."""
    _upload(client, keys["writer"], [record(i) for i in range(800, 860)])
    r = client.post("/v1/sql", json={"query": "SELECT run_id, outcome_score FROM runs ORDER BY run_id"},
                    headers=_auth(keys["analyst"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["columns"]] == ["run_id", "outcome_score"]
    assert body["row_count"] == 50 and body["truncated"] is True
    r = client.post("/v1/sql", json={"query": "SELECT count(*) AS n, 'nan'::DOUBLE AS x, "
                                              "max(provenance_ingested_at) AS t FROM runs", "max_rows": 5},
                    headers=_auth(keys["root"]))
    (n, x, t), = r.json()["rows"]
    assert n >= 60 and x is None and "T" in t and r.json()["truncated"] is False


@pytest.mark.parametrize("query", [
    "DELETE FROM runs",
    "CREATE TABLE evil AS SELECT 1",
    "SELECT * FROM read_csv('/etc/passwd')",
    "ATTACH '/tmp/other.duckdb' AS other",
    "COPY runs TO '/tmp/out.csv'",
    "SELECT 1; SELECT 2",
    "SELEC nonsense",
])
def test_sql_refuses_writes_and_file_access(client: httpx.Client, keys: dict[str, str], query: str) -> None:
    """Writes, DDL, file reads, ATTACH, COPY, several statements and unparsable SQL are refused with 400 and the
    reason, and nothing of the file leaks into the answer."""
    r = client.post("/v1/sql", json={"query": query}, headers=_auth(keys["analyst"]))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "query_refused" and err["message"]
    assert "root:" not in r.text


def test_sql_needs_the_analyst_scope(client: httpx.Client, keys: dict[str, str]) -> None:
    """SQL without a key is 401, with a write-only key 403."""
    q = {"query": "SELECT 1"}
    assert client.post("/v1/sql", json=q).status_code == 401
    r = client.post("/v1/sql", json=q, headers=_auth(keys["writer"]))
    assert r.status_code == 403 and r.json()["error"]["details"]["needed"] == "analyst"


def test_stats(client: httpx.Client, keys: dict[str, str]) -> None:
    """/v1/stats counts runs by source, method and status, and does not reveal the server's file path."""
    _upload(client, keys["writer"], [record(900)])
    stats = client.get("/v1/stats").json()
    assert stats["runs"] >= 1 and stats["by_source"]["upload:writer"] >= 1 and "path" not in stats
    assert sum(stats["by_status"].values()) == stats["runs"]


def test_metrics_exposition(client: httpx.Client, keys: dict[str, str]) -> None:
    """/metrics is Prometheus text: request counts and latency histograms per route and status, upload outcome
    counters, and a gauge equal to the knowledge base's run count."""
    _upload(client, keys["writer"], [record(950), record(950), {"bad": 1}])
    client.get("/v1/runs/" + "f" * 32)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    requests = _series(r.text, "metaml_http_requests_total")
    assert requests[(("method", "POST"), ("route", "/v1/runs"), ("status", "200"))] >= 1
    assert requests[(("method", "GET"), ("route", "/v1/runs/{run_id}"), ("status", "404"))] >= 1
    hist = _series(r.text, "metaml_http_request_duration_seconds_count")
    assert hist[(("method", "POST"), ("route", "/v1/runs"), ("status", "200"))] >= 1
    runs = _series(r.text, "metaml_runs_uploaded_total")
    assert all(runs[(("outcome", o),)] >= 1 for o in ("accepted", "duplicate", "rejected"))
    gauge = _series(r.text, "metaml_kb_runs")[()]
    assert gauge == client.get("/v1/stats").json()["runs"]


def test_every_answer_tells_the_servers_time(client: httpx.Client, keys: dict[str, str]) -> None:
    """Answers, errors included, carry ``Server-Timing: app;dur=<ms>``: positive, and within the client's own
    measure of the round trip."""
    for send in (lambda: client.get("/healthz"), lambda: client.get("/v2/nothing"),
                 lambda: _upload(client, keys["writer"], [record(960)])):
        started = time.perf_counter()
        r = send()
        round_trip_ms = (time.perf_counter() - started) * 1000.0
        name, _, duration = r.headers["server-timing"].partition(";dur=")
        assert name == "app" and 0.0 < float(duration) <= round_trip_ms, (r.status_code, r.headers["server-timing"])


def test_unknown_routes_and_methods_use_the_error_body(client: httpx.Client) -> None:
    """Unknown paths (404), wrong methods (405) and bad parameters (422) answer the one error body, no traces."""
    for r, status in [(client.get("/v2/nothing"), 404), (client.delete("/v1/runs"), 405),
                      (client.get("/v1/runs", params={"limit": "many"}), 422)]:
        assert r.status_code == status
        assert set(r.json()) == {"error"} and r.json()["error"]["code"]
        assert "Traceback" not in r.text

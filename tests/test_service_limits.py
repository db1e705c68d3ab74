"""Bad input over real HTTP never costs good records, a request's memory is bounded, and provenance is the server's.

A live server (uvicorn in a child process, real DuckDB file) gets the inputs an audit found harmful: integers past
64 bits, deep nesting, huge arrays, keyless and half-sent bodies, huge and control-laden strings, forged sources,
costly SQL. Each is answered with a clear status; good records beside bad ones are stored; the server's memory is
read from /proc."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from factories import DELETE, record

from collector.schema import RunRecord
from collector.store import KnowledgeBase
from metaml import load_runs
from metaml.serving import load_snapshot
from service.keys import create_key
from service.testing import ServerProcess, free_port, wait_until_answering

BODY_TIMEOUT_S = 2.0


def _auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server with the default limits (but a short body timeout and a small page budget), and its keys."""
    work = tmp_path_factory.mktemp("service-limits")
    db = work / "keys.db"
    keys = {name: create_key(db, name, scopes)[1] for name, scopes in
            {"alice": ["write", "read"], "reader": ["read"], "analyst": ["analyst"], "root": ["admin"]}.items()}
    settings = {"body_timeout_s": BODY_TIMEOUT_S, "max_answer_bytes": 256 * 1024}
    with ServerProcess(work / "kb.duckdb", settings=settings) as server:
        yield {"server": server, "keys": keys, "work": work}


@pytest.fixture
def client(world: dict) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world["server"].url, timeout=60.0) as c:
        yield c


def _memory_mb(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def _raw_post(port: int, path: str, headers: dict[str, str], body: Iterable[bytes],
              timeout: float = 30.0) -> tuple[int, bytes, float, int]:
    """POST over a bare socket, the body pushed from a thread while the answer is read: (status, answer body,
    seconds to the answer, body bytes the client managed to send). The server may answer, and close, before the
    body is sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    sent = [0]

    def push() -> None:
        try:
            for chunk in body:
                sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass

    started = time.perf_counter()
    threading.Thread(target=push, daemon=True).start()
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
        seconds = time.perf_counter() - started
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head_part.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(rest) < length:
            got = sock.recv(65536)
            if not got:
                break
            rest += got
    except OSError:
        seconds = time.perf_counter() - started
        head_part, rest = data.partition(b"\r\n\r\n")[0], b""
    finally:
        sock.close()
    status = int(head_part.split(b" ")[1]) if head_part.startswith(b"HTTP/") else 0
    return status, rest, seconds, sent[0]


def _chunks(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _rejected(body: dict) -> list[tuple[str, str | None, str]]:
    return [(x["locator"], x["field"], x["reason"]) for x in body["records"] if x["status"] == "rejected"]


# ------------------------------------------------------------------------------------------ records one by one


@pytest.mark.parametrize("field", ["seed", "max_steps", "batch_size", "warmup_steps", "max_seq_length"])
def test_an_integer_past_64_bits_rejects_only_its_record(client: httpx.Client, world: dict, field: str) -> None:
    """An integer of 2^64 in any integer field, beside 10 valid records: 200, the 10 are stored, the one is rejected
    with its place, field and reason (it used to be a 500 that lost the batch)."""
    base = 1000 + 100 * ["seed", "max_steps", "batch_size", "warmup_steps", "max_seq_length"].index(field)
    good = [record(base + i) for i in range(10)]
    bad = {"task": {"primary_metric": "accuracy"}, "dataset": {"name": "glue/sst2"}, "model": {"id": "roberta-base"},
           "method": {"name": "full"}, "hparams": {"learning_rate": 2e-5, field: 18446744073709551616},
           "outcome": {"score": 0.9}}
    r = client.post("/v1/runs", json=[*good[:4], bad, *good[4:]], headers=_auth(world["keys"]["alice"]))
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (10, 1)
    ((locator, where, reason),) = _rejected(r.json())
    assert (locator, where) == ("item 4", f"hparams.{field}") and "9223372036854775807" in reason
    ids = {RunRecord.model_validate(g).run_id for g in good}
    assert KnowledgeBase(world["server"].kb).existing_ids(sorted(ids)) == ids


def test_deep_nesting_rejects_only_its_record(client: httpx.Client, world: dict) -> None:
    """A body of 100,000 nested arrays is one rejected item (200, nothing stored); 50,000 levels inside
    method.config reject that record naming method.config, in a JSON array and in NDJSON, and its neighbours are
    stored (they used to be 500s)."""
    h = _auth(world["keys"]["alice"])
    r = client.post("/v1/runs", content=b"[" * 100_000 + b"]" * 100_000,
                    headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["rejected"] == 1 and r.json()["accepted"] == 0
    assert "nested more than 32 levels deep" in r.json()["records"][0]["reason"]
    deep = json.dumps(record(2000)).replace(
        '"method": {', '"method": {"config": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + ", ", 1)
    for media, body, locator in [
        ("application/json", "[" + ",".join([json.dumps(record(2001)), deep, json.dumps(record(2002))]) + "]",
         "item 1"),
        ("application/x-ndjson", "\n".join([json.dumps(record(2003)), deep, json.dumps(record(2004))]), "line 2"),
    ]:
        r = client.post("/v1/runs", content=body, headers={**h, "Content-Type": media})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2
        assert _rejected(r.json()) == [(locator, "method.config", "nested more than 32 levels deep")]


def test_huge_strings_control_characters_and_huge_configs_reject_only_their_record(client: httpx.Client,
                                                                                   world: dict) -> None:
    """50 MiB names and configs are rejected unread (field named), 300-character names, 70 KiB configs, NUL and
    right-to-left override characters are rejected by field; the valid record beside each is stored; pages of runs
    stay small."""
    h = _auth(world["keys"]["alice"])
    cases = [
        (record(3000, dataset__name="x" * (50 << 20)), "dataset.name", "exceeds the 1,048,576-byte limit"),
        (record(3001, method__config={"blob": "x" * (50 << 20)}), "method.config", "exceeds the 1,048,576-byte"),
        (record(3002, model__id="m" * 300), "model.id", "longer than the limit of 256"),
        (record(3003, method__config={"blob": "x" * 70_000}), "method.config", "more than the limit of 65,536"),
        (record(3004, dataset__name="glue/sst2\x00"), "dataset.name", "control character U+0000"),
        (record(3005, model__id="roberta\u202e-base"), "model.id", "control character U+202E"),
        (record(3006, provenance__license="cc\u2067-by"), "provenance.license", "control character U+2067"),
    ]
    for i, (bad, where, reason) in enumerate(cases):
        r = client.post("/v1/runs", json=[bad, record(3100 + i)], headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1, where
        ((locator, field, why),) = _rejected(r.json())
        assert (locator, field) == ("item 0", where) and reason in why
    page = client.get("/v1/runs", params={"limit": 1000})
    assert page.status_code == 200 and len(page.content) < 4 << 20


def test_a_page_of_runs_stops_at_the_answer_size(client: httpx.Client, world: dict) -> None:
    """A page of runs holds at most max_answer_bytes of run data (256 KiB here): it ends early with a cursor, and
    following the cursors reaches every run once."""
    h = _auth(world["keys"]["alice"])
    big = [record(4000 + i, method__config={"blob": "y" * 60_000}) for i in range(12)]
    assert client.post("/v1/runs", json=big, headers=h).json()["accepted"] == 12
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 1000, "method": "lora", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/runs", params=params).json()
        pages += 1
        seen += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages > 2 and len(seen) == len(set(seen)) >= 12


# ------------------------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("ndjson", [False, True])
def test_a_30_million_item_upload_is_refused_in_seconds_with_bounded_memory(world: dict, ndjson: bool) -> None:
    """A JSON array of 30 million integers (57 MiB; NDJSON: 30 million lines) is refused 422 batch_too_large as
    soon as reading passes the record limit, within seconds, and the server's peak memory grows by less than
    200 MB (it used to reach 11.3 GB). Nothing is stored."""
    server = world["server"]
    n = 30_000_000
    body = b"1\n" * n if ndjson else b"[" + b"1," * (n - 1) + b"1]"
    media = "application/x-ndjson" if ndjson else "application/json"
    before_peak = _memory_mb(server.proc.pid, "VmHWM")
    before = KnowledgeBase(server.kb).count()
    status, answer, seconds, sent = _raw_post(server.port, "/v1/runs", {
        **_auth(world["keys"]["alice"]), "Content-Type": media, "Content-Length": str(len(body))}, _chunks(body))
    assert status == 422, answer
    assert json.loads(answer)["error"]["code"] == "batch_too_large"
    assert seconds < 5.0
    grown = _memory_mb(server.proc.pid, "VmHWM") - before_peak
    assert grown < 200, f"peak memory grew by {grown:.0f} MB"
    assert sent < len(body), "the server read the whole body before refusing"
    assert KnowledgeBase(server.kb).count() == before


def test_bodies_are_not_read_before_authentication(world: dict) -> None:
    """Keyless 60 MiB POSTs are answered 401 at once, before their bodies are read (to uploads and to SQL), and a
    read key posting to uploads 403: the server's memory does not grow."""
    server = world["server"]
    size = 60 << 20

    def body() -> Iterator[bytes]:
        block = b"x" * (1 << 16)
        for _ in range(size // len(block)):
            yield block

    before_peak = _memory_mb(server.proc.pid, "VmHWM")
    for path, headers, expected in [
        ("/v1/runs", {}, 401), ("/v1/sql", {}, 401), ("/v1/runs", _auth("mk_000000000000_" + "A" * 43), 401),
        ("/v1/runs", _auth(world["keys"]["reader"]), 403), ("/v1/sql", _auth(world["keys"]["alice"]), 403),
    ]:
        status, answer, seconds, sent = _raw_post(server.port, path, {
            **headers, "Content-Type": "application/json", "Content-Length": str(size)}, body())
        assert status == expected, (path, answer)
        assert json.loads(answer)["error"]["code"] in ("unauthorized", "forbidden")
        assert seconds < 1.0 and sent < size // 2, (path, seconds, sent)
    assert _memory_mb(server.proc.pid, "VmHWM") - before_peak < 50


def test_half_sent_bodies_time_out(world: dict) -> None:
    """Fifty uploads that send their headers and part of their body, then stall, are answered 408 and closed once
    the body timeout passes; the server keeps serving."""
    server, key = world["server"], world["keys"]["alice"]
    socks = []
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall((f"POST /v1/runs HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: 100000\r\n\r\n[" + json.dumps(record(5000 + i))[:300]).encode())
        socks.append(s)
    started = time.monotonic()
    answers = []
    for s in socks:
        s.settimeout(BODY_TIMEOUT_S + 10)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
        answers.append(data)
        s.close()
    waited = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert BODY_TIMEOUT_S - 0.5 <= waited < BODY_TIMEOUT_S + 8
    assert b"request_timeout" in answers[0]
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# ------------------------------------------------------------------------------------------------ provenance


def test_uploads_are_stamped_with_the_key_holder(client: httpx.Client, world: dict) -> None:
    """A write key's runs are stored under upload:<holder> with the holder as uploader, whatever the record claims
    (a curated source included) and whatever format a file is in; an admin key may write a curated source."""
    keys = world["keys"]
    forged = record(6000, provenance__source="opda", provenance__uploader="mallory")
    r = client.post("/v1/runs", json=[forged], headers=_auth(keys["alice"]))
    assert r.status_code == 200 and r.json()["accepted"] == 1 and r.json()["source"] == "upload:alice"
    run = client.get(f"/v1/runs/{r.json()['records'][0]['run_id']}").json()
    assert (run["provenance"]["source"], run["provenance"]["uploader"]) == ("upload:alice", "alice")
    lines = "\n".join(json.dumps(record(6001 + i, provenance__source="taskweb")) for i in range(3))
    r = client.post("/v1/runs", files={"file": ("runs.jsonl", lines.encode())}, headers=_auth(keys["alice"]))
    assert r.status_code == 200 and r.json()["accepted"] == 3
    assert client.get("/v1/runs", params={"source": "taskweb"}).json()["count"] == 0
    assert client.get("/v1/runs", params={"source": "upload:alice"}).json()["count"] >= 4
    r = client.post("/v1/runs", json=[record(6010, provenance__source="opda"), record(6011, provenance__source=DELETE)],
                    headers=_auth(keys["root"]))
    stored = [client.get(f"/v1/runs/{x['run_id']}").json()["provenance"] for x in r.json()["records"]]
    assert [(p["source"], p["uploader"]) for p in stored] == [("opda", "root"), ("upload:root", "root")]


def test_uploaded_sources_can_be_left_out_of_learning(world: dict) -> None:
    """The meta-learner's runs and the prediction endpoints' supporting runs can leave out every uploaded source
    (upload*) or one holder's (upload:alice), by a setting."""
    kb = KnowledgeBase(world["server"].kb)
    sources = set(load_runs(kb)["provenance_source"])
    assert "upload:alice" in sources and "opda" in sources
    assert not any(s.startswith("upload") for s in load_runs(kb, exclude_sources=["upload*"])["provenance_source"])
    kept = set(load_runs(kb, exclude_sources=["upload:alice"])["provenance_source"])
    assert "upload:alice" not in kept and "upload:root" in kept
    everything = load_snapshot(kb.path)
    curated = load_snapshot(kb.path, exclude_sources=("upload*",))
    assert set(curated.runs["provenance_source"]) == {"opda"} < set(everything.runs["provenance_source"])


# ------------------------------------------------------------------------------------------------------- SQL


def test_sql_is_bounded_in_memory_and_answer_size_and_shows_no_paths(client: httpx.Client, world: dict) -> None:
    """Over HTTP: a 50 MB value and a list of 5 million items are refused by the answer limit, 50 million by the
    memory limit, EXPLAIN ANALYZE of a write is refused, and no answer or error shows the server's paths
    (duckdb_databases(), settings, file errors)."""
    h = _auth(world["keys"]["analyst"])
    server = world["server"]
    secrets = [str(server.kb), str(server.kb.parent), os.path.expanduser("~")]
    for query, expected in [
        ("SELECT repeat('x', 50000000)", "answer limit"),
        ("SELECT list(range) FROM range(5000000)", "answer limit"),
        ("SELECT list(range) FROM range(50000000)", "memory"),
        ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", "EXPLAIN of CREATE"),
        ("SELECT * FROM duckdb_databases()", "duckdb_databases is not available"),
        ("SELECT database_name, path FROM duckdb_databases", "duckdb_databases is not available"),
        ("SELECT current_setting('allowed_paths')", "current_setting is not available"),
        ("SELECT * FROM duckdb_extensions()", "not available"),
        ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
    ]:
        before = _memory_mb(server.proc.pid)
        r = client.post("/v1/sql", json={"query": query}, headers=h)
        assert r.status_code == 400, (query, r.text)
        assert expected in r.json()["error"]["message"], (query, r.text)
        assert not any(s in r.text for s in secrets), query
        assert len(r.content) < 1000 and _memory_mb(server.proc.pid) - before < 400
    r = client.post("/v1/sql", json={"query": "SELECT * FROM duckdb_tables()"}, headers=h)
    assert r.status_code == 200 and not any(s in r.text for s in secrets)


# ------------------------------------------------------------------------------------------- secure defaults


def test_the_image_binds_all_interfaces_only_with_reads_behind_keys() -> None:
    """The Dockerfile serves on 0.0.0.0 and sets METAML_READ_REQUIRES_KEY=true."""
    text = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    assert '"--host", "0.0.0.0"' in text
    env = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "METAML_READ_REQUIRES_KEY=true" in env


@pytest.mark.parametrize("reads_need_key", [False, True])
def test_serving_beyond_this_machine_with_open_reads_warns(tmp_path: Path, reads_need_key: bool) -> None:
    """`metaml serve --host 0.0.0.0` says loudly that anyone can read when reads need no key, and says nothing
    when they do."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAML_")}
    env["METAML_READ_REQUIRES_KEY"] = str(reads_need_key).lower()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                                 "--kb", str(tmp_path / "kb.duckdb"), "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_answering(proc, f"http://127.0.0.1:{port}/healthz", timeout=60, log_path=log)
        finally:
            proc.terminate()
            proc.wait(15)
    text = log.read_text()
    assert ("ANYONE who can reach this address can read" in text) is (not reads_need_key), text
    assert (tmp_path / "kb.duckdb").stat().st_mode & 0o777 == 0o600


def test_train_can_leave_uploaded_sources_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`metaml train --exclude-source 'upload*'` (or METAML_EXCLUDE_SOURCES, comma-separated) never learns from
    uploaded runs: on a knowledge base holding only uploads there is nothing left to train on."""
    from service.cli import main

    kb = tmp_path / "kb.duckdb"
    lines = [record(7000 + i, provenance__source=src) for i, src in enumerate(["upload:alice", "upload"] * 3)]
    (tmp_path / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    assert main(["ingest", str(tmp_path / "runs.jsonl"), "--kb", str(kb), "--no-enrich"]) == 0
    capsys.readouterr()
    args = ["train", "--kb", str(kb), "--no-mlflow", "--out", str(tmp_path / "model")]
    assert main([*args, "--exclude-source", "upload*"]) == 1
    assert "holds no runs" in capsys.readouterr().err
    monkeypatch.setenv("METAML_EXCLUDE_SOURCES", "upload:alice, upload")
    assert main(args) == 1
    assert "holds no runs" in capsys.readouterr().err


def test_the_app_collects_garbage_less_often_while_it_serves(tmp_path: Path) -> None:
    """While the app serves, the cyclic collector runs at GC_THRESHOLDS (at CPython's default a request with 1,000
    candidate objects ran full collections over the loaded model and snapshot); the thresholds come back after."""
    import asyncio
    import gc

    from service.api import create_app
    from service.api.main import GC_THRESHOLDS
    from service.settings import Settings

    app = create_app(Settings(kb=tmp_path / "kb.duckdb"))
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS

    async def serve() -> tuple[int, ...]:
        async with app.router.lifespan_context(app):
            return gc.get_threshold()

    assert asyncio.run(serve()) == GC_THRESHOLDS
    assert gc.get_threshold() == before

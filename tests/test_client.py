"""The standalone client (`metaml_client`) against a live server (uvicorn in a child process) over a real knowledge
base and MLflow registry: every method's typed result, error mapping, retries, the async client, and the Optuna
example end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna
import pytest

from metaml_client import (
    AsyncClient,
    Client,
    Decision,
    DescribeResult,
    Health,
    MetamlAPIError,
    ModelList,
    PredictResult,
    PromoteResult,
    Recommendation,
    RunPage,
    SqlResult,
    UploadResult,
)
from service.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]
SPACE = {"models": [{"id": "roberta-base"}, {"id": "microsoft/deberta-base"}],
         "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}],
         "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}
CANDIDATE = {"model": {"id": "roberta-base"}, "method": {"name": "full"},
             "hparams": {"learning_rate": 2e-5, "batch_size": 32, "epochs": 3}}


def test_importing_the_client_pulls_in_none_of_the_service() -> None:
    """The package imports only httpx and the standard library (checked in a fresh interpreter)."""
    code = ("import sys, metaml_client; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'collector', 'metaml', 'service', 'pandas', 'duckdb', 'numpy', 'pydantic', 'optuna'}); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_method_returns_typed_results(served_client: Client, served_world: dict[str, Any]) -> None:
    health = served_client.health()
    assert isinstance(health, Health) and health.status == "ok"
    ready = served_client.ready()
    assert ready.ready and ready.model == "loaded" and ready.model_version == 1
    assert served_client.stats()["runs"] > 0

    page = served_client.list_runs(dataset="SST-2", limit=5)
    assert isinstance(page, RunPage) and page.count == 5 and page.next_cursor
    run = served_client.get_run(page.runs[0]["run_id"])
    assert run["dataset"]["name"] == "glue/sst2"
    n = served_client.sql("SELECT count(*) FROM runs WHERE dataset_name = 'glue/sst2'").rows[0][0]
    every = list(served_client.iter_runs(dataset="SST-2", limit=max(1, n // 3)))
    assert len({r["run_id"] for r in every}) == len(every) == n > 3  # several pages

    record = {"task": {"primary_metric": "accuracy"}, "dataset": {"name": "client-test"},
              "model": {"id": "roberta-base"}, "method": {"name": "lora", "lora_r": 8},
              "hparams": {"learning_rate": 3e-4, "seed": 11}, "outcome": {"score": 0.81}}
    up = served_client.upload_runs([record])
    assert isinstance(up, UploadResult) and (up.accepted, up.uploader) == (1, "root")
    assert served_client.upload_runs(record).records[0].status == "duplicate"  # one dict is fine too
    path = served_world["work"] / "runs.jsonl"
    path.write_text('{"task": {"primary_metric": "accuracy"}, "dataset": {"name": "client-test"}, '
                    '"model": {"id": "roberta-base"}, "method": {"name": "full"}, "hparams": {"learning_rate": 1e-4}, '
                    '"outcome": {"score": 0.7}}\n')
    assert served_client.upload_runs(path).accepted == 1
    assert served_client.get_run(up.records[0].run_id)["outcome"]["score"] == pytest.approx(0.81)

    described = served_client.describe_dataset(["a fine movie", "a dull film", "great plot", "boring"], [1, 0, 1, 0],
                                               landmark_sample=0)
    assert isinstance(described, DescribeResult) and described.n_rows == 4 and described.meta["n_classes"] == 2

    sql = served_client.sql("SELECT method_name, count(*) AS n FROM runs GROUP BY 1 ORDER BY 1", max_rows=50)
    assert isinstance(sql, SqlResult) and sql.names == ["method_name", "n"]
    assert sum(r["n"] for r in sql.records()) > 0

    # a big candidate list is split in batches; indices continue across them
    many = [{**CANDIDATE, "hparams": {**CANDIDATE["hparams"], "learning_rate": 1e-5 * (1 + i % 50)}}
            for i in range(25)]
    batched = served_client.predict(None, "SST-2", many, batch_size=10, support=0)
    whole = served_client.predict({"primary_metric": "accuracy"}, {"name": "glue/sst2"}, many, support=0)
    assert isinstance(batched, PredictResult) and batched.n_candidates == 25
    assert [p.index for p in batched.predictions] == list(range(25))
    assert [p.points for p in batched.predictions] == pytest.approx([p.points for p in whole.predictions])
    assert batched.task["dataset"] == "glue/sst2" and batched.model["version"] == 1

    rec = served_client.recommend(None, "glue/sst2", SPACE, budget=4, enqueue=4)
    assert isinstance(rec, Recommendation) and [r.rank for r in rec.ranked] == [1, 2, 3, 4]
    assert len(rec.optuna_trials) == 4 and set(rec.optuna_trials[0]) >= {"model", "method", "learning_rate"}

    decision = served_client.decide(None, "glue/sst2", CANDIDATE, 0.99, incumbent_config=CANDIDATE)
    assert isinstance(decision, Decision) and decision.action in ("skip", "evaluate") and 0 <= decision.p_beat <= 1
    bad = {**CANDIDATE, "hparams": {"learning_rate": 0.5}}
    by_points = served_client.decide(None, "glue/sst2", bad, 95.0, unit="points", max_false_skip=0.5)
    assert by_points.incumbent_points == 95.0

    models = served_client.models()
    assert isinstance(models, ModelList) and [v.version for v in models.versions] == [1]
    assert models.versions[0].loaded and models.versions[0].metrics["spearman"] == pytest.approx(0.3)
    promoted = served_client.promote(1)
    assert isinstance(promoted, PromoteResult) and promoted.version == 1 and "production" in promoted.aliases


def test_errors_map_to_metaml_api_error(served: ServerProcess, served_client: Client,
                                        served_world: dict[str, Any]) -> None:
    with Client(served.url, api_key="mk_nope_nope", retries=0) as wrong, pytest.raises(MetamlAPIError) as e:
        wrong.list_runs()
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with Client(served.url, api_key=served_world["keys"]["reader"]) as reader, pytest.raises(MetamlAPIError) as e:
        reader.sql("SELECT 1")
    assert (e.value.status, e.value.code) == (403, "forbidden") and "analyst" in str(e.value.details)
    with pytest.raises(MetamlAPIError) as e:
        served_client.get_run("0" * 32)
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(MetamlAPIError) as e:
        served_client.promote(99)
    assert e.value.status == 404
    with pytest.raises(MetamlAPIError) as e:
        served_client.predict(None, "glue/sst2", [{**CANDIDATE, "hparams": {"learning_rate": -1}}])
    assert (e.value.status, e.value.code) == (422, "validation_error")
    assert e.value.details[0]["loc"][:3] == ["body", "candidates", 0]
    with pytest.raises(MetamlAPIError) as e:
        served_client.recommend(None, "no-such-dataset-anywhere", SPACE, budget=2)
    assert (e.value.status, e.value.code) == (422, "unknown_dataset")
    with pytest.raises(MetamlAPIError) as e:
        served_client.sql("DELETE FROM runs")
    assert (e.value.status, e.value.code) == (400, "query_refused")


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 (with Retry-After: 0) to the first `fail` requests, then 200; 404 to /missing."""

    fail = 2
    seen: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        if self.path.endswith("/missing"):
            self._answer(404, b'{"error": {"code": "not_found", "message": "no", "details": null}}')
        elif type(self).fail > 0:
            type(self).fail -= 1
            self._answer(503, b'{"error": {"code": "knowledge_base_busy", "message": "busy", "details": null}}',
                         {"Retry-After": "0"})
        else:
            self._answer(200, b'{"status": "ok"}')

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    _Flaky.fail, _Flaky.seen = 2, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_retries_on_503_then_succeeds_but_never_on_404(flaky: str) -> None:
    with Client(flaky, retries=3, backoff=5.0) as c:  # Retry-After: 0 wins over the 5 s backoff
        assert c.health().status == "ok"
    assert _Flaky.seen == ["/healthz"] * 3
    _Flaky.fail, _Flaky.seen = 5, []
    with Client(flaky, retries=1, backoff=0) as c, pytest.raises(MetamlAPIError) as e:
        c.health()
    assert (e.value.status, e.value.code, len(_Flaky.seen)) == (503, "knowledge_base_busy", 2)
    _Flaky.seen = []
    with Client(flaky, retries=3, backoff=0) as c, pytest.raises(MetamlAPIError) as e:
        c.get_run("missing")
    assert e.value.status == 404 and _Flaky.seen == ["/v1/runs/missing"]


def test_retries_connection_errors_with_backoff() -> None:
    from service.testing import free_port

    with Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as c, pytest.raises(Exception) as e:
        c.health()
    assert "Connect" in type(e.value).__name__


def test_async_client(served: ServerProcess, served_world: dict[str, Any], flaky: str) -> None:
    async def go() -> None:
        async with AsyncClient(served.url, api_key=served_world["keys"]["root"], timeout=120) as c:
            assert (await c.health()).status == "ok"
            runs = [r async for r in c.iter_runs(dataset="glue/sst2", limit=5)]
            assert len(runs) > 5 and len({r["run_id"] for r in runs}) == len(runs)
            got = await c.predict(None, "glue/sst2", [CANDIDATE] * 7, batch_size=3, support=0)
            assert [p.index for p in got.predictions] == list(range(7)) and got.n_candidates == 7
            rec, decision, models, sql = await asyncio.gather(
                c.recommend(None, "glue/sst2", SPACE, budget=3), c.decide(None, "glue/sst2", CANDIDATE, 0.5),
                c.models(), c.sql("SELECT 1 AS one"))
            assert len(rec.ranked) == 3 and isinstance(decision, Decision) and models.versions
            assert sql.records() == [{"one": 1}]
            with pytest.raises(MetamlAPIError) as e:
                await c.get_run("f" * 32)
            assert e.value.code == "not_found"
        async with AsyncClient(flaky, backoff=0) as c:
            assert (await c.health()).status == "ok"

    asyncio.run(go())


def test_optuna_example_end_to_end(served: ServerProcess, served_client: Client,
                                   served_world: dict[str, Any]) -> None:
    """The example warm-starts a study, skips with the decide check, scores from the knowledge base through SQL,
    and posts every completed trial back as a run."""
    spec = importlib.util.spec_from_file_location("optuna_warm_start", REPO / "examples" / "optuna_warm_start.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before = served_client.list_runs(source="optuna", limit=1000).count
    study = example.main(["--url", served.url, "--key", served_world["keys"]["root"], "--trials", "10",
                          "--budget", "4"])
    states = [t.state for t in study.trials]
    assert len(states) == 10 and states.count(optuna.trial.TrialState.COMPLETE) >= 4
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(t.user_attrs.get("metaml_warm_start") for t in study.trials[:4])
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.user_attrs["metaml_action"] == "skip" and t.user_attrs["metaml_p_beat"] < 0.05
        elif t.number > 0:
            assert "metaml_p_beat" in t.user_attrs
    posted = list(served_client.iter_runs(source="optuna"))
    completed = states.count(optuna.trial.TrialState.COMPLETE)
    assert before + completed >= len(posted) >= before + 1
    assert {r["dataset"]["name"] for r in posted} == {"glue/sst2"}
    assert all(r["provenance"]["uploader"] == "root" for r in posted)

"""The standalone client (`metaml_client`) against a live server (uvicorn in a child process) over a real knowledge
base and MLflow registry: every method's typed result, error mapping, retries, the async client, `suggest`, the key
hint the examples print, and the Optuna example end to end."""

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
    SuggestResult,
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
    columnar = served_client.predict(None, "SST-2", many, batch_size=10, support=0, columnar=True)
    assert [(p.index, p.points, p.points_lo, p.points_hi) for p in columnar.predictions] == \
        [(p.index, p.points, p.points_lo, p.points_hi) for p in batched.predictions]

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
            columnar = await c.predict(None, "glue/sst2", [CANDIDATE] * 7, batch_size=3, support=0, columnar=True)
            assert [p.points for p in columnar.predictions] == [p.points for p in got.predictions]
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


# -- suggest ----------------------------------------------------------------------------------------------------------
LORA_SPACE = {"models": [{"id": "FacebookAI/roberta-base"}, {"id": "microsoft/deberta-base"}],
              "methods": [{"name": "lora", "lora_r": 8}, {"name": "lora", "lora_r": 16}],
              "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}


def test_suggest_from_a_space_and_from_candidates(served_client: Client) -> None:
    """Typed suggestions from a space (best first, full configurations with the server's names) and from a list
    (indices into it); a history as tuples or dicts moves the proposals on; both or neither candidate source is a
    ValueError before any request; a history entry that is no candidate is a 422 naming its place."""
    first = served_client.suggest(None, "glue/sst2", space=LORA_SPACE, k=3, samples_per_point=2, seed=1)
    assert isinstance(first, SuggestResult) and first.n_candidates == 8 and not first.done and not first.truncated
    assert len(first.suggestions) == 3 and first.basis["mechanism"] == "experts' prior" and first.basis["history"] == 0
    acq = [s.acquisition for s in first.suggestions]
    assert acq == sorted(acq, reverse=True) and len({s.index for s in first.suggestions}) == 3
    top = first.suggestions[0]
    assert top.config["model"]["id"] in {"roberta-base", "microsoft/deberta-base"}
    assert top.config["hparams"]["epochs"] == 3 and 1e-5 <= top.config["hparams"]["learning_rate"] <= 1e-3
    assert top.points_lo <= top.points <= top.points_hi and 0 <= top.p_fail <= 1 and 0 <= top.p_beat <= 1

    history = [(first.suggestions[0].config, 0.91, 300.0), {"config": first.suggestions[1].config, "score": None}]
    again = served_client.suggest(None, "glue/sst2", space=LORA_SPACE, k=2, samples_per_point=2, seed=1,
                                  history=history)
    assert again.basis["evaluated"] == 2 and again.basis["failed"] == 1
    assert not {s.index for s in again.suggestions} & {first.suggestions[0].index, first.suggestions[1].index}

    listed = [s.config for s in first.suggestions]
    by_list = served_client.suggest(None, "glue/sst2", candidates=listed, history=[(listed[2], 0.9)], k=5)
    assert by_list.n_candidates == 3 and {s.index for s in by_list.suggestions} <= {0, 1}
    assert all(s.config["model"] == listed[s.index]["model"] for s in by_list.suggestions)

    with pytest.raises(ValueError, match="not both"):
        served_client.suggest(None, "glue/sst2")
    with pytest.raises(ValueError, match="not both"):
        served_client.suggest(None, "glue/sst2", space=LORA_SPACE, candidates=listed)
    stranger = {"model": {"id": "roberta-base"}, "method": {"name": "lora", "lora_r": 8},
                "hparams": {"learning_rate": 0.5, "epochs": 3}}
    with pytest.raises(MetamlAPIError) as e:
        served_client.suggest(None, "glue/sst2", space=LORA_SPACE, samples_per_point=2, seed=1,
                              history=[(listed[0], 0.9), (stranger, 0.8)])
    assert e.value.status == 422 and e.value.details[0]["loc"] == ["body", "history", 1, "config"]


def test_async_suggest(served: ServerProcess) -> None:
    async def go() -> list[int]:
        async with AsyncClient(served.url, timeout=120) as c:
            answer = await c.suggest(None, "glue/sst2", space=LORA_SPACE, k=2, samples_per_point=2, seed=1)
            return [s.index for s in answer.suggestions]

    with Client(served.url, timeout=120) as c:
        sync = c.suggest(None, "glue/sst2", space=LORA_SPACE, k=2, samples_per_point=2, seed=1)
    assert asyncio.run(go()) == [s.index for s in sync.suggestions]


def test_a_lora_history_of_a_mixed_space_matches_its_candidates(served_client: Client) -> None:
    """A configuration the server proposed, sent back as it came, is one of its candidates."""
    space = {**LORA_SPACE, "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}]}
    answer = served_client.suggest(None, "glue/sst2", space=space, k=24, samples_per_point=2, seed=1)
    lora = [s.config for s in answer.suggestions if s.config["method"]["name"] == "lora"]
    assert lora
    served_client.suggest(None, "glue/sst2", space=space, samples_per_point=2, seed=1, history=[(lora[0], 0.9)])


# -- the examples' key hint -------------------------------------------------------------------------------------------
def test_key_hint_names_the_scope_and_the_command(served_with_keys: ServerProcess,
                                                  served_world: dict[str, Any]) -> None:
    """A 401 (no key, or a bad one) and a 403 (a key without the scope) each give a hint naming the scope and the
    `metaml keys create` command; other errors give none."""
    with Client(served_with_keys.url, retries=0) as anonymous, pytest.raises(MetamlAPIError) as e:
        anonymous.suggest(None, "glue/sst2", space=LORA_SPACE)
    hint = e.value.key_hint()
    assert e.value.status == 401 and "'read' scope" in hint and "metaml keys create --name NAME --scope read" in hint
    with Client(served_with_keys.url, api_key="mk_000000000000_not-a-key", retries=0) as bad, \
            pytest.raises(MetamlAPIError) as e:
        bad.suggest(None, "glue/sst2", space=LORA_SPACE)
    assert e.value.status == 401 and "--scope read" in e.value.key_hint()
    with Client(served_with_keys.url, api_key=served_world["keys"]["reader"], retries=0) as reader, \
            pytest.raises(MetamlAPIError) as e:
        reader.sql("SELECT 1")
    assert e.value.status == 403 and "--scope analyst" in e.value.key_hint()
    assert MetamlAPIError(422, "validation_error", "bad").key_hint() is None


#: Every example that talks to the server, with the key-creating command it must print when run without a key.
EXAMPLE_KEYS = {
    "optuna_suggest.py": "metaml keys create --name NAME --scope read",
    "ray_tune_suggest.py": "metaml keys create --name NAME --scope read",
    "syne_tune_suggest.py": "metaml keys create --name NAME --scope read",
    "optuna_warm_start.py": "metaml keys create --name NAME --scope read --scope analyst --scope write",
    "ray_tune_warm_start.py": "metaml keys create --name NAME --scope read --scope analyst --scope write",
}
#: The examples' shared helpers and the trial script Syne Tune runs: they call no server themselves.
EXAMPLE_HELPERS = {"toy_finetuning.py", "syne_tune_trial.py"}


def test_every_example_is_checked_without_a_key() -> None:
    """Each script in examples/ is either run without a key below or is a helper that calls no server."""
    assert {p.name for p in (REPO / "examples").glob("*.py")} == set(EXAMPLE_KEYS) | EXAMPLE_HELPERS


@pytest.mark.parametrize("example", sorted(EXAMPLE_KEYS))
def test_examples_without_a_key_say_which_key_and_how(example: str, served_with_keys: ServerProcess) -> None:
    """Run without a key against a server that requires one, each example exits 2, before starting any worker, with
    the scope the server asked for, the `metaml keys create` command for the key the example needs, and no
    traceback."""
    if example.startswith("ray"):
        pytest.importorskip("ray")
    if example.startswith("syne"):
        pytest.importorskip("syne_tune")
    done = subprocess.run([sys.executable, str(REPO / "examples" / example), "--url", served_with_keys.url,
                           "--trials", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs an API key with the 'read' scope" in done.stderr and "--key" in done.stderr
    assert EXAMPLE_KEYS[example] in done.stderr
    assert "Traceback" not in done.stderr + done.stdout

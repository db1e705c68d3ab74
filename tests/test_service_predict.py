"""The meta-learner's endpoints over real HTTP (uvicorn in a child process) against a real DuckDB knowledge base
built from the public TransferGraph and OPDA files, and a real MLflow SQLite registry holding two small meta-models:
predict, recommend, decide, the model list, promotion with a hot swap, and the 503 of a server with no model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from collector.features import load_public_text
from metaml._data import load_runs
from metaml._tracking import list_versions, promote
from metaml.serving import PAIR_ROWS, candidate_rows, task_row
from metaml_client import as_columns
from service.keys import create_key
from service.testing import (
    SAMPLE_MODELS,
    ServerProcess,
    register_meta_model,
    sample_candidates,
    served_knowledge_base,
)

MAX_CANDIDATES = 1500
MODELS = SAMPLE_MODELS


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def world(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A knowledge base from the real TransferGraph and OPDA DeBERTa files (SST-2's meta-features computed from its
    text), two small meta-models fitted on it with different seeds, logged as versions 1 and 2 of a fresh SQLite
    registry, version 1 promoted; an admin key and a read key."""
    work = tmp_path_factory.mktemp("service-predict")
    kb = served_knowledge_base(public_data, work)
    runs = load_runs(kb)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    models = [register_meta_model(kb, uri, seed=seed, evaluation={"spearman": 0.3 + seed / 10}) for seed in (0, 1)]
    promote(1, tracking_uri=uri)
    keys = {name: create_key(work / "keys.db", name, scopes)[1]
            for name, scopes in {"root": ["admin"], "reader": ["read"]}.items()}
    return {"work": work, "kb": kb, "runs": runs, "uri": uri, "models": models, "keys": keys}


@pytest.fixture(scope="module")
def server(world: dict[str, Any]) -> Iterator[ServerProcess]:
    with ServerProcess(world["kb"].path, settings={"tracking_uri": world["uri"],
                                                   "max_predict_candidates": MAX_CANDIDATES}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        yield c


def _expected(world: dict[str, Any], answer: dict[str, Any], configs: list[dict[str, Any]], *,
              source: str = "upload") -> pd.DataFrame:
    """What the served model version predicts in-process, from metaml's own candidate rows for the task the server
    resolved."""
    model = world["models"][answer["model"]["version"] - 1]
    task = answer["task"]
    row = task_row({"primary_metric": "accuracy"}, {"name": task["dataset"] or "new-task"}, source=source,
                   dataset_meta=_meta(task["meta"]))
    return model.predict(candidate_rows(row, configs))


def _meta(values: dict[str, Any]) -> Any:
    from collector.schema import DatasetMeta

    return DatasetMeta.model_validate({k: v for k, v in values.items() if v is not None})


def _points(answer: dict[str, Any]) -> np.ndarray:
    return np.array([p["points"] for p in answer["predictions"]])


def test_predict_one_candidate_on_a_known_dataset(client: httpx.Client, world: dict[str, Any]) -> None:
    """A dataset named by its (non-canonical) name takes its meta-features from the knowledge base; the answer holds
    the served version, the model time, points and normalized score, an 80% interval around the points, cost and
    failure probability equal to the model's own in-process prediction, and up to 3 supporting past runs of the same
    model and method, nearest first."""
    configs = [{"model": {"id": "FacebookAI/roberta-base"}, "method": {"name": "full"},
                "hparams": {"learning_rate": 2e-5, "batch_size": 32, "epochs": 3}}]
    r = client.post("/v1/predict", json={"dataset": {"name": "SST-2"}, "candidates": configs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["version"] == 1 and body["model"]["source"] == "registry"
    assert body["model"]["interval_level"] == pytest.approx(0.8)
    assert body["model_ms"] > 0 and body["n_candidates"] == 1
    assert body["task"]["dataset"] == "glue/sst2" and body["task"]["meta_from"] == ["knowledge_base"]
    assert body["task"]["meta"]["landmark_tfidf_lr"] is not None  # computed from the text by enrich_datasets
    (p,) = body["predictions"]
    expected = _expected(world, body, configs).iloc[0]
    assert p["points"] == pytest.approx(expected["points"], abs=1e-9)
    assert p["score"] == pytest.approx(expected["points"] / 100, abs=1e-11)
    assert p["points_lo"] == pytest.approx(expected["lo"], abs=1e-9) and p["points_lo"] < p["points"] < p["points_hi"]
    assert p["p_fail"] == pytest.approx(expected["p_fail"], abs=1e-9) and 0 <= p["p_fail"] <= 1
    assert p["runtime_s"] == pytest.approx(expected["runtime_s"], rel=1e-9)
    assert 1 <= len(p["support"]) <= 3
    assert [s["distance"] for s in p["support"]] == sorted(s["distance"] for s in p["support"])
    for s in p["support"]:
        run = client.get(f"/v1/runs/{s['run_id']}").json()
        assert (run["model"]["id"], run["method"]["name"], run["outcome"]["status"]) == ("roberta-base", "full", "ok")
        assert s["score"] == pytest.approx(run["outcome"]["score"])


def test_predict_with_explicit_meta_features_and_with_a_raw_sample(client: httpx.Client, world: dict[str, Any],
                                                                 public_data: Path) -> None:
    """Explicit meta-features are used as given (and `outputs` leaves out the predictions not asked for); a raw
    sample of texts and labels is described on the server; explicit fields win over the sample's; predictions match
    in-process ones."""
    configs = sample_candidates(5)
    meta = {"n_samples": 8000, "n_classes": 4, "tokens_mean": 35.0, "language": "en"}
    r = client.post("/v1/predict", json={"dataset": {"meta": meta}, "candidates": configs, "support": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == {"dataset": None, "meta_from": ["request"],
                            "meta": {**{k: None for k in body["task"]["meta"]}, **meta}}
    assert all(p["support"] == [] for p in body["predictions"])
    np.testing.assert_allclose(_points(body), _expected(world, body, configs)["points"], atol=1e-9, rtol=0)
    lean = client.post("/v1/predict", json={"dataset": {"meta": meta}, "candidates": configs, "support": 0,
                                            "outputs": ["p_fail"]}).json()
    assert _points(lean).tolist() == _points(body).tolist()
    assert [p["p_fail"] for p in lean["predictions"]] == [p["p_fail"] for p in body["predictions"]]
    assert {(p["rank_score"], p["runtime_s"]) for p in lean["predictions"]} == {(None, None)}

    ds = load_public_text(public_data / "text", "glue_sst2")
    sample = {"texts": ds.texts[:300], "labels": ds.labels[:300], "landmark_sample": 300}
    r = client.post("/v1/predict", json={"dataset": {"sample": sample, "meta": {"n_samples": 67349}},
                                         "candidates": configs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"]["meta_from"] == ["sample", "request"]
    got = body["task"]["meta"]
    assert got["n_samples"] == 67349 and got["n_classes"] == 2 and got["language"] == "en"
    assert got["landmark_tfidf_lr"] is not None and got["tokens_mean"] > 1
    np.testing.assert_allclose(_points(body), _expected(world, body, configs)["points"], atol=1e-9, rtol=0)


def test_predict_a_thousandsample_candidates(client: httpx.Client, world: dict[str, Any]) -> None:
    """1,000 candidates (four models, two methods, varied hyperparameters) are scored in one request, in request
    order, exactly as MetaModel.predict scores metaml's own candidate rows; model time is reported."""
    configs = sample_candidates(1000, seed=3)
    r = client.post("/v1/predict", json={"dataset": {"name": "glue/sst2"}, "candidates": configs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_candidates"] == 1000 and [p["index"] for p in body["predictions"]] == list(range(1000))
    expected = _expected(world, body, configs)
    for col in ("points", "lo", "hi", "p_fail", "runtime_s"):
        got = np.array([p[{"lo": "points_lo", "hi": "points_hi"}.get(col, col)] for p in body["predictions"]])
        np.testing.assert_allclose(got, expected[col], atol=1e-9, rtol=1e-12, err_msg=col)
    assert 0 < body["model_ms"] < 5_000
    assert sum(bool(p["support"]) for p in body["predictions"]) > 500


def test_columnar_candidates_answer_as_objects_do(client: httpx.Client) -> None:
    """The same 600 candidates sent as one array per field answer exactly as the objects do; a field that is no
    candidate field, arrays of different lengths, an invalid value, and both forms or neither answer 422 at the
    place of the error."""
    configs = sample_candidates(600, seed=5)
    configs[4]["hparams"]["weight_decay"] = 0.01  # a field only some candidates set
    base = {"dataset": {"name": "glue/sst2"}}
    objects = client.post("/v1/predict", json={**base, "candidates": configs})
    columns = client.post("/v1/predict", json={**base, "columns": as_columns(configs)})
    assert objects.status_code == 200 and columns.status_code == 200, columns.text
    a, b = objects.json(), columns.json()
    assert a["n_candidates"] == b["n_candidates"] == 600
    assert a["predictions"] == b["predictions"]
    assert len({p["points"] for p in b["predictions"]}) > 10

    def error(columns: dict[str, Any]) -> dict[str, Any]:
        r = client.post("/v1/predict", json={**base, "columns": columns})
        assert r.status_code == 422, r.text
        return r.json()["error"]["details"][0]

    good = as_columns(sample_candidates(5))
    assert error({**good, "hparams.no_such": [1] * 5})["loc"] == ["body", "columns", "hparams.no_such"]
    assert "lengths [4, 5]" in error({**good, "hparams.epochs": [1, 2, 3, 4]})["msg"]
    lr = list(good["hparams.learning_rate"])
    lr[3] = -1.0
    assert error({**good, "hparams.learning_rate": lr})["loc"] == ["body", "columns", "hparams.learning_rate", 3]
    lr[1] = -1.0  # the first candidate holding an invalid value, also where values of several types mix
    assert error({**good, "hparams.learning_rate": lr})["loc"] == ["body", "columns", "hparams.learning_rate", 1]
    mixed = [1, 1.0, "x", -1.0, 1]
    assert error({**good, "hparams.learning_rate": mixed})["loc"] == ["body", "columns", "hparams.learning_rate", 2]
    names = list(good["method.name"])
    names[2] = "no-such-method"
    detail = error({**good, "method.name": names})
    assert detail["loc"] == ["body", "columns", "method.name", 2] and "unknown method" in detail["msg"]
    assert error({k: v for k, v in good.items() if k != "model.id"})["msg"] == "model.id is required"
    both = client.post("/v1/predict", json={**base, "columns": good, "candidates": sample_candidates(5)})
    neither = client.post("/v1/predict", json=base)
    assert both.status_code == neither.status_code == 422
    assert "one of the two" in both.json()["error"]["details"][0]["msg"]


def test_bodies_past_strict_json_reach_validation_and_malformed_ones_answer_where(client: httpx.Client) -> None:
    """Bodies are decoded by orjson, falling back to the standard library for what only it reads: a bare NaN
    learning rate and a seed past 64 bits answer 422 at their field (as before), malformed JSON 422 json_invalid
    with its place."""
    h = {"Content-Type": "application/json"}
    configs = sample_candidates(3)
    strict = json.dumps({"dataset": {"name": "glue/sst2"}, "candidates": configs}).encode()
    configs[1]["hparams"]["learning_rate"] = float("nan")
    configs[2]["hparams"]["seed"] = 2**64
    loose = json.dumps({"dataset": {"name": "glue/sst2"}, "candidates": configs}).encode()  # NaN as a bare literal
    assert b"NaN" in loose
    err = client.post("/v1/predict", content=loose, headers=h).json()["error"]
    assert err["code"] == "validation_error"
    assert {tuple(d["loc"][2:]) for d in err["details"]} >= {(1, "hparams", "learning_rate")}
    configs[1]["hparams"]["learning_rate"] = 1e-5
    err = client.post("/v1/predict", content=json.dumps({"dataset": {"name": "glue/sst2"}, "candidates": configs}),
                      headers=h).json()["error"]
    assert err["details"][0]["loc"] == ["body", "candidates", 2, "hparams", "seed"]
    bad = client.post("/v1/predict", content=strict[:-5], headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["type"] == "json_invalid"
    assert bad.json()["error"]["details"][0]["loc"][0] == "body"
    assert client.post("/v1/predict", content=strict, headers=h).status_code == 200


def test_invalid_candidates_answer_422_with_the_field(client: httpx.Client) -> None:
    """A candidate the record's own parts refuse (negative learning rate, unknown method, missing model id) answers
    422 validation_error whose details point at the field, with no stack trace; more candidates than
    max_predict_candidates answer 422 batch_too_large; a dataset with no known meta-features 422 unknown_dataset."""
    configs = sample_candidates(10)
    configs[7]["hparams"]["learning_rate"] = -1
    bad = client.post("/v1/predict", json={"dataset": {"name": "glue/sst2"}, "candidates": configs})
    assert bad.status_code == 422
    err = bad.json()["error"]
    assert err["code"] == "validation_error" and err["details"][0]["loc"] == ["body", "candidates", 7, "hparams",
                                                                                "learning_rate"]
    assert "Traceback" not in bad.text
    configs = sample_candidates(3)
    configs[1]["method"] = {"name": "no-such-method"}
    err = client.post("/v1/predict", json={"dataset": {"name": "glue/sst2"}, "candidates": configs}).json()["error"]
    assert err["details"][0]["loc"] == ["body", "candidates", 1, "method", "name"]
    assert "unknown method" in err["details"][0]["msg"]
    err = client.post("/v1/predict", json={"dataset": {"name": "glue/sst2"},
                                           "candidates": [{"model": {}}]}).json()["error"]
    assert err["details"][0]["loc"] == ["body", "candidates", 0, "model", "id"]

    many = client.post("/v1/predict", json={"dataset": {"name": "glue/sst2"},
                                            "candidates": sample_candidates(MAX_CANDIDATES + 1)})
    assert many.status_code == 422
    assert many.json()["error"]["code"] == "batch_too_large"
    assert many.json()["error"]["details"] == {"max_predict_candidates": MAX_CANDIDATES}

    unknown = client.post("/v1/predict",
                          json={"dataset": {"name": "no/such-dataset"}, "candidates": sample_candidates(1)})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_dataset"
    nothing = client.post("/v1/predict", json={"dataset": {}, "candidates": sample_candidates(1)})
    assert nothing.status_code == 422 and nothing.json()["error"]["code"] == "validation_error"


def test_recommend_ranks_the_space_and_gives_priors(client: httpx.Client, world: dict[str, Any]) -> None:
    """A space of 3 models x 2 methods x 2 batch sizes with a log-uniform learning rate (8 draws per grid point) is
    enumerated (96 candidates), scored and ranked; the top `budget` come back best first with their configurations
    inside the space; priors come in the Optuna, Ray Tune and grammar shapes; the same seed gives the same answer."""
    space = {"models": [{"id": m} for m in MODELS[:3]],
             "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}],
             "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}, "batch_size": [16, 32]},
             "fixed": {"epochs": 3}}
    request = {"dataset": {"name": "glue/sst2"}, "space": space, "budget": 7, "samples_per_point": 8, "enqueue": 4}
    r = client.post("/v1/recommend", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_candidates"] == 3 * 2 * 2 * 8 and body["truncated"] is False
    ranked = body["ranked"]
    assert [x["rank"] for x in ranked] == list(range(1, 8))
    utilities = [x["utility"] for x in ranked]
    assert utilities == sorted(utilities, reverse=True)
    for x in ranked:
        c = x["config"]
        assert c["model"]["id"] in MODELS[:3] and c["method"]["name"] in ("full", "lora")
        assert 1e-5 <= c["hparams"]["learning_rate"] <= 1e-3 and c["hparams"]["batch_size"] in (16, 32)
        assert c["hparams"]["epochs"] == 3
        assert x["points_lo"] < x["points"] < x["points_hi"] and x["score"] == pytest.approx(x["points"] / 100)
    assert body["params"] == {"model": "model", "method": "method", "learning_rate": "hparams.learning_rate",
                              "batch_size": "hparams.batch_size"}
    optuna, ray, grammar = (body["priors"][k] for k in ("optuna", "ray_tune", "grammar"))
    assert len(optuna["enqueue_trials"]) == 4 and len(ray["points_to_evaluate"]) == 4
    assert optuna["enqueue_trials"][0]["learning_rate"] == ranked[0]["config"]["hparams"]["learning_rate"]
    assert set(grammar) == {"model", "method", "learning_rate", "batch_size"}
    assert grammar["learning_rate"]["type"] == "lognormal" and grammar["learning_rate"]["low"] >= 1e-5
    assert grammar["model"]["type"] == "categorical" and sum(grammar["model"]["weights"]) == pytest.approx(1)
    assert set(grammar["method"]["values"]) == {"full", "lora(lora_r=8)"}
    assert optuna["distributions"] == grammar == ray["param_space"]
    assert client.post("/v1/recommend", json=request).json()["ranked"] == ranked

    # the best configuration is the one the model scores highest among the candidates it was given
    top = ranked[0]["config"]
    again = client.post("/v1/predict", json={"dataset": {"name": "glue/sst2"}, "candidates": [top], "support": 0})
    assert again.json()["predictions"][0]["points"] == pytest.approx(ranked[0]["points"], abs=1e-9)


def test_recommend_caps_large_spaces(client: httpx.Client) -> None:
    """A grid larger than max_candidates is sampled (truncated) down to it; an unsearchable hyperparameter or an
    invalid value is a 422 that names it."""
    space = {"models": [{"id": m} for m in MODELS], "methods": [{"name": "full"}, {"name": "bitfit"}],
             "hparams": {"learning_rate": [1e-5, 2e-5, 3e-5, 5e-5, 1e-4], "batch_size": [8, 16, 32, 64],
                         "epochs": [1, 2, 3, 4, 5]}}
    body = client.post("/v1/recommend", json={"dataset": {"name": "glue/sst2"}, "space": space, "budget": 3,
                                              "max_candidates": 100}).json()
    assert body["n_candidates"] == 100 and body["truncated"] is True and len(body["ranked"]) == 3
    bad = client.post("/v1/recommend", json={"dataset": {"name": "glue/sst2"},
                                             "space": {**space, "hparams": {"learning_rate": [1e-5, -1.0]}}})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["loc"][:5] == ["body", "space", "hparams", "learning_rate", 1]
    bad = client.post("/v1/recommend", json={"dataset": {"name": "glue/sst2"},
                                             "space": {**space, "hparams": {"extra": [1]}}})
    assert bad.status_code == 422 and "searchable" in bad.json()["error"]["message"]


def _sst2_candidates() -> list[dict[str, Any]]:
    """24 configurations of three models, full fine-tuning and LoRA, four learning rates."""
    return [{"model": {"id": m}, "method": method, "hparams": {"learning_rate": lr, "batch_size": 32, "epochs": 3}}
            for m in MODELS[:3] for method in ({"name": "full"}, {"name": "lora", "lora_r": 8})
            for lr in (1e-5, 3e-5, 1e-4, 3e-4)]


def test_suggest_starts_from_the_best_expected_utility_and_learns_from_the_history(client: httpx.Client,
                                                                                    world: dict[str, Any]) -> None:
    """With no history the first proposal is the candidate with the best acquisition (expected improvement over the
    best of the experts' prior mixture, discounted by p_fail, per unit of predicted cost), with the served model's
    prediction of it; k proposals are distinct and best first; a configuration in the history is never proposed
    again; once 3 scored the belief rests on the experts (past tasks weighed by the history); scores in points or
    normalized agree."""
    configs = _sst2_candidates()
    task = {"dataset": {"name": "glue/sst2"}}
    r = client.post("/v1/suggest", json={**task, "candidates": configs, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_candidates"] == 24 and len(body["suggestions"]) == 3 and not body["done"]
    first = body["suggestions"]
    assert [s["acquisition"] for s in first] == sorted((s["acquisition"] for s in first), reverse=True)
    assert len({s["index"] for s in first}) == 3 and body["basis"]["mechanism"] == "experts' prior"
    top = first[0]
    assert top["config"]["model"] == configs[top["index"]]["model"]
    predicted = client.post("/v1/predict", json={**task, "candidates": [configs[top["index"]]], "support": 0}).json()
    assert predicted["predictions"][0]["points"] == pytest.approx(top["points"], abs=1e-9)

    rng = np.random.default_rng(0)
    tried = [s["index"] for s in first] + [int(i) for i in rng.choice(24, 3, replace=False)]
    history = [{"config": configs[i], "score": float(0.85 + 0.01 * rng.random()), "runtime_s": 600.0}
               for i in dict.fromkeys(tried)]
    r = client.post("/v1/suggest", json={**task, "candidates": configs, "history": history, "k": 5})
    body = r.json()
    assert r.status_code == 200, r.text
    proposed = {s["index"] for s in body["suggestions"]}
    assert proposed and not proposed & set(tried) and body["basis"]["history"] == len(history)
    assert body["basis"]["mechanism"].startswith(("experts", "meta-model"))
    in_points = [{**h, "score": 100 * h["score"]} for h in history]
    again = client.post("/v1/suggest", json={**task, "candidates": configs, "history": in_points, "k": 5,
                                             "unit": "points"}).json()
    assert [s["index"] for s in again["suggestions"]] == [s["index"] for s in body["suggestions"]]


def test_suggest_from_a_space_and_its_bad_inputs(client: httpx.Client) -> None:
    """From a space the candidates are enumerated as /v1/recommend does (same seed, same candidates), so a history of
    earlier suggestions matches them; a history entry that is no candidate, a score outside the metric's scale, k=0,
    both a list and a space, and more candidates than the server weighs each get a 4xx that names the problem."""
    space = {"models": [{"id": m} for m in MODELS[:2]], "methods": [{"name": "full"}],
             "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}
    task = {"dataset": {"name": "glue/sst2"}, "space": space, "samples_per_point": 6}
    body = client.post("/v1/suggest", json={**task, "k": 2}).json()
    assert body["n_candidates"] == 12 and len(body["suggestions"]) == 2
    for s in body["suggestions"]:
        assert s["config"]["model"]["id"] in MODELS[:2] and 1e-5 <= s["config"]["hparams"]["learning_rate"] <= 1e-3
    history = [{"config": s["config"], "score": 0.9} for s in body["suggestions"]]
    nxt = client.post("/v1/suggest", json={**task, "history": history}).json()
    assert nxt["suggestions"][0]["index"] not in {s["index"] for s in body["suggestions"]}

    stranger = {"model": {"id": "roberta-base"}, "hparams": {"learning_rate": 0.5}}
    r = client.post("/v1/suggest", json={**task, "history": [*history, {"config": stranger, "score": 0.5}]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["body", "history", 2, "config"]
    r = client.post("/v1/suggest", json={**task, "history": [{**history[0], "score": 1.7}]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["body", "history", 0, "score"]
    assert client.post("/v1/suggest", json={**task, "k": 0}).status_code == 422
    both = client.post("/v1/suggest", json={**task, "candidates": _sst2_candidates()})
    assert both.status_code == 422 and "not both" in both.json()["error"]["message"]
    many = client.post("/v1/suggest", json={"dataset": {"name": "glue/sst2"},
                                            "candidates": [{"model": {"id": "roberta-base"}}] * 50_000})
    assert many.status_code in (413, 422) and many.json()["error"]["code"] == "batch_too_large"


# the fields of the OPDA search space: its runs all carry them, so a candidate that leaves them out sits where the
# knowledge base holds no runs of this grid
OPDA_SPACE = {"batch_size": 32, "epochs": 3, "max_steps": 7000, "warmup_steps": 100, "dropout": 0.1}


def test_decide_skips_a_clearly_bad_candidate_and_evaluates_a_strong_one(client: httpx.Client) -> None:
    """On the OPDA task (DeBERTa on MNLI: learning rates near 1e-3 diverge to chance), a candidate predicted far
    below the incumbent's configuration is skipped with p_beat below the threshold; the incumbent's configuration
    against a weak incumbent is evaluated; the incumbent in points or normalized gives the same decision."""
    lrs = [1e-5, 2e-5, 5e-5, 2e-4, 6e-4, 9.5e-4]
    configs = [{"model": {"id": "microsoft/deberta-base"}, "hparams": {**OPDA_SPACE, "learning_rate": lr}}
               for lr in lrs]
    task = {"dataset": {"name": "glue/mnli"}, "source": "opda"}
    preds = client.post("/v1/predict", json={**task, "candidates": configs, "support": 0}).json()
    preds = preds["predictions"]
    worst = configs[int(np.argmin([p["points"] for p in preds]))]
    best = configs[int(np.argmax([p["points"] for p in preds]))]
    assert max(p["points"] for p in preds) - min(p["points"] for p in preds) > 15

    skip = client.post("/v1/decide", json={**task, "candidate": worst, "incumbent": 0.89, "unit": "score",
                                           "incumbent_config": best, "max_false_skip": 0.1}).json()
    assert skip["action"] == "skip" and skip["p_beat"] < skip["threshold"] == 0.1
    assert skip["basis"].startswith("within-task difference")
    assert skip["stated_false_skip_rate"] == 0.1 and skip["incumbent_points"] == pytest.approx(89.0)
    in_points = client.post("/v1/decide", json={**task, "candidate": worst, "incumbent": 89.0, "unit": "points",
                                                "incumbent_config": best, "max_false_skip": 0.1}).json()
    assert (in_points["action"], in_points["p_beat"]) == (skip["action"], skip["p_beat"])

    evaluate = client.post("/v1/decide", json={**task, "candidate": best, "incumbent": 0.40, "unit": "score",
                                               "incumbent_config": worst}).json()
    assert evaluate["action"] == "evaluate" and evaluate["p_beat"] > 0.5
    assert evaluate["predicted_score"] == pytest.approx(evaluate["predicted_points"] / 100)
    plain = client.post("/v1/decide", json={**task, "candidate": best, "incumbent": 40, "unit": "points",
                                            "tolerance": 1.0}).json()
    assert plain["action"] == "evaluate" and plain["basis"] == "absolute prediction"
    assert plain["tolerance_points"] == 1.0
    missing_unit = client.post("/v1/decide", json={**task, "candidate": best, "incumbent": 0.4})
    assert missing_unit.status_code == 422 and missing_unit.json()["error"]["details"][0]["loc"] == ["body", "unit"]


def test_decide_recalibrates_to_the_search_history(client: httpx.Client) -> None:
    """With the search's history the answer comes from the task-recalibrated basis, computed as the library computes
    it: a history whose scores sit exactly on the predictions makes the rule sharper than one whose scores scatter
    20 points around them; failed runs (null) are left out of the count; fewer than 3 scored falls back."""
    lrs = [1e-5, 2e-5, 5e-5, 2e-4, 6e-4]
    configs = [{"model": {"id": "microsoft/deberta-base"}, "hparams": {**OPDA_SPACE, "learning_rate": lr}}
               for lr in lrs]
    task = {"dataset": {"name": "glue/mnli"}, "source": "opda"}
    preds = client.post("/v1/predict", json={**task, "candidates": configs, "support": 0}).json()["predictions"]
    points = [p["points"] for p in preds]
    cand, past = configs[-1], list(range(4))
    incumbent = max(points[i] for i in past)

    def ask(scores: list[float | None]) -> dict[str, Any]:
        history = [{"config": configs[i], "score": s} for i, s in zip(past, scores, strict=True)]
        answer = client.post("/v1/decide", json={**task, "candidate": cand, "incumbent": incumbent, "unit": "points",
                                                  "tolerance": 0.0, "history": history})
        assert answer.status_code == 200, answer.text
        return answer.json()

    exact = ask([points[i] for i in past])
    scattered = ask([points[i] + d for i, d in zip(past, (20.0, -20.0, 20.0, -20.0), strict=True)])
    assert exact["basis"] == scattered["basis"] == "task-recalibrated on 4 evaluated configurations"
    gap = incumbent - points[-1]
    assert (exact["p_beat"] < scattered["p_beat"]) if gap > 0 else (exact["p_beat"] > scattered["p_beat"])
    with_failures = ask([points[0], None, points[2], None])
    assert with_failures["basis"] == "absolute prediction"
    assert ask([points[0], None, points[2], points[3]])["basis"] == "task-recalibrated on 3 evaluated configurations"


def test_models_list_and_promotion_need_the_admin_scope(client: httpx.Client, world: dict[str, Any]) -> None:
    """GET /v1/models lists both versions with aliases, key metrics and which one is served; promoting needs an admin
    key (401 without a key, 403 with a read key) and a registered version (404)."""
    body = client.get("/v1/models").json()
    assert [v["version"] for v in body["versions"]] == [1, 2]
    served = {v["version"]: v for v in body["versions"]}
    assert body["loaded"]["version"] in (1, 2) and served[body["loaded"]["version"]]["loaded"]
    assert served[2]["metrics"] == {"spearman": pytest.approx(0.4)}
    assert "production" in served[body["loaded"]["version"]]["aliases"]
    assert client.post("/v1/models/2/promote").status_code == 401
    r = client.post("/v1/models/2/promote", headers=_auth(world["keys"]["reader"]))
    assert r.status_code == 403 and r.json()["error"]["details"]["needed"] == "admin"
    r = client.post("/v1/models/99/promote", headers=_auth(world["keys"]["root"]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "/" not in r.json()["error"]["message"].replace("/v1/models", "")


def test_promotion_hot_swaps_the_model_while_requests_run(client: httpx.Client, server: ServerProcess,
                                                         world: dict[str, Any]) -> None:
    """Promote version 2 while four clients keep predicting: every request succeeds (those in flight finish on the
    model they started with), and every answer after the promotion comes from version 2, as version 2 predicts
    in-process; the registry's production alias and /readyz follow."""
    root = _auth(world["keys"]["root"])
    client.post("/v1/models/1/promote", headers=root).raise_for_status()
    configs = sample_candidates(200, seed=5)
    request = {"dataset": {"name": "glue/sst2"}, "candidates": configs, "support": 1}
    answers: list[tuple[float, float, int, int | None]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=120.0) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post("/v1/predict", json=request)
                version = r.json()["model"]["version"] if r.status_code == 200 else None
                answers.append((sent, time.monotonic(), r.status_code, version))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        promoted = client.post("/v1/models/2/promote", headers=root)
        done = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["version"] == 2 and promoted.json()["loaded"]["version"] == 2
    assert promoted.json()["previous"]["version"] == 1 and promoted.json()["aliases"] == ["production"]
    assert {status for _, _, status, _ in answers} == {200}
    assert {v for sent, _, _, v in answers if sent > done} == {2}
    assert {v for _, received, _, v in answers if received < done - 0.5} <= {1, 2}
    assert any(v == 1 for *_, v in answers) and any(v == 2 for *_, v in answers)

    after = client.post("/v1/predict", json=request).json()
    assert after["model"]["version"] == 2
    np.testing.assert_allclose(_points(after), _expected(world, after, configs)["points"], atol=1e-9, rtol=0)
    assert not np.allclose(_points(after), world["models"][0].predict(
        candidate_rows(task_row({"primary_metric": "accuracy"}, {"name": "glue/sst2"},
                                dataset_meta=_meta(after["task"]["meta"])), configs))["points"])
    assert [v.aliases for v in list_versions(tracking_uri=world["uri"])] == [(), ("production",)]
    assert client.get("/readyz").json() == {"status": "ready", "reason": None, "model": "loaded", "model_version": 2}


def test_server_without_a_model_answers_503_and_stays_ready(world: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """With no registry (nothing trained or promoted), the prediction endpoints answer 503 model_unavailable saying
    what to run; /readyz still reports the knowledge base ready and the model absent; the model list is empty."""
    empty = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    with ServerProcess(world["kb"].path, keys_db=world["work"] / "keys.db", settings={"tracking_uri": empty},
                       log_path=tmp_path / "server.log") as s, httpx.Client(base_url=s.url, timeout=60) as c:
        r = c.post("/v1/predict", json={"dataset": {"name": "glue/sst2"}, "candidates": sample_candidates(2)})
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.json()["error"]["code"] == "model_unavailable"
        message = r.json()["error"]["message"]
        assert "metaml train" in message and "metaml models promote" in message
        for path, body in (("/v1/recommend", {"dataset": {"name": "glue/sst2"},
                                               "space": {"models": [{"id": "roberta-base"}]}}),
                           ("/v1/decide", {"dataset": {"name": "glue/sst2"}, "candidate": sample_candidates(1)[0],
                                           "incumbent": 0.9, "unit": "score"})):
            assert c.post(path, json=body).json()["error"]["code"] == "model_unavailable"
        assert c.get("/readyz").json() == {"status": "ready", "reason": None, "model": "absent", "model_version": None}
        assert c.get("/v1/models").json() == {"registered_name": "metaml-meta-model", "loaded": None, "versions": []}
        r = c.post("/v1/models/1/promote", headers=_auth(world["keys"]["root"]))
        assert r.status_code == 404
    assert not (tmp_path / "none").exists()


def test_batch_predictions_equal_one_row_at_a_time_on_real_runs(world: dict[str, Any]) -> None:
    """The served model's predictions of 300 real runs of the knowledge base (every source, missing values included)
    do not depend on the batch: the batch equals each row predicted alone, to 1e-9."""
    model = world["models"][0]
    rows = world["runs"].sample(300, random_state=0).reset_index(drop=True)
    batch = model.predict(rows)
    alone = pd.concat([model.predict(rows.iloc[[i]]) for i in range(len(rows))])
    np.testing.assert_allclose(batch.to_numpy(dtype=float), alone.to_numpy(dtype=float), atol=1e-9, rtol=0)


def test_candidate_objects_validated_once_per_part_are_the_candidates_validated_one_by_one() -> None:
    """``/v1/predict``'s candidate objects, validated once per distinct part from the decoded JSON, give the rows
    and pairs of the same objects validated one by one as ``Candidate``s; an invalid one answers the error pydantic
    gives that candidate, at its place and with its type."""
    from pydantic import TypeAdapter, ValidationError

    from metaml.errors import InvalidCandidates
    from metaml.serving import as_frame, candidate_columns, object_candidates
    from service.api.schemas import Candidate

    configs: list[Any] = [
        *sample_candidates(200, seed=3),
        {"model": {"id": "gpt2", "n_params": 124_000_000, "revision": "main"}},
        {"model": {"id": "roberta-base"}, "method": {"name": "LoRA", "lora_r": 8, "lora_alpha": None,
                                                     "target_modules": ["query", "value"], "config": {"bias": "none"}},
         "hparams": {"lr_scheduler": "Cosine", "batch_size": "16", "extra": {"note": 1}}},
        {"model": {"id": "roberta-base"}, "method": {"name": "lora", "lora_r": 8, "target_modules": ["query", "value"],
                                                     "config": {"bias": "none"}}, "hparams": {"batch_size": 16}},
        {"model": {"id": "roberta-base"}, "hparams": {"learning_rate": 1, "epochs": True}},
    ]
    row = task_row({"primary_metric": "accuracy"}, {"name": "glue/sst2"}, source="upload")
    parts = TypeAdapter(list[Candidate])
    ours = object_candidates(row, configs)
    theirs = candidate_columns(row, parts.validate_python(configs))
    frame = as_frame(ours)
    pd.testing.assert_frame_equal(frame, as_frame(theirs))
    shared = frame[[c for c in frame if not c.startswith("hparams_")]].astype(str)
    # one pair, one set of values but the hyperparameters
    assert (shared.groupby(ours.pairs.codes).nunique(dropna=False) == 1).all().all()
    # "LoRA" with a null and "lora" without: two sendings of one validated pair (one key, the same row)
    assert len(set(ours.pairs.codes)) == len(set(theirs.pairs.codes)) + 1
    assert set(ours.pairs.keys) == set(theirs.pairs.keys) and len(set(ours.pairs.keys)) == len(set(theirs.pairs.codes))

    good = sample_candidates(2, seed=4)
    for bad in (5, {"model": {"id": "roberta-base"}, "extra": 1}, {"method": {"name": "full"}},
                {"model": {"id": "roberta-base"}, "method": {"lora_r": 8}},
                {"model": {"id": "roberta-base"}, "method": None},
                {"model": {"id": "roberta-base", "colour": "red"}}, {"model": {"id": None}}, {"model": []},
                {"model": {"id": "roberta-base"}, "hparams": {"learning_rate": -1}},
                {"model": {"id": "roberta-base"}, "method": {"name": "no-such-method"}},
                {"model": {"id": "roberta-base"}, "method": {"name": "full", "config": None}},
                {"model": {"id": "roberta-base"}, "hparams": {"extra": None}},
                {"model": {"id": "roberta-base"}, "hparams": {"batch_size": "many"}},
                {"model": {"id": "roberta-base"}, "hparams": []}):
        batch = [*good, bad, *good]
        with pytest.raises(ValidationError) as expected:
            parts.validate_python(batch)
        with pytest.raises(InvalidCandidates) as got:
            object_candidates(row, batch)
        first = expected.value.errors()[0]
        assert (got.value.errors[0]["loc"], got.value.errors[0]["type"]) == (("candidates", *first["loc"]),
                                                                              first["type"]), bad


def test_candidate_rows_fill_the_registry_and_survive_the_cache(world: dict[str, Any]) -> None:
    """Candidate rows get model features from the shipped registry where the configuration gives none (and keep
    those it gives); a second, cached build of the same batch is identical; a bad method answers with its place."""
    from metaml.errors import InvalidCandidates

    configs = [*sample_candidates(60, seed=9),
               {"model": {"id": "gpt2", "n_params": 124_000_000}, "method": {"name": "ia3"},
                "hparams": {"lr_scheduler": "Cosine", "warmup_ratio": 0.1}}]
    row = task_row({"primary_metric": "f1"}, {"name": "glue/mrpc", "n_train_used": 500}, source="upload")
    PAIR_ROWS._cache.clear()
    cold = candidate_rows(row, configs)
    warm = candidate_rows(row, configs)
    pd.testing.assert_frame_equal(cold, warm)
    roberta = cold[cold["model_id"] == "roberta-base"]
    assert len(roberta) and roberta["model_n_params"].notna().all() and (roberta["model_family"] == "roberta").all()
    assert cold["model_n_params"].iloc[-1] == 124_000_000 and cold["hparams_lr_scheduler"].iloc[-1] == "cosine"
    with pytest.raises(InvalidCandidates) as err:
        candidate_rows(row, [*configs[:2], {"model": {"id": "roberta-base"}, "method": {"name": "no-such-method"}}])
    assert err.value.errors[0]["loc"][:4] == ("candidates", 2, "method", "name")

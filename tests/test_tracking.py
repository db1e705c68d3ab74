"""The MLflow registry of meta-models, on a real SQLite MLflow store: log, list, promote, load, serve, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from collector.ingest import ingest_path
from collector.store import KnowledgeBase
from metaml._artifact import snapshot_id
from metaml._data import load_runs
from metaml._estimators import CostEstimator, FailureEstimator, MetaModel, OutcomeEstimator
from metaml._tracking import (
    PRODUCTION_ALIAS,
    REGISTERED_MODEL,
    artifact_location,
    flatten_metrics,
    list_versions,
    load_version,
    log_model_version,
    promote,
    served_outcome_frame,
)
from metaml.errors import TrackingError
from service.cli.models import models


def _fit(runs: pd.DataFrame, seed: int) -> MetaModel:
    return MetaModel(outcome=OutcomeEstimator(n_estimators=50, n_jobs=1, random_state=seed),
                     cost=CostEstimator(n_estimators=50, n_jobs=1),
                     failure=FailureEstimator(n_estimators=50, n_jobs=1), random_state=seed).fit(runs)


@pytest.fixture(scope="module")
def registry(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two meta-models fitted (with different seeds) on the real TransferGraph runs, logged as versions 1 and 2 of
    the registered model in a fresh SQLite MLflow store; version 2 comes with a report directory and extra params."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb") / "kb.duckdb")
    ingest_path(kb, public_data / "metadatasets" / "transfergraph")
    runs = load_runs(kb)
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    reports = store / "report"
    reports.mkdir()
    (reports / "report.md").write_text("# evaluation\n")
    models_, infos = [], []
    for seed, evaluation in ((0, {"spearman": 0.31, "ndcg@5": 0.7}), (1, {"spearman": 0.42, "ndcg@5": 0.8})):
        model = _fit(runs, seed)
        metadata = {"kb_snapshot": snapshot_id(kb), "evaluation": {**evaluation, "coverage": float("nan")}}
        extra = {"params": {"rank_mode": "relative"}, "artifacts_dir": reports} if seed == 1 else {}
        infos.append(log_model_version(model, metadata, tracking_uri=uri, **extra))
        models_.append(model)
    return {"uri": uri, "store": store, "runs": runs, "kb": kb, "models": models_, "infos": infos}


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_two_logged_versions_are_listed_with_their_metrics(registry: dict[str, Any]) -> None:
    """Versions 1 and 2 are listed oldest first, each with its own run, its finite evaluation metrics (``@`` spelled
    ``_at_``, NaN left out), the knowledge-base snapshot, READY status and no alias yet at logging time."""
    v1, v2 = registry["infos"]
    assert (v1.version, v2.version) == (1, 2) and v1.run_id != v2.run_id and v1.aliases == ()
    listed = list_versions(tracking_uri=registry["uri"])
    assert [v.version for v in listed] == [1, 2]
    assert listed[0].metrics == {"spearman": 0.31, "ndcg_at_5": 0.7}
    assert listed[1].metrics == {"spearman": 0.42, "ndcg_at_5": 0.8}
    assert {v.kb_snapshot for v in listed} == {snapshot_id(registry["kb"])}
    assert {v.status for v in listed} == {"READY"} and all(v.created_at for v in listed)
    assert listed[1].key_metrics() == {"spearman": 0.42, "ndcg_at_5": 0.8}


def test_artifacts_live_beside_the_sqlite_database(registry: dict[str, Any]) -> None:
    """With a sqlite:/// URI the experiment's artifacts go to <db dir>/mlartifacts (a file URI), not ./mlruns."""
    location = (registry["store"] / "mlartifacts").as_uri()
    assert artifact_location(registry["uri"]) == location
    assert all(info.artifact_uri.startswith(location + "/") for info in registry["infos"])
    assert list((registry["store"] / "mlartifacts").rglob("model.joblib"))


def test_the_run_holds_params_tags_and_artifacts(registry: dict[str, Any]) -> None:
    """The run has the model's (nested) params and the caller's, the snapshot and schema tags, and the artifacts:
    meta_model/ (joblib + metadata), pyfunc/, outcome_lgbm/ and the report files under reports/."""
    info = registry["infos"][1]
    run = _client(registry["uri"]).get_run(info.run_id)
    assert run.data.params["outcome__n_estimators"] == "50" and run.data.params["rank_mode"] == "relative"
    assert run.data.tags["kb_snapshot"] == info.kb_snapshot and run.data.tags["schema_version"]
    assert run.info.status == "FINISHED"
    root = Path(info.artifact_uri.removeprefix("file://"))
    for path in ("meta_model/model.joblib", "meta_model/metadata.json", "pyfunc/MLmodel", "outcome_lgbm/MLmodel",
                 "outcome_lgbm/categories.json", "reports/report.md"):
        assert (root / path).is_file(), path
    mv = _client(registry["uri"]).get_model_version(REGISTERED_MODEL, "2")
    assert mv.source == f"{info.artifact_uri}/pyfunc" and mv.run_id == info.run_id


def test_promotion_chooses_the_version_that_loads(registry: dict[str, Any]) -> None:
    """Nothing promoted: loading fails clearly. Promote 1, then 2: the alias moves, and loading 'production' gives
    version 2's model, which predicts exactly like the in-memory one; an explicit version loads that version."""
    uri = registry["uri"]
    client = _client(uri)
    if PRODUCTION_ALIAS in client.get_registered_model(REGISTERED_MODEL).aliases:
        client.delete_registered_model_alias(REGISTERED_MODEL, PRODUCTION_ALIAS)
    with pytest.raises(TrackingError, match="promote one with"):
        load_version(tracking_uri=uri)
    assert promote(1, tracking_uri=uri).aliases == (PRODUCTION_ALIAS,)
    assert promote(2, tracking_uri=uri).aliases == (PRODUCTION_ALIAS,)
    assert [v.aliases for v in list_versions(tracking_uri=uri)] == [(), (PRODUCTION_ALIAS,)]
    model, meta = load_version(tracking_uri=uri)
    assert meta["registry"]["version"] == 2 and meta["registry"]["run_id"] == registry["infos"][1].run_id
    rows = registry["runs"].sample(200, random_state=1)
    pd.testing.assert_frame_equal(model.predict(rows), registry["models"][1].predict(rows), check_exact=True)
    first, meta1 = load_version(tracking_uri=uri, version=1)
    assert meta1["registry"]["version"] == 1
    pd.testing.assert_frame_equal(first.predict(rows), registry["models"][0].predict(rows), check_exact=True)


def test_missing_versions_and_empty_registries_are_clear_errors(registry: dict[str, Any], tmp_path: Path) -> None:
    """Promoting or loading a version that does not exist, or anything from a registry that does not exist (which is
    not created by asking), raises TrackingError; listing an empty registry gives no versions."""
    with pytest.raises(TrackingError, match="no version 99"):
        promote(99, tracking_uri=registry["uri"])
    with pytest.raises(TrackingError, match="no version 99"):
        load_version(tracking_uri=registry["uri"], version=99)
    empty = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert list_versions(tracking_uri=empty) == []
    with pytest.raises(TrackingError, match="no MLflow registry"):
        load_version(tracking_uri=empty)
    with pytest.raises(TrackingError, match="no MLflow registry"):
        promote(1, tracking_uri=empty)
    assert not (tmp_path / "none").exists()
    with pytest.raises(TrackingError, match="is registered"):
        load_version(tracking_uri=registry["uri"], registered_name="no-such-model")


def test_outcome_lgbm_loads_with_the_lightgbm_flavor(registry: dict[str, Any]) -> None:
    """outcome_lgbm/ loads with mlflow.lightgbm and predicts the ranking view's numbers on featurized rows; as a
    pyfunc (what `mlflow models serve` runs) it predicts the same from the served frame (category codes)."""
    import mlflow.lightgbm
    import mlflow.pyfunc

    model, info = registry["models"][1], registry["infos"][1]
    rows = registry["runs"].sample(200, random_state=2)
    feats = model.featurizer_.transform(rows)
    expected = model.outcome_.ranker_.booster_.predict(feats.to_numpy())
    np.testing.assert_array_equal(mlflow.lightgbm.load_model(info.outcome_uri).predict(feats), expected)
    served = mlflow.pyfunc.load_model(info.outcome_uri).predict(served_outcome_frame(model, rows))
    np.testing.assert_array_equal(np.asarray(served).ravel(), expected)


def test_registered_pyfunc_predicts_like_the_model(registry: dict[str, Any]) -> None:
    """The registered pyfunc model takes runs-table rows (missing columns allowed) and returns MetaModel.predict."""
    import mlflow.pyfunc

    model, info = registry["models"][0], registry["infos"][0]
    rows = registry["runs"].head(20).drop(columns=["outcome_score", "outcome_status", "run_id"])
    pyfunc = mlflow.pyfunc.load_model(f"{info.artifact_uri}/pyfunc")
    pd.testing.assert_frame_equal(pyfunc.predict(rows), model.predict(rows), check_exact=True)


def test_flatten_metrics_keeps_finite_numbers_under_valid_names() -> None:
    """Nested metrics become dotted names, ``@`` becomes ``_at_``; NaN, None, booleans and strings are left out."""
    values = {"lodo": {"ndcg@5": np.float32(0.5), "rmse": 3, "coverage": float("nan")}, "ok": True, "note": "x",
              "auc": None, "n tasks": np.int64(7)}
    assert flatten_metrics(values) == {"lodo.ndcg_at_5": 0.5, "lodo.rmse": 3.0, "n tasks": 7.0}


def test_models_cli_lists_and_promotes(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """`models list` prints a table (or JSON) of the versions with their key metrics; `models promote` moves the
    alias; a missing version exits 1 with a one-line message on stderr; METAML_TRACKING_URI picks the registry."""
    runner = CliRunner()
    monkeypatch.setenv("METAML_TRACKING_URI", registry["uri"])
    result = runner.invoke(models, ["promote", "2"])
    assert result.exit_code == 0 and "version 2" in result.stdout and PRODUCTION_ALIAS in result.stdout
    result = runner.invoke(models, ["list"])
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split()[:2] == ["version", "aliases"] and "spearman" in header and "ndcg_at_5" in header
    assert first.split()[:2] == ["1", "-"] and second.split()[:2] == ["2", PRODUCTION_ALIAS]
    assert "0.420" in second and "5,443 runs" in second
    result = runner.invoke(models, ["list", "--json", "--tracking-uri", registry["uri"]])
    listed = json.loads(result.stdout)
    assert [v["version"] for v in listed] == [1, 2] and listed[1]["aliases"] == [PRODUCTION_ALIAS]
    result = runner.invoke(models, ["promote", "99"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_log_evaluation_records_every_predictor(registry: dict[str, Any], tmp_path: Path) -> None:
    """An evaluation summary becomes one run with ``<predictor>.<metric>`` metrics, the protocol, and the report."""
    from metaml._tracking import log_evaluation

    summary = pd.DataFrame({"spearman": [0.4, 0.1], "ndcg@5": [0.8, np.nan]}, index=["metaml", "global_mean"])
    (tmp_path / "report.md").write_text("# lodo\n")
    run_id = log_evaluation(summary, protocol="lodo", tracking_uri=registry["uri"], report_dir=tmp_path)
    run = _client(registry["uri"]).get_run(run_id)
    assert run.data.metrics == {"metaml.spearman": 0.4, "metaml.ndcg_at_5": 0.8, "global_mean.spearman": 0.1}
    assert run.data.params["protocol"] == "lodo"
    assert [a.path for a in _client(registry["uri"]).list_artifacts(run_id, "report")] == ["report/report.md"]

"""Stopping runs from their partial learning curves (metaml._curves, metaml._curve_bench): the progress axis, the
curve runs of a real knowledge base (the OPDA DeBERTa random search on MultiNLI and the PEFT method comparison on
GSM8K), the estimator's contract and calibration on a held-out dataset, the decision rule, the artifact, and the
replay's methods (with Syne Tune's own ASHA on its simulated backend) and its command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from metaml._curves import (
    INPUTS,
    CurveEstimator,
    History,
    cut_frame,
    decide_curve,
    fit_curve_model,
    load_curve_runs,
    prefix_at,
    primary_curve,
)

MNLI = "opda|glue/mnli|accuracy|full"
GSM8K = "peft_bench|gsm8k|accuracy|n20000"


@pytest.fixture(scope="module")
def curve_kb(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A knowledge base of the real OPDA DeBERTa and PEFT method comparison files (both carry learning curves)."""
    from factories import curve_knowledge_base

    return curve_knowledge_base(public_data, tmp_path_factory.mktemp("curves"))


@pytest.fixture(scope="module")
def curves(curve_kb: Any) -> pd.DataFrame:
    return load_curve_runs(curve_kb)


@pytest.fixture(scope="module")
def gsm8k_model(curves: pd.DataFrame) -> CurveEstimator:
    """An estimator that never saw MultiNLI (trained on the PEFT comparison's curves only)."""
    train = curves[curves["dataset_name"] != "glue/mnli"].reset_index(drop=True)
    X = cut_frame(train)
    return CurveEstimator(n_estimators=100).fit(X, X["final"])


# ------------------------------------------------------------------------------------------------------ progress


def test_progress_axis_follows_the_plan() -> None:
    """Steps against the planned max_steps; without it, against the last step scaled by planned/last epochs; epochs
    alone against the planned epochs; other metrics, step 0 and repeated steps (the last kept) are dropped."""
    pts = [{"step": 0, "metric": "accuracy", "value": 0.1}, {"step": 100, "metric": "accuracy", "value": 0.5},
           {"step": 100, "metric": "accuracy", "value": 0.6}, {"step": 200, "metric": "loss", "value": 9.0},
           {"step": 250, "metric": "accuracy", "value": 0.7}]
    p, v = primary_curve(pts, "accuracy", max_steps=1000)
    assert p.tolist() == [0.1, 0.25] and v.tolist() == [0.6, 0.7]
    with_epochs = [{"step": 50, "epoch": 1.0, "metric": "f1", "value": 0.4},
                   {"step": 100, "epoch": 2.0, "metric": "f1", "value": 0.5}]
    p, _ = primary_curve(with_epochs, "f1", epochs=4)
    assert p.tolist() == [0.25, 0.5]
    p, _ = primary_curve([{"epoch": 1.0, "metric": "f1", "value": 0.4}, {"epoch": 3.0, "metric": "f1", "value": 0.5}],
                         "f1", epochs=6)
    assert p.tolist() == [1 / 6, 0.5]
    p, _ = primary_curve(with_epochs, "f1")  # nothing planned: the last point is the end
    assert p.tolist() == [0.5, 1.0]
    assert len(primary_curve([{"metric": "f1", "value": 0.4}], "f1")[0]) == 0
    assert prefix_at(np.array([0.1, 0.3, 0.6, 1.0]), 0.3) == 2 and prefix_at(np.array([0.1, 0.3]), 0.31) == 2


def test_curve_runs_of_a_real_knowledge_base(curves: pd.DataFrame) -> None:
    """Every OPDA run has a MultiNLI accuracy curve every 1,000 steps ending at its planned steps with its final
    score; the PEFT comparison's GSM8K runs have 20-point curves (a small validation sample: their final test score
    differs from the curve's end)."""
    opda = curves[curves["task_key"] == MNLI]
    assert len(opda) == 2048
    assert all(p[-1] == pytest.approx(1.0) and (np.diff(p) > 0).all() and p[0] > 0 for p in opda["curve_progress"])
    assert np.allclose([v[-1] for v in opda["curve_points"]], opda["points"])
    gsm = curves[curves["task_key"] == GSM8K]
    assert len(gsm) >= 200 and gsm["curve_points"].map(len).median() == 20
    assert np.mean([abs(v[-1] - f) for v, f in zip(gsm["curve_points"], gsm["points"], strict=True)]) > 1.0


# ----------------------------------------------------------------------------------------------------- estimator


def test_estimator_contract() -> None:
    """scikit-learn's contract: parameters stored as given, clone, fit returns self with fitted attributes, an
    unfitted estimator refuses to predict, wrong shapes and too few rows are refused."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 100, (200, len(INPUTS)))
    y = X[:, 0] + rng.normal(0, 2, 200)
    est = CurveEstimator(n_estimators=20, alpha=0.1)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(X)
    assert est.fit(X, y) is est and est.n_features_in_ == len(INPUTS) and est.residuals_.size == 200
    assert est.calibration_.startswith("out of fold, by row")  # one group: calibration cannot be by dataset
    lo, hi = est.predict_interval(X)
    assert (lo <= est.predict(X)).all() and (est.predict(X) <= hi).all()
    with pytest.raises(ValueError, match="columns"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="too few"):
        CurveEstimator().fit(X[:10], y[:10])


def test_estimator_on_an_unseen_dataset(curves: pd.DataFrame, gsm8k_model: CurveEstimator) -> None:
    """Trained without MultiNLI (on GSM8K's noisy curves, whose final test score is not their last point), on
    MultiNLI runs at half their budget: the task's finished runs recalibrate it, so its error falls as they come in,
    and with ten of them its 80% intervals cover between 60% and 97% of the final scores."""
    opda = curves[curves["task_key"] == MNLI].reset_index(drop=True)
    rng = np.random.default_rng(1)
    sample = rng.choice(len(opda), 100, replace=False)
    errors: dict[int, list[float]] = {0: [], 10: []}
    covered = []
    for i in sample:
        p, v, final = opda["curve_progress"][i], opda["curve_points"][i], opda["points"][i]
        k = prefix_at(p, 0.5)
        for n in errors:
            peers = rng.choice(np.delete(np.arange(len(opda)), i), n, replace=False)
            history = History((opda["curve_progress"][j], opda["curve_points"][j], opda["points"][j]) for j in peers)
            d = decide_curve(gsm8k_model, p[:k], v[:k], incumbent=90.0, history=history, chance=100 / 3)
            errors[n].append(abs(d.predicted - final))
            if n == 10:
                covered.append(d.lo <= final <= d.hi)
    assert np.mean(errors[10]) < np.mean(errors[0])
    assert 0.6 <= np.mean(covered) <= 0.97


def test_decisions(gsm8k_model: CurveEstimator) -> None:
    """A run far below the incumbent is stopped, one above it continues; P(above) falls as the incumbent rises; the
    minimum progress and minimum history hold a stop back."""
    p = np.array([0.1, 0.2, 0.3])
    history = History([(np.linspace(0.05, 1, 20), np.linspace(60, 80, 20), 80.0),
                       (np.linspace(0.05, 1, 20), np.linspace(55, 78, 20), 78.0),
                       (np.linspace(0.05, 1, 20), np.linspace(40, 70, 20), 70.0)])
    low = decide_curve(gsm8k_model, p, np.array([30.0, 31.0, 31.5]), 80.0, history=history, max_false_stop=0.05)
    high = decide_curve(gsm8k_model, p, np.array([70.0, 74.0, 76.0]), 80.0, history=history)
    assert low.action == "stop" and low.p_above < 0.05 and "recalibrated on 3 finished runs" in low.basis
    assert high.action == "continue" and high.p_above > low.p_above
    ps = [decide_curve(gsm8k_model, p, np.array([60.0, 65.0, 68.0]), inc, history=history).p_above
          for inc in (60.0, 70.0, 80.0, 95.0)]
    assert ps == sorted(ps, reverse=True)
    held = decide_curve(gsm8k_model, p, np.array([30.0, 31.0, 31.5]), 80.0, history=history, min_progress=0.5)
    assert held.action == "continue" and "minimum progress" in held.basis
    held = decide_curve(gsm8k_model, p, np.array([30.0, 31.0, 31.5]), 80.0, history=history, min_history=5)
    assert held.action == "continue" and "fewer than 5 finished runs" in held.basis


def test_artifact_keeps_the_curve_model(curves: pd.DataFrame, curve_kb: Any, tmp_path: Path) -> None:
    """save_model writes the curve estimator beside the meta-model with its checksum and description; it loads back
    predicting the same; a changed file is refused; an artifact saved without one has none."""
    from metaml._artifact import CURVE_FILE, load_curve_model, read_metadata, save_model
    from metaml._data import load_runs
    from metaml._estimators import MetaModel, OutcomeEstimator
    from metaml.errors import ArtifactError

    model = MetaModel(outcome=OutcomeEstimator(n_estimators=10)).fit(load_runs(curve_kb))
    curve = fit_curve_model(curves[curves["task_key"] == GSM8K].reset_index(drop=True), n_estimators=30)
    assert curve is not None
    path = save_model(model, tmp_path / "artifact", curve=curve)
    meta = read_metadata(path)
    assert meta["curve_model"]["file"] == CURVE_FILE and meta["curve_model"]["n_train_rows"] == curve.n_train_rows_
    X = cut_frame(curves[curves["task_key"] == GSM8K].head(5).reset_index(drop=True))
    assert np.array_equal(load_curve_model(path).predict(X), curve.predict(X))
    (path / CURVE_FILE).write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="checksum"):
        load_curve_model(path)
    save_model(model, path)
    assert load_curve_model(path) is None and not (path / CURVE_FILE).exists()
    assert fit_curve_model(curves.head(5)) is None  # too few runs


def test_registered_version_carries_the_curve_model(curves: pd.DataFrame, curve_kb: Any, tmp_path: Path) -> None:
    """A version logged to the MLflow registry with its curve estimator loads back with it (what the service serves
    from the registry); load_version itself still answers the meta-model and its metadata."""
    from metaml._data import load_runs
    from metaml._estimators import MetaModel, OutcomeEstimator
    from metaml._tracking import load_version, load_version_and_curve, log_model_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=10)).fit(load_runs(curve_kb))
    gsm = curves[curves["task_key"] == GSM8K].reset_index(drop=True)
    curve = fit_curve_model(gsm, n_estimators=30)
    info = log_model_version(model, {"kb_snapshot": "test"}, tracking_uri=uri, curve=curve)
    _, meta, served_curve = load_version_and_curve(tracking_uri=uri, version=info.version)
    X = cut_frame(gsm.head(5))
    assert np.array_equal(served_curve.predict(X), curve.predict(X))
    assert meta["curve_model"]["n_train_datasets"] == 1 and meta["registry"]["version"] == info.version
    assert load_version(tracking_uri=uri, version=info.version)[1]["curve_model"] == meta["curve_model"]


# -------------------------------------------------------------------------------------------------------- replay


def _toy_task() -> Any:
    """Six configurations with straight curves to known finals (costs 1..6); configuration 5 is the best."""
    from metaml._curve_bench import CurveTask

    finals = np.array([60.0, 70.0, 50.0, 65.0, 40.0, 80.0])
    grid = np.arange(1, 11) / 10
    return CurveTask(task_key="toy", dataset="toy", progress=[grid] * 6,
                     values=[f - 20 * (1 - grid) for f in finals], final=finals, cost=np.arange(1.0, 7.0),
                     first_epoch=np.full(6, 0.2), config=np.array([f"c{i}" for i in range(6)]), priors=[None] * 6,
                     chance=np.nan, cost_unit="seconds")


def test_replay_methods_account_for_compute() -> None:
    """Every run to the end costs the sum of the costs; top-k with k = all configurations costs the same; top-1 pays
    one epoch of each plus the rest of the best at one epoch; Syne Tune's ASHA spends less, never more, and its
    trace is monotone; the best-stopped flags agree with what was finished."""
    pytest.importorskip("syne_tune")
    from metaml._curve_bench import run_full, run_syne_tune, run_top_k

    task = _toy_task()
    full = run_full(task)
    assert full.compute == 21.0 and full.found == 80.0 and not full.best_stopped and full.regret == 0.0
    assert run_top_k(task, 6).compute == pytest.approx(21.0)
    top1 = run_top_k(task, 1)
    assert top1.compute == pytest.approx(0.2 * 21 + 0.8 * 6) and top1.found == 80.0 and not top1.best_stopped
    asha = run_syne_tune(task, brackets=1, levels=9, seed=0)
    assert 0 < asha.compute <= full.compute + 1e-6
    assert [c for c, _ in asha.trace] == sorted(c for c, _ in asha.trace)
    assert asha.best_stopped == (80.0 not in [f for _, f in asha.trace])
    assert asha.found_at(asha.compute) == asha.found


def test_curve_rule_stops_hopeless_runs(curves: pd.DataFrame, gsm8k_model: CurveEstimator) -> None:
    """On a real MultiNLI draw, with an estimator that never saw MultiNLI: the curve rule saves compute against
    training every run to the end, a laxer stated error rate saves more, and the incumbent is a finished run."""
    from metaml._curve_bench import CurveTask, run_curve, run_full

    draw = CurveTask.from_curves(curves, MNLI).draw(30, np.random.default_rng(0))
    full = run_full(draw)
    strict = run_curve(draw, gsm8k_model, max_false_stop=0.02, min_history=2, levels=9)
    lax = run_curve(draw, gsm8k_model, max_false_stop=0.3, min_history=2, levels=9)
    assert full.compute > strict.compute >= lax.compute and lax.n_stopped >= strict.n_stopped > 0
    assert strict.found in draw.final and strict.found <= full.found


def test_bench_command_writes_a_report(curve_kb: Any, tmp_path: Path) -> None:
    """`metaml bench curves` on both tasks with curves: knobs chosen on the other task, a report with every method
    and the goals, the searches' table."""
    pytest.importorskip("syne_tune")
    from service.cli import main

    out = tmp_path / "report"
    code = main(["bench", "curves", "--kb", str(curve_kb.path), "--seeds", "2", "--inner-seeds", "1", "--configs",
                 "15", "--levels", "9", "--jobs", "1", "--out", str(out), "--json"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["knobs"]) == {MNLI, GSM8K}
    assert results["knobs"][MNLI]["chosen_on"] == [GSM8K] and results["knobs"][GSM8K]["chosen_on"] == [MNLI]
    searches = pd.read_csv(out / "searches.csv")
    assert set(searches["method"]) == {"full", "curve", "top_k", "asha", "hyperband"}
    assert len(searches) == 2 * 2 * 5
    assert (searches.loc[searches["method"] == "full", "saved"] == 1.0).all()
    assert {"saves_3x_without_losing_the_best", "beats_asha_at_equal_compute"} <= set(
        results["summary"]["goals"])
    assert "ASHA (Syne Tune)" in (out / "report.md").read_text() and (out / "saved_vs_best_stopped.png").exists()

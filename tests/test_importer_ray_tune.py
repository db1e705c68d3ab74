"""Ray Tune importer: an experiment directory written by a real Ray Tune run (ASHA stopping trials early, a trial
failing with an out-of-memory error, a trial the metaml skip check ended), read as it is and damaged."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from collector.formats import detect_format, plan_inputs
from collector.ingest import ingest_path
from collector.store import KnowledgeBase

MAPPING = {"dataset": "glue/sst2", "task": {"primary_metric": "accuracy"}}
LRS = [0.05, 0.1, 0.01, 0.002, 0.001]


@pytest.fixture(scope="module")
def experiment(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One experiment, trials run one at a time in grid order so that ASHA's decisions are the same every run (the
    trainable is defined here so that Ray ships it to its workers by value)."""

    def _trainable(config: dict[str, Any]) -> None:
        """Four epochs of a made-up accuracy; lr 0.1 runs out of memory; lr 0.002 is skipped before it trains."""
        lr = config["train_loop_config"]["lr"]
        if lr == 0.1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if lr == 0.002:
            tune.report({"metaml_action": "skip", "eval_accuracy": math.nan})
            return
        acc = 0.5
        for epoch in range(1, 5):
            acc = min(0.99, acc + lr * epoch)
            tune.report({"eval_accuracy": acc, "eval_loss": 1 - acc, "epoch": epoch})

    storage = tmp_path_factory.mktemp("ray_results")
    tuner = tune.Tuner(
        _trainable,
        param_space={"train_loop_config": {"lr": tune.grid_search(LRS), "model": "roberta-base"},
                     "seed": 3},
        tune_config=tune.TuneConfig(metric="eval_accuracy", mode="max", max_concurrent_trials=1,
                                    scheduler=ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(name="sst2-asha", storage_path=str(storage), verbose=0))
    grid = tuner.fit()
    results = {r.config["train_loop_config"]["lr"]: r for r in grid}
    return {"root": storage, "path": storage / "sst2-asha", "results": results}


def _rows(kb: KnowledgeBase) -> dict[float, dict[str, Any]]:
    return {r["hparams_learning_rate"]: r for r in kb.scan().to_pylist()}


def test_detect(experiment: dict[str, Any]) -> None:
    """The experiment is detected; a folder of experiments is walked to it."""
    assert detect_format(experiment["path"]) == "ray_tune"
    assert [(p.path.name, p.fmt) for p in plan_inputs(experiment["root"])] == [("sst2-asha", "ray_tune")]


def test_statuses_scores_and_curves(experiment: dict[str, Any], kb: KnowledgeBase) -> None:
    """The full trial is ok with its last accuracy, ASHA's early stops are stopped with their partial curves, the
    OOM is a failed run of kind oom, the skipped trial is rejected; a re-ingest adds nothing."""
    (report,) = ingest_path(kb, experiment["root"], options={"mapping": MAPPING})
    assert (report.read, report.ingested, report.rejected) == (5, 4, 1)
    assert "metaml skip check" in report.rejects[0].reason
    rows = _rows(kb)
    results = experiment["results"]
    full = rows[0.05]
    assert full["outcome_status"] == "ok" and full["model_id"] == "roberta-base" and full["hparams_seed"] == 3
    assert full["outcome_score"] == pytest.approx(results[0.05].metrics["eval_accuracy"])
    assert dict(full["outcome_metrics"]) == {"accuracy": pytest.approx(full["outcome_score"]),
                                             "eval_loss": pytest.approx(1 - full["outcome_score"])}
    accuracy = [(p["step"], p["epoch"], p["value"]) for p in full["outcome_curve"] if p["metric"] == "accuracy"]
    assert [p[:2] for p in accuracy] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert full["outcome_runtime_s"] == pytest.approx(results[0.05].metrics["time_total_s"])
    stopped = [r for lr, r in rows.items() if lr in (0.01, 0.001)]
    assert [r["outcome_status"] for r in stopped] == ["stopped", "stopped"]
    for row in stopped:
        iterations = results[row["hparams_learning_rate"]].metrics["training_iteration"]
        steps = sorted({p["step"] for p in row["outcome_curve"]})
        assert row["outcome_score"] is None and steps == list(range(1, iterations + 1)) and iterations < 4
    oom = rows[0.1]
    assert (oom["outcome_status"], oom["outcome_error_kind"]) == ("failed", "oom")
    assert oom["outcome_error_message"].startswith("RuntimeError: CUDA out of memory")
    (again,) = ingest_path(kb, experiment["root"], options={"mapping": MAPPING})
    assert (again.ingested, again.duplicates) == (0, 4)


def test_damaged_copy(experiment: dict[str, Any], tmp_path: Path, kb: KnowledgeBase) -> None:
    """Without the experiment state the folders (and the mapping's metric and budget) give the statuses; a
    result.json cut mid-line and a broken params.json are rejected with their trial folder, file and line; the rest
    is stored."""
    copy = tmp_path / "sst2-asha"
    shutil.copytree(experiment["path"], copy)
    for state in copy.glob("experiment_state-*.json"):
        state.unlink()
    trials = {d.name.split("_lr=")[-1][:6]: d for d in copy.iterdir() if (d / "params.json").is_file()}
    cut = trials["0.0500"] / "result.json"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 40])
    (trials["0.0100"] / "params.json").write_text('{"train_loop_config": {"lr": 0.01, ')
    budget = {"attr": "training_iteration", "max": 4}  # without the other trials, the mapping says what full is
    (report,) = ingest_path(kb, copy, options={"mapping": {**MAPPING, "metric": "eval_accuracy", "budget": budget}})
    reasons = {r.locator.split("/", 1)[1]: r.reason for r in report.rejects}
    assert report.ingested == 2 and len(reasons) == 3
    assert reasons[f"{trials['0.0500'].name}/result.json line 4"].startswith("cut short")
    assert "invalid JSON" in reasons[f"{trials['0.0100'].name}/params.json"]
    statuses = Counter(r["outcome_status"] for r in kb.scan().to_pylist())
    assert statuses == {"failed": 1, "stopped": 1}

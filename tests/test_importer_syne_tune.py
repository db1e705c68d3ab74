"""Syne Tune importer: a tuner folder written by a real Syne Tune run (local backend, ASHA stopping trials early, a
trial failing with an out-of-memory error), read as it is and damaged."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("syne_tune")

from syne_tune import StoppingCriterion, Tuner
from syne_tune.backend import LocalBackend
from syne_tune.config_space import choice
from syne_tune.optimizer.baselines import ASHA

from collector.formats import detect_format, plan_inputs
from collector.ingest import ingest_path
from collector.store import KnowledgeBase

MAPPING = {"dataset": "glue/sst2", "task": {"primary_metric": "accuracy"}, "params": {"backbone": "model.id"}}
LRS = [0.05, 0.1, 0.01, 0.001]
ENTRY_POINT = '''
"""Four epochs of a made-up accuracy; lr 0.1 runs out of memory."""
import argparse
from syne_tune import Reporter

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--backbone", type=str)
parser.add_argument("--epochs", type=int)
args, _ = parser.parse_known_args()
if args.lr == 0.1:
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
report = Reporter()
acc = 0.5
for epoch in range(1, args.epochs + 1):
    acc = min(0.99, acc + args.lr * epoch)
    report(epoch=epoch, eval_accuracy=acc, eval_loss=1 - acc)
'''


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One tuning run, one worker, the configurations in a fixed order so that ASHA's decisions are the same."""
    root = tmp_path_factory.mktemp("syne")
    script = root / "train.py"
    script.write_text(ENTRY_POINT)
    before = os.environ.get("SYNETUNE_FOLDER")
    os.environ["SYNETUNE_FOLDER"] = str(root / "results")
    try:
        space = {"lr": choice(LRS), "backbone": "roberta-base", "epochs": 4}
        scheduler = ASHA(space, metric="eval_accuracy", do_minimize=False, time_attr="epoch", max_t=4,
                         grace_period=1, reduction_factor=2, random_seed=0,
                         points_to_evaluate=[{"lr": lr} for lr in LRS])
        stop = StoppingCriterion(max_num_trials_started=len(LRS) - 1)  # it stops once more than this have started
        tuner = Tuner(trial_backend=LocalBackend(entry_point=str(script)), scheduler=scheduler, stop_criterion=stop,
                      n_workers=1,
                      sleep_time=0.1, max_failures=len(LRS), wait_trial_completion_when_stopping=True,
                      tuner_name="sst2-asha", results_update_interval=0.5, print_update_interval=60)
        tuner.run()
        yield {"root": root / "results", "path": Path(tuner.tuner_path)}
    finally:
        if before is None:
            os.environ.pop("SYNETUNE_FOLDER", None)
        else:
            os.environ["SYNETUNE_FOLDER"] = before


def _rows(kb: KnowledgeBase) -> dict[float, dict[str, Any]]:
    return {r["hparams_learning_rate"]: r for r in kb.scan().to_pylist()}


def test_detect(experiment: dict[str, Any]) -> None:
    """The tuner folder is detected; the folder of tuner folders is walked to it."""
    assert detect_format(experiment["path"]) == "syne_tune"
    assert [(p.path, p.fmt) for p in plan_inputs(experiment["root"])] == [(experiment["path"], "syne_tune")]


def test_statuses_scores_and_curves(experiment: dict[str, Any], kb: KnowledgeBase) -> None:
    """The full trials are ok with their last accuracy and curve, ASHA's early stop is a stopped run with its partial
    curve, the OOM is a failed run of kind oom; the metric comes from the tuner's metadata; a re-ingest adds
    nothing."""
    (report,) = ingest_path(kb, experiment["root"], options={"mapping": MAPPING})
    assert (report.read, report.ingested, report.rejected) == (4, 4, 0), report.rejects
    rows = _rows(kb)
    full = rows[0.05]
    assert (full["outcome_status"], full["model_id"], full["hparams_epochs"]) == ("ok", "roberta-base", 4.0)
    assert full["outcome_score"] == pytest.approx(0.99)
    assert dict(full["outcome_metrics"]) == {"accuracy": pytest.approx(0.99), "eval_loss": pytest.approx(0.01)}
    assert [(p["step"], p["epoch"]) for p in full["outcome_curve"] if p["metric"] == "accuracy"] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert full["outcome_runtime_s"] is not None and full["outcome_runtime_s"] > 0
    assert (rows[0.01]["outcome_status"], rows[0.01]["outcome_score"]) == ("ok", pytest.approx(0.6))
    stopped = rows[0.001]  # below the rung-1 cutoff
    steps = [p["step"] for p in stopped["outcome_curve"] if p["metric"] == "accuracy"]
    assert (stopped["outcome_status"], stopped["outcome_score"], steps) == ("stopped", None, [1])
    oom = rows[0.1]
    assert (oom["outcome_status"], oom["outcome_error_kind"]) == ("failed", "oom")
    assert oom["outcome_error_message"].startswith("RuntimeError: CUDA out of memory")
    (again,) = ingest_path(kb, experiment["root"], options={"mapping": MAPPING})
    assert (again.ingested, again.duplicates) == (0, 4)


def test_damaged_copy(experiment: dict[str, Any], tmp_path: Path, kb: KnowledgeBase) -> None:
    """A broken config.json is rejected with its trial and reason; a truncated results table rejects every trial
    (naming the file), never a traceback."""
    copy = tmp_path / "tuner"
    shutil.copytree(experiment["path"], copy)
    (copy / "0" / "config.json").write_text('{"lr": 0.05, "backbone"')
    (report,) = ingest_path(kb, copy, options={"mapping": MAPPING})
    reasons = {r.locator: r.reason for r in report.rejects}
    assert report.ingested == 3 and list(reasons) == ["tuner/0"]
    assert "0/config.json: invalid JSON" in reasons["tuner/0"]
    table = copy / "results.csv.zip"
    table.write_bytes(table.read_bytes()[:60])
    (report,) = ingest_path(kb, copy, options={"mapping": MAPPING})
    assert report.ingested == 0 and report.error is None and len(report.rejects) == 4
    assert all(r.reason.startswith("results.csv.zip: the results table is unreadable") for r in report.rejects)


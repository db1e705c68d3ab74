"""Optuna importer: real studies written by Optuna (SQLite RDB storage and a journal file), with completed, pruned
and failed trials, read with and without a mapping."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402

from collector.errors import FormatError  # noqa: E402
from collector.formats import detect_format  # noqa: E402
from collector.importers.optuna_studies import OptunaStudies  # noqa: E402
from collector.ingest import ingest_path  # noqa: E402
from collector.store import KnowledgeBase  # noqa: E402

MAPPING = """
dataset: glue/sst2
task: {primary_metric: accuracy}
params:
  backbone: model.id
  peft: {field: method.name, values: {true: lora, false: full}}
  rank: method.lora_r
  lr: hparams.learning_rate
  tag: drop
set:
  hparams.epochs: 3
"""


def _objective(trial: Any) -> float:
    """A tiny deterministic objective: reports three epochs, prunes, and fails trial 3 with an OOM."""
    lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("backbone", ["roberta-base", "bert-base-uncased"])
    trial.suggest_categorical("peft", [True, False])
    trial.suggest_int("rank", 4, 16)
    trial.suggest_categorical("tag", ["a", "b"])
    trial.suggest_float("warmup_ratio", 0.0, 0.2)
    if trial.number == 3:
        trial.set_user_attr("error", "CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("CUDA out of memory")
    acc = 0.5
    for epoch in range(3):
        acc = min(0.99, acc + lr * 100 * (epoch + 1))
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return acc


def _study(storage: Any, name: str = "sst2-search", n_trials: int = 10) -> Any:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    study.optimize(_objective, n_trials=n_trials, catch=(RuntimeError,))
    return study


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SQLite storage with two studies, a journal file with one, and the mapping file."""
    root = tmp_path_factory.mktemp("optuna")
    db = root / "studies.db"
    first = _study(f"sqlite:///{db}")
    _study(f"sqlite:///{db}", name="other", n_trials=3)
    journal = root / "study.log"
    jstudy = _study(JournalStorage(JournalFileBackend(str(journal))))
    mapping = root / "mapping.yaml"
    mapping.write_text(MAPPING)
    return {"db": db, "journal": journal, "mapping": mapping, "trials": first.trials, "jtrials": jstudy.trials}


def _rows(kb: KnowledgeBase) -> list[dict[str, Any]]:
    return sorted(kb.scan().to_pylist(), key=lambda r: r["provenance_locator"])


def test_detect(stores: dict[str, Any], tmp_path: Path) -> None:
    """An Optuna SQLite file and a journal file are detected; an unrelated SQLite file and JSON lines are not."""
    assert detect_format(stores["db"]) == "optuna"
    assert detect_format(stores["journal"]) == "optuna"
    other = tmp_path / "x.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    assert detect_format(other) != "optuna"
    lines = tmp_path / "x.jsonl"
    lines.write_text(json.dumps({"a": 1}) + "\n")
    assert detect_format(lines) != "optuna"


def test_states_with_a_mapping(stores: dict[str, Any], kb: KnowledgeBase) -> None:
    """COMPLETE -> ok with the value as score and the reports as curve; PRUNED -> stopped with its partial curve;
    FAIL -> failed with the trial's error text and kind; the mapping names model, method and the rest."""
    (report,) = ingest_path(kb, stores["db"], options={"mapping": stores["mapping"], "studies": ["sst2-search"]})
    assert (report.read, report.ingested, report.rejected) == (10, 10, 0)
    trials = {t.number: t for t in stores["trials"]}
    rows = {int(r["provenance_locator"].rsplit(" ", 1)[1]): r for r in _rows(kb)}
    states = Counter(t.state.name for t in trials.values())
    assert Counter(r["outcome_status"] for r in rows.values()) == {
        "ok": states["COMPLETE"], "stopped": states["PRUNED"], "failed": states["FAIL"]}
    assert states["PRUNED"] >= 1 and states["FAIL"] == 1
    for number, row in rows.items():
        trial = trials[number]
        assert row["dataset_name"] == "glue/sst2" and row["task_primary_metric"] == "accuracy"
        assert row["model_id"] == trial.params["backbone"]
        assert row["method_name"] == ("lora" if trial.params["peft"] else "full")
        assert row["hparams_learning_rate"] == pytest.approx(trial.params["lr"])
        assert row["hparams_epochs"] == 3.0
        assert row["hparams_warmup_ratio"] == pytest.approx(trial.params["warmup_ratio"])  # inferred by name
        assert row["hparams_extra"] is None  # tag dropped, every other parameter mapped
        curve = [(p["step"], p["value"]) for p in row["outcome_curve"] or []]
        assert curve == sorted(trial.intermediate_values.items())
        assert row["outcome_runtime_s"] == pytest.approx(trial.duration.total_seconds())
        if trial.state.name == "COMPLETE":
            assert row["outcome_score"] == pytest.approx(trial.value)
        elif trial.state.name == "PRUNED":
            assert row["outcome_score"] is None and 1 <= len(curve) < 3
        else:
            assert row["outcome_error_kind"] == "oom" and "CUDA out of memory" in row["outcome_error_message"]


def test_journal_and_reingest(stores: dict[str, Any], kb: KnowledgeBase) -> None:
    """A journal storage reads like the RDB one; a second ingest adds nothing."""
    (first,) = ingest_path(kb, stores["journal"], options={"mapping": stores["mapping"]})
    assert (first.ingested, first.rejected) == (10, 0)
    (again,) = ingest_path(kb, stores["journal"], options={"mapping": stores["mapping"]})
    assert (again.ingested, again.duplicates, again.rejected) == (0, 10, 0)


def test_storage_url_and_study_selection(stores: dict[str, Any], kb: KnowledgeBase) -> None:
    """A sqlite:/// URL is routed to the optuna format; --study picks studies; an unknown study is a whole-input
    error naming the available ones."""
    (report,) = ingest_path(kb, f"sqlite:///{stores['db']}", options={"mapping": stores["mapping"],
                                                                       "studies": ["other"]})
    assert report.format == "optuna" and report.ingested == 3
    (bad,) = ingest_path(kb, stores["db"], options={"studies": ["nope"]})
    assert bad.error and "no study named 'nope'" in bad.error and "'sst2-search'" in bad.error


def test_inferred_without_mapping(tmp_path: Path, kb: KnowledgeBase) -> None:
    """Without a mapping, parameter names and user attributes say it: model / learning_rate / lora_r by name, the
    dataset from the study's attribute, the metric from the study's metric names; metaml_client's trial attributes
    (metaml_config, metaml_dataset) are read too."""
    storage = f"sqlite:///{tmp_path / 'inferred.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_metric_names(["f1_macro"])
    study.set_user_attr("dataset", "tweet_eval/irony")

    def objective(trial: Any) -> float:
        trial.suggest_categorical("model", ["roberta-base", "bert-base-uncased"])
        trial.suggest_float("learning_rate", 1e-5, 1e-4, log=True)
        trial.suggest_categorical("method", ["lora(lora_r=4, lora_alpha=8)", "full"])
        trial.set_user_attr("metaml_config", {"model": {"id": trial.params["model"]},
                                              "hparams": {"seed": 7, "learning_rate": 1.0}})
        return 0.7

    study.enqueue_trial({"model": "roberta-base", "method": "lora(lora_r=4, lora_alpha=8)"})
    study.enqueue_trial({"model": "bert-base-uncased", "method": "full"})
    study.optimize(objective, n_trials=2)
    (report,) = ingest_path(kb, tmp_path / "inferred.db")
    assert (report.ingested, report.rejected) == (2, 0)
    rows = {r["model_id"]: r for r in _rows(kb)}
    assert {r["dataset_name"] for r in rows.values()} == {"tweet_eval/irony"}
    assert {r["task_primary_metric"] for r in rows.values()} == {"f1_macro"}
    lora = rows["roberta-base"]
    assert (lora["method_name"], lora["method_lora_r"], lora["method_lora_alpha"]) == ("lora", 4, 8.0)
    assert rows["bert-base-uncased"]["method_name"] == "full"
    for trial in study.trials:  # the parameter wins over the attribute; the attribute fills what is missing
        row = rows[trial.params["model"]]
        assert row["hparams_learning_rate"] == pytest.approx(trial.params["learning_rate"])
        assert row["hparams_seed"] == 7 and row["outcome_score"] == 0.7


def test_rejects_name_their_reason(tmp_path: Path, kb: KnowledgeBase) -> None:
    """A study that names no metric and no dataset, a running trial and a pruned trial that never reported are
    rejected with their study, trial and reason."""
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(study_name="bare", storage=storage)
    study.optimize(lambda t: t.suggest_float("learning_rate", 1e-5, 1e-4), n_trials=1)
    study.ask()  # left RUNNING

    def skipped(trial: Any) -> float:
        trial.set_user_attr("metaml_action", "skip")
        raise optuna.TrialPruned()

    study.optimize(skipped, n_trials=1)
    (report,) = ingest_path(kb, tmp_path / "r.db")
    reasons = {r.locator: r.reason for r in report.rejects}
    assert report.ingested == 0 and len(reasons) == 3
    assert "does not name its metric" in reasons["study 'bare' trial 0"]
    assert "RUNNING" in reasons["study 'bare' trial 1"]
    assert "never trained" in reasons["study 'bare' trial 2"] and "skip" in reasons["study 'bare' trial 2"]
    (named,) = ingest_path(kb, tmp_path / "r.db", options={"mapping": {"task": "accuracy"}})
    assert "no dataset" in {r.locator: r.reason for r in named.rejects}["study 'bare' trial 0"]


def test_truncated_journal(stores: dict[str, Any], tmp_path: Path, kb: KnowledgeBase) -> None:
    """A journal cut mid-line: the cut line is rejected with its line number, the trials before it are stored, the
    trial whose end was lost is rejected as not finished."""
    cut = tmp_path / "cut.log"
    data = stores["journal"].read_bytes()
    cut.write_bytes(data[: len(data) - 25])
    (report,) = ingest_path(kb, cut, options={"mapping": stores["mapping"]})
    lines = data.count(b"\n")
    reasons = {r.locator: r.reason for r in report.rejects}
    assert reasons[f"cut.log line {lines}"].startswith("journal line cut short")
    assert any("RUNNING" in reason for reason in reasons.values())
    assert report.ingested == 9


def test_foreign_storage_is_refused_untouched(tmp_path: Path) -> None:
    """Reading a SQLite file without Optuna's tables (or a bad mapping) is a FormatError; nothing is created."""
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(FormatError, match="not an Optuna"):
        list(OptunaStudies(storage=f"sqlite:///{other}").read(other))
    tables = {r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")}
    assert tables == {"t"}
    with pytest.raises(FormatError, match="not a record field"):
        OptunaStudies(mapping={"params": {"lr": "hparams.learning_rat"}})

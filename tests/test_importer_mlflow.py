"""MLflow importer: real tracking stores (a file store and a SQLite store) written with the MLflow client."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from collector.errors import FormatError
from collector.formats import detect_format
from collector.importers.mlflow_runs import MlflowRuns, _file_store_allowed
from collector.ingest import IngestReport, ingest_path
from collector.store import KnowledgeBase

HF_PARAMS = {
    "_name_or_path": "roberta-base", "model_type": "roberta", "num_hidden_layers": "12", "hidden_size": "768",
    "hidden_dropout_prob": "0.1", "architectures": "['RobertaForSequenceClassification']",
    "transformers_version": "4.44.0", "task_name": "sst2", "learning_rate": "2e-05",
    "per_device_train_batch_size": "16", "gradient_accumulation_steps": "2", "num_train_epochs": "3.0",
    "max_steps": "-1", "warmup_ratio": "0.1", "warmup_steps": "0", "weight_decay": "0.01",
    "lr_scheduler_type": "SchedulerType.LINEAR", "optim": "adamw_torch", "seed": "42", "data_seed": "None",
    "fp16": "True", "bf16": "False", "output_dir": "/scratch/out", "logging_dir": "/scratch/out/runs",
    "adam_beta2": "0.999", "max_length": "20",
}


def _params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])


def _run(client: Any, experiment_id: str, name: str, *, params: dict[str, str] | None = None,
         tags: dict[str, str] | None = None, metrics: list[tuple[str, float, int]] = (),
         status: str | None = "FINISHED") -> str:
    run = client.create_run(experiment_id, run_name=name, tags=tags or {})
    rid = run.info.run_id
    if params:
        _params(client, rid, params)
    for key, value, step in metrics:
        client.log_metric(rid, key, value, step=step)
    if status is not None:
        client.set_terminated(rid, status=status)
    return rid


def build_store(client: Any) -> dict[str, str]:
    """Two experiments: full fine-tuning with HF-style params and curves, LoRA named by tags, a percent-scale run,
    a failed (OOM) and a killed run, a run without metrics, one without dataset, one still running."""
    sweep = client.create_experiment("glue-sweep")
    other = client.create_experiment("other")
    hf_metrics = []
    for i, step in enumerate((100, 200, 300)):
        hf_metrics += [("eval_accuracy", 0.80 + i / 100, step), ("eval_loss", 0.5 - i / 10, step),
                       ("loss", 0.6 - i / 10, step), ("epoch", float(i + 1), step), ("learning_rate", 1e-5, step),
                       ("eval_runtime", 3.0, step)]
    hf_metrics += [("train_runtime", 321.5, 300), ("system/gpu_0_memory_usage_megabytes", 12000.0, 0),
                   ("system/gpu_0_memory_usage_megabytes", 15000.0, 1)]
    ids = {
        "hf_full": _run(client, sweep, "hf_full", params=HF_PARAMS, metrics=hf_metrics),
        "lora": _run(client, sweep, "lora", params={
            "peft_type": "PeftType.LORA", "r": "8", "lora_alpha": "16", "lora_dropout": "0.05",
            "target_modules": "{'value', 'query'}", "bias": "none", "learning_rate": "0.0003"},
            tags={"metaml.dataset": "tweet_eval/irony", "metaml.model": "FacebookAI/roberta-base",
                  "metaml.primary_metric": "f1_macro", "metaml.license": "cc-by-4.0"},
            metrics=[("eval_f1_macro", 0.61, 50), ("eval_f1_macro", 0.66, 100), ("eval_accuracy", 0.7, 100)]),
        "percent": _run(client, sweep, "percent", tags={
            "metaml.dataset": "glue/rte", "metaml.model": "bert-base-uncased", "metaml.metric_scale": "percent"},
            metrics=[("eval_accuracy", 71.5, 10)]),
        "oom": _run(client, sweep, "oom", tags={
            "metaml.dataset": "glue/sst2", "metaml.model": "roberta-large", "metaml.error_kind": "oom"},
            params={"learning_rate": "1e-05", "per_device_train_batch_size": "64"},
            metrics=[("loss", 0.7, 10), ("loss", 0.69, 20)], status="FAILED"),
        "killed": _run(client, sweep, "killed", params={"model_name_or_path": "distilbert-base-uncased",
                                                          "dataset_name": "imdb"}, status="KILLED"),
        "no_metrics": _run(client, sweep, "no_metrics", params={"model_name_or_path": "bert-base-cased",
                                                                  "dataset_name": "ag_news"}),
        "no_dataset": _run(client, sweep, "no_dataset", params={"model_name_or_path": "bert-base-cased"},
                           metrics=[("eval_accuracy", 0.9, 1)]),
        "running": _run(client, sweep, "running", params={"model_name_or_path": "bert-base-cased"}, status=None),
        "other": _run(client, other, "other", params={"model_name_or_path": "bert-base-cased",
                                                        "dataset_name": "ag_news", "learning_rate": "5e-05"},
                      metrics=[("eval_accuracy", 0.9, 1)]),
    }
    return ids


@pytest.fixture(scope="module")
def file_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A real MLflow file store (project/mlruns) written with MlflowClient."""
    from mlflow.tracking import MlflowClient

    project = tmp_path_factory.mktemp("mlflow_project")
    with _file_store_allowed():
        client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
        ids = build_store(client)
    return project, ids


@pytest.fixture(scope="module")
def ingested(file_store: tuple[Path, dict[str, str]],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, IngestReport, dict[str, str]]:
    """The file store's project folder, auto-detected and ingested once."""
    project, ids = file_store
    kb = KnowledgeBase(tmp_path_factory.mktemp("mlflow_kb") / "kb.duckdb")
    (report,) = ingest_path(kb, project)
    return kb, report, ids


def _get(kb: KnowledgeBase, run_id: str) -> dict[str, Any]:
    rows = [r for r in kb.scan().to_pylist() if r["provenance_locator"].endswith(f"run {run_id}")]
    assert len(rows) == 1, run_id
    return rows[0]


def test_detect(file_store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """A project holding mlruns/ and mlruns/ itself are detected; a folder with an unrelated meta.yaml, a SQLite
    file without MLflow's tables and a text file named .db are not."""
    project, _ = file_store
    assert MlflowRuns.detect(project) and MlflowRuns.detect(project / "mlruns")
    assert detect_format(project) == "mlflow"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "meta.yaml").write_text("name: something\nversion: 2\n")
    assert not MlflowRuns.detect(tmp_path)
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE runs (id INTEGER)")
    con.commit()
    con.close()
    assert not MlflowRuns.detect(db)
    (tmp_path / "notes.db").write_text("not sqlite")
    assert not MlflowRuns.detect(tmp_path / "notes.db")


def test_foreign_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    """Reading a SQLite file that is not an MLflow store raises a FormatError and creates no table in it."""
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(FormatError, match="not an MLflow tracking database"):
        list(MlflowRuns().read(db))
    with pytest.raises(FormatError, match="refusing"):
        list(MlflowRuns().read_uri(f"sqlite:///{db}"))
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["users"]
    con.close()


def test_counts_and_rejects(ingested: tuple[KnowledgeBase, IngestReport, dict[str, str]]) -> None:
    """Nine runs in two experiments: six stored (incl. the failed and the killed run), three rejected with the
    run id and a reason: no metrics, no dataset (naming the tag and param to set), still running."""
    _, report, ids = ingested
    assert report.error is None and report.format == "mlflow"
    assert (report.read, report.ingested, report.duplicates, report.rejected) == (9, 6, 0, 3)
    reasons = {r.locator.rsplit(" ", 1)[1]: r for r in report.rejects}
    assert reasons[ids["no_metrics"]].reason == "no metrics logged"
    assert "metaml.dataset" in reasons[ids["no_dataset"]].reason
    assert "dataset_name" in reasons[ids["no_dataset"]].reason and reasons[ids["no_dataset"]].field == "dataset.name"
    assert "RUNNING" in reasons[ids["running"]].reason
    assert all(r.locator.startswith("experiment 'glue-sweep' run ") for r in report.rejects)


def test_hf_trainer_run(ingested: tuple[KnowledgeBase, IngestReport, dict[str, str]]) -> None:
    """The HF-style run: params mapped to hparams/model, eval_accuracy as score on validation, curves per metric with
    epochs from the epoch metric, runtime, peak GPU memory from system metrics; paths are not kept."""
    kb, _, ids = ingested
    run = _get(kb, ids["hf_full"])
    assert (run["dataset_name"], run["model_id"], run["method_name"]) == ("glue/sst2", "roberta-base", "full")
    assert run["task_type"] == "text-classification" and run["task_primary_metric"] == "accuracy"
    assert run["outcome_score"] == pytest.approx(0.82) and run["outcome_split"] == "validation"
    assert run["hparams_learning_rate"] == 2e-05 and run["hparams_per_device_batch_size"] == 16
    assert run["hparams_gradient_accumulation_steps"] == 2 and run["hparams_batch_size"] == 32
    assert run["hparams_epochs"] == 3.0 and run["hparams_max_steps"] is None
    assert (run["hparams_warmup_ratio"], run["hparams_weight_decay"], run["hparams_seed"]) == (0.1, 0.01, 42)
    assert (run["hparams_lr_scheduler"], run["hparams_optimizer"], run["hparams_precision"]) == (
        "linear", "adamw_torch", "fp16")
    assert run["hparams_dropout"] == 0.1 and json.loads(run["hparams_extra"]) == {"adam_beta2": 0.999}
    assert run["dataset_data_seed"] is None and run["hparams_max_seq_length"] is None
    assert (run["model_family"], run["model_n_layers"], run["model_hidden_size"]) == ("roberta", 12, 768)
    metrics = dict(run["outcome_metrics"])
    assert metrics == {"accuracy": pytest.approx(0.82), "eval_loss": pytest.approx(0.3), "loss": pytest.approx(0.4),
                       "runtime": 3.0, "train_runtime": 321.5}
    curve = {(p["metric"], p["step"]): p for p in run["outcome_curve"]}
    assert {m for m, _ in curve} == {"accuracy", "eval_loss", "loss"}
    assert curve[("accuracy", 200)]["value"] == pytest.approx(0.81) and curve[("accuracy", 200)]["epoch"] == 2.0
    assert run["outcome_runtime_s"] == 321.5
    assert run["outcome_peak_memory_gb"] == 15.0 and run["hardware_accelerator_count"] == 1
    assert dict(run["hardware_software"]) == {"transformers": "4.44.0"}
    assert run["provenance_source"] == "mlflow" and run["provenance_uri"].startswith("file://")


def test_tags_override(ingested: tuple[KnowledgeBase, IngestReport, dict[str, str]]) -> None:
    """metaml.* tags name dataset, model (canonicalized), primary metric and license; PEFT params become the LoRA
    fields; a percent-scale run declared by tag is normalized to unit."""
    kb, _, ids = ingested
    lora = _get(kb, ids["lora"])
    assert (lora["dataset_name"], lora["model_id"]) == ("tweet_eval/irony", "roberta-base")
    assert (lora["method_name"], lora["method_lora_r"], lora["method_lora_alpha"]) == ("lora", 8, 16.0)
    assert lora["method_lora_dropout"] == 0.05 and lora["method_target_modules"] == ["query", "value"]
    assert json.loads(lora["method_config"]) == {"bias": "none"}
    assert lora["task_primary_metric"] == "f1_macro" and lora["outcome_score"] == 0.66
    assert lora["provenance_license"] == "cc-by-4.0"
    assert [(p["step"], p["value"]) for p in lora["outcome_curve"]] == [(50, 0.61), (100, 0.66)]
    percent = _get(kb, ids["percent"])
    assert percent["outcome_score"] == pytest.approx(0.715) and percent["task_metric_scale"] == "unit"


def test_failed_runs(ingested: tuple[KnowledgeBase, IngestReport, dict[str, str]]) -> None:
    """FAILED and KILLED runs are stored as failed, with the error kind from the tag (oom) or 'error', no score,
    and what they logged before failing."""
    kb, _, ids = ingested
    oom = _get(kb, ids["oom"])
    assert (oom["outcome_status"], oom["outcome_error_kind"], oom["outcome_score"]) == ("failed", "oom", None)
    assert oom["hparams_per_device_batch_size"] == 64 and len(oom["outcome_curve"]) == 2
    killed = _get(kb, ids["killed"])
    assert (killed["outcome_status"], killed["outcome_error_kind"]) == ("failed", "error")
    assert "KILLED" in killed["outcome_error_message"] and killed["dataset_name"] == "imdb"


def test_reingest_adds_nothing(ingested: tuple[KnowledgeBase, IngestReport, dict[str, str]],
                               file_store: tuple[Path, dict[str, str]]) -> None:
    """The same store ingested again: the six records are duplicates, the three rejects rejected again."""
    kb, _, _ = ingested
    (again,) = ingest_path(kb, file_store[0])
    assert (again.ingested, again.duplicates, again.rejected) == (0, 6, 3)


def test_experiment_selection(file_store: tuple[Path, dict[str, str]]) -> None:
    """experiments= reads only the named experiments; an unknown name is a FormatError listing the available ones;
    tracking_uri= reads that store whatever path is given."""
    project, ids = file_store
    items = list(MlflowRuns(experiments=["other"]).read(project))
    assert [i.locator for i in items] == [f"experiment 'other' run {ids['other']}"]
    with pytest.raises(FormatError, match=r"no experiment named 'nope'.*'glue-sweep'"):
        list(MlflowRuns(experiments=["nope"]).read(project))
    uri = (project / "mlruns").as_uri()
    assert len(list(MlflowRuns(tracking_uri=uri).read(Path("ignored")))) == 9
    assert len(list(MlflowRuns().read_uri(uri, ["glue-sweep"]))) == 8


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy deprecations inside MLflow's SQL store
def test_sqlite_store(tmp_path: Path, kb: KnowledgeBase) -> None:
    """A SQLite tracking database written by MLflow is detected by its tables and ingested like the file store."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("sqlite-exp")
    rid = _run(client, exp, "one", params={"model_name_or_path": "bert-base-uncased", "dataset_name": "imdb",
                                           "learning_rate": "3e-05"},
               metrics=[("eval_accuracy", 0.91, 1), ("eval_accuracy", 0.93, 2)])
    assert MlflowRuns.detect(db) and detect_format(db) == "mlflow"
    (report,) = ingest_path(kb, db)
    assert (report.ingested, report.rejected) == (1, 0)
    (row,) = kb.scan().to_pylist()
    assert row["provenance_locator"] == f"experiment 'sqlite-exp' run {rid}"
    assert row["outcome_score"] == 0.93 and len(row["outcome_curve"]) == 2

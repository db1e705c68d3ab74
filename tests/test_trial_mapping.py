"""The trial mapping shared by the tuner formats: loading, inference, precedence, labels, budgets; and the command
line options that carry it (--mapping, --study) to an Optuna storage found by detection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.errors import FormatError
from collector.importers._trials import TrialMapping, TrialProblem, TrialResult, trial_record
from collector.schema import RunRecord
from service.cli import main


def test_inference_nesting_labels_and_extra() -> None:
    """Names are recognized on the last part of a nested name; a metaml method label gives name and settings;
    unrecognized parameters go to hparams.extra."""
    parts = TrialMapping.load({"dataset": "SST-2"}).configuration(
        {"train_loop_config": {"lr": 3e-4, "model_name_or_path": "FacebookAI/roberta-base", "warmup": 0.1},
         "method": "lora(lora_r=8, lora_alpha=16.0, bias=none)", "seed": 5})
    assert parts["model"] == {"id": "FacebookAI/roberta-base"}
    assert parts["method"] == {"name": "lora", "lora_r": 8, "lora_alpha": 16.0, "config": {"bias": "none"}}
    assert parts["hparams"] == {"learning_rate": 3e-4, "seed": 5, "extra": {"train_loop_config/warmup": 0.1}}
    assert parts["dataset"] == {"name": "SST-2"}


def test_precedence_values_and_drop() -> None:
    """set > mapped parameters > inferred parameters > the tuner's attributes; values are translated; drop drops."""
    mapping = TrialMapping.load({
        "params": {"use_lora": {"field": "method.name", "values": {True: "lora", False: "full"}},
                   "lr": "hparams.weight_decay", "path": "drop"},
        "set": {"hparams.epochs": 2, "dataset.name": "imdb"}})
    parts = mapping.configuration({"use_lora": True, "lr": 0.01, "learning_rate": 1e-4, "path": "/x", "epochs": 9,
                                   "model": "gpt2"}, defaults={"model.id": "bert-base-uncased",
                                                               "dataset.name": "glue/sst2"})
    assert parts["method"] == {"name": "lora"} and parts["model"] == {"id": "gpt2"}
    assert parts["hparams"] == {"weight_decay": 0.01, "learning_rate": 1e-4, "epochs": 2}
    assert parts["dataset"] == {"name": "imdb"}
    with pytest.raises(TrialProblem, match="not one of the mapping's values"):
        mapping.configuration({"use_lora": "maybe"})


def test_no_inference_keeps_parameters_as_extra() -> None:
    """With infer: false only the named parameters are mapped."""
    parts = TrialMapping.load({"infer": False, "params": {"m": "model.id"}}).configuration({"m": "gpt2", "lr": 1e-3})
    assert parts["model"] == {"id": "gpt2"} and parts["hparams"] == {"extra": {"lr": 1e-3}}


def test_bad_mappings_are_refused(tmp_path: Path) -> None:
    """An unknown key, an unknown field, bad YAML and a missing file are FormatErrors that say what is wrong."""
    with pytest.raises(FormatError, match="unknown key"):
        TrialMapping.load({"datasets": "imdb"})
    with pytest.raises(FormatError, match=r"'hparams\.lr' is not a record field; hparams has hparams\.learning_rate"):
        TrialMapping.load({"params": {"x": "hparams.lr"}})
    with pytest.raises(FormatError, match="a field starts with one of"):
        TrialMapping.load({"set": {"outcome.score": 1}})
    bad = tmp_path / "m.yaml"
    bad.write_text("params: [unclosed")
    with pytest.raises(FormatError, match="invalid YAML"):
        TrialMapping.load(bad)
    with pytest.raises(FormatError, match="cannot read the mapping"):
        TrialMapping.load(tmp_path / "missing.yaml")


def test_budget_and_records() -> None:
    """A budget naming a parameter takes each trial's own; a stopped result validates with its curve and no score,
    an unknown metric takes the search's direction."""
    mapping = TrialMapping.load({"dataset": "imdb", "budget": {"attr": "epoch", "max": "num_epochs"},
                                 "task": {"primary_metric": "my_score"}})
    params = {"model": "gpt2", "num_epochs": 3}
    parts = mapping.configuration(params)
    assert mapping.full_budget(parts, params, default=10.0) == 3.0
    assert TrialMapping.load({"budget": {"attr": "epoch"}}).full_budget(parts, params, default=10.0) == 10.0
    stopped = trial_record(parts, TrialResult("stopped", curve=[(1, 1.0, "my_score", 0.4)], runtime_s=5.0),
                           "my_score", higher_is_better=False)
    record = RunRecord.model_validate(stopped)
    assert record.outcome.status == "stopped" and record.outcome.score is None
    assert record.task.higher_is_better is False and [p.value for p in record.outcome.curve] == [0.4]
    with pytest.raises(ValueError, match="a stopped run has no score"):
        RunRecord.model_validate({**stopped, "outcome": {**stopped["outcome"], "score": 0.4}})


def _optuna_study(path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", direction="maximize")

        def objective(trial: Any) -> float:
            trial.suggest_categorical("backbone", ["roberta-base"])
            return trial.suggest_float("lr", 1e-5, 1e-3)

        study.optimize(objective, n_trials=2)


def test_cli_mapping_and_study_reach_a_detected_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`metaml ingest study.db --study a --mapping m.yaml` (format detected) reads study a with the mapping;
    `metaml formats` lists the new formats; a mapping naming an unknown field is exit code 1."""
    _optuna_study(tmp_path / "study.db")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("dataset: glue/sst2\ntask: accuracy\nparams: {backbone: model.id}\n")
    kb = str(tmp_path / "kb.duckdb")
    capsys.readouterr()
    code = main(["ingest", str(tmp_path / "study.db"), "--kb", kb, "--study", "a", "--mapping", str(mapping),
                 "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["ingested"] == 2 and summary["inputs"][0]["format"] == "optuna"
    mapping.write_text("params: {backbone: model.name}\n")
    code = main(["ingest", str(tmp_path / "study.db"), "--kb", kb, "--mapping", str(mapping), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and "not a record field" in out["inputs"][0]["error"]
    assert main(["formats", "--json"]) == 0
    names = [f["name"] for f in json.loads(capsys.readouterr().out)]
    assert {"xautolm", "optuna", "ray_tune", "syne_tune"} <= set(names)
    assert names.index("syne_tune") < names.index("json")

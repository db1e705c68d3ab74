"""Tests of the ``hf_trainer`` importer: TaskWeb's runs.tar.gz (real data, read in place) and generic Trainer output
directories built by hand in the shape ``Trainer.save_model`` + ``save_state`` + ``save_metrics`` +
``create_model_card`` write them."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any

import pytest

from collector.errors import FormatError
from collector.formats import RawRecord, Rejected, TarStream, detect_format
from collector.importers.hf.card import parse_trainer_card
from collector.importers.hf.trainer_output import TrainerOutput
from collector.ingest import ingest_path
from collector.schema import from_row
from collector.store import KnowledgeBase

ARCHIVE = Path("metadatasets") / "taskweb" / "runs.tar.gz"
T5_PERCENT = "anli_r3/imdb/t5l-pfeiffer-e15-lr5e5-b32-s10"
ROBERTA_FRACTION = "anli_r3/imdb/roberta-e3-lr1e5-b16-s30"
STSB_CARD = "stsb/imdb/t5l-pfeiffer-e15-lr5e5-b32-s10"
LR_CONFLICT = "imdb/hellaswag/roberta-e3-lr3e5-b8-s25"
STALE_CARD = "rotten_tomatoes/piqa/roberta-e3-lr3e5-b8-s42"
CURVE_RUN = "imdb/socialiqa/gpt2m-e5-lr3e5-b8-s15"
SPOT = (T5_PERCENT, ROBERTA_FRACTION, STSB_CARD, LR_CONFLICT, STALE_CARD, CURVE_RUN)
COLUMNS = ["run_id", "provenance_locator", "provenance_source", "task_primary_metric", "task_metric_scale",
           "dataset_name", "model_id", "model_upstream_task", "method_name", "outcome_status", "outcome_error_kind",
           "outcome_score", "outcome_curve", "hparams_learning_rate", "hparams_extra"]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def archive(public_data: Path) -> Path:
    path = public_data / ARCHIVE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def raw(archive: Path) -> dict[str, Any]:
    """The archive read independently with :mod:`tarfile`: every run directory's eval_results.json, the full files of
    the spot-checked runs, and the trainer_state.json files."""
    evals: dict[str, dict[str, Any]] = {}
    spot: dict[str, dict[str, bytes]] = {s: {} for s in SPOT}
    states: dict[str, dict[str, Any]] = {}
    run_dirs: set[str] = set()
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = member.name.strip("/").split("/")
            if len(parts) >= 3:
                run_dirs.add("/".join(parts[:3]))
            if not member.isfile():
                continue
            run, rel = "/".join(parts[:3]), "/".join(parts[3:])
            wanted = rel in ("eval_results.json", "trainer_state.json") or run in spot
            if not wanted:
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if rel == "eval_results.json":
                evals[run] = json.loads(data)
            if rel == "trainer_state.json":
                states[run] = json.loads(data)
            if run in spot:
                spot[run][rel] = data
    return {"evals": evals, "spot": spot, "states": states, "run_dirs": run_dirs}


@pytest.fixture(scope="module")
def ingested(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole archive ingested once into a fresh knowledge base."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("hf_trainer") / "kb.duckdb")
    (report,) = ingest_path(kb, archive)
    df = kb.to_pandas(columns=COLUMNS).set_index("provenance_locator", drop=False)
    return {"kb": kb, "report": report, "df": df}


def _row(ingested: dict[str, Any], run: str) -> dict[str, Any]:
    return ingested["df"].loc[f"run {run}"].to_dict()


def _record(kb: KnowledgeBase, run_id: str) -> dict[str, Any]:
    """The stored run in the nested record shape."""
    row = kb.get(run_id)
    assert row is not None
    return from_row(row)


def _json(raw: dict[str, Any], run: str, name: str) -> dict[str, Any]:
    return json.loads(raw["spot"][run][name])


# --------------------------------------------------------------------------------------------- real archive


def test_every_run_directory_is_accounted_for(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """Each of the archive's TARGET/SOURCE/RUN directories (counted independently with tarfile) becomes exactly one
    record: no duplicates, no rejects, no error; all are TaskWeb records over the 16 shipped targets."""
    report = ingested["report"]
    n_runs = len(raw["run_dirs"])
    assert n_runs == len(raw["evals"]) == 24_376
    assert report.error is None
    assert report.rejected == 0, report.top_reasons()
    assert report.duplicates == 0
    assert report.ingested == report.read == n_runs
    df = ingested["df"]
    assert set(df["provenance_source"]) == {"taskweb"}
    assert df["dataset_name"].nunique() == 16
    assert {loc.removeprefix("run ") for loc in df["provenance_locator"]} == raw["run_dirs"]


def test_t5_percent_run_field_by_field(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """A T5 Pfeiffer-adapter run: eval_accuracy 38.08 (percent) is stored as 0.3808, and every other field matches
    its eval/train JSON, adapter_config.json and directory name."""
    row = _row(ingested, T5_PERCENT)
    rec = _record(ingested["kb"], row["run_id"])
    ev, tr = _json(raw, T5_PERCENT, "eval_results.json"), _json(raw, T5_PERCENT, "train_results.json")
    adapter = _json(raw, T5_PERCENT, "summarization/adapter_config.json")
    assert ev["eval_accuracy"] > 1
    assert rec["outcome"]["score"] == pytest.approx(ev["eval_accuracy"] / 100)
    assert rec["outcome"]["metrics"]["accuracy"] == pytest.approx(ev["eval_accuracy"] / 100)
    assert rec["outcome"]["metrics"]["train_loss"] == pytest.approx(tr["train_loss"])
    assert rec["outcome"]["runtime_s"] == pytest.approx(tr["train_runtime"])
    assert rec["outcome"]["split"] == "validation"
    assert rec["task"] == {"type": "text-classification", "primary_metric": "accuracy", "metric_scale": "unit",
                           "higher_is_better": True}
    assert rec["dataset"]["name"] == "anli/r3"
    assert rec["dataset"]["n_train_used"] == tr["train_samples"] == 1000
    assert rec["model"]["id"] == "google/t5-large-lm-adapt"
    assert rec["model"]["upstream_task"] == "imdb"
    assert rec["method"]["name"] == "adapter"
    assert rec["method"]["adapter_reduction_factor"] == adapter["config"]["reduction_factor"] == 16
    assert rec["method"]["config"]["adapter_architecture"] == "pfeiffer"
    assert rec["method"]["config"]["non_linearity"] == adapter["config"]["non_linearity"]
    hp = rec["hparams"]
    assert (hp["learning_rate"], hp["batch_size"], hp["epochs"], hp["seed"]) == (5e-5, 32, 15.0, 10)
    assert hp["epochs"] == tr["epoch"]
    assert hp["extra"]["upstream_task"] == "imdb"
    assert rec["hardware"]["software"] == {"adapter-transformers": adapter["version"]}
    assert rec["provenance"]["license"] == "none stated in the repository"


def test_roberta_fraction_run_field_by_field(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """A roberta full fine-tuning run: eval_accuracy is already a fraction and is stored unchanged, with its loss,
    eval sample count and training figures."""
    row = _row(ingested, ROBERTA_FRACTION)
    rec = _record(ingested["kb"], row["run_id"])
    ev, tr = _json(raw, ROBERTA_FRACTION, "eval_results.json"), _json(raw, ROBERTA_FRACTION, "train_results.json")
    assert ev["eval_accuracy"] <= 1
    assert rec["outcome"]["score"] == pytest.approx(ev["eval_accuracy"])
    assert rec["outcome"]["metrics"] == pytest.approx(
        {"accuracy": ev["eval_accuracy"], "loss": ev["eval_loss"], "train_loss": tr["train_loss"]})
    assert rec["outcome"]["runtime_s"] == pytest.approx(tr["train_runtime"])
    assert rec["hparams"]["extra"]["eval_samples"] == ev["eval_samples"]
    assert rec["model"]["id"] == "roberta-base"
    assert rec["method"]["name"] == "full"
    assert (rec["hparams"]["learning_rate"], rec["hparams"]["batch_size"], rec["hparams"]["epochs"],
            rec["hparams"]["seed"]) == (1e-5, 16, 3.0, 30)


def test_stsb_percent_correlations_and_card(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """An stsb T5 run: primary metric spearman, percent correlations divided by 100 by the importer (the schema's
    percent scale cannot hold negative correlations), and the card's scheduler, optimizer and framework versions."""
    row = _row(ingested, STSB_CARD)
    rec = _record(ingested["kb"], row["run_id"])
    ev = _json(raw, STSB_CARD, "eval_results.json")
    assert rec["task"]["primary_metric"] == "spearman"
    assert rec["task"]["type"] == "text-regression"
    assert rec["outcome"]["score"] == pytest.approx(ev["eval_spearmanr"] / 100)
    assert rec["outcome"]["metrics"]["pearson"] == pytest.approx(ev["eval_pearson"] / 100)
    assert rec["outcome"]["metrics"]["loss"] == pytest.approx(ev["eval_loss"])
    assert rec["outcome"]["metrics"]["gen_len"] == pytest.approx(ev["eval_gen_len"])
    card = raw["spot"][STSB_CARD]["README.md"].decode()
    assert "lr_scheduler_type: constant" in card
    assert rec["hparams"]["lr_scheduler"] == "constant"
    assert rec["hparams"]["optimizer"] == "adamw"
    assert rec["hparams"]["extra"]["adam_epsilon"] == 1e-8
    assert rec["hardware"]["software"]["transformers"] == "4.21.3"


def test_percent_rule_matches_origin_caveat_on_every_run(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """Every ok run's score equals its raw primary value, divided by 100 exactly for the percent runs: T5 runs and
    GPT-2 runs except GPT-2 on stsb (fractions, like all roberta runs). Collapsed T5 runs whose values are all
    within [-1, 1] follow their group and are percent too."""
    df = ingested["df"]
    mismatches = []
    for loc, row in df[df["outcome_status"] == "ok"].iterrows():
        run = loc.removeprefix("run ")
        target, model = run.split("/")[0], run.split("/")[2].split("-")[0]
        key = "eval_spearmanr" if target == "stsb" else "eval_accuracy"
        value = raw["evals"][run][key]
        percent = model.startswith("t5") or (model == "gpt2m" and target != "stsb")
        if not math.isclose(row["outcome_score"], value / 100 if percent else value, rel_tol=1e-9, abs_tol=1e-12):
            mismatches.append((run, value, row["outcome_score"]))
    assert not mismatches, mismatches[:5]
    unit = df[(df["task_primary_metric"] == "accuracy") & df["outcome_score"].notna()]["outcome_score"]
    assert unit.between(0, 1).all()
    collapsed = _row(ingested, "stsb/qqp/t5b-lora-e20-lr3e3-b64-s42")
    assert collapsed["outcome_score"] == pytest.approx(-1.7038334813961467 / 100)


def test_card_learning_rate_wins_when_its_results_match(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """42 roberta cards name learning_rate 1e-05 in a -lr3e5- directory while their results equal eval_results.json:
    the card wins and both values are kept in hparams.extra; a card whose results differ is ignored as stale."""
    row = _row(ingested, LR_CONFLICT)
    card = parse_trainer_card(raw["spot"][LR_CONFLICT]["README.md"].decode())
    ev = _json(raw, LR_CONFLICT, "eval_results.json")
    assert card.hyperparameters["learning_rate"] == 1e-5
    assert card.metrics()["accuracy"] == pytest.approx(ev["eval_accuracy"], abs=1e-4)
    extra = json.loads(row["hparams_extra"])
    assert row["hparams_learning_rate"] == 1e-5
    assert extra["card_learning_rate"] == 1e-5
    assert extra["dirname_learning_rate"] == 3e-5
    assert extra["upstream_checkpoint"] == "../../outputs/hellaswag/roberta-e3-lr1e5-b16-s25"
    conflicts = ingested["df"]["hparams_extra"].str.contains('"dirname_learning_rate"', regex=False)
    assert int(conflicts.sum()) == 42

    stale = _row(ingested, STALE_CARD)
    stale_card = parse_trainer_card(raw["spot"][STALE_CARD]["README.md"].decode())
    stale_ev = _json(raw, STALE_CARD, "eval_results.json")
    assert abs(stale_card.metrics()["accuracy"] - stale_ev["eval_accuracy"]) > 1e-3
    assert "card_ignored" in json.loads(stale["hparams_extra"])
    assert stale["outcome_score"] == pytest.approx(stale_ev["eval_accuracy"])


def test_learning_curves_from_trainer_state(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """Runs with a trainer_state.json log entry besides the final summary get curve points (step, epoch, metric,
    value); the summary entry is not a point."""
    expected = {run for run, state in raw["states"].items()
                if any("train_runtime" not in e for e in state["log_history"])}
    df = ingested["df"]
    with_curve = {loc.removeprefix("run ") for loc, c in df["outcome_curve"].items() if c is not None and len(c)}
    assert with_curve == expected
    assert CURVE_RUN in expected
    entry = next(e for e in raw["states"][CURVE_RUN]["log_history"] if "loss" in e)
    (point,) = _row(ingested, CURVE_RUN)["outcome_curve"]
    assert dict(point) == {"step": entry["step"], "epoch": entry["epoch"], "metric": "train_loss",
                           "value": entry["loss"]}


def test_non_finite_metrics_make_failed_runs(ingested: dict[str, Any], raw: dict[str, Any]) -> None:
    """The 11 runs reporting a NaN are status failed: diverged when a loss is NaN (3 roberta runs keep their
    chance-level accuracy as score), error when only the stsb correlation is NaN (no score)."""
    df = ingested["df"]
    failed = df[df["outcome_status"] == "failed"]
    nan_runs = {run for run, ev in raw["evals"].items() if any(isinstance(v, float) and math.isnan(v)
                                                              for v in ev.values())}
    assert {loc.removeprefix("run ") for loc in failed.index} == nan_runs
    assert len(nan_runs) == 11
    for loc, row in failed.iterrows():
        ev = raw["evals"][loc.removeprefix("run ")]
        loss_nan = math.isnan(ev.get("eval_loss", 0.0))
        assert row["outcome_error_kind"] == ("diverged" if loss_nan else "error")
        primary = ev.get("eval_spearmanr", ev.get("eval_accuracy"))
        assert (row["outcome_score"] == primary) if not math.isnan(primary) else math.isnan(row["outcome_score"])


def test_reingest_adds_nothing(ingested: dict[str, Any], archive: Path) -> None:
    """Ingesting the same archive again stores nothing new: every run is a duplicate of itself."""
    (again,) = ingest_path(ingested["kb"], archive)
    assert again.ingested == 0
    assert again.duplicates == ingested["report"].ingested
    assert ingested["kb"].count() == ingested["report"].ingested


def test_detect(archive: Path, public_data: Path) -> None:
    """The TaskWeb archive is recognized (also by the registry's auto-detection); other sources' archives are not."""
    assert TrainerOutput.detect(archive)
    assert detect_format(archive) == "hf_trainer"
    for other in ("hf_model_cards/cards.tar.gz", "setfit/results_raw.tar.gz", "lmbff/auto_search_raw.tar.gz"):
        path = public_data / "metadatasets" / other
        if path.exists():
            assert not TrainerOutput.detect(path), other
    assert not TrainerOutput.detect(archive.parent)  # a source folder with ORIGIN.txt: the walker plans its files


# ------------------------------------------------------------------------------------------- broken copies


def test_truncated_archive_keeps_complete_runs(archive: Path, ingested: dict[str, Any], tmp_path: Path) -> None:
    """An archive cut at 30 % of its bytes: every run directory completed before the cut is ingested exactly as from
    the whole archive, the run being read at the cut is rejected as incomplete with its locator, and the input ends
    with a FormatError saying the archive is truncated."""
    cut = tmp_path / "runs.tar.gz"
    data = archive.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.3)])
    seen: list[str] = []
    try:  # tarfile may stop silently or raise at the cut; either way it lists the members before it
        with tarfile.open(cut, "r|gz") as tar:
            for member in tar:
                parts = member.name.strip("/").split("/")
                if len(parts) >= 3 and (not seen or seen[-1] != "/".join(parts[:3])):
                    seen.append("/".join(parts[:3]))
    except (tarfile.ReadError, EOFError):
        pass
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, cut)
    assert report.error is not None and "truncated" in report.error
    (reject,) = report.rejects
    assert "incomplete" in reject.reason
    assert reject.locator == f"run {seen[-1]}"
    assert report.ingested == len(seen) - 1 > 5000
    got = kb.to_pandas(columns=["run_id", "provenance_locator"])
    full = ingested["df"].set_index("provenance_locator")["run_id"]
    assert set(got["provenance_locator"]) == {f"run {s}" for s in seen[:-1]}
    assert all(full[loc] == rid for loc, rid in zip(got["provenance_locator"], got["run_id"], strict=True))


def _write_tar(path: Path, files: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def sample_files(raw: dict[str, Any]) -> dict[str, bytes]:
    """The real files of four runs (T5 adapter, roberta, stsb with card, lr conflict), by archive member name."""
    return {f"{run}/{rel}": data for run in (T5_PERCENT, ROBERTA_FRACTION, STSB_CARD, LR_CONFLICT)
            for rel, data in raw["spot"][run].items()}


def test_broken_runs_in_an_archive_are_rejected_with_their_place(sample_files: dict[str, bytes],
                                                                 tmp_path: Path) -> None:
    """In an archive built from real runs, a run missing eval_results.json, a run whose eval_results.json is cut
    mid-way, files outside any run directory and a member that arrives after its run was read are each rejected
    with a clear reason and locator; the intact runs are ingested."""
    files = sorted(sample_files.items())
    missing = [(n.replace(ROBERTA_FRACTION, "anli_r3/cb/roberta-e3-lr1e5-b16-s30"), d) for n, d in files
               if n.startswith(ROBERTA_FRACTION + "/") and not n.endswith("eval_results.json")]
    malformed = [(n.replace(T5_PERCENT, "anli_r3/cb/t5l-pfeiffer-e15-lr5e5-b32-s10"),
                  d[: len(d) // 2] if n.endswith("eval_results.json") else d)
                 for n, d in files if n.startswith(T5_PERCENT + "/")]
    stray = [("anli_r3/notes/config.json", b"{}")]
    late = [(f"{ROBERTA_FRACTION}/README.md", b"# late")]
    path = _write_tar(tmp_path / "broken.tar.gz", files + missing + malformed + stray + late)
    items = list(TrainerOutput().read(path))
    records = [i for i in items if isinstance(i, RawRecord)]
    rejects = {i.locator: i for i in items if isinstance(i, Rejected)}
    assert len(records) == 4
    assert set(rejects) == {"run anli_r3/cb/roberta-e3-lr1e5-b16-s30", "run anli_r3/cb/t5l-pfeiffer-e15-lr5e5-b32-s10",
                            "dir anli_r3/notes", f"dir {ROBERTA_FRACTION}"}
    assert "no evaluation results" in rejects["run anli_r3/cb/roberta-e3-lr1e5-b16-s30"].reason
    assert "train_results.json" in rejects["run anli_r3/cb/roberta-e3-lr1e5-b16-s30"].reason
    assert "eval_results.json is not valid JSON" in rejects["run anli_r3/cb/t5l-pfeiffer-e15-lr5e5-b32-s10"].reason
    assert "no run directory here" in rejects["dir anli_r3/notes"].reason
    assert "not grouped by directory" in rejects[f"dir {ROBERTA_FRACTION}"].reason


def test_run_directory_missing_eval_results_on_disk(sample_files: dict[str, bytes], tmp_path: Path) -> None:
    """The same runs unpacked as a directory tree: the run without eval_results.json is rejected through the
    pipeline with its reason; the others are ingested."""
    root = tmp_path / "results"
    for name, data in sample_files.items():
        if name.startswith(ROBERTA_FRACTION) and name.endswith("eval_results.json"):
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    assert TrainerOutput.detect(root)
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, root)
    assert report.format == "hf_trainer"
    assert report.ingested == 3
    (reject,) = report.rejects
    assert reject.locator == f"run {ROBERTA_FRACTION}"
    assert reject.field == "outcome.score"
    assert "no evaluation results" in reject.reason


def test_not_an_archive(tmp_path: Path) -> None:
    """A file that is not a tar archive is a FormatError, not an empty result."""
    path = tmp_path / "runs.tar.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    with pytest.raises(FormatError):
        list(TrainerOutput().read(path))


# ------------------------------------------------------------------------------------ generic Trainer output


GENERIC_CARD = """---
license: mit
base_model: roberta-base
tags:
- generated_from_trainer
datasets:
- glue
metrics:
- accuracy
model-index:
- name: roberta-base-lora-mrpc
  results:
  - task:
      name: Text Classification
      type: text-classification
    dataset:
      name: glue
      type: glue
      config: mrpc
      split: validation
      args: mrpc
    metrics:
    - name: Accuracy
      type: accuracy
      value: 0.8676470588235294
---

<!-- This model card has been generated automatically according to the information the Trainer had access to. You
should probably proofread and complete it, then remove this comment. -->

# roberta-base-lora-mrpc

This model is a fine-tuned version of [roberta-base](https://huggingface.co/roberta-base) on the glue dataset.
It achieves the following results on the evaluation set:
- Loss: 0.3356
- Accuracy: 0.8676

## Model description

More information needed

## Training procedure

### Training hyperparameters

The following hyperparameters were used during training:
- learning_rate: 0.0003
- train_batch_size: 16
- eval_batch_size: 32
- seed: 42
- gradient_accumulation_steps: 2
- total_train_batch_size: 32
- optimizer: Use OptimizerNames.ADAMW_TORCH with betas=(0.9,0.999) and epsilon=1e-08 and optimizer_args=OPTARGS
- lr_scheduler_type: linear
- lr_scheduler_warmup_ratio: 0.1
- num_epochs: 3
- mixed_precision_training: Native AMP

### Training results

| Training Loss | Epoch | Step | Validation Loss | Accuracy |
|:-------------:|:-----:|:----:|:---------------:|:--------:|
| No log        | 1.0   | 115  | 0.4712          | 0.7843   |
| 0.5321        | 2.0   | 230  | 0.3801          | 0.8456   |
| 0.5321        | 3.0   | 345  | 0.3356          | 0.8676   |


### Framework versions

- PEFT 0.13.2
- Transformers 4.46.3
- Pytorch 2.5.1+cu124
- Datasets 3.1.0
- Tokenizers 0.20.3
""".replace("OPTARGS", "No additional optimizer arguments")


def _trainer_state(final: bool) -> dict[str, Any]:
    """trainer_state.json as ``Trainer.save_state`` writes it (keys as in TaskWeb's files, plus eval entries)."""
    history: list[dict[str, Any]] = []
    for epoch, step, acc, loss in ((1.0, 115, 0.7843137254901961, 0.4712), (2.0, 230, 0.8455882352941176, 0.3801),
                                   (3.0, 345, 0.8676470588235294, 0.3356)):
        if step == 230:
            history.append({"epoch": 1.7391, "grad_norm": 2.41, "learning_rate": 0.000123, "loss": 0.5321,
                            "step": 200})
        history.append({"epoch": epoch, "eval_accuracy": acc, "eval_loss": loss, "eval_runtime": 0.51,
                        "eval_samples_per_second": 800.1, "eval_steps_per_second": 25.5, "step": step})
    if final:
        history.append({"epoch": 3.0, "step": 345, "total_flos": 1503411718963200.0, "train_loss": 0.4711,
                        "train_runtime": 71.5, "train_samples_per_second": 153.9, "train_steps_per_second": 4.825})
    return {"best_metric": 0.8676470588235294, "best_model_checkpoint": "out/checkpoint-345", "epoch": 3.0,
            "eval_steps": 500, "global_step": 345, "is_hyper_param_search": False, "is_local_process_zero": True,
            "is_world_process_zero": True, "log_history": history, "logging_steps": 200, "max_steps": 345,
            "num_train_epochs": 3, "save_steps": 500, "total_flos": 1503411718963200.0, "train_batch_size": 16,
            "trial_name": None, "trial_params": None}


def _write_generic_run(out: Path, *, card: bool = True) -> Path:
    """A Trainer output directory: save_model (config, adapter, weights), save_state, save_metrics, model card."""
    out.mkdir(parents=True)
    train = {"epoch": 3.0, "total_flos": 1503411718963200.0, "train_loss": 0.4711, "train_runtime": 71.5,
             "train_samples": 3668, "train_samples_per_second": 153.9, "train_steps_per_second": 4.825}
    evals = {"epoch": 3.0, "eval_accuracy": 0.8676470588235294, "eval_loss": 0.3356, "eval_runtime": 0.51,
             "eval_samples": 408, "eval_samples_per_second": 800.1, "eval_steps_per_second": 25.5}
    files: dict[str, Any] = {
        "train_results.json": train, "eval_results.json": evals, "all_results.json": {**train, **evals},
        "trainer_state.json": _trainer_state(final=True),
        "checkpoint-345/trainer_state.json": _trainer_state(final=False),
        "config.json": {"_name_or_path": "roberta-base", "architectures": ["RobertaForSequenceClassification"],
                        "hidden_size": 768, "model_type": "roberta", "num_hidden_layers": 12,
                        "transformers_version": "4.46.3", "vocab_size": 50265},
        "adapter_config.json": {"base_model_name_or_path": "roberta-base", "bias": "none", "fan_in_fan_out": False,
                                "inference_mode": True, "init_lora_weights": True, "lora_alpha": 16,
                                "lora_dropout": 0.1, "modules_to_save": ["classifier", "score"], "peft_type": "LORA",
                                "r": 8, "revision": None, "target_modules": ["value", "query"],
                                "task_type": "SEQ_CLS", "use_dora": False, "use_rslora": False},
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=2))
    (out / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (out / "training_args.bin").write_bytes(b"\0" * 64)
    if card:
        (out / "README.md").write_text(GENERIC_CARD)
    return out


def test_generic_trainer_directory(tmp_path: Path) -> None:
    """A PEFT LoRA run saved by the Trainer becomes one hf_trainer record: dataset glue/mrpc from the card's
    model-index, base model, LoRA parameters from adapter_config.json, hyperparameters from the card, eval metrics,
    runtime, the learning curve from trainer_state.json and framework versions."""
    run = _write_generic_run(tmp_path / "roberta-base-lora-mrpc")
    assert TrainerOutput.detect(run)
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, run)
    assert (report.format, report.ingested, report.rejected, report.error) == ("hf_trainer", 1, 0, None)
    rec = _record(kb, kb.to_pandas(columns=["run_id"])["run_id"][0])
    assert rec["provenance"]["source"] == "hf_trainer"
    assert rec["provenance"]["locator"] == "run roberta-base-lora-mrpc"
    assert rec["provenance"]["license"] == "mit"
    assert rec["task"]["type"] == "text-classification"
    assert rec["task"]["primary_metric"] == "accuracy"
    assert rec["dataset"] == {**rec["dataset"], "name": "glue/mrpc", "n_train_used": 3668}
    assert rec["model"]["id"] == "roberta-base"
    method = rec["method"]
    assert (method["name"], method["lora_r"], method["lora_alpha"], method["lora_dropout"]) == ("lora", 8, 16, 0.1)
    assert method["target_modules"] == ["query", "value"]
    assert method["config"]["task_type"] == "SEQ_CLS"
    hp = rec["hparams"]
    assert (hp["learning_rate"], hp["batch_size"], hp["per_device_batch_size"], hp["gradient_accumulation_steps"],
            hp["epochs"], hp["warmup_ratio"], hp["lr_scheduler"], hp["optimizer"], hp["precision"],
            hp["seed"]) == (3e-4, 32, 16, 2, 3.0, 0.1, "linear", "adamw", "fp16", 42)
    assert hp["extra"]["optim"] == "adamw_torch"
    assert hp["extra"]["total_steps"] == 345
    out = rec["outcome"]
    assert out["score"] == pytest.approx(0.8676470588235294)
    assert out["split"] == "validation"
    assert out["runtime_s"] == 71.5
    assert out["metrics"] == pytest.approx({"accuracy": 0.8676470588235294, "loss": 0.3356, "train_loss": 0.4711})
    curve = {(p["metric"], p["step"]): p["value"] for p in out["curve"]}
    assert curve[("accuracy", 345)] == pytest.approx(0.8676470588235294)
    assert curve[("loss", 115)] == pytest.approx(0.4712)
    assert curve[("train_loss", 200)] == pytest.approx(0.5321)
    assert rec["hardware"]["software"]["transformers"] == "4.46.3"
    assert rec["hardware"]["software"]["peft"] == "0.13.2"


def test_generic_tree_and_archive_reject_runs_without_dataset(tmp_path: Path) -> None:
    """A folder of two Trainer runs, one without a card (so no dataset name): the carded run is ingested, the other
    rejected with the reason; the same folder packed as .tar.gz gives the same result."""
    root = tmp_path / "sweep"
    _write_generic_run(root / "lr3e-4")
    _write_generic_run(root / "lr1e-4", card=False)
    assert TrainerOutput.detect(root)
    items = list(TrainerOutput().read(root))
    packed = tmp_path / "sweep.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(root, arcname="sweep")
    items_tar = list(TrainerOutput().read(packed))
    for got, prefix in ((items, ""), (items_tar, "sweep/")):
        records = [i for i in got if isinstance(i, RawRecord)]
        rejects = [i for i in got if isinstance(i, Rejected)]
        assert [r.locator for r in records] == [f"run {prefix}lr3e-4"]
        assert [r.locator for r in rejects] == [f"run {prefix}lr1e-4"]
        assert rejects[0].field == "dataset.name"
        assert "no dataset name" in rejects[0].reason


def test_checkpoint_without_final_results_is_rejected(tmp_path: Path) -> None:
    """An output directory holding only checkpoint-N folders (the run never saved its final results) is reported,
    not silently skipped."""
    out = tmp_path / "crashed"
    (out / "checkpoint-100").mkdir(parents=True)
    (out / "checkpoint-100" / "trainer_state.json").write_text(json.dumps(_trainer_state(final=False)))
    (out / "checkpoint-100" / "config.json").write_text("{}")
    (item,) = list(TrainerOutput().read(out))
    assert isinstance(item, Rejected)
    assert item.locator == "dir checkpoint-100"
    assert "did not finish" in item.reason


def test_parse_trainer_card() -> None:
    """The card parser returns the results, hyperparameters (record-shaped), results table as curve points, dataset
    and framework versions of a Trainer card."""
    card = parse_trainer_card(GENERIC_CARD)
    assert card.title == "roberta-base-lora-mrpc"
    assert card.base_model == "roberta-base"
    assert card.dataset_phrase == "glue"
    assert card.model_index_dataset() == ("glue", "mrpc", "validation")
    assert card.model_index_metrics() == ["accuracy"]
    assert card.metrics() == {"loss": 0.3356, "accuracy": 0.8676}
    assert card.record_hparams()["batch_size"] == 32
    assert card.record_hparams()["extra"]["eval_batch_size"] == 32
    points = card.curve()
    assert {"step": 230, "epoch": 2.0, "metric": "train_loss", "value": 0.5321} in points
    assert not any(p["metric"] == "train_loss" and p["step"] == 115 for p in points)  # "No log"
    assert card.software()["pytorch"] == "2.5.1+cu124"
    assert parse_trainer_card("no card at all").metrics() == {}


def test_tar_stream_matches_tarfile(sample_files: dict[str, bytes], tmp_path: Path) -> None:
    """The fast tar reader yields the same members and bytes as tarfile, also with GNU long names and pax headers."""
    long_name = "x/" + "y" * 150 + "/eval_results.json"
    files = [*sorted(sample_files.items()), (long_name, b'{"eval_accuracy": 1}')]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"f{fmt}.tar.gz"
        with tarfile.open(path, "w:gz", format=fmt) as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        got = [(n, d) for n, kind, d in TarStream(path).members() if kind == "file"]
        assert got == files

"""The PEFT method comparison importer on the real shipped archive, and on broken copies built in ``tmp_path``."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from collector.formats import detect_format
from collector.ingest import ingest_path
from collector.ingest._pipeline import IngestReport
from collector.store import KnowledgeBase

SOURCE = "metadatasets/peft_method_comparison"
ARCHIVE = "results_raw.tar.gz"
LORA = "raw/MetaMathQA/results/lora--llama-3.2-3B-rank32__blob-8d4f641693.json"
#: Method names the vocabulary does not know yet (the schema rejects these runs; see docs/sources/peft_bench.md).
NEWER_METHODS = {"adamss", "bdlora", "beft", "deft", "frod", "glora", "hira", "peanut", "pvera", "tinylora", "unilora"}


@pytest.fixture(scope="module")
def members(public_data: Path) -> dict[str, bytes]:
    """Every file of the real archive, read once."""
    path = public_data / SOURCE / ARCHIVE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with tarfile.open(path, "r|gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def ingested(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, IngestReport]:
    """The real source folder ingested once (format detected)."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("peft") / "kb.duckdb")
    (report,) = ingest_path(kb, public_data / SOURCE)
    return kb, report


def _write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _one(kb: KnowledgeBase, **filters: Any) -> dict[str, Any]:
    rows = kb.scan(filters=filters).to_pylist()
    assert len(rows) == 1, f"expected one run for {filters}, found {len(rows)}"
    return rows[0]


def test_detected_as_peft_bench(public_data: Path) -> None:
    """The folder and the archive are recognized as peft_bench; the SetFit folder (same archive name) is not."""
    assert detect_format(public_data / SOURCE) == "peft_bench"
    assert detect_format(public_data / SOURCE / ARCHIVE) == "peft_bench"
    assert detect_format(public_data / "metadatasets/setfit") != "peft_bench"


def test_one_run_per_experiment(ingested: tuple[KnowledgeBase, IngestReport], members: dict[str, bytes]) -> None:
    """418 files = 271 runs (benchmark, experiment_name, created_at); re-commits count as duplicates; every PEFT type
    is in the method vocabulary, so nothing is rejected."""
    kb, report = ingested
    runs = {(n.split("/")[1], d["run_info"]["experiment_name"], d["run_info"]["created_at"])
            for n, d in ((n, json.loads(b)) for n, b in members.items())}
    assert report.error is None
    assert report.read == len(members) == 418
    assert len(runs) == 271
    assert report.ingested + report.rejected == 271 and report.duplicates == 147
    assert report.ingested == kb.count() == 271 and report.rejected == 0
    methods = {r["method_name"] for r in kb.sql("SELECT DISTINCT method_name FROM runs").table.to_pylist()}
    assert methods >= NEWER_METHODS
    by_type = {r["task_type"]: r["n"] for r in
               kb.sql("SELECT task_type, count(*) n FROM runs GROUP BY 1").table.to_pylist()}
    assert by_type == {"text-generation": 239, "other": 32}


def test_reingest_adds_nothing(ingested: tuple[KnowledgeBase, IngestReport], public_data: Path) -> None:
    """A second ingest of the same folder stores nothing new."""
    kb, _ = ingested
    (again,) = ingest_path(kb, public_data / SOURCE)
    assert again.ingested == 0 and again.duplicates == 418
    assert kb.count() == 271


def test_lora_record_field_by_field(ingested: tuple[KnowledgeBase, IngestReport], members: dict[str, bytes]) -> None:
    """The LoRA rank-32 run of 2025-06-17 against its raw JSON: method, hyperparameters, outcome, cost, curve."""
    kb, _ = ingested
    doc = json.loads(members[LORA])
    run_info, train_info = doc["run_info"], doc["train_info"]
    rows = [r for r in kb.scan(filters={"method_name": "lora"}).to_pylist()
            if json.loads(r["hparams_extra"])["created_at"] == run_info["created_at"]]
    assert len(rows) == 1  # this file and its re-commits are one run (stored under whichever version came first)
    row = rows[0]
    assert row["provenance_locator"].startswith("raw/MetaMathQA/results/lora--llama-3.2-3B-rank32")
    assert row["task_type"] == "text-generation" and row["task_primary_metric"] == "accuracy"
    assert row["dataset_name"] == "gsm8k" and row["dataset_n_train_used"] == 20000
    assert row["model_id"] == "meta-llama/Llama-3.2-3B"
    assert row["method_name"] == "lora" and row["method_lora_r"] == 32 and row["method_lora_alpha"] == 64
    assert sorted(row["method_target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads(row["method_config"])["peft_type"] == "LORA"
    assert row["hparams_learning_rate"] == run_info["train_config"]["optimizer_kwargs"]["lr"]
    assert row["hparams_weight_decay"] == 0.1 and row["hparams_optimizer"] == "adamw"
    assert (row["hparams_batch_size"], row["hparams_max_steps"], row["hparams_precision"]) == (4, 5000, "bf16")
    extra = json.loads(row["hparams_extra"])
    assert extra["train_dataset"] == "meta-math/MetaMathQA" and extra["created_at"] == run_info["created_at"]
    assert row["outcome_status"] == "ok" and row["outcome_split"] == "test"
    assert row["outcome_score"] == pytest.approx(train_info["metrics"][-1]["test accuracy"])
    assert row["outcome_runtime_s"] == pytest.approx(train_info["train_time"])
    assert row["outcome_peak_memory_gb"] == pytest.approx(train_info["cuda_memory_max"] / 2**30)
    curve = row["outcome_curve"]
    valid = [p for p in curve if p["metric"] == "accuracy"]
    assert len(valid) == 20 and valid[0] == {"step": 250, "epoch": None, "metric": "accuracy", "value": 0.36}
    assert row["hardware_accelerator"] == "NVIDIA L40S"


def test_full_finetuning_and_image_gen(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """No peft_config -> method full; image-gen runs are kept as task type other with a declared DINO metric."""
    kb, _ = ingested
    full = kb.sql("SELECT count(*) n FROM runs WHERE method_name = 'full'").table.to_pylist()[0]["n"]
    assert full == 5
    img = kb.scan(filters={"task_type": "other"}).to_pylist()
    assert {r["task_primary_metric"] for r in img} == {"dino_similarity"}
    assert {r["task_metric_scale"] for r in img} == {"signed_unit"} and all(r["task_higher_is_better"] for r in img)
    assert {r["model_id"] for r in img} == {"black-forest-labs/FLUX.2-klein-base-4B"}
    nan_drift = [r for r in img if r["method_name"] == "full"]
    assert nan_drift and "drift" not in dict(nan_drift[0]["outcome_metrics"])  # NaN in the file: dropped


# -- broken copies -------------------------------------------------------------------------------------------


@pytest.fixture
def small_copy(tmp_path: Path, members: dict[str, bytes]) -> dict[str, bytes]:
    """The LoRA and IA3 MetaMathQA files of the real archive (the broken copies are built from these)."""
    return {k: v for k, v in members.items() if "/MetaMathQA/results/lora--" in k or "/ia3--" in k}


def test_malformed_member_is_rejected(tmp_path: Path, small_copy: dict[str, bytes], kb: KnowledgeBase) -> None:
    """A result file that is not JSON is rejected with its member name; the other runs are ingested."""
    bad = "raw/MetaMathQA/results/lora--broken__blob-0000000000.json"
    files = {**small_copy, bad: b'{"run_info": {'}
    (good,) = ingest_path(KnowledgeBase(tmp_path / "ref.duckdb"), _write_tar(tmp_path / "ok.tar.gz", small_copy))
    (report,) = ingest_path(kb, _write_tar(tmp_path / ARCHIVE, files), "peft_bench")
    assert report.ingested == good.ingested > 0
    (reject,) = report.rejects
    assert reject.locator == bad and "malformed JSON" in reject.reason


def test_failed_status_and_missing_test_metric(tmp_path: Path, small_copy: dict[str, bytes], kb: KnowledgeBase) -> None:
    """status != success -> a failed run with its error kind; a successful run without test accuracy -> rejected."""
    first, second = sorted(small_copy)[:2]
    failed, incomplete = json.loads(small_copy[first]), json.loads(small_copy[second])
    failed["run_info"]["error_msg"] = "torch.OutOfMemoryError: CUDA out of memory"
    failed["train_info"]["status"] = "failed"
    incomplete["train_info"]["metrics"] = incomplete["train_info"]["metrics"][:-1]
    files = {first: json.dumps(failed).encode(), second: json.dumps(incomplete).encode()}
    (report,) = ingest_path(kb, _write_tar(tmp_path / ARCHIVE, files), "peft_bench")
    row = _one(kb, provenance_locator=first)
    assert (row["outcome_status"], row["outcome_error_kind"]) == ("failed", "oom")
    (reject,) = report.rejects
    assert reject.locator == second and "without a finite 'test accuracy'" in reject.reason


def test_truncated_archive_keeps_valid_part(tmp_path: Path, small_copy: dict[str, bytes], kb: KnowledgeBase) -> None:
    """A truncated archive: the runs read before the damage are stored, the error names the last good member."""
    path = _write_tar(tmp_path / ARCHIVE, small_copy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (report,) = ingest_path(kb, path, "peft_bench")
    assert report.error is not None and "truncated or corrupt archive after member raw/" in report.error
    assert report.ingested > 0 and kb.count() == report.ingested


def test_missing_archive_is_an_error(tmp_path: Path, kb: KnowledgeBase) -> None:
    """A folder without results_raw.tar.gz is refused with the missing file named."""
    (report,) = ingest_path(kb, tmp_path, "peft_bench")
    assert report.error is not None and "missing required file results_raw.tar.gz" in report.error

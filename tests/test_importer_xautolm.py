"""XAutoLM importer: the real experience store sample (328 files) and damaged copies of real files."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from collector.formats import detect_format, plan_inputs
from collector.importers.xautolm import MODELS, Xautolm
from collector.ingest import IngestReport, ingest_path
from collector.store import KnowledgeBase

EXAMPLE = ("liar_warmstart (f-pos f-neg)[F1+Time] (seed_42)/2024-12-24/"
           "11_42_37-752ff8f4-69fc-459b-962b-45f5cc381f89.json")


@pytest.fixture(scope="module")
def root(public_data: Path) -> Path:
    path = public_data / "metadatasets" / "xautolm"
    if not path.is_dir():
        pytest.skip("the XAutoLM sample is not in the public data")
    return path


@pytest.fixture(scope="module")
def ingested(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, list[IngestReport]]:
    """The sample's folder ingested once, formats detected."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("xautolm") / "kb.duckdb")
    return kb, ingest_path(kb, root)


def _row(kb: KnowledgeBase, locator: str) -> dict[str, Any]:
    rows = [r for r in kb.scan().to_pylist() if r["provenance_locator"] == locator]
    assert len(rows) == 1, locator
    return rows[0]


def test_detection_and_skipped_files(root: Path) -> None:
    """The store is read as xautolm; the documentation and the paper's aggregates are skipped, each with its note."""
    plan = {p.path.name: (p.fmt, p.note) for p in plan_inputs(root)}
    assert plan["experience_store"] == ("xautolm", "")
    assert plan["LICENSE"] == (None, "documentation")
    aggregates = [name for name, (fmt, note) in plan.items() if name.startswith("overall_results")]
    assert len(aggregates) == 2
    assert all(plan[a][0] is None and "aggregate" in plan[a][1] for a in aggregates)
    assert detect_format(root / "experience_store" / EXAMPLE) == "xautolm"
    assert detect_format(root / "experience_store" / EXAMPLE.split("/")[0]) == "xautolm"


def test_every_file_is_a_run(ingested: tuple[KnowledgeBase, list[IngestReport]]) -> None:
    """All 328 files are stored (111 ok, 217 failed), nothing rejected; the 4 non-run files are skipped."""
    kb, reports = ingested
    (store,) = [r for r in reports if not r.skipped]
    assert (store.read, store.ingested, store.rejected) == (328, 328, 0)
    assert sum(r.skipped for r in reports) == 4
    rows = kb.scan(["outcome_status", "outcome_error_kind", "dataset_name", "method_name"]).to_pylist()
    assert Counter(r["outcome_status"] for r in rows) == {"ok": 111, "failed": 217}
    assert Counter(r["outcome_error_kind"] for r in rows if r["outcome_error_kind"]) == {
        "error": 141, "oom": 41, "timeout": 35}
    assert {r["dataset_name"] for r in rows} == {"ag_news", "glue/sst2", "liar", "meld"}
    assert {r["method_name"] for r in rows} == {"full", "partial_freeze", "lora"}


def test_documented_example(ingested: tuple[KnowledgeBase, list[IngestReport]]) -> None:
    """The file ORIGIN.txt shows maps field by field (method, model, hparams, dataset and system features)."""
    kb, _ = ingested
    row = _row(kb, EXAMPLE)
    assert row["dataset_name"] == "liar"
    assert row["model_id"] == "google/electra-base-discriminator"
    assert row["method_name"] == "partial_freeze"
    assert '"num_trainable_layers": 16' in row["method_config"] and '"classifier": "embedding"' in row["method_config"]
    assert (row["hparams_learning_rate"], row["hparams_per_device_batch_size"], row["hparams_max_seq_length"],
            row["hparams_optimizer"], row["hparams_precision"]) == (3e-05, 32, 128, "sgd", "fp16")
    assert row["task_primary_metric"] == "f1_macro" and row["outcome_split"] == "holdout"
    assert row["outcome_score"] == pytest.approx(0.07615725111280662)
    assert dict(row["outcome_metrics"])["accuracy"] == pytest.approx(0.14577301679212507)
    assert row["outcome_runtime_s"] == pytest.approx(61.85205662250519)
    assert row["dataset_meta_n_samples"] == 11524 and row["dataset_meta_n_classes"] == 6
    assert row["dataset_meta_class_entropy"] == pytest.approx(2.53531547347489 / math.log2(6))
    assert row["dataset_meta_imbalance_ratio"] == pytest.approx(1 / 0.40431837425910244)
    assert '"dataset_landmark_decision_tree": 0.22448726349722822' in row["hparams_extra"]
    assert row["hardware_cpu"] == "8 cores, 16 threads, 5 GHz" and row["hardware_memory_gb"] == 125.7
    assert row["provenance_license"] == "MIT"


def test_failures_are_failed_runs(ingested: tuple[KnowledgeBase, list[IngestReport]]) -> None:
    """Error texts keep their message and kind; -Infinity results become failed runs with no score or runtime."""
    kb, _ = ingested
    rows = kb.scan(["outcome_status", "outcome_error_kind", "outcome_error_message", "outcome_score",
                    "outcome_runtime_s"]).to_pylist()
    failed = [r for r in rows if r["outcome_status"] == "failed"]
    assert all(r["outcome_score"] is None for r in failed)
    timeouts = [r for r in failed if r["outcome_error_kind"] == "timeout"]
    assert all("Exceeded allowed time" in r["outcome_error_message"] for r in timeouts)
    ooms = [r["outcome_error_message"] for r in failed if r["outcome_error_kind"] == "oom"]
    assert any("CUDA out of memory" in m for m in ooms) and any("shared memory" in m for m in ooms)
    silent = [r for r in failed if "-Infinity" in r["outcome_error_message"]]
    assert len(silent) == 117 and all(r["outcome_runtime_s"] is None for r in silent)


def test_reingest_adds_nothing(root: Path, ingested: tuple[KnowledgeBase, list[IngestReport]]) -> None:
    """Run ids are content-derived: a second ingest of the folder stores nothing new."""
    kb, _ = ingested
    (store,) = [r for r in ingest_path(kb, root) if not r.skipped]
    assert (store.ingested, store.duplicates, store.rejected) == (0, 328, 0)
    assert kb.count() == 328


def test_every_model_class_is_in_the_table(root: Path) -> None:
    """The Hub-id table covers every model class of the sample, and maps each to a distinct id."""
    classes = set()
    for item in Xautolm().read(root / "experience_store"):
        classes.add(item.data["model"]["id"])
    assert len(classes) == 47 and len(set(MODELS.values())) == len(MODELS)


def test_bad_files_are_rejected_one_by_one(root: Path, tmp_path: Path, kb: KnowledgeBase) -> None:
    """A truncated file, a non-experience, an unknown model class and a score out of range are each rejected with
    their file and reason; the good files beside them are stored."""
    task = tmp_path / "store" / "sst2" / "2025-01-01"
    task.mkdir(parents=True)
    real = sorted((root / "experience_store" / "sst2").rglob("*.json"))[:3]
    for i, file in enumerate(real):
        shutil.copy(file, task / f"00_00_0{i}-good.json")
    text = next(t for f in sorted((root / "experience_store" / "sst2").rglob("*.json"))
                if '"error": null' in (t := f.read_text()) and "Infinity" not in t)
    (task / "01_truncated.json").write_text(text[: len(text) // 2])
    (task / "02_list.json").write_text("[1, 2]")
    (task / "03_model.json").write_text(text.replace("WORD_EMB_", "WORD_EMB_Unknown_").replace("TEXT_GEN_",
                                                                                             "TEXT_GEN_Unknown_"))
    (task / "04_score.json").write_text(text.replace('"f1": ', '"f1": 7.5, "f1_was": '))
    (report,) = ingest_path(kb, tmp_path / "store")
    assert report.ingested == 3
    reasons = {r.locator.split("/")[-1]: (r.field, r.reason) for r in report.rejects}
    assert set(reasons) == {"01_truncated.json", "02_list.json", "03_model.json", "04_score.json"}
    assert "truncated" in reasons["01_truncated.json"][1] and "line" in reasons["01_truncated.json"][1]
    assert "expected a JSON object" in reasons["02_list.json"][1]
    assert reasons["03_model.json"][0] == "inner_model" and "unknown model class" in reasons["03_model.json"][1]
    assert reasons["04_score.json"][0] in ("f1", "outcome.score")
    assert all(r.uri and r.uri.endswith(r.locator.split("/")[-1]) for r in report.rejects)

"""TransferGraph importer: the real records (both task folders) and broken copies of them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from collector.errors import FormatError
from collector.formats import detect_format
from collector.importers.transfergraph import TransferGraph, repair_dataset_name
from collector.ingest import IngestReport, ingest_path
from collector.store import KnowledgeBase

SEQ_ROWS = 3194
IMG_ROWS = 2254
SEQ_REJECTS = {1775, 2029, 2084, 2603, 2693}


@pytest.fixture(scope="module")
def folder(public_data: Path) -> Path:
    return public_data / "metadatasets" / "transfergraph"


@pytest.fixture(scope="module")
def ingested(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, IngestReport]:
    """The whole transfergraph folder, ingested once."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("tg") / "kb.duckdb")
    (report,) = ingest_path(kb, folder)
    return kb, report


def _raw_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return {row[""]: row for row in csv.DictReader(f)}


def _run(kb: KnowledgeBase, locator: str) -> dict:
    rows = kb.scan(filters={"provenance_locator": locator}).to_pylist()
    assert len(rows) == 1, locator
    return rows[0]


def test_detect(folder: Path, tmp_path: Path) -> None:
    """The folder root and each task folder are recognized (and picked by auto-detection); other folders and the
    CSV files themselves are not."""
    assert TransferGraph.detect(folder)
    assert TransferGraph.detect(folder / "sequence_classification")
    assert TransferGraph.detect(folder / "image_classification")
    assert detect_format(folder) == "transfergraph"
    assert not TransferGraph.detect(folder / "sequence_classification" / "records.csv")
    (tmp_path / "records.csv").write_text("a,b\n1,2\n")
    assert not TransferGraph.detect(tmp_path)


def test_counts(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """Every row of both records.csv is accounted for: 3,194 text + 2,254 image rows read, 5 broken text rows
    rejected, no duplicates, no error."""
    kb, report = ingested
    assert report.error is None
    assert report.read == SEQ_ROWS + IMG_ROWS
    assert report.rejected == len(SEQ_REJECTS)
    assert report.duplicates == 0
    assert report.ingested == SEQ_ROWS + IMG_ROWS - len(SEQ_REJECTS)
    rows = kb.sql("SELECT task_type, count(*) AS n FROM runs GROUP BY 1").table.to_pylist()
    counts = {r["task_type"]: r["n"] for r in rows}
    assert counts == {"text-classification": SEQ_ROWS - len(SEQ_REJECTS), "image-classification": IMG_ROWS}


def test_rejects_name_their_rows(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """The rejected rows are the tails of broken lines (no model id / a number as dataset) and the line cut before
    its score, each with its row number and a reason."""
    _, report = ingested
    by_row = {int(r.locator.split(" row ")[1].split()[0]): r for r in report.rejects}
    assert set(by_row) == SEQ_REJECTS
    assert "no eval_accuracy" in by_row[1775].reason and by_row[1775].field == "eval_accuracy"
    for row in SEQ_REJECTS - {1775}:
        assert "malformed row" in by_row[row].reason and "broken" in by_row[row].reason
        assert by_row[row].uri.endswith("sequence_classification/records.csv")


def test_text_record_matches_raw_row(ingested: tuple[KnowledgeBase, IngestReport], folder: Path) -> None:
    """Row 0 of sequence_classification/records.csv, field by field, with its model and target enrichment."""
    kb, _ = ingested
    raw = _raw_rows(folder / "sequence_classification" / "records.csv")["0"]
    run = _run(kb, "sequence_classification/records.csv row 0 (line 2)")
    assert run["model_id"] == raw["model"] == "Jeevesh8/init_bert_ft_qqp-33"
    assert run["dataset_name"] == raw["finetuned_dataset"] == "tweet_eval/irony"
    assert run["method_name"] == "full"
    assert run["hparams_learning_rate"] == float(raw["learning_rate"])
    assert run["hparams_per_device_batch_size"] == run["hparams_batch_size"] == 16
    assert run["hparams_epochs"] == float(raw["num_train_epochs"]) == 5.0
    assert run["hparams_seed"] == 42 and run["hparams_lr_scheduler"] == "linear"
    assert run["outcome_score"] == pytest.approx(float(raw["eval_accuracy"]))
    assert run["outcome_runtime_s"] == pytest.approx(float(raw["train_runtime"]))
    assert run["outcome_split"] == "validation"
    assert run["task_metric_scale"] == "unit" and run["task_primary_metric"] == "accuracy"
    assert run["model_family"] == "bert" and run["model_n_params"] == 109483778
    assert run["model_upstream_task"] == "glue/qqp"
    assert run["dataset_meta_n_samples"] == 4600 and run["dataset_meta_n_classes"] == 2
    assert run["provenance_source"] == "transfergraph" and run["provenance_license"] == "none stated"


def test_lora_record_and_truncated_method(ingested: tuple[KnowledgeBase, IngestReport], folder: Path) -> None:
    """A LoRA row maps r/alpha/dropout/bias; row 2270, cut inside peft_method ('lor'), is repaired to the file's
    one LoRA recipe."""
    kb, _ = ingested
    raw = _raw_rows(folder / "sequence_classification" / "records.csv")
    run = _run(kb, "sequence_classification/records.csv row 2028 (line 2030)")
    assert raw["2028"]["peft_method"] == "lora"
    assert (run["method_name"], run["method_lora_r"], run["method_lora_alpha"], run["method_lora_dropout"]) == (
        "lora", 1, 1.0, 0.1)
    assert run["method_config"] == '{"bias": "none"}'
    assert raw["2270"]["peft_method"] == "lor" and raw["2270"]["lora_attention_dimension"] == ""
    repaired = _run(kb, "sequence_classification/records.csv row 2270 (line 2272)")
    assert (repaired["method_name"], repaired["method_lora_r"], repaired["method_lora_alpha"]) == ("lora", 1, 1.0)
    assert repaired["outcome_score"] == pytest.approx(float(raw["2270"]["eval_accuracy"]))


def test_image_record_and_split(ingested: tuple[KnowledgeBase, IngestReport], folder: Path) -> None:
    """An image row: image-classification, full fine-tuning, slices in hparams.extra, no split; ag_news (no
    validation split on the Hub) is scored on test."""
    kb, _ = ingested
    raw = _raw_rows(folder / "image_classification" / "records.csv")["5"]
    run = _run(kb, "image_classification/records.csv row 5 (line 7)")
    assert run["task_type"] == "image-classification" and run["method_name"] == "full"
    assert run["model_id"] == raw["model"] and run["dataset_name"] == raw["finetuned_dataset"]
    assert run["hparams_learning_rate"] == float(raw["lr"]) and run["hparams_epochs"] == float(raw["epochs"])
    assert run["hparams_batch_size"] == int(raw["batch_size"])
    assert run["outcome_score"] == pytest.approx(float(raw["eval_accuracy"]))
    assert '"data_slices"' in run["hparams_extra"] and run["outcome_split"] is None
    splits = kb.sql("SELECT DISTINCT outcome_split FROM runs WHERE dataset_name = 'ag_news'").table.to_pylist()
    assert splits == [{"outcome_split": "test"}]


def test_bad_target_features_not_used(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """The tweet_eval/offensive feature row (smallnorb's values) and Flowers-102's '10 classes' are not attached;
    every score is on the unit scale."""
    kb, _ = ingested
    rows = kb.sql("SELECT dataset_name, max(dataset_meta_n_samples) n, max(dataset_meta_n_classes) c, "
                  "min(outcome_score) lo, max(outcome_score) hi FROM runs GROUP BY 1").table.to_pylist()
    meta = {r["dataset_name"]: r for r in rows}
    assert meta["tweet_eval/offensive"]["n"] is None and meta["tweet_eval/offensive"]["c"] is None
    assert meta["flowers"]["n"] == 1020 and meta["flowers"]["c"] is None
    assert all(0.0 <= r["lo"] <= r["hi"] <= 1.0 for r in rows)
    assert repair_dataset_name("glut/qqp") == "glue/qqp"


def test_reingest_adds_nothing(ingested: tuple[KnowledgeBase, IngestReport], folder: Path) -> None:
    """Ingesting the same folder again stores nothing new: every record is a duplicate by content id."""
    kb, first = ingested
    (again,) = ingest_path(kb, folder)
    assert again.ingested == 0 and again.duplicates == first.ingested and again.rejected == first.rejected
    assert kb.count() == first.ingested


def test_task_folder_alone(folder: Path, kb: KnowledgeBase) -> None:
    """A task folder alone is read (the image runs), without the transferability scores becoming runs."""
    (report,) = ingest_path(kb, folder / "image_classification")
    assert report.format == "transfergraph" and report.ingested == IMG_ROWS and report.rejected == 0


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder / "sequence_classification", dest / "sequence_classification")
    return dest


def test_missing_file_is_a_format_error(folder: Path, tmp_path: Path) -> None:
    """Without model_config_dataset.csv the folder is refused with a FormatError naming the file, and nothing is
    yielded."""
    copy = _copy(folder, tmp_path)
    (copy / "sequence_classification" / "model_config_dataset.csv").unlink()
    with pytest.raises(FormatError, match=r"model_config_dataset\.csv"):
        list(TransferGraph().read(copy / "sequence_classification"))


def test_missing_column_is_a_format_error(folder: Path, tmp_path: Path, kb: KnowledgeBase) -> None:
    """A records.csv without eval_accuracy is refused as a whole (FormatError naming the column); the ingest report
    carries the error and stores nothing."""
    copy = _copy(folder, tmp_path)
    path = copy / "sequence_classification" / "records.csv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    drop = rows[0].index("eval_accuracy")
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([r[:drop] + r[drop + 1:] for r in rows])
    with pytest.raises(FormatError, match="eval_accuracy"):
        next(iter(TransferGraph().read(copy)))
    (report,) = ingest_path(kb, copy, "transfergraph")
    assert report.error and "eval_accuracy" in report.error and report.ingested == 0


def test_malformed_and_truncated_rows(folder: Path, tmp_path: Path, kb: KnowledgeBase) -> None:
    """A row with a non-numeric batch size, an exact copy of row 5 (under a new index) and a file cut in the middle
    of its last line: the two broken rows are rejected with their location and reason, the copy is counted as a
    duplicate by content id, every other row is ingested."""
    copy = _copy(folder, tmp_path)
    path = copy / "sequence_classification" / "records.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[11].rstrip("\n").split(",")  # row 10
    cells[header.index("batch_size")] = "sixteen"
    lines[11] = ",".join(cells) + "\n"
    lines.insert(-1, "9999," + lines[6].split(",", 1)[1])  # row 5 again, before the last line
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # cut the last row in the middle, no newline
    path.write_text("".join(lines), encoding="utf-8")
    (report,) = ingest_path(kb, copy)
    reasons = {r.locator: r for r in report.rejects}
    bad = reasons["sequence_classification/records.csv row 10 (line 12)"]
    assert bad.field == "batch_size" and "'sixteen' is not a number" in bad.reason
    last = [r for r in report.rejects if r.locator.endswith(f"(line {len(lines)})")]
    assert len(last) == 1 and "malformed row: expected 24 fields" in last[0].reason
    assert report.read == SEQ_ROWS + 1
    assert report.rejected == len(SEQ_REJECTS) + 2 and report.duplicates == 1
    assert report.ingested == SEQ_ROWS - len(SEQ_REJECTS) - 2

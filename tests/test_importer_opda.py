"""OPDA importer: the real DeBERTa random-search files and broken copies of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.errors import FormatError
from collector.formats import detect_format
from collector.importers.opda import Opda, model_for
from collector.ingest import IngestReport, ingest_path
from collector.store import KnowledgeBase

BASE = "deberta-base_tuning.results.jsonl"
V3 = "deberta-v3-base_tuning.results.jsonl"
RUNS_PER_FILE = 1024


@pytest.fixture(scope="module")
def folder(public_data: Path) -> Path:
    return public_data / "metadatasets" / "opda_deberta"


@pytest.fixture(scope="module")
def ingested(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, IngestReport]:
    """Both results files, ingested once through the folder."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("opda") / "kb.duckdb")
    (report,) = ingest_path(kb, folder)
    return kb, report


def _line(path: Path, n: int) -> dict:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if i == n:
                return json.loads(line)
    raise AssertionError(n)


def test_detect(folder: Path, tmp_path: Path) -> None:
    """The folder and each results file are recognized (before the generic jsonl format); other JSONL is not."""
    assert Opda.detect(folder) and Opda.detect(folder / BASE)
    assert detect_format(folder) == "opda" and detect_format(folder / V3) == "opda"
    other = tmp_path / "runs.jsonl"
    other.write_text("{}\n")
    assert not Opda.detect(other) and not Opda.detect(tmp_path)


def test_counts(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """2 x 1,024 runs read and ingested, none rejected or duplicated; one model per file."""
    kb, report = ingested
    assert report.error is None
    assert (report.read, report.ingested, report.rejected, report.duplicates) == (2 * RUNS_PER_FILE,) * 2 + (0, 0)
    rows = kb.sql("SELECT model_id, count(*) AS n FROM runs GROUP BY 1").table.to_pylist()
    assert {r["model_id"]: r["n"] for r in rows} == {"microsoft/deberta-base": RUNS_PER_FILE,
                                                     "microsoft/deberta-v3-base": RUNS_PER_FILE}


def test_record_matches_raw_line(ingested: tuple[KnowledgeBase, IngestReport], folder: Path) -> None:
    """Line 4 of the deberta-base file, field by field: hyperparameters, final matched/mismatched accuracy,
    both learning curves with steps and epochs."""
    kb, _ = ingested
    raw = _line(folder / BASE, 4)
    (run,) = kb.scan(filters={"provenance_locator": f"{BASE} line 4"}).to_pylist()
    assert run["dataset_name"] == "glue/mnli" and run["method_name"] == "full"
    assert run["hparams_learning_rate"] == raw["learning_rate"]
    assert run["hparams_batch_size"] == raw["train_batch_size"]
    assert run["hparams_epochs"] == raw["num_train_epochs"]
    assert run["hparams_max_steps"] == raw["total_model_steps"]
    assert run["hparams_warmup_steps"] == raw["warmup_steps"]
    assert run["hparams_dropout"] == raw["cls_drop_out"]
    assert json.loads(run["hparams_extra"]) == {"search_iteration": raw["iteration"]}
    matched, mismatched = raw["learning_curves"]["matched"], raw["learning_curves"]["mismatched"]
    assert run["outcome_score"] == matched[-1][1]
    assert run["outcome_split"] == "validation_matched"
    assert dict(run["outcome_metrics"]) == {"accuracy": matched[-1][1], "accuracy_mismatched": mismatched[-1][1]}
    curve = run["outcome_curve"]
    assert len(curve) == len(matched) + len(mismatched)
    acc = [(p["step"], p["value"]) for p in curve if p["metric"] == "accuracy"]
    assert acc == [tuple(p) for p in matched]
    last = [p for p in curve if p["metric"] == "accuracy"][-1]
    assert last["epoch"] == pytest.approx(raw["num_train_epochs"])
    assert run["provenance_license"] == "CC-BY-SA-4.0" and run["task_metric_scale"] == "unit"


def test_chance_level_runs_stay_ok(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """Diverged runs (final accuracy near 1/3) are kept with status ok: 264 (deberta-base) + 235 (v3) below 0.4;
    every value is on the unit scale."""
    kb, _ = ingested
    rows = kb.sql("SELECT model_id, count(*) AS n, min(outcome_score) AS lo, max(outcome_score) AS hi "
                  "FROM runs WHERE outcome_score < 0.4 GROUP BY 1").table.to_pylist()
    assert {r["model_id"]: r["n"] for r in rows} == {"microsoft/deberta-base": 264, "microsoft/deberta-v3-base": 235}
    assert all(0.3 < r["lo"] <= r["hi"] < 0.4 for r in rows)
    statuses = kb.sql("SELECT DISTINCT outcome_status FROM runs").table.to_pylist()
    assert statuses == [{"outcome_status": "ok"}]


def test_reingest_adds_nothing(ingested: tuple[KnowledgeBase, IngestReport], folder: Path) -> None:
    """The same folder ingested again: every record is a duplicate."""
    kb, _ = ingested
    (again,) = ingest_path(kb, folder)
    assert (again.ingested, again.duplicates, again.rejected) == (0, 2 * RUNS_PER_FILE, 0)


def test_model_from_file_name(tmp_path: Path) -> None:
    """Known file prefixes map to Hub ids; an unknown prefix is used as the model id."""
    assert model_for(Path(BASE)) == ("microsoft/deberta-base", "deberta")
    assert model_for(Path(V3)) == ("microsoft/deberta-v3-base", "deberta-v2")
    assert model_for(tmp_path / "roberta-large_tuning.results.jsonl") == ("roberta-large", None)


def test_broken_lines_are_rejected(folder: Path, tmp_path: Path, kb: KnowledgeBase) -> None:
    """A 40-line copy with one line missing a field, one with a malformed curve point and the last line cut in
    half: the three lines are rejected with their line number and reason; the other 37 are ingested."""
    lines = (folder / BASE).read_text(encoding="utf-8").splitlines(keepends=True)[:40]
    run = json.loads(lines[9])
    del run["cls_drop_out"]
    lines[9] = json.dumps(run) + "\n"
    run = json.loads(lines[19])
    run["learning_curves"]["mismatched"][2] = [3000]
    lines[19] = json.dumps(run) + "\n"
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    copy = tmp_path / BASE
    copy.write_text("".join(lines), encoding="utf-8")
    (report,) = ingest_path(kb, copy)
    by_loc = {r.locator: r for r in report.rejects}
    assert set(by_loc) == {f"{BASE} line 10", f"{BASE} line 20", f"{BASE} line 40"}
    assert by_loc[f"{BASE} line 10"].field == "cls_drop_out" and "missing field" in by_loc[f"{BASE} line 10"].reason
    assert by_loc[f"{BASE} line 20"].field == "learning_curves.mismatched"
    assert "invalid JSON" in by_loc[f"{BASE} line 40"].reason
    assert report.ingested == 37


def test_whole_input_errors(tmp_path: Path) -> None:
    """An empty results file and a folder without results files are refused with a FormatError."""
    empty = tmp_path / BASE
    empty.write_text("")
    with pytest.raises(FormatError, match="empty"):
        list(Opda().read(empty))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(FormatError, match="no \\*_tuning"):
        list(Opda().read(other))

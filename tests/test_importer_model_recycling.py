"""The Model-recycling importer on the real ``results/`` CSVs and on broken copies of them."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from collector.errors import FormatError
from collector.formats import RawRecord, Rejected, detect_format
from collector.importers.model_recycling import DATASETS, ModelRecycling, upstream_task
from collector.ingest import ingest_items, ingest_path, validate
from collector.schema import RunRecord
from collector.store import KnowledgeBase


@pytest.fixture(scope="module")
def folder(public_data: Path) -> Path:
    """The shipped source folder."""
    path = public_data / "metadatasets" / "ibm_model_recycling"
    if not path.is_dir():
        pytest.skip("ibm_model_recycling not shipped")
    return path


@pytest.fixture(scope="module")
def items(folder: Path) -> list[RawRecord | Rejected]:
    """Everything the importer yields for the real folder (read once)."""
    return list(ModelRecycling().read(folder))


@pytest.fixture(scope="module")
def by_locator(items: list[RawRecord | Rejected]) -> dict[str, RawRecord | Rejected]:
    """Items by locator."""
    return {i.locator: i for i in items}


def _valid(item: RawRecord | Rejected) -> RunRecord:
    assert isinstance(item, RawRecord), item
    rec = validate(item, source="model_recycling")
    assert isinstance(rec, RunRecord), rec
    return rec


def _tested_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results" / "models_tested.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_detects_the_folder_and_its_files(folder: Path) -> None:
    """The source folder, ``results/``, ``models_tested.csv`` and a pretrain file are recognized; a ranking table is
    not (it is intentionally not read)."""
    assert detect_format(folder) == "model_recycling"
    assert detect_format(folder / "results") == "model_recycling"
    assert ModelRecycling.detect(folder / "results" / "models_tested.csv")
    assert ModelRecycling.detect(folder / "results" / "models_results_roberta_base_pretrain.csv")
    assert not ModelRecycling.detect(folder / "results" / "roberta-base_table.csv")


def test_counts_match_origin(items: list[RawRecord | Rejected]) -> None:
    """2,703 probes + 46,397 fine-tuning scores + 6 x 720 baseline runs are read; every item is a record or a
    reject whose reason is the misalignment rule (no other reject on the shipped files)."""
    assert len(items) == 2_703 + 46_397 + 6 * 720
    probes = [i for i in items if i.locator.endswith("column mnli_lp")]
    assert len(probes) == 2_703 and all(isinstance(i, RawRecord) for i in probes)
    rejects = [i for i in items if isinstance(i, Rejected)]
    assert Counter(r.reason.split(":")[0] for r in rejects) == {"misaligned row": len(rejects)}
    assert 9_000 < len(rejects) < 10_500
    rows = {r.locator.split(" column ")[0] for r in rejects}
    assert 250 < len(rows) < 290
    pretrain = [i for i in items if "_pretrain.csv" in i.locator]
    assert len(pretrain) == 6 * 720 and all(isinstance(i, RawRecord) for i in pretrain)


def test_finetune_record_field_by_field(folder: Path, by_locator: dict) -> None:
    """The first candidate's stsb and cola runs carry the row's values, the fixed recipe, the canonical dataset and
    the model features of its row."""
    row = _tested_rows(folder)[0]
    assert row["model_name"] == "deepset/roberta-base-squad2-covid"
    loc = f"models_tested.csv line 2 ({row['model_name']})"
    stsb = _valid(by_locator[f"{loc} column stsb"])
    assert stsb.task.type.value == "text-regression" and stsb.task.primary_metric == "spearman"
    assert stsb.outcome.score == pytest.approx(float(row["stsb"]))
    assert stsb.dataset.name == "glue/stsb" and stsb.outcome.split == "test"
    cola = _valid(by_locator[f"{loc} column cola"])
    assert cola.task.primary_metric == "accuracy" and cola.outcome.score == pytest.approx(float(row["cola"]))
    assert cola.method.name == "full"
    hp = cola.hparams
    assert (hp.learning_rate, hp.batch_size, hp.epochs, hp.seed) == (5e-5, 256, 10, 0)
    assert (hp.lr_scheduler, hp.optimizer, hp.weight_decay) == ("linear", "adamw", 0.01)
    assert hp.extra["early_stopping"]["min_delta"] == 0.001
    m = cola.model
    assert (m.id, m.base_model, m.family, m.n_params, m.n_layers) == (
        "deepset/roberta-base-squad2-covid", "roberta-base", "roberta", 124_647_170, 12)
    assert m.upstream_task == "squad_v2"
    assert cola.provenance.license == "Apache-2.0"


def test_probe_records_and_zero_marker(by_locator: dict, items: list) -> None:
    """``mnli_lp`` is a linear probe on glue/mnli; 0.0 (242 rows) is a failed probe without a score."""
    probes = [_valid(i) for i in items if i.locator.endswith("column mnli_lp")]
    failed = [p for p in probes if p.outcome.status.value == "failed"]
    assert len(failed) == 242 and all(p.outcome.score is None for p in failed)
    ok = next(p for p in probes if p.model.id == "deepset/roberta-base-squad2-covid")
    assert ok.method.name == "linear_probe" and ok.dataset.name == "glue/mnli"
    assert ok.outcome.score == pytest.approx(0.5617371847030106)


def test_duplicated_model_names(items: list) -> None:
    """The 7 duplicated t5 rows give identical fine-tuning records (same run ids) and one failed + one ok probe."""
    name = "spacemanidol/flan-t5-base-xsum"
    mine = [_valid(i) for i in items if isinstance(i, RawRecord) and i.data["model"]["id"] == name]
    probes = [r for r in mine if r.method.name == "linear_probe"]
    assert sorted(p.outcome.status.value for p in probes) == ["failed", "ok"]
    ft = Counter(r.run_id for r in mine if r.method.name == "full")
    assert ft and set(ft.values()) == {2}


def test_misaligned_row_is_rejected_and_clean_weak_row_kept(by_locator: dict, items: list) -> None:
    """A row with SST-5 at 0.94 and WNLI at 0.89 is rejected column by column; the collapsed but well-formed
    ``kmh511/charlie-base`` row (zeros everywhere) is kept as ok runs."""
    rejected = [i for i in items if isinstance(i, Rejected) and "(cardiffnlp/twitter-roberta-base-2021-124m-sentiment)"
                in i.locator]
    assert len(rejected) == 36 and all(r.field == "outcome.score" for r in rejected)
    assert "ceiling" in rejected[0].reason
    charlie = [i for i in items if "(kmh511/charlie-base)" in i.locator and "mnli_lp" not in i.locator]
    assert len(charlie) == 35 and all(isinstance(i, RawRecord) for i in charlie)


def test_pretrain_repeats(folder: Path, items: list) -> None:
    """Baseline runs keep their stage as ``hparams.extra.repeat``, no seed, the eval loss, and the base model's
    features; an empty Spearman of a T5 run is a failed (diverged) run."""
    runs = [_valid(i) for i in items if i.locator.startswith("models_results_roberta_base_pretrain.csv")]
    assert len(runs) == 720 and len({r.run_id for r in runs}) == 720
    with open(folder / "results" / "models_results_roberta_base_pretrain.csv", encoding="utf-8") as f:
        raw = next(csv.DictReader(f, delimiter="\t"))
    first = next(r for r in runs if r.provenance.locator.startswith("models_results_roberta_base_pretrain.csv line 2 "))
    assert first.dataset.name == DATASETS[raw["dataset name"]] == "glue/cola"
    assert first.hparams.extra["repeat"] == int(raw["stage"]) == 0 and first.hparams.seed is None
    assert first.outcome.score == pytest.approx(float(raw["accuracy"]))
    assert first.outcome.metrics["loss"] == pytest.approx(float(raw["loss"]))
    assert "loss" in first.outcome.metrics and first.model.n_params
    t5 = [_valid(i) for i in items if i.locator.startswith("models_results_t5_base_pretrain.csv")]
    collapsed = [r for r in t5 if r.outcome.status.value == "failed"]
    assert collapsed and all(r.outcome.error_kind.value == "diverged" and r.dataset.name == "glue/stsb"
                             for r in collapsed)


def test_every_record_validates_on_unit_scale(items: list) -> None:
    """Every record validates; accuracies lie in [0, 1] and Spearman in [-1, 1] (fractions, no percent)."""
    for item in items[::7]:
        if isinstance(item, RawRecord):
            rec = _valid(item)
            if rec.outcome.score is not None:
                lo = -1.0 if rec.task.primary_metric == "spearman" else 0.0
                assert lo <= rec.outcome.score <= 1.0


def test_dataset_table_is_complete() -> None:
    """All 36 columns are mapped to canonical names, none twice; names are read from checkpoints conservatively."""
    assert len(DATASETS) == 36 and len(set(DATASETS.values())) == 36
    assert upstream_task("textattack/roberta-base-MNLI") == "glue/mnli"
    assert upstream_task("dennishe97/codebert-base-v3.2") is None


def test_ingest_subset_and_reingest_adds_nothing(items: list, tmp_path: Path) -> None:
    """A slice of the real items stores; ingesting the same slice again adds 0 and counts every record duplicate."""
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    subset = items[:3000] + items[-800:]
    first = ingest_items(kb, subset, source="model_recycling", uri="x")
    assert first.ingested > 2500 and first.error is None
    again = ingest_items(kb, subset, source="model_recycling", uri="x")
    assert again.ingested == 0 and again.duplicates == first.ingested + first.duplicates


# -- broken copies -----------------------------------------------------------------------------------------------


@pytest.fixture
def small_copy(folder: Path, tmp_path: Path) -> Path:
    """``results/`` with the first 80 rows of models_tested.csv and two pretrain files."""
    dest = tmp_path / "results"
    dest.mkdir()
    with open(folder / "results" / "models_tested.csv", encoding="utf-8") as f:
        lines = f.readlines()[:81]
    (dest / "models_tested.csv").write_text("".join(lines), encoding="utf-8")
    for name in ("models_results_roberta_base_pretrain.csv", "models_results_bert_base_cased_pretrain.csv"):
        shutil.copy(folder / "results" / name, dest / name)
    return dest


def test_missing_column_is_a_clear_error(small_copy: Path, tmp_path: Path) -> None:
    """Dropping ``mnli_lp`` from models_tested.csv fails the input up front, naming the column; nothing stored."""
    path = small_copy / "models_tested.csv"
    rows = list(csv.reader(path.open(encoding="utf-8")))
    drop = rows[0].index("mnli_lp")
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([r[:drop] + r[drop + 1:] for r in rows])
    with pytest.raises(FormatError, match=r"missing column.*mnli_lp"):
        list(ModelRecycling().read(small_copy))
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, small_copy)
    assert report.error and "mnli_lp" in report.error and report.ingested == 0


def test_missing_files(small_copy: Path, tmp_path: Path) -> None:
    """Without models_tested.csv the folder is an error; a missing baseline file of a base model present in the
    table is one reject naming the file, and everything else is ingested."""
    bases = {r["base_model"] for r in csv.DictReader((small_copy / "models_tested.csv").open(encoding="utf-8"))}
    (small_copy / "models_results_roberta_base_pretrain.csv").unlink()
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, small_copy, fmt="model_recycling")
    assert report.error is None
    missing = {r.locator for r in report.rejects if r.reason.startswith("missing file")}
    expected = {f"models_results_{b.replace('-', '_').replace('/', '_')}_pretrain.csv" for b in bases}
    assert "roberta-base" in bases and missing == expected - {"models_results_bert_base_cased_pretrain.csv"}
    assert report.ingested > 720 + 80
    (small_copy / "models_tested.csv").unlink()
    with pytest.raises(FormatError, match=r"models_tested\.csv"):
        list(ModelRecycling().read(small_copy))


def test_malformed_rows_are_rejected_with_their_line(small_copy: Path, tmp_path: Path) -> None:
    """A non-numeric cell rejects that run (line and column named); a row with too many fields is rejected whole;
    every other run of the file is still ingested."""
    path = small_copy / "models_tested.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    bad = lines[1].rstrip("\n").split(",")
    bad[header.index("cola")] = "oops"
    lines[1] = ",".join(bad) + "\n"
    lines[2] = lines[2].rstrip("\n") + ",extra\n"
    path.write_text("".join(lines), encoding="utf-8")
    items = list(ModelRecycling().read(small_copy))
    rejects = [i for i in items if isinstance(i, Rejected)]
    cell = [r for r in rejects if r.locator.startswith("models_tested.csv line 2 ") and r.locator.endswith("cola")]
    assert len(cell) == 1 and "'oops' is not a number" in cell[0].reason
    shape = [r for r in rejects if r.locator.startswith("models_tested.csv line 3 ")]
    assert len(shape) == 1 and "malformed row" in shape[0].reason
    assert sum(isinstance(i, RawRecord) and i.locator.startswith("models_tested.csv line 2 ") for i in items) >= 36
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    report = ingest_items(kb, items, source="model_recycling", uri=str(small_copy))
    assert report.read == len(items) and report.rejected == len(rejects)

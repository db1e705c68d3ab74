"""The SetFit importer on the real shipped files, and on broken copies of them built in ``tmp_path``."""

from __future__ import annotations

import gzip
import io
import json
import statistics
import tarfile
from pathlib import Path
from typing import Any

import pytest

from collector.formats import detect_format
from collector.ingest import ingest_path
from collector.ingest._pipeline import IngestReport
from collector.store import KnowledgeBase

SOURCE = "metadatasets/setfit"
ARCHIVE = "results_raw.tar.gz"
CURVES = "tfew_train_curves.csv.gz"

LINEAR_PROBE = "raw/final_results_HEAD/setfit/paraphrase-mpnet-base-v2-linear-probe/SentEval-CR/train-64-2/results.json"
MCC = "raw/final_results_HEAD/transformers/roberta-large/amazon_counterfactual_en/train-8-1/results.json"
MAE = "raw/final_results_HEAD/setfit/paraphrase-multilingual-mpnet-base-v2/amazon_reviews_multi_zh/each/train-8-1/" \
      "results.json"
HISTORY = "raw/final_results_history/setfit__commit_blob_97f602ab/paraphrase-mpnet-base-v2/sst5/train-8-1/results.json"
HEAD_TWIN = "raw/final_results_HEAD/setfit/paraphrase-mpnet-base-v2-epochs_20/sst5/train-8-1/results.json"
RERUN = "raw/tfew_t011b_final__commit_bb856cb/t011b_pretrained/SentEval-CR/train-64-2/seed4"
AGGREGATE = "raw/tfew_t011b_final__commit_bb856cb/t011b_pretrained/SentEval-CR/train-8-1"
SUBSET = ("raw/final_results_HEAD/perfect/", AGGREGATE + "/")


@pytest.fixture(scope="module")
def source(public_data: Path) -> Path:
    """The shipped SetFit folder (skips when the public data is absent)."""
    path = public_data / SOURCE
    if not (path / ARCHIVE).is_file():
        pytest.skip(f"{path / ARCHIVE} not found")
    return path


@pytest.fixture(scope="module")
def raw(source: Path) -> dict[str, bytes]:
    """The members the tests compare against and copy, read in one pass over the real archive."""
    wanted = {LINEAR_PROBE, MCC, MAE, HISTORY, HEAD_TWIN}
    out: dict[str, bytes] = {}
    with tarfile.open(source / ARCHIVE, "r|gz") as tar:
        for m in tar:
            if m.isfile() and (m.name in wanted or m.name.startswith((RERUN + "/", *SUBSET))):
                out[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
    return out


@pytest.fixture(scope="module")
def ingested(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeBase, IngestReport]:
    """The real source ingested once into a fresh knowledge base."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("setfit") / "kb.duckdb")
    (report,) = ingest_path(kb, source)
    return kb, report


def _row(kb: KnowledgeBase, locator: str) -> dict[str, Any]:
    rows = kb.scan(filters={"provenance_locator": locator}).to_pylist()
    assert len(rows) == 1, f"expected one run from {locator}, found {len(rows)}"
    return rows[0]


def test_detected_as_setfit(source: Path) -> None:
    """The folder and the archive alone are both recognized as this format (and not as the PEFT suite)."""
    assert detect_format(source) == "setfit"
    assert detect_format(source / ARCHIVE) == "setfit"


def test_counts_match_origin(ingested: tuple[KnowledgeBase, IngestReport]) -> None:
    """3,512 results.json + 851 T-Few folders + 5 summaries: 3,904 runs, 300 history duplicates, the rest rejected
    with stated reasons (aggregates, unfinished or overwritten T-Few executions)."""
    kb, report = ingested
    assert report.error is None
    assert report.ingested == kb.count() == 3904
    assert report.duplicates == 300
    assert report.read == 4515
    reasons = [r.reason for r in report.rejects]
    assert sum(r.startswith("aggregate, not a run") for r in reasons) == 125
    assert sum(r.startswith("earlier execution of a re-run folder") for r in reasons) == 69
    assert sum(r.startswith("interrupted execution") for r in reasons) == 78
    assert sum(r.startswith("zero-shot evaluation") for r in reasons) == 1
    assert sum("no dev_scores.json" in r for r in reasons) == 38
    rows = kb.sql("SELECT method_name, count(*) n FROM runs GROUP BY 1").table.to_pylist()
    methods = {r["method_name"]: r["n"] for r in rows}
    assert methods == {"setfit": 1303, "full": 829, "ia3": 812, "distillation": 420, "adapet": 300, "perfect": 120,
                       "linear_probe": 120}


def test_reingest_adds_nothing(ingested: tuple[KnowledgeBase, IngestReport], source: Path) -> None:
    """Ingesting the same folder again stores 0 new runs: every record has a stable content id."""
    kb, _ = ingested
    (again,) = ingest_path(kb, source)
    assert again.ingested == 0
    assert again.duplicates == 3904 + 300
    assert kb.count() == 3904


def test_percent_accuracy_normalized(ingested: tuple[KnowledgeBase, IngestReport], raw: dict[str, bytes]) -> None:
    """A linear-probe results.json: folder -> method/model/dataset/N/split, score x100 in the file -> unit scale."""
    kb, _ = ingested
    row = _row(kb, LINEAR_PROBE)
    score = json.loads(raw[LINEAR_PROBE])["score"]
    assert row["method_name"] == "linear_probe"
    assert row["model_id"] == "sentence-transformers/paraphrase-mpnet-base-v2"
    assert row["dataset_name"] == "cr"
    assert (row["dataset_examples_per_class"], row["dataset_data_seed"]) == (64, 2)
    assert row["task_primary_metric"] == "accuracy" and row["task_metric_scale"] == "unit"
    assert row["outcome_score"] == pytest.approx(score / 100)
    assert dict(row["outcome_metrics"])["accuracy"] == pytest.approx(score / 100)
    assert row["outcome_split"] == "test"
    assert row["provenance_license"] == "Apache-2.0"


def test_mcc_divided_and_signed(ingested: tuple[KnowledgeBase, IngestReport], raw: dict[str, bytes]) -> None:
    """Matthews correlation (x100 in the file, may be negative) is stored on its signed unit scale."""
    kb, _ = ingested
    row = _row(kb, MCC)
    assert row["method_name"] == "full" and row["model_id"] == "roberta-large"
    assert row["task_primary_metric"] == "matthews_correlation" and row["task_metric_scale"] == "signed_unit"
    assert row["outcome_score"] == pytest.approx(json.loads(raw[MCC])["score"] / 100)
    low = kb.sql("SELECT min(outcome_score) m FROM runs WHERE task_primary_metric = 'matthews_correlation'")
    assert -1 <= low.table.to_pylist()[0]["m"] < 0


def test_mae_lower_is_better(ingested: tuple[KnowledgeBase, IngestReport], raw: dict[str, bytes]) -> None:
    """amazon_reviews_multi MAE keeps the file's own scale and says lower is better."""
    kb, _ = ingested
    row = _row(kb, MAE)
    assert row["task_primary_metric"] == "mae"
    assert row["task_metric_scale"] == "unbounded" and row["task_higher_is_better"] is False
    assert row["outcome_score"] == pytest.approx(json.loads(raw[MAE])["score"])
    assert row["dataset_name"] == "amazon_reviews_multi/zh"
    assert json.loads(row["method_config"])["train_lang"] == "each"


def test_history_is_the_head_run(ingested: tuple[KnowledgeBase, IngestReport], raw: dict[str, bytes]) -> None:
    """The historical paraphrase-mpnet results are the HEAD epochs_20 runs: one record, located at the HEAD file."""
    kb, _ = ingested
    assert json.loads(raw[HISTORY])["score"] == json.loads(raw[HEAD_TWIN])["score"]
    row = _row(kb, HEAD_TWIN)
    assert json.loads(row["method_config"])["num_iterations"] == 20
    assert not kb.scan(filters={"provenance_locator": HISTORY}).num_rows


def test_tfew_rerun_keeps_last_execution(ingested: tuple[KnowledgeBase, IngestReport], raw: dict[str, bytes]) -> None:
    """A re-run T-Few folder: config fields, the LAST dev_scores line, the last fit time and the last version's
    loss curve; the earlier execution is rejected with its place."""
    kb, report = ingested
    row = _row(kb, RERUN + "/config.json")
    cfg = json.loads(raw[RERUN + "/config.json"])
    last = json.loads(raw[RERUN + "/dev_scores.json"].decode().splitlines()[-1])
    assert row["method_name"] == "ia3" and row["model_id"] == cfg["origin_model"] == "bigscience/T0"
    assert (row["hparams_learning_rate"], row["hparams_max_steps"], row["hparams_optimizer"]) == (0.003, 1000,
                                                                                                  "adafactor")
    assert row["hparams_batch_size"] == cfg["batch_size"] * cfg["grad_accum_factor"]
    assert row["hparams_precision"] == "bf16" and row["hparams_seed"] == cfg["seed"]
    assert row["outcome_score"] == pytest.approx(last["accuracy"])
    assert row["outcome_runtime_s"] == pytest.approx(1569.095)
    curve = row["outcome_curve"]
    assert len(curve) == 250 and {p["metric"] for p in curve} == {"loss"} and curve[-1]["step"] == 999
    assert any(r.locator == RERUN + "/dev_scores.json line 1" for r in report.rejects)


def test_tfew_aggregate_is_median_of_runs(ingested: tuple[KnowledgeBase, IngestReport], raw: dict[str, bytes]) -> None:
    """The rejected T-Few results.json equals the median of the seed runs ingested for the same split."""
    kb, report = ingested
    agg = json.loads(raw[AGGREGATE + "/results.json"])
    scores = kb.sql("SELECT outcome_score s FROM runs WHERE provenance_locator LIKE "
                    f"'{AGGREGATE}/seed%'").table.to_pylist()
    assert len(scores) == 5
    assert statistics.median(s["s"] for s in scores) * 100 == pytest.approx(agg["score"])
    assert any(r.locator == AGGREGATE + "/results.json" and "aggregate" in r.reason for r in report.rejects)


# -- broken copies -------------------------------------------------------------------------------------------


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def curve_lines(source: Path) -> list[str]:
    """The curves file's header and the rows of the copied T-Few split's seed folders."""
    key = AGGREGATE.split("/", 2)[2]
    with gzip.open(source / CURVES, "rt") as src:
        return [src.readline(), *(line for line in src if f"/{key}/" in line)]


@pytest.fixture
def small_copy(tmp_path: Path, raw: dict[str, bytes], curve_lines: list[str]) -> Path:
    """A small copy: the PERFECT results + one T-Few split (5 seed folders), with the curves of those folders."""
    folder = tmp_path / "setfit"
    folder.mkdir()
    _write_tar(folder / ARCHIVE, {k: v for k, v in raw.items() if k.startswith(SUBSET)})
    with gzip.open(folder / CURVES, "wt") as dst:
        dst.writelines(curve_lines)
    return folder


def test_small_copy_reads_cleanly(small_copy: Path, kb: KnowledgeBase) -> None:
    """The small copy ingests 120 PERFECT runs and 5 T-Few runs, rejecting only the split's aggregate."""
    (report,) = ingest_path(kb, small_copy, "setfit")
    assert report.error is None
    assert (report.ingested, report.rejected) == (125, 1)


def test_malformed_results_file_is_rejected(small_copy: Path, kb: KnowledgeBase) -> None:
    """A results.json that is not JSON is rejected with its member name; every other run is still ingested."""
    bad = "raw/final_results_HEAD/perfect/perfect/cr/train-8-1/results.json"
    with tarfile.open(small_copy / ARCHIVE) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    members[bad] = b'{"measure": "accuracy", "score": 87.'
    _write_tar(small_copy / ARCHIVE, members)
    (report,) = ingest_path(kb, small_copy, "setfit")
    assert report.ingested == 124
    (reject,) = [r for r in report.rejects if r.locator == bad]
    assert "malformed JSON" in reject.reason


def test_malformed_curve_row_is_rejected(small_copy: Path, kb: KnowledgeBase) -> None:
    """A curve row with a non-numeric value is rejected by line number; its run is ingested without that point."""
    with gzip.open(small_copy / CURVES, "rt") as fh:
        lines = fh.readlines()
    target = next(i for i, line in enumerate(lines) if ",loss," in line)
    lines[target] = lines[target].rsplit(",", 1)[0] + ",not-a-number\n"
    with gzip.open(small_copy / CURVES, "wt") as fh:
        fh.writelines(lines)
    (report,) = ingest_path(kb, small_copy, "setfit")
    assert report.ingested == 125
    assert any(r.locator == f"line {target + 1}" and "non-numeric" in r.reason for r in report.rejects)


def test_truncated_archive_keeps_valid_part(small_copy: Path, kb: KnowledgeBase) -> None:
    """A truncated archive is reported as an error naming the last good member; runs read before it are stored."""
    data = (small_copy / ARCHIVE).read_bytes()
    (small_copy / ARCHIVE).write_bytes(data[: len(data) * 2 // 3])
    (report,) = ingest_path(kb, small_copy, "setfit")
    assert report.error is not None and "truncated or corrupt archive" in report.error
    assert 0 < report.ingested < 125 and kb.count() == report.ingested


def test_missing_curves_file_is_an_error(small_copy: Path, kb: KnowledgeBase) -> None:
    """Without tfew_train_curves.csv.gz beside the archive the input is refused as a whole, nothing stored."""
    (small_copy / CURVES).unlink()
    (report,) = ingest_path(kb, small_copy / ARCHIVE, "setfit")
    assert report.error is not None and "missing required file tfew_train_curves.csv.gz" in report.error
    assert report.ingested == 0


def test_missing_curve_column_is_an_error(small_copy: Path, kb: KnowledgeBase) -> None:
    """A curves file without its ``tag`` column is refused with the column named."""
    with gzip.open(small_copy / CURVES, "rt") as fh:
        text = fh.read().replace(",tag,", ",kind,", 1)
    with gzip.open(small_copy / CURVES, "wt") as fh:
        fh.write(text)
    (report,) = ingest_path(kb, small_copy, "setfit")
    assert report.error is not None and "lacks column(s) tag" in report.error

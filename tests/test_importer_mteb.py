"""The MTEB classification importer on the real archive and on broken copies built from its first folders."""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from collector.errors import FormatError
from collector.formats import RawRecord, Rejected, detect_format
from collector.importers.mteb import MtebClassification
from collector.ingest import ingest_items, ingest_path, validate
from collector.schema import RunRecord
from collector.store import KnowledgeBase

FIRST_MODEL = "results/AITeamVN__Vietnamese_Embedding/fcbbb905e6c3757d421aaa5db6fd7c53d038f6fb"


@pytest.fixture(scope="module")
def folder(public_data: Path) -> Path:
    """The shipped source folder."""
    path = public_data / "metadatasets" / "mteb_classification"
    if not (path / "results_json_raw.tar.xz").is_file():
        pytest.skip("mteb_classification not shipped")
    return path


@pytest.fixture(scope="module")
def items(folder: Path) -> list[RawRecord | Rejected]:
    """Everything the importer yields for the real archive (streamed once, ~10 s of CPU)."""
    return list(MtebClassification().read(folder))


@pytest.fixture(scope="module")
def head_members(folder: Path) -> dict[str, bytes]:
    """The first ~120 files of the archive, read independently of the importer (stops early)."""
    out: dict[str, bytes] = {}
    with tarfile.open(folder / "results_json_raw.tar.xz", "r|xz") as tar:
        for m in tar:
            if m.isfile():
                out[m.name] = tar.extractfile(m).read()
            if len(out) >= 120:
                break
    return out


def _valid(item: RawRecord | Rejected) -> RunRecord:
    assert isinstance(item, RawRecord), item
    rec = validate(item, source="mteb")
    assert isinstance(rec, RunRecord), rec
    return rec


def test_detect(folder: Path, tmp_path: Path) -> None:
    """The folder (archive + task metadata) and the archive are recognized; a folder with only the archive is not."""
    assert detect_format(folder) == "mteb"
    assert MtebClassification.detect(folder / "results_json_raw.tar.xz")
    (tmp_path / "results_json_raw.tar.xz").write_bytes(b"")
    assert not MtebClassification.detect(tmp_path)


def test_counts(items: list) -> None:
    """~93k runs: the 92,369 current-layout rows of ORIGIN.txt plus the old-layout (mteb < 1.2) entries; the only
    rejects are out-of-scope files (pair, image, audio, video tasks), one per file."""
    records = [i for i in items if isinstance(i, RawRecord)]
    rejects = [i for i in items if isinstance(i, Rejected)]
    assert 92_300 <= len(records) <= 93_200
    assert all(r.reason.startswith("out of scope:") for r in rejects)
    kinds = Counter(r.reason for r in rejects)
    assert kinds["out of scope: PairClassification task"] > 500
    assert 1_700 <= len(rejects) <= 1_900


def test_record_field_by_field(items: list, head_members: dict[str, bytes]) -> None:
    """The first model's AmazonCounterfactualVN run matches its JSON and model_meta.json."""
    raw = json.loads(head_members[f"{FIRST_MODEL}/AmazonCounterfactualVNClassification.json"])
    meta = json.loads(head_members[f"{FIRST_MODEL}/model_meta.json"])
    entry = raw["scores"]["test"][0]
    loc = f"{FIRST_MODEL}/AmazonCounterfactualVNClassification.json test/default"
    rec = _valid(next(i for i in items if i.locator == loc))
    assert rec.dataset.name == "mteb/amazoncounterfactualvnclassification"
    assert rec.dataset.fingerprint == raw["dataset_revision"] and rec.dataset.meta.language == "vi"
    assert rec.model.id == meta["name"] and rec.model.revision == meta["revision"]
    assert (rec.model.n_params, rec.model.hidden_size, rec.model.max_positions, rec.model.base_model) == (
        meta["n_parameters"], meta["embed_dim"], int(meta["max_tokens"]), meta["adapted_from"])
    assert rec.method.name == "linear_probe"
    assert rec.method.config == {"probe": "logistic_regression", "max_iter": 100, "samples_per_label": 8}
    assert rec.outcome.score == pytest.approx(entry["main_score"]) and rec.outcome.split == "test"
    per = [e["accuracy"] for e in entry["scores_per_experiment"]]
    mean = sum(per) / len(per)
    assert rec.outcome.n_repeats == 10
    assert rec.outcome.score_std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in per) / len(per)))
    assert rec.outcome.metrics["average_precision"] == pytest.approx(entry["ap"])
    assert rec.outcome.metrics["evaluation_time_s"] == pytest.approx(raw["evaluation_time"])
    assert rec.outcome.runtime_s is None and rec.hparams.extra["mteb_version"] == raw["mteb_version"]
    assert rec.provenance.license == "CC0-1.0"


def test_old_layout_and_revision_labels(items: list) -> None:
    """An mteb 1.1 file (``test.zh`` / ``validation.zh``) gives two runs with ``accuracy_stderr`` as std; the
    ``no_revision_available`` folder leaves the revision empty and is recorded in hparams.extra."""
    prefix = "results/BAAI__bge-small-zh/no_revision_available/AmazonReviewsClassification.json "
    recs = {i.locator.split(" ")[-1]: _valid(i) for i in items if i.locator.startswith(prefix)}
    assert set(recs) == {"test/zh", "validation/zh"}
    test = recs["test/zh"]
    assert test.outcome.score == pytest.approx(0.37312)
    assert test.outcome.score_std == pytest.approx(0.022280969458261923)
    assert test.outcome.n_repeats is None and test.dataset.name == "amazon_reviews_multi/zh"
    assert test.dataset.meta.language == "zh" and test.model.revision is None
    assert test.hparams.extra["revision_label"] == "no_revision_available"


def test_scales_and_validation(items: list) -> None:
    """A sample of records validates with scores in [0, 1]; multilabel tasks use the kNN probe."""
    probes = Counter()
    for item in items[::40]:
        if isinstance(item, RawRecord):
            rec = _valid(item)
            assert 0.0 <= rec.outcome.score <= 1.0
            probes[rec.method.config["probe"]] += 1
    assert probes["logistic_regression"] > 1000 and probes["knn"] > 10


def test_ingest_subset_and_reingest(items: list, tmp_path: Path) -> None:
    """A slice of the real items stores without rejects beyond the out-of-scope files; ingesting it again adds 0."""
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    subset = items[:4000]
    first = ingest_items(kb, subset, source="mteb", uri="x")
    assert first.ingested > 3000 and all(r.reason.startswith("out of scope") for r in first.rejects)
    again = ingest_items(kb, subset, source="mteb", uri="x")
    assert again.ingested == 0 and again.duplicates == first.ingested + first.duplicates


# -- broken copies -----------------------------------------------------------------------------------------------


def _write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def small(folder: Path, head_members: dict[str, bytes], tmp_path: Path) -> Path:
    """A folder with an archive of the first ~120 real files and the real task metadata."""
    dest = tmp_path / "mteb"
    dest.mkdir()
    _write_archive(dest / "results_json_raw.tar.xz", head_members)
    shutil.copy(folder / "task_metadata.csv.gz", dest / "task_metadata.csv.gz")
    return dest


def test_small_copy_ingests(small: Path, tmp_path: Path) -> None:
    """The rebuilt small archive ingests cleanly (the reference for the broken variants below)."""
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, small)
    assert report.error is None and report.ingested > 100
    assert all(r.reason.startswith("out of scope") for r in report.rejects)


def test_truncated_archive(small: Path, tmp_path: Path) -> None:
    """A truncated archive is a clear error; the runs of the folders completed before the cut are stored."""
    archive = small / "results_json_raw.tar.xz"
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * 0.8)])
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, small)
    assert report.error and "truncated or corrupt" in report.error
    assert report.ingested > 0


def test_missing_metadata(small: Path) -> None:
    """Without task_metadata.csv.gz the input fails up front, naming the file."""
    (small / "task_metadata.csv.gz").unlink()
    with pytest.raises(FormatError, match=r"task_metadata\.csv\.gz"):
        list(MtebClassification().read(small / "results_json_raw.tar.xz"))


def test_malformed_json_and_entry(head_members: dict[str, bytes], small: Path) -> None:
    """A result file that is not JSON is one reject naming the member; an entry without a main score is rejected
    with its split/subset; all other runs of the archive are still read."""
    files = dict(head_members)
    bad_json = f"{FIRST_MODEL}/ImdbVNClassification.json"
    files[bad_json] = files[bad_json][:200]
    no_score = f"{FIRST_MODEL}/Banking77VNClassification.json"
    data = json.loads(files[no_score])
    del data["scores"]["test"][0]["main_score"]
    del data["scores"]["test"][0]["accuracy"]
    files[no_score] = json.dumps(data).encode()
    _write_archive(small / "results_json_raw.tar.xz", files)
    items = list(MtebClassification().read(small))
    rejects = {r.locator: r.reason for r in items if isinstance(r, Rejected) and not r.reason.startswith("out of")}
    assert rejects.keys() == {bad_json, f"{no_score} test/default"}
    assert rejects[bad_json].startswith("not valid JSON")
    assert sum(isinstance(i, RawRecord) for i in items) > 100

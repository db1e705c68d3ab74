"""The LM-BFF importer on the real search archive and on broken copies of it."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from collector.errors import FormatError
from collector.formats import RawRecord, Rejected, detect_format
from collector.importers.lmbff import LmBff, parse_label_words
from collector.ingest import ingest_items, ingest_path, validate
from collector.schema import RunRecord
from collector.store import KnowledgeBase


@pytest.fixture(scope="module")
def folder(public_data: Path) -> Path:
    """The shipped source folder."""
    path = public_data / "metadatasets" / "lmbff"
    if not (path / "auto_search_raw.tar.gz").is_file():
        pytest.skip("lmbff not shipped")
    return path


@pytest.fixture(scope="module")
def members(folder: Path) -> dict[str, str]:
    """Every text file of the archive, by member name (read here independently of the importer)."""
    out = {}
    with tarfile.open(folder / "auto_search_raw.tar.gz", "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name] = tar.extractfile(m).read().decode("utf-8")
    return out


@pytest.fixture(scope="module")
def items(folder: Path) -> list[RawRecord | Rejected]:
    """Everything the importer yields (read once)."""
    return list(LmBff().read(folder))


def _valid(item: RawRecord | Rejected) -> RunRecord:
    assert isinstance(item, RawRecord), item
    rec = validate(item, source="lmbff")
    assert isinstance(rec, RunRecord), rec
    return rec


def _find(items: list, locator: str) -> RawRecord | Rejected:
    return next(i for i in items if i.locator == locator)


def test_detect(folder: Path, tmp_path: Path) -> None:
    """The folder and the archive are recognized; another tar.gz is not."""
    assert detect_format(folder) == "lmbff"
    assert LmBff.detect(folder / "auto_search_raw.tar.gz")
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        data = b"hello"
        info = tarfile.TarInfo("something/else.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert not LmBff.detect(other)


def test_counts_match_origin(items: list, members: dict[str, str]) -> None:
    """One record per score line (14,945, as ORIGIN.txt says) and one reject per unscored candidate (55)."""
    score_lines = sum(len(t.splitlines()) for n, t in members.items() if n.endswith(".score.txt"))
    assert score_lines == 14_945
    records = [i for i in items if isinstance(i, RawRecord)]
    rejects = [i for i in items if isinstance(i, Rejected)]
    assert len(records) == 14_945
    assert len(rejects) == 55 and all(r.reason.startswith("no score") for r in rejects)
    assert Counter(r.locator.split("/")[1] for r in rejects) == {"MNLI": 54, "STS-B": 1}


def test_template_record_field_by_field(items: list, members: dict[str, str]) -> None:
    """Line 1 of RTE's template search (seed 13) carries its score, template, the manual label words, K and seed."""
    member = "auto_template/RTE/16-13.score.txt"
    score, template = members[member].splitlines()[0].split(" ", 1)
    rec = _valid(_find(items, f"{member} line 1"))
    assert rec.outcome.score == pytest.approx(float(score)) and rec.outcome.split == "dev"
    assert rec.method.name == "prompt_finetuning"
    assert rec.method.config == {"search": "template", "template": template,
                                 "label_words": {"not_entailment": "No", "entailment": "Yes"}}
    assert rec.dataset.name == "glue/rte" and rec.dataset.examples_per_class == 16 and rec.dataset.data_seed == 13
    assert rec.dataset.n_train_used == 32 and rec.hparams.seed == 13
    hp = rec.hparams
    assert (hp.learning_rate, hp.batch_size, hp.max_steps) == (1e-5, 8, 1000) and hp.extra["eval_steps"] == 100
    assert rec.model.id == "roberta-large" and rec.task.primary_metric == "accuracy"
    assert rec.provenance.license == "MIT"


def test_label_search_records_and_metrics(items: list, members: dict[str, str]) -> None:
    """Label-word candidates are parsed (TREC's unquoted int keys too) with the manual template; CoLA is MCC,
    MRPC F1 and STS-B Pearson (regression), with a note where the file does not name the metric."""
    trec = _valid(_find(items, "auto_label_mapping/trec/16-13.score.txt line 1"))
    assert trec.method.config["search"] == "label_words"
    assert trec.method.config["template"] == "*cls**mask*:*+sent_0**sep+*"
    assert trec.method.config["label_words"]["0"] == "Abstract" and len(trec.method.config["label_words"]) == 6
    cola = _valid(_find(items, "auto_label_mapping/CoLA/16-13.score.txt line 1"))
    assert cola.task.primary_metric == "matthews_correlation"
    assert cola.outcome.score == pytest.approx(float(members["auto_label_mapping/CoLA/16-13.score.txt"].split()[0]))
    mrpc = _valid(_find(items, "auto_template/MRPC/16-13.score.txt line 1"))
    assert mrpc.task.primary_metric == "f1" and "f1" in mrpc.hparams.extra["dev_metric_note"]
    stsb = _valid(_find(items, "auto_template/STS-B/16-13.score.txt line 1"))
    assert stsb.task.primary_metric == "pearson" and stsb.task.type.value == "text-regression"
    assert stsb.dataset.n_train_used is None
    assert {_valid(_find(items, f"auto_template/{t}/16-42.score.txt line 1")).dataset.name
            for t in ("mr", "cr", "sst-5", "SST-2")} == {"rotten_tomatoes", "cr", "sst5", "glue/sst2"}
    assert parse_label_words("{0: 'a', 1: 'b'}") == {"0": "a", "1": "b"}


def test_every_record_validates(items: list) -> None:
    """Every record validates; accuracies and F1 lie in [0, 1], MCC/Pearson in [-1, 1]."""
    for item in items[::5]:
        if isinstance(item, RawRecord):
            rec = _valid(item)
            lo = -1.0 if rec.task.primary_metric in ("matthews_correlation", "pearson") else 0.0
            assert lo <= rec.outcome.score <= 1.0


def test_ingest_and_reingest(items: list, tmp_path: Path) -> None:
    """All records store (7 duplicate mpqa candidates collapse by content); ingesting again adds nothing."""
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    first = ingest_items(kb, items, source="lmbff", uri="x")
    assert (first.ingested, first.duplicates, first.rejected) == (14_938, 7, 55)
    subset = items[:2000]
    again = ingest_items(kb, subset, source="lmbff", uri="x")
    assert again.ingested == 0 and again.duplicates == sum(isinstance(i, RawRecord) for i in subset)


# -- broken copies -----------------------------------------------------------------------------------------------


def _write_archive(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_truncated_archive_keeps_what_was_complete(folder: Path, tmp_path: Path) -> None:
    """An archive cut in half is a clear error; the runs of the files read before the cut are stored."""
    data = (folder / "auto_search_raw.tar.gz").read_bytes()
    cut = tmp_path / "lmbff"
    cut.mkdir()
    (cut / "auto_search_raw.tar.gz").write_bytes(data[: len(data) // 2])
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    (report,) = ingest_path(kb, cut)
    assert report.error and "truncated or corrupt" in report.error
    assert 1000 < report.ingested < 14_945


def test_malformed_line_and_missing_score_file(members: dict[str, str], tmp_path: Path) -> None:
    """A garbled score line is rejected with its line number, a candidate list without a score file is one
    reject, and every other line is ingested."""
    files = {n: t for n, t in members.items() if n.startswith("auto_template/RTE/16-13.")}
    lines = files["auto_template/RTE/16-13.score.txt"].splitlines()
    lines[4] = "not-a-score"
    files["auto_template/RTE/16-13.score.txt"] = "\n".join(lines) + "\n"
    files["auto_template/RTE/16-21.txt"] = members["auto_template/RTE/16-21.txt"]
    path = _write_archive(tmp_path / "search.tar.gz", files)
    items = list(LmBff().read(path))
    rejects = [i for i in items if isinstance(i, Rejected)]
    garbled = members["auto_template/RTE/16-13.score.txt"].splitlines()[4].split(" ", 1)[1]
    txt_line = files["auto_template/RTE/16-13.txt"].splitlines().index(garbled) + 1
    assert [r.locator for r in rejects] == ["auto_template/RTE/16-13.score.txt line 5",
                                            f"auto_template/RTE/16-13.txt line {txt_line}",
                                            "auto_template/RTE/16-21.txt"]
    assert "malformed score line" in rejects[0].reason
    assert sum(isinstance(i, RawRecord) for i in items) == len(lines) - 1


def test_missing_archive_is_an_error(tmp_path: Path) -> None:
    """A folder without the archive (named with --format) fails clearly."""
    with pytest.raises(FormatError, match="auto_search_raw"):
        list(LmBff().read(tmp_path))

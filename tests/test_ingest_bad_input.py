"""Bad input gets a clear error, is reported with its place and reason, and leaves the knowledge base unchanged."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from factories import DELETE, record, write_jsonl

from collector.store import KnowledgeBase
from service.cli import main


@pytest.fixture
def populated(kb: KnowledgeBase, tmp_path: Path) -> KnowledgeBase:
    """A knowledge base holding 5 good runs, ingested through the CLI (on each backend in turn)."""
    assert main(["ingest", str(write_jsonl(tmp_path / "good.jsonl", [record(i) for i in range(5)])),
                 "--kb", kb.location]) == 0
    return kb


def _ids(kb: KnowledgeBase) -> set[str]:
    return set(kb.scan(["run_id"]).column(0).to_pylist())


def _ingest_json(kb: KnowledgeBase, path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["ingest", str(path), "--kb", kb.location, "--json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.parametrize(("override", "field", "reason"), [
    ({"hparams__batch_size": "sixteen"}, "hparams.batch_size", "valid integer"),
    ({"hparams__learning_rate": -1e-4}, "hparams.learning_rate", "greater than 0"),
    ({"hparams__batch_size": -8}, "hparams.batch_size", "greater than or equal to 1"),
    ({"outcome__score": 1.7}, None, "outside the declared scale"),
    ({"outcome__metrics": {"accuracy": 0.9, "loss": float("inf")}}, "outcome.metrics.loss", "finite"),
    ({"method__name": "telepathy"}, "method.name", "unknown method"),
    ({"dataset": DELETE}, "dataset", "Field required"),
    ({"model__id": DELETE}, "model.id", "Field required"),
    ({"outcome__score": None}, None, "score is required"),
    ({"provenance__source": "Not A Source!"}, "provenance.source", "pattern"),
    ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
])
def test_invalid_records_are_rejected_with_field_and_reason(
    populated: KnowledgeBase, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: dict, field: str | None,
    reason: str,
) -> None:
    """Each kind of invalid record is rejected (exit 2) naming its line, field and reason; nothing is stored."""
    before = _ids(populated)
    path = write_jsonl(tmp_path / "bad.jsonl", [record(99, **override)])
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 2
    (rej,) = summary["inputs"][0]["rejects"]
    assert rej["locator"] == "line 1"
    assert rej["field"] == field
    assert reason in rej["reason"]
    assert _ids(populated) == before
    report = Path(summary["rejects_file"]).read_text().splitlines()
    assert json.loads(report[0])["locator"] == "line 1"


def test_nan_metric_written_as_json_literal_is_rejected(populated: KnowledgeBase, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Python's json writes NaN as a bare literal; such a score is rejected as not finite."""
    path = tmp_path / "nan.jsonl"
    path.write_text(json.dumps(record(1, outcome__score=float("nan"))) + "\n")
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 2 and summary["rejected"] == 1
    assert "finite" in summary["inputs"][0]["rejects"][0]["reason"]


def test_truncated_json_document_is_refused_whole(populated: KnowledgeBase, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON array cut mid-way is an unreadable input: exit 1, a message with the position, nothing stored."""
    before = _ids(populated)
    text = json.dumps([record(i) for i in range(100, 110)])
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 1
    assert "truncated or malformed" in summary["inputs"][0]["error"]
    assert _ids(populated) == before


def test_truncated_last_line_of_jsonl_is_rejected_and_the_rest_kept(populated: KnowledgeBase, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """JSONL cut inside its last line: the whole lines are stored, the cut one is rejected as invalid JSON."""
    lines = [json.dumps(record(i)) for i in range(200, 203)]
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(lines)[:-40])
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 2 and summary["ingested"] == 2 and summary["rejected"] == 1
    assert summary["inputs"][0]["rejects"][0]["locator"] == "line 3"
    assert "invalid JSON" in summary["inputs"][0]["rejects"][0]["reason"]


def test_a_50_mb_single_line_is_rejected_without_harm(populated: KnowledgeBase, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """One 50 MB line is rejected for its size; the records around it are stored."""
    huge = record(300, method__config={"blob": "x" * (50 * 1024 * 1024)})
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps(record(301)) + "\n")
        f.write(json.dumps(huge) + "\n")
        f.write(json.dumps(record(302)) + "\n")
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 2 and summary["ingested"] == 2
    (rej,) = summary["inputs"][0]["rejects"]
    assert rej["locator"] == "line 2" and "exceeds" in rej["reason"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.jsonl", b"", "file is empty"),
    ("blank.jsonl", b"\n\n  \n", "file is empty"),
    ("model.jsonl", bytes(range(256)) * 64, "binary file"),
    ("weights.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary file"),
    ("wrong.csv", b"model,dataset,accuracy\nbert,sst2,0.9\n", "wrong CSV header"),
])
def test_unreadable_files_fail_with_exit_1_and_change_nothing(
    populated: KnowledgeBase, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes,
    message: str,
) -> None:
    """Empty, binary and wrong-header files are refused as a whole with a clear message; nothing is stored."""
    before = _ids(populated)
    path = tmp_path / name
    path.write_bytes(content)
    fmt = ["--format", "csv"] if name.endswith(".csv") else []
    code, summary = _ingest_json(populated, path, capsys, *fmt)
    assert code == 1
    assert message in summary["inputs"][0]["error"]
    assert _ids(populated) == before


def test_csv_with_a_malformed_row_keeps_the_good_rows(populated: KnowledgeBase, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A canonical CSV row with too few fields or bad JSON is rejected by row; the others are stored."""
    populated.export(tmp_path / "all.csv", fmt="csv")
    lines = (tmp_path / "all.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 3)[0]
    fresh = KnowledgeBase(tmp_path / "fresh.duckdb")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    code, summary = _ingest_json(fresh, tmp_path / "bad.csv", capsys)
    assert code == 2 and summary["ingested"] == 4
    assert summary["inputs"][0]["rejects"][0]["locator"].startswith("row 2")


def test_gzipped_jsonl_and_reingest_adds_nothing(populated: KnowledgeBase, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """.jsonl.gz is read transparently; ingesting the same runs again reports them all as duplicates."""
    path = tmp_path / "runs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(5):
            f.write(json.dumps(record(i)) + "\n")
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 0 and summary["ingested"] == 0 and summary["duplicates"] == 5


def test_missing_path_and_unknown_file_kind_are_errors(populated: KnowledgeBase, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A path that does not exist, or a file no format recognizes, is an error naming the path."""
    code, summary = _ingest_json(populated, tmp_path / "nope.jsonl", capsys)
    assert code == 1 and "no such file" in summary["inputs"][0]["error"]
    (tmp_path / "notes.xyz").write_text("hello")
    code, summary = _ingest_json(populated, tmp_path / "notes.xyz", capsys)
    assert code == 1 and "no known format" in summary["inputs"][0]["error"]

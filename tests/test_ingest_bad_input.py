"""Bad input gets a clear error, is reported with its place and reason, and leaves the knowledge base unchanged."""

from __future__ import annotations

import csv
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


def _nested(levels: int) -> list:
    value: list = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


def _ingest_json(kb: KnowledgeBase, path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["ingest", str(path), "--kb", kb.location, "--json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.parametrize(("override", "field", "reason"), [
    ({"hparams__batch_size": "sixteen"}, "hparams.batch_size", "valid integer"),
    ({"hparams__learning_rate": -1e-4}, "hparams.learning_rate", "greater than 0"),
    ({"hparams__batch_size": -8}, "hparams.batch_size", "greater than or equal to 1"),
    ({"outcome__score": 1.7}, "outcome.score", "outside the declared scale"),
    ({"outcome__metrics": {"accuracy": 0.9, "loss": float("inf")}}, "outcome.metrics.loss", "finite"),
    ({"method__name": "telepathy"}, "method.name", "unknown method"),
    ({"dataset": DELETE}, "dataset", "Field required"),
    ({"model__id": DELETE}, "model.id", "Field required"),
    ({"outcome__score": None}, "outcome.score", "score is required"),
    ({"provenance__source": "Not A Source!"}, "provenance.source", "pattern"),
    ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ({"hparams__seed": 2**64}, "hparams.seed", "less than or equal to 9223372036854775807"),
    ({"hparams__max_steps": 2**63}, "hparams.max_steps", "less than or equal to 9223372036854775807"),
    ({"hparams__batch_size": 2**63}, "hparams.batch_size", "less than or equal to 9223372036854775807"),
    ({"hparams__warmup_steps": 2**70}, "hparams.warmup_steps", "less than or equal to 9223372036854775807"),
    ({"hparams__max_seq_length": 10**30}, "hparams.max_seq_length", "less than or equal to 9223372036854775807"),
    ({"dataset__data_seed": -(2**64)}, "dataset.data_seed", "greater than or equal to -9223372036854775808"),
    ({"hparams__learning_rate": 10**400}, "hparams.learning_rate", "valid number"),
    ({"dataset__name": "glue/sst2\x00"}, "dataset.name", "control character U+0000"),
    ({"model__id": "roberta\u202e-base"}, "model.id", "control character U+202E"),
    ({"method__target_modules": ["query", "val\u2066ue"]}, "method.target_modules.1", "control character U+2066"),
    ({"model__id": "m" * 300}, "model.id", "longer than the limit of 256"),
    ({"outcome__error_message": "x" * 20_000}, "outcome.error_message", "longer than the limit of 16,384"),
    ({"method__config": {"blob": "x" * 70_000}}, "method.config", "more than the limit of 65,536"),
    ({"method__config": {"template": "*cls**sent_0*\x00"}}, "method.config", "control character U+0000"),
    ({"hparams__extra": {"a": _nested(31)}}, "hparams.extra", "nested more than 32 levels deep"),
    ({"provenance__source": "upload:"}, "provenance.source", "pattern"),
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


def _no_traceback(capsys_err: str) -> None:
    assert "Traceback" not in capsys_err and "Error:" not in capsys_err.replace("error: ", "")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_an_integer_past_64_bits_costs_only_its_record(populated: KnowledgeBase, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    """A seed of 2^64 beside ten good records: the ten are stored, the one is rejected naming hparams.seed, exit 2
    and no traceback (it used to overflow while storing and lose the whole file)."""
    good = [record(i) for i in range(500, 510)]
    bad = {"task": {"primary_metric": "accuracy"}, "dataset": {"name": "glue/sst2"}, "model": {"id": "roberta-base"},
           "method": {"name": "full"}, "hparams": {"learning_rate": 2e-5, "seed": 18446744073709551616},
           "outcome": {"score": 0.9}}
    path = tmp_path / f"overflow{suffix}"
    items = [*good[:5], bad, *good[5:]]
    path.write_text("\n".join(json.dumps(r) for r in items) if suffix == ".jsonl" else json.dumps(items))
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 2 and summary["ingested"] == 10 and summary["rejected"] == 1
    (rej,) = summary["inputs"][0]["rejects"]
    assert rej["field"] == "hparams.seed" and rej["locator"] in ("line 6", "item 5")
    _no_traceback(capsys.readouterr().err)


def _deep_config_record(i: int, levels: int) -> str:
    text = json.dumps(record(i))
    return text.replace('"method": {', '"method": {"config": ' + '{"a": ' * levels + "1" + "}" * levels + ", ", 1)


@pytest.mark.parametrize("levels", [40, 50_000])
def test_deep_nesting_costs_only_its_record(populated: KnowledgeBase, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], levels: int) -> None:
    """Records nested 40 or 50,000 levels deep inside method.config, in JSON Lines, a JSON array and a canonical
    CSV (at most 5,000 levels there), are each rejected naming the depth limit (and method.config); their
    neighbours are stored; exit 2 and no traceback (50,000 levels used to raise RecursionError)."""
    deep = _deep_config_record(600, levels)
    (tmp_path / "deep.jsonl").write_text("\n".join([json.dumps(record(601)), deep, json.dumps(record(602))]))
    (tmp_path / "deep.json").write_text("[" + ",".join([json.dumps(record(603)), deep, json.dumps(record(604))]) + "]")
    for name, locator, stored in [("deep.jsonl", "line 2", 2), ("deep.json", "item 1", 2)]:
        code, summary = _ingest_json(populated, tmp_path / name, capsys)
        assert code == 2 and summary["ingested"] == stored, name
        (rej,) = summary["inputs"][0]["rejects"]
        assert (rej["locator"], rej["field"]) == (locator, "method.config"), name
        assert "nested more than 32 levels deep" in rej["reason"]
    populated.export(tmp_path / "all.csv", fmt="csv")
    with open(tmp_path / "all.csv", newline="") as f:
        header, first, *_ = list(csv.reader(f))
    in_cell = min(levels, 5_000)  # a CSV field holds at most 128 KiB; 5,000 levels is past the parser's recursion
    first[header.index("method_config")] = '{"a": ' * in_cell + "1" + "}" * in_cell
    with open(tmp_path / "deep.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, first])
    fresh = KnowledgeBase(tmp_path / "fresh.duckdb")
    code, summary = _ingest_json(fresh, tmp_path / "deep.csv", capsys)
    assert code == 2 and summary["rejected"] == 1
    assert "nested more than 32 levels deep" in summary["inputs"][0]["rejects"][0]["reason"]
    _no_traceback(capsys.readouterr().err)


def test_a_document_nested_100000_levels_is_one_rejected_record(populated: KnowledgeBase, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON document of 100,000 nested arrays is read without recursion: its one item is rejected for its depth
    (exit 2), nothing is stored; the same cut short is an unreadable file (exit 1)."""
    before = _ids(populated)
    path = tmp_path / "arrays.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 2 and summary["rejected"] == 1 and _ids(populated) == before
    assert "nested more than 32 levels deep" in summary["inputs"][0]["rejects"][0]["reason"]
    path.write_bytes(b"[" * 100_000)
    code, summary = _ingest_json(populated, path, capsys)
    assert code == 1 and "truncated" in summary["inputs"][0]["error"]
    _no_traceback(capsys.readouterr().err)

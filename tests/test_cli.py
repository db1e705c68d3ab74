"""The `metaml` command line: summaries, JSON for machines, exit codes, help, export/import, read-only SQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from factories import record, write_jsonl

from collector.store import KnowledgeBase
from service.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_prints_a_summary_and_reingest_adds_zero(kb: KnowledgeBase, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The human summary names ingested/duplicate/rejected counts; running it again ingests 0."""
    src = write_jsonl(tmp_path / "runs.jsonl", [record(i) for i in range(12)])
    kb = kb.location
    code, out, _ = _run(capsys, "ingest", str(src), "--kb", kb)
    assert code == 0 and "ingested" in out and " 12 " in out
    code, out, _ = _run(capsys, "ingest", str(src), "--kb", kb, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["ingested"] == 0 and summary["duplicates"] == 12 and summary["rejected"] == 0


def test_kb_environment_variable_chooses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """METAML_KB is used when --kb is not given."""
    monkeypatch.setenv("METAML_KB", str(tmp_path / "env.duckdb"))
    src = write_jsonl(tmp_path / "runs.jsonl", [record(1)])
    assert _run(capsys, "ingest", str(src))[0] == 0
    assert (tmp_path / "env.duckdb").exists()


def test_stats_sql_schema_and_formats(kb: KnowledgeBase, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stats (text and JSON), sql (table, csv, json), schema and formats all answer with exit code 0."""
    kb = kb.location
    _run(capsys, "ingest", str(write_jsonl(tmp_path / "r.jsonl", [record(i) for i in range(4)])), "--kb", kb)
    code, out, _ = _run(capsys, "kb", "stats", "--kb", kb, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["runs"] == 4 and stats["by_method"] == {"lora": 4}
    code, out, _ = _run(capsys, "kb", "stats", "--kb", kb)
    assert code == 0 and "runs 4" in out
    code, out, _ = _run(capsys, "kb", "sql", "SELECT count(*) AS n FROM runs", "--kb", kb, "--format", "json")
    assert code == 0 and json.loads(out) == [{"n": 4}]
    code, out, _ = _run(capsys, "kb", "sql", "SELECT method_name FROM runs LIMIT 1", "--kb", kb, "--format", "csv")
    assert out.splitlines() == ["method_name", "lora"]
    code, _, err = _run(capsys, "kb", "sql", "DELETE FROM runs", "--kb", kb)
    assert code == 1 and "read-only" in err
    code, out, _ = _run(capsys, "kb", "schema", "--format", "json")
    assert code == 0 and json.loads(out)["title"] == "RunRecord"
    code, out, _ = _run(capsys, "kb", "schema", "--format", "ddl")
    assert out.startswith("CREATE TABLE")
    code, out, _ = _run(capsys, "formats", "--json")
    names = [f["name"] for f in json.loads(out)]
    assert {"jsonl", "json", "csv", "parquet"} <= set(names)


def test_export_then_import_through_the_cli(make_kb: Callable[..., KnowledgeBase], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`kb export --partition-by` writes a hive directory that `kb import` reads back into an equal knowledge base;
    `kb compact` answers on every backend."""
    kb, other = make_kb().location, make_kb("b")
    _run(capsys, "ingest", str(write_jsonl(tmp_path / "r.jsonl", [record(i) for i in range(6)])), "--kb", kb)
    code, out, _ = _run(capsys, "kb", "export", str(tmp_path / "pq"), "--kb", kb, "--partition-by",
                        "provenance_source")
    assert code == 0 and "exported 6 runs" in out
    assert (tmp_path / "pq" / "provenance_source=upload").is_dir()
    code, out, _ = _run(capsys, "kb", "import", str(tmp_path / "pq"), "--kb", other.location, "--json")
    assert code == 0 and json.loads(out)["ingested"] == 6
    assert other.scan().sort_by("run_id").equals(KnowledgeBase(kb).scan().sort_by("run_id"))
    code, out, _ = _run(capsys, "kb", "compact", "--kb", kb, "--json")
    assert code == 0 and isinstance(json.loads(out), dict)


def test_a_malformed_lakehouse_location_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A --kb the store's parser cannot read exits with 1 and says what a lakehouse location needs."""
    code, _, err = _run(capsys, "kb", "stats", "--kb", "ducklake:postgres:dbname=kb")
    assert code == 1 and "data=DIR" in err
    code, _, err = _run(capsys, "kb", "stats", "--kb", "ducklake:sqlite:kb.sqlite data=/tmp/x")
    assert code == 1 and "ducklake:postgres" in err


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown options, unknown commands and a missing argument exit with 1 and say what is wrong."""
    assert _run(capsys, "ingest", "--no-such-option", "x")[0] == 1
    assert _run(capsys, "no-such-command")[0] == 1
    code, _, err = _run(capsys, "ingest")
    assert code == 1 and "Missing argument" in err


@pytest.mark.parametrize("argv", [[], ["ingest"], ["kb"], ["kb", "sql"], ["kb", "export"], ["kb", "import"],
                                  ["kb", "stats"], ["kb", "schema"], ["kb", "compact"], ["formats"]])
def test_every_command_explains_itself(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help works for every command and describes it."""
    code, out, _ = _run(capsys, *argv, "--help")
    assert code == 0 and "Usage:" in out and len(out) > 200


def test_console_script_is_installed(tmp_path: Path) -> None:
    """The `metaml` entry point runs as a real process and returns the documented exit code."""
    exe = Path(sys.executable).with_name("metaml")
    assert exe.exists()
    done = subprocess.run([str(exe), "kb", "stats", "--kb", str(tmp_path / "none.duckdb")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "no knowledge base" in done.stderr

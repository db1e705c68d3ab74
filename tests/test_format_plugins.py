"""Formats are registered as ``metaml.formats`` entry points: this project's own, and those of an outside package
that declares one (here a real distribution: a ``.dist-info`` with ``entry_points.txt`` and its module, on the path),
which ``metaml ingest`` then detects and reads without any change to this repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from collector.formats import (
    ENTRY_POINT_GROUP,
    FORMATS,
    available_formats,
    detect_format,
    registered_formats,
)
from collector.ingest import ingest_path
from collector.store import KnowledgeBase

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = ["transfergraph", "opda", "hf_trainer", "hf_cards", "hub_samples", "mlflow", "optuna", "model_recycling",
            "setfit", "lmbff", "mteb", "peft_bench", "xautolm", "ray_tune", "syne_tune", "jsonl", "json", "csv",
            "parquet"]

PLUGIN = '''
"""A format another package ships: one run per line of a ``.demo`` file (``dataset,model,accuracy``)."""
from pathlib import Path
from typing import ClassVar

from collector.formats import Format, RawRecord, Rejected


class DemoRuns(Format):
    name: ClassVar[str] = "demo_runs"
    description: ClassVar[str] = "demo runs: one dataset,model,accuracy line per run"
    source: ClassVar[str] = "demo"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_file() and path.suffix == ".demo"

    def read(self, path: Path):
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            parts = line.split(",")
            if len(parts) != 3:
                yield Rejected(f"line {i}", "expected dataset,model,accuracy", uri=str(path))
                continue
            dataset, model, accuracy = parts
            yield RawRecord({"task": {"type": "text-classification", "primary_metric": "accuracy"},
                             "dataset": {"name": dataset}, "model": {"id": model}, "method": {"name": "full"},
                             "outcome": {"score": float(accuracy), "metrics": {"accuracy": float(accuracy)}}},
                            f"line {i}", str(path))
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A directory holding an installed distribution ``metaml-demo-format`` that registers ``demo_runs``."""
    site = tmp_path / "site"
    (site / "metaml_demo_format").mkdir(parents=True)
    (site / "metaml_demo_format" / "__init__.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    info = site / "metaml_demo_format-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: metaml-demo-format\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndemo_runs = metaml_demo_format:DemoRuns\n")
    return site


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    path = tmp_path / "runs.demo"
    path.write_text("glue/sst2,roberta-base,0.91\nglue/sst2,bert-base-uncased,0.89\nnot a run\n")
    return path


def test_built_in_formats_are_entry_points_in_detection_order() -> None:
    """Every built-in format is declared by this project's distribution in the entry-point group, and the
    registry keeps the detection order: specific importers first, the canonical formats last."""
    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist.name == "metaml"}
    assert set(declared) == set(BUILT_IN)
    assert list(FORMATS) == BUILT_IN and available_formats() == BUILT_IN
    assert FORMATS["hf_trainer"] == "collector.importers.hf.trainer_output:TrainerOutput"
    assert all(f.distribution == "metaml" and f.cls is not None for f in registered_formats())


def test_an_outside_package_adds_a_format(plugin_site: Path, demo_file: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With the outside distribution on the path, its format is registered after every built-in importer and
    before the canonical formats (its class sets no priority), detected, and ingested like any other: its records
    stored with its source, its bad line rejected with the place. Off the path, it is gone again."""
    monkeypatch.syspath_prepend(str(plugin_site))
    names = available_formats()
    assert names.index("syne_tune") < names.index("demo_runs") < names.index("jsonl")
    assert next(f for f in registered_formats() if f.name == "demo_runs").distribution == "metaml-demo-format"
    assert detect_format(demo_file) == "demo_runs"
    (report,) = ingest_path(KnowledgeBase(tmp_path / "kb.duckdb"), demo_file)
    assert (report.format, report.ingested, report.rejected) == ("demo_runs", 2, 1)
    assert report.rejects[0].locator == "line 3"
    sources = KnowledgeBase(tmp_path / "kb.duckdb").scan(columns=["provenance_source"]).column(0).to_pylist()
    assert sources == ["demo", "demo"]
    monkeypatch.undo()
    assert "demo_runs" not in available_formats()


def test_the_command_line_reads_an_outside_format(plugin_site: Path, demo_file: Path, tmp_path: Path) -> None:
    """A fresh `metaml` process with the outside distribution installed lists the format and ingests its file
    (exit code 2: one line was rejected)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "service.cli"]
    listed = subprocess.run([*cmd, "formats", "--json"], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert {"name": "demo_runs", "source": "demo",
            "description": "demo runs: one dataset,model,accuracy line per run"} in json.loads(listed.stdout)
    done = subprocess.run([*cmd, "ingest", str(demo_file), "--kb", str(tmp_path / "cli.duckdb"), "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["ingested"], summary["rejected"]) == (2, 1)

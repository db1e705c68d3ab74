"""The analyst notebooks run top to bottom against a real knowledge base."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from factories import record, write_jsonl
from nbclient import NotebookClient

from collector.formats import available_formats
from collector.ingest import ingest_path
from collector.store import KnowledgeBase

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def notebook_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A knowledge base with real runs from the public sources that are importable, plus a few canonical ones."""
    from conftest import public_data_root

    path = tmp_path_factory.mktemp("nb") / "kb.duckdb"
    kb = KnowledgeBase(path)
    root = public_data_root() / "metadatasets"
    for fmt, folder in (("transfergraph", "transfergraph"), ("opda", "opda_deberta")):
        if fmt in available_formats() and (root / folder).is_dir():
            ingest_path(kb, root / folder, fmt)
    ingest_path(kb, write_jsonl(path.parent / "extra.jsonl", [record(i) for i in range(20)]))
    return path


def test_knowledge_base_notebook_runs_top_to_bottom(notebook_kb: Path) -> None:
    """Every cell of notebooks/knowledge_base.ipynb executes without error and the plots render."""
    nb = nbformat.read(NOTEBOOKS / "knowledge_base.ipynb", as_version=4)
    os.environ["METAML_KB"] = str(notebook_kb)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS.parent)}}).execute()
    finally:
        os.environ.pop("METAML_KB", None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plots must render"
    text = "".join(o.get("text", "") for o in outputs)
    assert " runs, " in text


def test_meta_learner_report_notebook_runs_top_to_bottom(notebook_kb: Path, tmp_path: Path) -> None:
    """notebooks/meta_learner_report.ipynb evaluates, shows the tables and writes the report with its plots."""
    nb = nbformat.read(NOTEBOOKS / "meta_learner_report.ipynb", as_version=4)
    env = {"METAML_KB": str(notebook_kb), "METAML_FOLDS": "2", "METAML_TREES": "40",
           "METAML_REPORT_DIR": str(tmp_path / "report")}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS.parent)}}).execute()
    finally:
        for key in env:
            os.environ.pop(key, None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert (tmp_path / "report" / "report.md").exists()
    assert any("image/png" in o.get("data", {}) for o in outputs)

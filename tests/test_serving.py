"""The serving library on a real DuckDB knowledge base: what counts as a described dataset."""

from __future__ import annotations

from pathlib import Path

from factories import record, write_jsonl

from collector.ingest import ingest_path
from collector.store import KnowledgeBase
from metaml.serving import load_snapshot


def test_only_datasets_with_meta_features_are_described(tmp_path: Path) -> None:
    """A dataset the knowledge base holds runs for but nothing describes is not described (like an unknown name);
    one whose runs carry a meta-feature is, with that value; both runs support predictions."""
    described = [record(i, dataset__name="my/described", dataset__meta={"n_classes": 3}) for i in range(3)]
    bare = [record(i, dataset__name="my/bare") for i in range(3)]
    kb = KnowledgeBase(tmp_path / "kb.duckdb")
    ingest_path(kb, write_jsonl(tmp_path / "runs.jsonl", described + bare))
    snapshot = load_snapshot(kb.path)
    assert snapshot.dataset_meta("my/bare") is None and snapshot.dataset_meta("no/such") is None
    assert snapshot.dataset_meta("my/described").n_classes == 3
    assert {"my/bare", "my/described"} <= set(snapshot.ds_names) and snapshot.n_runs == 6

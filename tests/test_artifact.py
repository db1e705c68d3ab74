"""The meta-model artifact: a save/load round trip is exact, and every broken artifact fails with a clear error."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from collector.ingest import ingest_path
from collector.schema import SCHEMA_VERSION
from collector.store import KnowledgeBase
from metaml._artifact import ARTIFACT_FORMAT, load_model, save_model, snapshot_id
from metaml._data import load_runs
from metaml._estimators import CostEstimator, FailureEstimator, MetaModel, OutcomeEstimator
from metaml.errors import ArtifactError, MetamlError


@pytest.fixture(scope="module")
def trained(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A knowledge base of the real TransferGraph runs, a small meta-model fitted on it, and its saved artifact."""
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb") / "kb.duckdb")
    ingest_path(kb, public_data / "metadatasets" / "transfergraph")
    runs = load_runs(kb)
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=50, n_jobs=1),
                      cost=CostEstimator(n_estimators=50, n_jobs=1),
                      failure=FailureEstimator(n_estimators=50, n_jobs=1)).fit(runs)
    directory = save_model(model, tmp_path_factory.mktemp("artifact") / "model",
                           metadata={"kb_snapshot": snapshot_id(kb),
                                     "evaluation": {"spearman": np.float64(0.41), "ndcg@5": 0.8, "cost_mape": np.nan},
                                     "notes": "fixture"})
    return {"kb": kb, "runs": runs, "model": model, "dir": directory}


@pytest.fixture
def artifact(trained: dict[str, Any], tmp_path: Path) -> Path:
    """A fresh copy of the saved artifact, free to break."""
    return Path(shutil.copytree(trained["dir"], tmp_path / "model"))


def _edit_metadata(directory: Path, **changes: Any) -> None:
    path = directory / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_round_trip_gives_identical_predictions(trained: dict[str, Any]) -> None:
    """A loaded artifact predicts exactly what the in-memory model predicts (every column, every row)."""
    loaded, _ = load_model(trained["dir"])
    rows = trained["runs"].sample(300, random_state=0)
    pd.testing.assert_frame_equal(loaded.predict(rows), trained["model"].predict(rows), check_exact=True)


def test_metadata_describes_the_model_and_its_data(trained: dict[str, Any]) -> None:
    """metadata.json carries the format, schema, time, features, snapshot, training sizes, evaluation, params and
    library versions; NaN metrics become null and the caller's extra keys are kept."""
    model = trained["model"]
    _, meta = load_model(trained["dir"])
    assert meta["artifact_format"] == ARTIFACT_FORMAT and meta["schema_version"] == SCHEMA_VERSION
    assert datetime.fromisoformat(meta["created_at"]).utcoffset().total_seconds() == 0
    assert meta["feature_names"] == list(model.featurizer_.get_feature_names_out())
    assert meta["kb_snapshot"] == snapshot_id(trained["kb"])
    assert (meta["n_train_runs"], meta["train_tasks"], meta["n_train_datasets"]) == (
        model.n_train_runs_, model.train_tasks_, len(model.train_datasets_))
    assert meta["evaluation"] == {"spearman": 0.41, "ndcg@5": 0.8, "cost_mape": None}
    assert meta["params"]["outcome"] == repr(model.outcome) and meta["params"]["max_rows_per_task"] == 400
    assert set(meta["versions"]) >= {"lightgbm", "sklearn", "pandas", "numpy", "python"}
    assert meta["notes"] == "fixture"


def test_snapshot_id_hashes_the_sorted_run_ids_and_counts_them(trained: dict[str, Any], kb: KnowledgeBase) -> None:
    """The snapshot id is sha256 over the sorted run ids joined by commas, plus the run count; an empty knowledge base
    has the hash of the empty string and count 0."""
    ids = sorted(trained["runs"]["run_id"])
    expected = hashlib.sha256(",".join(ids).encode()).hexdigest()
    assert snapshot_id(trained["kb"]) == f"sha256:{expected}:{len(ids)}"
    assert snapshot_id(kb.create()) == f"sha256:{hashlib.sha256(b'').hexdigest()}:0"


@pytest.mark.parametrize(("remove", "message"), [
    (None, "not a directory"),
    ("metadata.json", "metadata.json is missing"),
    ("model.joblib", "model.joblib is missing"),
])
def test_missing_files_are_refused(artifact: Path, remove: str | None, message: str) -> None:
    """A missing directory, metadata file or model file is reported by name."""
    if remove is None:
        shutil.rmtree(artifact)
    else:
        (artifact / remove).unlink()
    with pytest.raises(ArtifactError, match=message):
        load_model(artifact)


def test_a_newer_artifact_format_is_refused(artifact: Path) -> None:
    """An artifact written by a newer format than this code reads asks for an upgrade."""
    _edit_metadata(artifact, artifact_format=ARTIFACT_FORMAT + 1)
    with pytest.raises(ArtifactError, match="newer than this metaml reads"):
        load_model(artifact)


def test_schema_major_mismatch_is_refused_but_minor_is_not(artifact: Path) -> None:
    """Another major record-schema version asks for retraining; another minor version loads."""
    major = int(SCHEMA_VERSION.split(".")[0])
    _edit_metadata(artifact, schema_version=f"{major}.99")
    load_model(artifact)
    _edit_metadata(artifact, schema_version=f"{major + 1}.0")
    with pytest.raises(ArtifactError, match="retrain"):
        load_model(artifact)


def test_unreadable_metadata_is_refused(artifact: Path) -> None:
    """metadata.json that is not JSON, or has no artifact format, is refused."""
    (artifact / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_model(artifact)
    (artifact / "metadata.json").write_text("{}")
    with pytest.raises(ArtifactError, match="artifact_format"):
        load_model(artifact)


def test_a_corrupt_model_file_is_refused(artifact: Path) -> None:
    """A truncated model.joblib fails the checksum; garbage with a matching checksum fails to unpickle; a pickle of
    something else is not a MetaModel. Every case is an ArtifactError (a MetamlError)."""
    path = artifact / "model.joblib"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="checksum"):
        load_model(artifact)
    path.write_bytes(b"not a pickle at all")
    _edit_metadata(artifact, model_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(ArtifactError, match="cannot load"):
        load_model(artifact)
    joblib.dump({"not": "a model"}, path)
    _edit_metadata(artifact, model_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(MetamlError, match="not a MetaModel"):
        load_model(artifact)


def test_an_unfitted_model_is_not_saved(tmp_path: Path) -> None:
    """Saving an unfitted model is refused and writes nothing."""
    with pytest.raises(ArtifactError, match="not fitted"):
        save_model(MetaModel(), tmp_path / "model", metadata={})
    assert not (tmp_path / "model").exists()


def test_saving_again_replaces_the_artifact_and_keeps_created_at(trained: dict[str, Any], artifact: Path) -> None:
    """Metadata read from an artifact can be passed back in: derived keys are recomputed, created_at is kept."""
    _, meta = load_model(artifact)
    save_model(trained["model"], artifact, metadata={**meta, "feature_names": ["stale"], "n_train_runs": -1})
    _, again = load_model(artifact)
    assert again["created_at"] == meta["created_at"]
    assert again["feature_names"] == meta["feature_names"] and again["n_train_runs"] == meta["n_train_runs"]
    assert not list(artifact.glob(".*tmp"))

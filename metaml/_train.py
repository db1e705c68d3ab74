"""Train the meta-learner on a knowledge base, save it as one artifact and register it as a new MLflow version.

What ``metaml train`` and ``metaml quickstart`` run. The model is fit on every learnable run (or those of some sources),
its artifact written with the knowledge base's snapshot id and the evaluation it comes with, then logged to the
registry (``metaml._tracking``) unless ``tracking_uri`` is None. When the knowledge base holds runs with learning
curves, the curve estimator (:mod:`metaml._curves`) is fit on them too and kept in the same artifact.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.store import KnowledgeBase
from metaml._artifact import read_metadata, save_model, snapshot_id
from metaml._data import load_runs
from metaml._estimators import MetaModel, OutcomeEstimator
from metaml.errors import MetamlError

DEFAULT_ARTIFACT_DIR = Path("metaml-data") / "models" / "latest"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_and_register` did.

    Attributes:
        artifact: the artifact directory written.
        train_runs: runs the model learned from.
        train_seconds: time spent fitting.
        kb_snapshot: the knowledge base's snapshot id (see :func:`metaml._artifact.snapshot_id`).
        curve_train_rows: curve cuts the curve estimator learned from (None: no curve estimator).
        version: the registered version (None when not registered).
        run_id: the MLflow run that logged it (None when not registered).
        tracking_uri: the registry (None when not registered).
    """

    artifact: Path
    train_runs: int
    train_seconds: float
    kb_snapshot: str
    curve_train_rows: int | None = None
    version: int | None = None
    run_id: str | None = None
    tracking_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "train_runs": self.train_runs, "train_seconds": self.train_seconds,
                "kb_snapshot": self.kb_snapshot, "curve_train_rows": self.curve_train_rows, "version": self.version,
                "run_id": self.run_id, "tracking_uri": self.tracking_uri}


def train_and_register(kb_path: str | Path, *, tracking_uri: str | None, sources: Sequence[str] = (),
                       exclude_sources: Sequence[str] = (), rank_mode: str = "relative",
                       evaluation: Mapping[str, Any] | None = None, evaluation_protocol: str | None = None,
                       out_dir: str | Path = DEFAULT_ARTIFACT_DIR, model: MetaModel | None = None,
                       curves: bool = True) -> TrainResult:
    """Fit a meta-model on the knowledge base, save its artifact, and register it as a new version.

    Args:
        kb_path: the knowledge base.
        tracking_uri: the MLflow registry to log and register to; None only writes the artifact.
        sources: learn only from runs of these sources (default: all).
        exclude_sources: never learn from runs of these sources (``upload*``: every uploaded source; see
            :func:`metaml.load_runs`).
        rank_mode: the outcome model's ranking view (relative, absolute, lambdarank); ignored with ``model``.
        evaluation: evaluation metrics stored with the model (e.g. the ``metaml`` row of an evaluation summary).
        evaluation_protocol: the protocol they were measured with.
        out_dir: the artifact directory (replaced when it holds one).
        model: an unfitted meta-model to fit instead of the default one.
        curves: also fit the curve estimator on the runs with learning curves (when there are enough).

    Returns:
        What was written and registered.

    Raises:
        MetamlError: the knowledge base holds no runs (of those sources).
        CollectorError: the knowledge base cannot be read.
        ArtifactError: the artifact cannot be written.
        TrackingError: the registry refused or failed.
    """
    kb = KnowledgeBase(kb_path)
    runs = load_runs(kb, sources=list(sources) or None, exclude_sources=list(exclude_sources) or None)
    if runs.empty:
        raise MetamlError(f"the knowledge base {kb_path} holds no runs"
                          f"{' from ' + ', '.join(sources) if sources else ''}; ingest some first")
    started = time.perf_counter()
    fitted = (model if model is not None else MetaModel(outcome=OutcomeEstimator(rank_mode=rank_mode))).fit(runs)
    curve = None
    if curves:
        from metaml._curves import curve_runs, fit_curve_model

        scan = kb.scan(["run_id", "outcome_curve"]).to_pandas()
        with_curve = runs.merge(scan, on="run_id", how="inner")
        curve = fit_curve_model(curve_runs(with_curve))
    seconds = time.perf_counter() - started
    snapshot = snapshot_id(kb)
    metadata = {"kb_snapshot": snapshot, "train_seconds": round(seconds, 1), "evaluation": dict(evaluation or {}),
                "evaluation_protocol": evaluation_protocol}
    path = save_model(fitted, out_dir, metadata=metadata, curve=curve)
    curve_rows = int(curve.n_train_rows_) if curve is not None else None
    result = TrainResult(artifact=path, train_runs=int(fitted.n_train_runs_), train_seconds=seconds,
                         kb_snapshot=snapshot, curve_train_rows=curve_rows)
    if tracking_uri is None:
        return result
    from metaml._tracking import log_model_version

    info = log_model_version(fitted, read_metadata(path), tracking_uri=tracking_uri, curve=curve)
    return TrainResult(artifact=path, train_runs=result.train_runs, train_seconds=seconds, kb_snapshot=snapshot,
                       curve_train_rows=curve_rows, version=info.version, run_id=info.run_id,
                       tracking_uri=tracking_uri)


__all__ = ["DEFAULT_ARTIFACT_DIR", "TrainResult", "train_and_register"]

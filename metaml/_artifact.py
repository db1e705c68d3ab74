"""The meta-model as one versioned artifact: a directory with ``model.joblib`` and ``metadata.json``.

Rules:

* **Layout.** ``model.joblib`` is the fitted :class:`~metaml._estimators.MetaModel` (featurizer and estimators
  together) written by joblib; ``metadata.json`` describes it (see :func:`save_model`). ``metadata.json`` records the
  SHA-256 of ``model.joblib``, so a file truncated, swapped or corrupted after saving is detected on load. An
  artifact may also hold ``curve.joblib``, the :class:`~metaml._curves.CurveEstimator` trained with the meta-model
  (final scores from partial learning curves), described and checksummed under ``curve_model`` in the metadata.
* **Compatibility.** ``artifact_format`` is the layout version (:data:`ARTIFACT_FORMAT`); code reads every format up
  to its own and refuses newer ones. ``schema_version`` is the knowledge-base record schema the model was trained
  on; a model is refused when its major version differs from this code's (its features would not match).
* **Trust.** ``model.joblib`` is a pickle: load only artifacts you (or your registry) wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from collector.schema import SCHEMA_VERSION
from collector.store import KnowledgeBase
from metaml._estimators import MetaModel
from metaml.errors import ArtifactError

#: Layout version of the artifact directory; bump when the files or their meaning change.
ARTIFACT_FORMAT = 1
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
CURVE_FILE = "curve.joblib"
_LIBRARIES = {"lightgbm": "lightgbm", "sklearn": "scikit-learn", "pandas": "pandas", "numpy": "numpy",
              "joblib": "joblib", "metaml": "metaml"}


def snapshot_id(kb: KnowledgeBase) -> str:
    """Identity of the knowledge base's runs: ``sha256:<hex of the sorted run ids joined by ','>:<run count>``.

    Computed inside DuckDB, so it costs one scan of the ``run_id`` column. Two knowledge bases with the same runs
    have the same id whatever order the runs were ingested in.

    Raises:
        KnowledgeBaseNotFound: no knowledge base at ``kb.path``.
    """
    row = kb.sql("SELECT sha256(string_agg(run_id, ',' ORDER BY run_id)) AS s, count(*) AS n FROM runs",
                 max_rows=1).table.to_pylist()[0]
    digest = row["s"] or hashlib.sha256(b"").hexdigest()
    return f"sha256:{digest}:{int(row['n'])}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a saved model depends on (and of Python)."""
    out = {}
    for key, dist in _LIBRARIES.items():
        try:
            out[key] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[key] = "unknown"
    out["python"] = platform.python_version()
    return out


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars become numbers, NaN/inf become null, anything else unknown a string."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    return str(value)


def model_params(model: MetaModel) -> dict[str, Any]:
    """``model.get_params(deep=False)`` as JSON (estimator-valued parameters rendered by their ``repr``)."""
    return {k: (v if v is None or isinstance(v, str | bool | int | float) else repr(v))
            for k, v in model.get_params(deep=False).items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(model: MetaModel, directory: str | Path, *, metadata: dict[str, Any] | None = None,
               curve: Any = None) -> Path:
    """Write a fitted meta-model and its metadata to ``directory`` (created if missing; an artifact there is replaced).

    Args:
        model: a fitted :class:`MetaModel`.
        directory: the artifact directory.
        curve: a fitted :class:`~metaml._curves.CurveEstimator` to keep beside it (``curve.joblib``), or None.
        metadata: what the caller knows about the model: ``kb_snapshot`` (see :func:`snapshot_id`), ``evaluation``
            (a dict of metrics, default empty), ``created_at`` (default now) and any other JSON-able keys, kept as
            given. The keys this function derives from the model (``artifact_format``, ``schema_version``,
            ``feature_names``, ``n_train_runs``, ``train_tasks``, ``n_train_datasets``, ``params``, ``versions``,
            ``model_sha256``) are always recomputed, so metadata read from another artifact can be passed back in.

    Returns:
        ``directory``.

    Raises:
        ArtifactError: the model is not a fitted :class:`MetaModel`, or the directory cannot be written.
    """
    if not isinstance(model, MetaModel):
        raise ArtifactError(f"expected a MetaModel, got {type(model).__name__}")
    try:
        check_is_fitted(model, "outcome_")
    except NotFittedError as e:
        raise ArtifactError("the meta-model is not fitted; call fit(runs) before saving it") from e
    curve_meta = None
    if curve is not None:
        from metaml._curves import CurveEstimator, describe_curve_model

        if not isinstance(curve, CurveEstimator):
            raise ArtifactError(f"expected a CurveEstimator beside the meta-model, got {type(curve).__name__}")
        try:
            curve_meta = describe_curve_model(curve)
        except NotFittedError as e:
            raise ArtifactError("the curve estimator is not fitted") from e
    directory = Path(directory)
    given = dict(metadata or {})
    given.pop("curve_model", None)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(directory / MODEL_FILE, lambda p: joblib.dump(model, p))
        if curve is not None:
            _write_atomic(directory / CURVE_FILE, lambda p: joblib.dump(curve, p))
            curve_meta = {**(curve_meta or {}), "file": CURVE_FILE, "sha256": _sha256(directory / CURVE_FILE)}
        else:
            (directory / CURVE_FILE).unlink(missing_ok=True)
        meta = {
            **given,
            "artifact_format": ARTIFACT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_at": given.get("created_at") or datetime.now(UTC).isoformat(timespec="seconds"),
            "kb_snapshot": given.get("kb_snapshot"),
            "n_train_runs": int(model.n_train_runs_),
            "train_tasks": int(model.train_tasks_),
            "n_train_datasets": len(model.train_datasets_),
            "feature_names": [str(f) for f in model.featurizer_.get_feature_names_out()],
            "evaluation": given.get("evaluation") or {},
            "params": model_params(model),
            "versions": library_versions(),
            "model_sha256": _sha256(directory / MODEL_FILE),
        }
        if curve_meta is not None:
            meta["curve_model"] = curve_meta
        text = json.dumps(_jsonable(meta), indent=2, sort_keys=False, allow_nan=False)
        _write_atomic(directory / METADATA_FILE, lambda p: p.write_text(text + "\n", encoding="utf-8"))
    except OSError as e:
        raise ArtifactError(f"cannot write the model artifact to {directory}: {e}") from e
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The checked ``metadata.json`` of an artifact (without loading the model).

    Raises:
        ArtifactError: the directory or its metadata is missing or unreadable, the artifact format is newer than this
            code reads, or the record schema's major version differs from this code's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"no model artifact at {directory} (not a directory)")
    path = directory / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a model artifact: {METADATA_FILE} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from e
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    fmt = meta.get("artifact_format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ArtifactError(f"{path} has no valid artifact_format (got {fmt!r})")
    if fmt > ARTIFACT_FORMAT:
        raise ArtifactError(f"the model at {directory} has artifact format {fmt}, newer than this metaml reads "
                            f"({ARTIFACT_FORMAT}); upgrade metaml to load it")
    schema = str(meta.get("schema_version", ""))
    if schema.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ArtifactError(f"the model at {directory} was trained on record schema {schema or '(none)'}, this code "
                            f"uses schema {SCHEMA_VERSION}; retrain it with `metaml train`")
    return meta


def load_model(directory: str | Path) -> tuple[MetaModel, dict[str, Any]]:
    """Load an artifact written by :func:`save_model`.

    Returns:
        The fitted model and its metadata.

    Raises:
        ArtifactError: files missing, metadata unreadable, a newer artifact format, another major record schema,
            ``model.joblib`` changed since it was saved, unreadable, or not a fitted :class:`MetaModel`.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a complete model artifact: {MODEL_FILE} is missing")
    expected = meta.get("model_sha256")
    if expected and _sha256(path) != expected:
        raise ArtifactError(f"{path} does not match the checksum in {METADATA_FILE}: the file is corrupt or was "
                            f"replaced; save the model again")
    try:
        model = joblib.load(path)
    except Exception as e:  # unpickling raises anything: EOFError, UnpicklingError, ImportError, AttributeError...
        raise ArtifactError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    if not isinstance(model, MetaModel):
        raise ArtifactError(f"{path} holds a {type(model).__name__}, not a MetaModel")
    try:
        check_is_fitted(model, "outcome_")
    except NotFittedError as e:
        raise ArtifactError(f"{path} holds an unfitted MetaModel") from e
    return model, meta


def load_curve_model(directory: str | Path, metadata: dict[str, Any] | None = None) -> Any:
    """The :class:`~metaml._curves.CurveEstimator` of an artifact, or None when it holds none.

    Raises:
        ArtifactError: the metadata names one that is missing, changed since it was saved, or unreadable.
    """
    directory = Path(directory)
    meta = metadata if metadata is not None else read_metadata(directory)
    info = meta.get("curve_model")
    if not info:
        return None
    path = directory / CURVE_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} names a curve model but {CURVE_FILE} is missing")
    if info.get("sha256") and _sha256(path) != info["sha256"]:
        raise ArtifactError(f"{path} does not match the checksum in {METADATA_FILE}: the file is corrupt or was "
                            "replaced; save the model again")
    from metaml._curves import CurveEstimator

    try:
        curve = joblib.load(path)
    except Exception as e:  # unpickling raises anything
        raise ArtifactError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    if not isinstance(curve, CurveEstimator):
        raise ArtifactError(f"{path} holds a {type(curve).__name__}, not a CurveEstimator")
    return curve


__all__ = ["ARTIFACT_FORMAT", "CURVE_FILE", "library_versions", "load_curve_model", "load_model", "model_params",
           "read_metadata", "save_model", "snapshot_id"]

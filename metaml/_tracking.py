"""The MLflow registry of meta-models: log a trained model as a new registered version, list, promote, load.

One MLflow run per trained model holds, as run artifacts:

* ``meta_model/`` — the artifact of :mod:`metaml._artifact` (``model.joblib`` + ``metadata.json``), what
  :func:`load_version` reads;
* ``pyfunc/`` — an MLflow ``python_function`` model wrapping it (input: runs-table rows; output: the
  :meth:`MetaModel.predict` frame). This is what the registered model versions point at. Loading it needs ``metaml``
  importable;
* ``outcome_lgbm/`` — the outcome's main LightGBM booster (the trees of its ranking view, the standing within the
  task, without the experience lookup it is boosted from) in the ``lightgbm`` flavor, which ``mlflow models serve``
  serves without ``metaml``. Its input is the featurized rows with categorical features as integer codes (see
  :func:`served_outcome_frame`; the categories are in ``outcome_lgbm/categories.json``);
* ``reports/`` — the files of an evaluation report, when given.

The run's params are the model's parameters (and the caller's), its metrics the numeric evaluation metrics, its tags
the knowledge-base snapshot and record schema. Promotion sets a registered-model alias (``production``);
:func:`load_version` loads the version an alias points at.

MLflow is imported inside the functions (it takes seconds to import). Everything goes through an explicit
``MlflowClient``; nothing here changes MLflow's global tracking URI or active run. With a ``sqlite:///<path>`` URI
the experiment's artifacts are stored beside the database, in ``<dir>/mlartifacts``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from metaml._artifact import METADATA_FILE, load_curve_model, load_model, read_metadata, save_model
from metaml._data import LEARN_COLUMNS
from metaml._estimators import MetaModel
from metaml.errors import ArtifactError, TrackingError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///metaml-data/mlflow.db"
REGISTERED_MODEL = "metaml-meta-model"
PRODUCTION_ALIAS = "production"
DEFAULT_EXPERIMENT = "metaml"
EVALUATION_EXPERIMENT = "metaml-evaluation"
#: Evaluation metrics shown first when listing versions (names as logged: ``@`` becomes ``_at_``).
KEY_METRICS = ("spearman", "ndcg_at_5", "regret_at_1", "rmse", "coverage", "failure_auc")
#: Libraries the logged models need, pinned to the versions installed when they are logged.
_OUTCOME_REQUIREMENTS = ("lightgbm", "numpy", "pandas")
_PYFUNC_REQUIREMENTS = ("lightgbm", "scikit-learn", "scipy", "numpy", "pandas", "joblib", "duckdb", "pyarrow",
                        "pydantic")
_MAX_PARAM_LENGTH = 6000


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version of the meta-model.

    Attributes:
        version: the registry's version number.
        run_id: the MLflow run that logged it.
        artifact_uri: the run's artifact root (``meta_model/``, ``pyfunc/``, ``outcome_lgbm/`` lie under it).
        registered_name: the registered model.
        created_at: when the version was registered (UTC, ISO 8601).
        aliases: the aliases pointing at it (``production`` once promoted).
        status: the registry's status (``READY``).
        metrics: the run's metrics (the evaluation metrics logged with it).
        kb_snapshot: the knowledge-base snapshot it was trained on (:func:`metaml._artifact.snapshot_id`).
    """

    version: int
    run_id: str | None
    artifact_uri: str | None
    registered_name: str = REGISTERED_MODEL
    created_at: str | None = None
    aliases: tuple[str, ...] = ()
    status: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    kb_snapshot: str | None = None

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``: the registered pyfunc model."""
        return f"models:/{self.registered_name}/{self.version}"

    @property
    def outcome_uri(self) -> str | None:
        """The outcome LightGBM model (``lightgbm`` flavor), for ``mlflow.lightgbm.load_model`` or serving."""
        return f"{self.artifact_uri}/outcome_lgbm" if self.artifact_uri else None

    def key_metrics(self) -> dict[str, float]:
        """The metrics of :data:`KEY_METRICS` present on the run (matched on the last ``.``-separated part)."""
        out = {}
        for key in KEY_METRICS:
            for name, value in self.metrics.items():
                if name == key or name.endswith("." + key):
                    out[name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        out["model_uri"] = self.model_uri
        return out


# -- helpers ---------------------------------------------------------------------------------------------------------


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless absolute)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0]))


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment stores artifacts: ``<db dir>/mlartifacts`` (file URI) for a SQLite store, else the
    server's default (``None``)."""
    path = _sqlite_path(tracking_uri)
    if path is None:
        return None
    return (path.resolve().parent / "mlartifacts").as_uri()


def _client(tracking_uri: str, *, create: bool = True) -> MlflowClient:
    """A client on ``tracking_uri`` (also the registry). A SQLite store is created only when ``create``."""
    path = _sqlite_path(tracking_uri)
    if path is not None:
        if not create and not path.exists():
            raise TrackingError(f"no MLflow registry at {tracking_uri} ({path} does not exist); train and register a "
                                f"model with `metaml train` first")
        path.parent.mkdir(parents=True, exist_ok=True)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class _DropExpectedWarnings(logging.Filter):
    """MLflow's warnings about what the pyfunc wrapper does on purpose: it is pickled (by reference to
    :class:`MetaModelPyfunc`; the model itself is the joblib artifact) and has no signature (its input is runs-table
    rows, any subset of :data:`~metaml._data.LEARN_COLUMNS`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "CloudPickle" not in message and "Failed to infer model signature" not in message


@contextmanager
def _quiet() -> Iterator[None]:
    """No artifact progress bars, and none of MLflow's warnings about what the pyfunc wrapper does on purpose."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false" if previous is None else previous
    pickle_filter = _DropExpectedWarnings()
    logger = logging.getLogger("mlflow.pyfunc")
    logger.addFilter(pickle_filter)
    try:
        yield
    finally:
        logger.removeFilter(pickle_filter)
        if previous is None:
            os.environ.pop(key, None)


@contextmanager
def _mlflow_errors(action: str) -> Iterator[None]:
    """Convert MLflow's (and the database's) errors into :class:`TrackingError` at this module's boundary."""
    from mlflow.exceptions import MlflowException

    try:
        with _quiet():
            yield
    except (TrackingError, ArtifactError):
        raise
    except MlflowException as e:
        raise TrackingError(f"{action}: {e.message}") from e
    except OSError as e:
        raise TrackingError(f"{action}: {e}") from e


def _is_missing(e: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(e, MlflowException) and e.error_code == "RESOURCE_DOES_NOT_EXIST"


def _experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
    except MlflowException as e:  # created meanwhile by another process
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _name(key: str) -> str:
    """A valid MLflow param/metric name: ``@`` -> ``_at_``, other characters outside ``[/\\w.\\- :]`` -> ``_``."""
    return re.sub(r"[^/\w.\- :]", "_", key.replace("@", "_at_"))


def flatten_metrics(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict, keyed by their ``.``-joined path (valid as MLflow metric names)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{_name(str(key))}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, prefix=name + "."))
        elif (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
              and math.isfinite(float(value))):
            out[name] = float(value)
    return out


def _params(model: MetaModel, extra: Mapping[str, Any] | None) -> dict[str, str]:
    """The model's parameters (nested ones as ``outcome__n_estimators``), then the caller's, as strings."""
    out = {}
    for key, value in {**model.get_params(deep=True), **(extra or {})}.items():
        text = value if isinstance(value, str) else repr(value) if not isinstance(value, int | float | bool | None) \
            else json.dumps(value)
        out[_name(str(key))] = text[:_MAX_PARAM_LENGTH]
    return out


def _log_batch(client: MlflowClient, run_id: str, metrics: list[Any], params: list[Any]) -> None:
    """Log metrics and params in batches within MLflow's limits (1000 metrics, 100 params per call)."""
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])


def _pins(names: tuple[str, ...]) -> list[str]:
    import mlflow

    out = [f"mlflow=={mlflow.__version__}"]
    for name in names:
        try:
            out.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            out.append(name)
    return out


def served_outcome_frame(model: MetaModel, runs: pd.DataFrame) -> pd.DataFrame:
    """The input of the served ``outcome_lgbm`` model for ``runs``: the featurized rows (categorical features as float
    codes, NaN where missing or unseen), every column float64."""
    return model.featurizer_.transform(runs).astype("float64")


def _outcome_categories(model: MetaModel) -> dict[str, list[str]]:
    """Categorical feature -> its categories (the code of a category is its position)."""
    return {name: [str(x) for x in cats] for name, cats in model.featurizer_.categories_.items()}


def _save_outcome_lgbm(model: MetaModel, path: Path) -> None:
    """Save the ranking view's booster in the ``lightgbm`` flavor, taking float codes for categorical features."""
    import lightgbm as lgb
    import mlflow.lightgbm
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    served = lgb.Booster(model_str=model.outcome_.ranker_.booster_.model_to_string())
    names = [str(f) for f in model.featurizer_.get_feature_names_out()]
    signature = ModelSignature(inputs=Schema([ColSpec("double", n) for n in names]),
                               outputs=Schema([ColSpec("double")]))
    mlflow.lightgbm.save_model(served, str(path), signature=signature, pip_requirements=_pins(_OUTCOME_REQUIREMENTS))
    (path / "categories.json").write_text(json.dumps(_outcome_categories(model), indent=2) + "\n", encoding="utf-8")


_PYFUNC_CLASS: type | None = None


def _pyfunc_class() -> type:
    """The ``mlflow.pyfunc.PythonModel`` subclass wrapping a saved meta-model, built on first use (importing MLflow is
    slow) and published as ``metaml._tracking.MetaModelPyfunc`` so that pickles refer to it by name."""
    global _PYFUNC_CLASS
    if _PYFUNC_CLASS is None:
        import mlflow.pyfunc

        class MetaModelPyfunc(mlflow.pyfunc.PythonModel):
            """MLflow ``python_function`` view of the meta-model: runs-table rows in, predictions out."""

            def load_context(self, context: Any) -> None:
                self.model, self.metadata = load_model(context.artifacts["meta_model"])

            def predict(self, context: Any, model_input: pd.DataFrame,
                        params: dict[str, Any] | None = None) -> pd.DataFrame:
                frame = pd.DataFrame(model_input).copy()
                for col in LEARN_COLUMNS:
                    if col not in frame:
                        frame[col] = None
                return self.model.predict(frame)

        MetaModelPyfunc.__module__ = __name__
        MetaModelPyfunc.__qualname__ = "MetaModelPyfunc"
        _PYFUNC_CLASS = MetaModelPyfunc
    return _PYFUNC_CLASS


def __getattr__(name: str) -> Any:
    if name == "MetaModelPyfunc":
        return _pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version_info(client: MlflowClient, mv: Any, aliases: Mapping[str, str] | None = None) -> ModelVersionInfo:
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    artifact_uri = None
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            metrics, tags, artifact_uri = dict(run.data.metrics), dict(run.data.tags), run.info.artifact_uri
        except Exception as e:  # the run was deleted: the version stays listable
            if not _is_missing(e):
                raise
    version_aliases = tuple(sorted(a for a, v in (aliases or {}).items() if str(v) == str(mv.version))) \
        if aliases is not None else tuple(getattr(mv, "aliases", None) or ())
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds") \
        if mv.creation_timestamp else None
    return ModelVersionInfo(version=int(mv.version), run_id=mv.run_id, artifact_uri=artifact_uri,
                            registered_name=mv.name, created_at=created, aliases=version_aliases,
                            status=str(mv.status) if mv.status is not None else None, metrics=metrics,
                            kb_snapshot=(mv.tags or {}).get("kb_snapshot") or tags.get("kb_snapshot"))


def _get_version(client: MlflowClient, registered_name: str, version: int | str, tracking_uri: str) -> Any:
    if not str(version).isdigit():
        raise TrackingError(f"a model version is a positive number, got {version!r}")
    try:
        return client.get_model_version(registered_name, str(int(version)))
    except Exception as e:
        if _is_missing(e):
            raise TrackingError(f"{registered_name} has no version {version} at {tracking_uri}; see "
                                f"`metaml models list`") from e
        raise


def _aliases(client: MlflowClient, registered_name: str) -> dict[str, str]:
    return dict(client.get_registered_model(registered_name).aliases or {})


# -- public API ------------------------------------------------------------------------------------------------------


def log_model_version(model: MetaModel, metadata: Mapping[str, Any] | None, *, tracking_uri: str,
                      experiment: str = DEFAULT_EXPERIMENT, params: Mapping[str, Any] | None = None,
                      metrics: Mapping[str, Any] | None = None, artifacts_dir: str | Path | None = None,
                      registered_name: str = REGISTERED_MODEL, curve: Any = None) -> ModelVersionInfo:
    """Log a trained meta-model as one MLflow run and register it as a new version of ``registered_name``.

    Args:
        model: the fitted meta-model.
        metadata: its artifact metadata (``kb_snapshot``, ``evaluation`` ...; see :func:`metaml._artifact.save_model`;
            the metadata of a saved artifact can be passed as it is).
        tracking_uri: the MLflow tracking (and registry) URI, e.g. ``sqlite:///metaml-data/mlflow.db``.
        experiment: the MLflow experiment (created if missing).
        params: extra run params (added to the model's parameters).
        metrics: extra metrics (nested dicts allowed), added to ``metadata["evaluation"]``'s.
        artifacts_dir: a directory of report files logged under ``reports/``.
        registered_name: the registered model.
        curve: the :class:`~metaml._curves.CurveEstimator` trained with it, kept in the same artifact (or None).

    Returns:
        The new version.

    Raises:
        ArtifactError: the model is not fitted.
        TrackingError: MLflow refused or failed (the run is then marked failed).
    """
    metadata = dict(metadata or {})
    if artifacts_dir is not None and not Path(artifacts_dir).is_dir():
        raise TrackingError(f"artifacts directory {artifacts_dir} does not exist")
    with tempfile.TemporaryDirectory(prefix="metaml-model-") as tmp:
        local = Path(tmp)
        save_model(model, local / "meta_model", metadata=metadata, curve=curve)
        meta = read_metadata(local / "meta_model")
        run_metrics = {**flatten_metrics(meta.get("evaluation") or {}), **flatten_metrics(metrics or {})}
        with _mlflow_errors(f"cannot log the model to {tracking_uri}"):
            import mlflow.pyfunc
            from mlflow.entities import Metric, Param

            client = _client(tracking_uri)
            experiment_id = _experiment_id(client, experiment, tracking_uri)
            snapshot = {"kb_snapshot": str(meta["kb_snapshot"])} if meta.get("kb_snapshot") else {}
            tags = {**snapshot, "schema_version": str(meta["schema_version"]),
                    "artifact_format": str(meta["artifact_format"]), "mlflow.source.name": "metaml"}
            run = client.create_run(experiment_id, tags=tags,
                                    run_name=f"meta-model-{meta['created_at'].replace(':', '')[:17]}")
            run_id = run.info.run_id
            try:
                now = int(datetime.now(UTC).timestamp() * 1000)
                _log_batch(client, run_id, [Metric(k, v, now, 0) for k, v in run_metrics.items()],
                           [Param(k, v) for k, v in _params(model, params).items()])
                client.log_artifacts(run_id, str(local / "meta_model"), "meta_model")
                if artifacts_dir is not None:
                    client.log_artifacts(run_id, str(artifacts_dir), "reports")
                _save_outcome_lgbm(model, local / "outcome_lgbm")
                client.log_artifacts(run_id, str(local / "outcome_lgbm"), "outcome_lgbm")
                mlflow.pyfunc.save_model(str(local / "pyfunc"), python_model=_pyfunc_class()(),
                                         artifacts={"meta_model": str(local / "meta_model")},
                                         pip_requirements=_pins(_PYFUNC_REQUIREMENTS))
                client.log_artifacts(run_id, str(local / "pyfunc"), "pyfunc")
                artifact_uri = client.get_run(run_id).info.artifact_uri
                try:
                    client.create_registered_model(registered_name, description="The metaml meta-model: predicts "
                                                   "the outcome, cost and failure of fine-tuning runs.")
                except Exception as e:
                    if getattr(e, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                        raise
                mv = client.create_model_version(registered_name, source=f"{artifact_uri}/pyfunc", run_id=run_id,
                                                 tags=snapshot)
            except BaseException:
                client.set_terminated(run_id, "FAILED")
                raise
            client.set_terminated(run_id, "FINISHED")
            return _version_info(client, mv, _aliases(client, registered_name))


def list_versions(*, tracking_uri: str, registered_name: str = REGISTERED_MODEL) -> list[ModelVersionInfo]:
    """Every version of ``registered_name``, oldest first (empty when nothing is registered yet).

    Raises:
        TrackingError: the registry cannot be read.
    """
    path = _sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        return []
    with _mlflow_errors(f"cannot list the versions of {registered_name} at {tracking_uri}"):
        client = _client(tracking_uri)
        try:
            aliases = _aliases(client, registered_name)
        except Exception as e:
            if _is_missing(e):
                return []
            raise
        versions = client.search_model_versions(f"name = '{registered_name}'")
        return sorted((_version_info(client, mv, aliases) for mv in versions), key=lambda v: v.version)


def promote(version: int | str, *, tracking_uri: str, registered_name: str = REGISTERED_MODEL,
            alias: str = PRODUCTION_ALIAS) -> ModelVersionInfo:
    """Point ``alias`` (default ``production``) at ``version``; the alias leaves the version it pointed at before.

    Raises:
        TrackingError: no such registry, registered model or version.
    """
    with _mlflow_errors(f"cannot promote version {version} of {registered_name}"):
        client = _client(tracking_uri, create=False)
        mv = _get_version(client, registered_name, version, tracking_uri)
        client.set_registered_model_alias(registered_name, alias, str(mv.version))
        return _version_info(client, mv, _aliases(client, registered_name))


def load_version(*, tracking_uri: str, registered_name: str = REGISTERED_MODEL, version: int | str | None = None,
                 alias: str = PRODUCTION_ALIAS) -> tuple[MetaModel, dict[str, Any]]:
    """Load a registered version: ``version`` when given, else the one ``alias`` points at.

    Returns:
        The model and its artifact metadata, with ``registry`` added (name, version, run id, aliases, tracking URI).

    Raises:
        TrackingError: no registry, no such version, or no version carries ``alias`` (nothing promoted yet).
        ArtifactError: the version's artifact is unreadable or incompatible with this code.
    """
    model, meta, _ = load_version_and_curve(tracking_uri=tracking_uri, registered_name=registered_name,
                                            version=version, alias=alias)
    return model, meta


def load_version_and_curve(*, tracking_uri: str, registered_name: str = REGISTERED_MODEL,
                           version: int | str | None = None,
                           alias: str = PRODUCTION_ALIAS) -> tuple[MetaModel, dict[str, Any], Any]:
    """:func:`load_version`, and the :class:`~metaml._curves.CurveEstimator` its artifact holds (None when none).

    Raises:
        TrackingError: as :func:`load_version`.
        ArtifactError: as :func:`load_version`, or the curve model is unreadable.
    """
    with _mlflow_errors(f"cannot load {registered_name} from {tracking_uri}"):
        client = _client(tracking_uri, create=False)
        try:
            aliases = _aliases(client, registered_name)
        except Exception as e:
            if _is_missing(e):
                raise TrackingError(f"no version of {registered_name} is registered at {tracking_uri}; train one "
                                    f"with `metaml train`") from e
            raise
        if version is None:
            if alias not in aliases:
                raise TrackingError(f"no version of {registered_name} is promoted to '{alias}' at {tracking_uri}; "
                                    f"promote one with `metaml models promote VERSION`")
            version = aliases[alias]
        mv = _get_version(client, registered_name, version, tracking_uri)
        if not mv.run_id:
            raise TrackingError(f"version {mv.version} of {registered_name} has no MLflow run to load it from")
        with tempfile.TemporaryDirectory(prefix="metaml-load-") as tmp:
            local = client.download_artifacts(mv.run_id, "meta_model", dst_path=tmp)
            if not (Path(local) / METADATA_FILE).exists():
                raise TrackingError(f"the run {mv.run_id} of version {mv.version} holds no meta_model/ artifact")
            model, meta = load_model(local)
            curve = load_curve_model(local, meta)
        info = _version_info(client, mv, aliases)
        meta["registry"] = {"name": registered_name, "version": info.version, "run_id": info.run_id,
                            "aliases": list(info.aliases), "tracking_uri": tracking_uri}
        return model, meta, curve


def log_evaluation(summary: pd.DataFrame, *, protocol: str, tracking_uri: str, report_dir: str | Path | None = None,
                   experiment: str = EVALUATION_EXPERIMENT, params: Mapping[str, Any] | None = None) -> str:
    """Log an evaluation (one row of metrics per predictor) as one MLflow run; return its run id.

    Metrics are named ``<predictor>.<metric>``; the report files (``report_dir``) are logged under ``report/``.

    Raises:
        TrackingError: MLflow refused or failed.
    """
    with _mlflow_errors(f"cannot log the evaluation to {tracking_uri}"):
        from mlflow.entities import Metric, Param

        client = _client(tracking_uri)
        experiment_id = _experiment_id(client, experiment, tracking_uri)
        run = client.create_run(experiment_id, tags={"protocol": protocol, "mlflow.source.name": "metaml"},
                                run_name=f"evaluate-{protocol}")
        run_id = run.info.run_id
        try:
            values = {str(name): dict(row) for name, row in summary.to_dict(orient="index").items()}
            now = int(datetime.now(UTC).timestamp() * 1000)
            all_params = {"protocol": protocol, **(params or {})}
            _log_batch(client, run_id, [Metric(k, v, now, 0) for k, v in flatten_metrics(values).items()],
                       [Param(_name(k), str(v)[:_MAX_PARAM_LENGTH]) for k, v in all_params.items()])
            if report_dir is not None and Path(report_dir).is_dir():
                client.log_artifacts(run_id, str(report_dir), "report")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return run_id


__all__ = ["DEFAULT_TRACKING_URI", "KEY_METRICS", "PRODUCTION_ALIAS", "REGISTERED_MODEL", "ModelVersionInfo",
           "artifact_location", "flatten_metrics", "list_versions", "load_version", "load_version_and_curve",
           "log_evaluation", "log_model_version", "promote", "served_outcome_frame"]

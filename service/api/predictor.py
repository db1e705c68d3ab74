"""The loaded meta-model: one holder per server process, swapped atomically on promotion.

Rules:

* **Loading.** At startup (a :data:`service.api.main.STATE_LOADERS` entry) the holder gets the model the settings
  name: a local artifact directory (``model_path``) when set, else the version the registry's ``production`` alias
  points at (``tracking_uri``). No model is not an error: the holder stays empty and the prediction endpoints answer
  503 ``model_unavailable`` until a version is promoted.
* **Hot swap.** :meth:`ModelHolder.swap` replaces one reference. A request reads :meth:`ModelHolder.require` once and
  keeps that object to the end, so requests in flight finish on the model they started with while new ones get the
  new model; the new model is loaded (and checked) completely before the swap.
* **Serving path.** :class:`Scorer` answers like :meth:`MetaModel.predict` from one float matrix: the featurizer's
  recipe (its own column tables, categories and experience tables) is applied column by column with numpy, and each
  LightGBM booster predicts on the matrix once. On load it is checked against :meth:`MetaModel.predict` on probe rows
  (identical to 1e-9, or the model is served by :meth:`MetaModel.predict` itself and a warning is logged), and a test
  checks it on real candidates.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request

from metaml._data import LEARN_COLUMNS
from metaml._estimators import MetaModel
from metaml._features import CATEGORICAL_COLUMNS, ENCODINGS, LOG_COLUMNS, NUMERIC_COLUMNS
from service.api.errors import ModelUnavailable
from service.settings import Settings

log = logging.getLogger("metaml.service")
#: Cores this process may use.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

#: What the prediction endpoints say while no model is loaded.
NO_MODEL_MESSAGE = ("no meta-model promoted: run `metaml train` then `metaml models promote N` (or `metaml "
                    "quickstart`), then restart the server or promote a version with POST /v1/models/{version}/promote")
#: Largest absolute difference tolerated between the serving path and MetaModel.predict on the probe rows.
SELF_CHECK_TOLERANCE = 1e-9
_REGIME_CODES = {"f": 0.0, "k": 1.0, "n": 2.0}
#: The columns the experience encodings read.
_ENCODING_INPUTS = ("model_id", "method_name", "model_family", "model_upstream_task", "model_base_model")
#: Rows from which a prediction uses every core (fewer: one thread; LightGBM's threads only pay off on large batches,
#: and a server answering concurrent requests keeps its cores busy anyway).
PARALLEL_ROWS = 4096
#: Predictions besides the points and their interval, each from its own booster.
OPTIONAL_OUTPUTS: tuple[str, ...] = ("rank_score", "runtime_s", "p_fail")
#: Batches up to this size are featurized value by value (no per-column pandas calls).
SMALL_BATCH = 32


# -- the serving path -------------------------------------------------------------------------------------------------


def _floats(frame: Mapping[str, Any], col: str) -> np.ndarray:
    """A column as float64 (``pd.to_numeric(errors="coerce")``, NaN for missing), as the featurizer reads it."""
    s = frame[col]
    values = s.to_numpy() if isinstance(s, pd.Series) else np.asarray(s)
    if values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    try:  # numbers and None (the usual object column): numpy converts them as pandas does
        return values.astype(np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float).to_numpy()


def _objects(frame: Mapping[str, Any], col: str) -> np.ndarray:
    s = frame[col]
    return s.to_numpy(dtype=object) if isinstance(s, pd.Series) else np.asarray(s, dtype=object)


def _missing(values: np.ndarray) -> np.ndarray:
    return pd.isna(values) if values.dtype == object else np.isnan(values)


def _text(value: Any) -> str:
    """``value`` as pandas' ``astype("string")`` writes it (the featurizer's category and key spelling)."""
    return value if isinstance(value, str) else str(pd.Series([value]).astype("string").iloc[0])


def _codes(values: np.ndarray, lookup: Mapping[str, float]) -> np.ndarray:
    """Category codes (float; NaN for missing or unseen), computed once per distinct value."""
    if len(values) <= SMALL_BATCH:
        missing = _missing(values)
        return np.array([np.nan if miss else lookup.get(_text(v), np.nan) for v, miss in zip(values, missing,
                                                                                             strict=True)],
                        dtype=np.float64)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([lookup.get(_text(u), np.nan) for u in uniques] + [np.nan], dtype=np.float64)
    return table[codes]  # code -1 (missing) takes the last entry, NaN


class Scorer:
    """:meth:`MetaModel.predict` on one float matrix (see the module docstring).

    Args:
        model: a fitted meta-model.
        threads: LightGBM threads per prediction (0: every core for batches of :data:`PARALLEL_ROWS` rows or more,
            one thread for smaller ones).
    """

    def __init__(self, model: MetaModel, *, threads: int = 0) -> None:
        self.model = model
        self.threads = threads
        feat = model.featurizer_
        self.feature_names = [str(f) for f in feat.get_feature_names_out()]
        self.categories = {name: {str(c): float(i) for i, c in enumerate(feat.categories_[name])}
                           for name in CATEGORICAL_COLUMNS.values()}
        self.encodings: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for name, table in feat.encoding_tables_.items():
            mean = table["sum"] / (table["n_tasks"] + feat.smoothing)
            self.encodings[name] = (dict(zip(table.index, mean.to_numpy(dtype=float), strict=True)),
                                    dict(zip(table.index, table["n_tasks"].to_numpy(dtype=float), strict=True)))
        known = {*LOG_COLUMNS.values(), *NUMERIC_COLUMNS.values(), *CATEGORICAL_COLUMNS.values(), "me_trainable_share",
                 "hp_warmup", "m_fine_tuned", "regime_few_shot", "m_log_params_per_class", "regime"}
        known |= {n for name in self.encodings for n in (name, name + "_n")}
        unknown = [f for f in self.feature_names if f not in known]
        if unknown:
            raise ValueError(f"the serving path does not know the features {unknown}")
        out = model.outcome_
        self.outcome = out.model_.booster_
        self.ranker = out.ranker_.booster_ if out.ranker_ is not None else None
        self.cost = model.cost_.model_.booster_ if model.cost_ is not None else None
        fail = model.failure_
        self.failure = fail.model_.booster_ if fail.model_ is not None else None
        self.fail_constant = 0.0 if 1 not in fail.classes_ else 1.0 if len(fail.classes_) == 1 else None
        self.quantiles = dict(out.quantiles_)
        self.level = 1.0 - float(out.alpha)
        self.outcome_ = out  # what metaml._decision.decide reads besides predict()

    def features(self, rows: Mapping[str, Any]) -> np.ndarray:
        """The featurizer's output for runs-table ``rows`` as a float matrix (categories as codes, NaN missing)."""
        n = len(rows["model_id"])
        cols: dict[str, np.ndarray] = {}
        for col, name in LOG_COLUMNS.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                cols[name] = np.log10(np.maximum(_floats(rows, col), 1e-12))
        for col, name in NUMERIC_COLUMNS.items():
            cols[name] = _floats(rows, col)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["me_trainable_share"] = _floats(rows, "method_trainable_params") / _floats(rows, "model_n_params")
            steps_share = _floats(rows, "hparams_warmup_steps") / _floats(rows, "hparams_max_steps")
        ratio = _floats(rows, "hparams_warmup_ratio")
        cols["hp_warmup"] = np.where(np.isnan(ratio), steps_share, ratio)
        upstream = _objects(rows, "model_upstream_task")
        cols["m_fine_tuned"] = (~_missing(upstream)).astype(np.float64)
        k = _floats(rows, "dataset_examples_per_class")
        cols["regime_few_shot"] = (~np.isnan(k)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["m_log_params_per_class"] = cols["m_log_params"] - np.log10(
                np.maximum(_floats(rows, "dataset_meta_n_classes"), 1))
        for col, name in CATEGORICAL_COLUMNS.items():
            cols[name] = _codes(_objects(rows, col), self.categories[name])
        n_used = _floats(rows, "dataset_n_train_used")
        cols["regime"] = np.where(~np.isnan(k), _REGIME_CODES["k"],
                                  np.where(~np.isnan(n_used), _REGIME_CODES["n"], _REGIME_CODES["f"]))
        if self.encodings:
            # the experience encodings depend on five columns: compute them once per distinct combination
            parts = {c: _objects(rows, c) for c in _ENCODING_INPUTS}
            if n <= SMALL_BATCH:
                distinct, inverse = parts, np.arange(n)
            else:
                codes = np.column_stack([pd.factorize(v, use_na_sentinel=True)[0] for v in parts.values()])
                _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
                inverse = inverse.reshape(-1)
                distinct = {c: v[first] for c, v in parts.items()}
            for name, (mean, count) in self.encodings.items():
                keys = self._keys(ENCODINGS[name], distinct)
                cols[name] = np.array([mean.get(x, np.nan) if x is not None else np.nan for x in keys],
                                      dtype=np.float64)[inverse]
                cols[name + "_n"] = np.array([count.get(x, 0.0) if x is not None else 0.0 for x in keys],
                                             dtype=np.float64)[inverse]
        X = np.empty((n, len(self.feature_names)), dtype=np.float64)
        for j, name in enumerate(self.feature_names):
            X[:, j] = cols[name]
        return X

    @staticmethod
    def _keys(combo: tuple[str, ...], parts: Mapping[str, np.ndarray]) -> list[str | None]:
        """The featurizer's encoding keys: the parts joined by \\x1f, None where a part is missing."""
        if combo == ("base_or_self",):
            base, mid = parts["model_base_model"], parts["model_id"]
            return [_text(m) if miss else _text(b) for b, m, miss in zip(base, mid, _missing(base), strict=True)]
        columns = [parts[c] for c in combo]
        missing = np.zeros(len(columns[0]), dtype=bool)
        for c in columns:
            missing |= _missing(c)
        return [None if miss else "\x1f".join(_text(v) for v in vals)
                for miss, *vals in zip(missing, *columns, strict=True)]

    def _booster(self, booster: Any, X: np.ndarray) -> np.ndarray:
        threads = self.threads or (CORES if len(X) >= PARALLEL_ROWS else 1)
        return booster.predict(X, num_threads=threads)

    def predict_arrays(self, rows: Mapping[str, Any],
                       outputs: Collection[str] = OPTIONAL_OUTPUTS) -> dict[str, np.ndarray]:
        """Per row: ``points``, ``lo``, ``hi``, and those of ``rank_score``, ``runtime_s`` (NaN without a cost model)
        and ``p_fail`` that ``outputs`` names (each runs its own booster; the others are left out)."""
        X = self.features(rows)
        points = self._booster(self.outcome, X)
        if "xp_model_n" in self.feature_names:
            known = X[:, self.feature_names.index("xp_model_n")] > 0
            default = self.quantiles["all"]
            half = np.where(known, self.quantiles.get("known_model", default), self.quantiles.get("new_model", default))
        else:
            half = np.full(len(points), self.quantiles["all"])
        out = {"points": points, "lo": points - half, "hi": points + half}
        if "rank_score" in outputs:
            out["rank_score"] = self._booster(self.ranker, X) if self.ranker is not None else points
        if "runtime_s" in outputs:
            if self.cost is not None:
                z = self._booster(self.cost, X)
                out["runtime_s"] = np.sign(z) * (10 ** np.abs(z) - 1.0)
            else:
                out["runtime_s"] = np.full(len(points), np.nan)
        if "p_fail" in outputs:
            out["p_fail"] = self._booster(self.failure, X) if self.failure is not None \
                else np.full(len(points), self.fail_constant)
        return out

    def predict(self, runs: pd.DataFrame) -> pd.DataFrame:
        """:meth:`MetaModel.predict`'s frame (what :mod:`metaml._decision` reads)."""
        out = self.predict_arrays(runs)
        return pd.DataFrame(out, index=runs.index)[["points", "lo", "hi", "rank_score", "runtime_s", "p_fail"]]


class ReferenceScorer:
    """:meth:`MetaModel.predict` itself, behind the :class:`Scorer` interface (used when the check fails)."""

    def __init__(self, model: MetaModel) -> None:
        self.model = model
        self.level = 1.0 - float(model.outcome_.alpha)
        self.outcome_ = model.outcome_

    def predict(self, runs: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict(runs)

    def predict_arrays(self, rows: pd.DataFrame,
                       outputs: Collection[str] = OPTIONAL_OUTPUTS) -> dict[str, np.ndarray]:
        out = self.model.predict(rows)
        return {c: out[c].to_numpy(dtype=float) for c in out.columns if c in ("points", "lo", "hi", *outputs)}


def probe_rows(model: MetaModel, n: int = 48, seed: int = 0) -> pd.DataFrame:
    """Runs-table rows that exercise every feature: categories the model knows (and unseen ones), models and methods
    from its experience tables, numbers across their ranges, missing values everywhere."""
    rng = np.random.default_rng(seed)
    feat = model.featurizer_

    def pick(values: list[Any], p_missing: float = 0.25) -> list[Any]:
        pool = list(values) or ["unseen"]
        return [None if rng.random() < p_missing else pool[int(rng.integers(len(pool)))] for _ in range(n)]

    frame: dict[str, list[Any]] = {c: [None] * n for c in LEARN_COLUMNS}
    for col, name in CATEGORICAL_COLUMNS.items():
        frame[col] = pick([*feat.categories_[name], "not-a-known-category"])
    tables = feat.encoding_tables_
    frame["model_id"] = pick([*(tables["xp_model"].index if "xp_model" in tables else []), "unseen/model"], 0.0)
    methods = [k.split("\x1f")[-1] for k in (tables["xp_model_method"].index if "xp_model_method" in tables else [])]
    frame["method_name"] = pick([*methods, "full", "lora"], 0.1)
    frame["model_base_model"] = pick(list(tables["xp_base_model"].index) if "xp_base_model" in tables else [], 0.7)
    frame["model_upstream_task"] = pick(list(tables["xp_upstream"].index) if "xp_upstream" in tables else [], 0.7)
    for col in [*LOG_COLUMNS, *NUMERIC_COLUMNS, "hparams_warmup_ratio", "hparams_warmup_steps", "hparams_max_steps"]:
        values = 10 ** rng.uniform(-6, 9, n)
        frame[col] = [None if rng.random() < 0.3 else float(v) for v in values]
    frame["dataset_meta_n_classes"] = [None if rng.random() < 0.2 else int(v) for v in rng.integers(1, 50, n)]
    for col in ("dataset_n_train_used", "dataset_examples_per_class"):
        frame[col] = [None if rng.random() < 0.6 else int(v) for v in rng.integers(1, 5000, n)]
    return pd.DataFrame(frame)[list(LEARN_COLUMNS)]


def check_scorer(scorer: Scorer, model: MetaModel, rows: pd.DataFrame) -> float:
    """Largest absolute difference between the serving path and :meth:`MetaModel.predict` on ``rows`` (inf when a
    value is missing on one side only)."""
    fast = scorer.predict(rows)
    slow = model.predict(rows)
    worst = 0.0
    for col in slow.columns:
        a, b = fast[col].to_numpy(dtype=float), slow[col].to_numpy(dtype=float)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        both = ~np.isnan(a)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both] - b[both]))))
    return worst


def build_scorer(model: MetaModel, *, threads: int = 0) -> Scorer | ReferenceScorer:
    """The serving path for ``model``, checked against :meth:`MetaModel.predict`; the reference path if the check
    fails (logged)."""
    try:
        scorer = Scorer(model, threads=threads)
        diff = check_scorer(scorer, model, probe_rows(model))
    except Exception as e:  # an estimator this serving path does not know: serve the model as it is
        log.warning("serving the meta-model with MetaModel.predict (its fast path could not be built: %s)", e)
        return ReferenceScorer(model)
    if diff > SELF_CHECK_TOLERANCE:
        log.warning("serving the meta-model with MetaModel.predict: the fast path differs by %g on probe rows", diff)
        return ReferenceScorer(model)
    return scorer


# -- the holder -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A meta-model ready to serve, and where it came from.

    Attributes:
        model: the fitted meta-model.
        scorer: its serving path (:class:`Scorer`, or :class:`ReferenceScorer`).
        metadata: the artifact's metadata.
        source: ``registry`` or ``path``.
        version: the registered version (None for a local artifact).
        run_id: the MLflow run that logged it (None for a local artifact).
        loaded_at: when this process loaded it (UTC, ISO 8601).
        curve: the artifact's curve estimator (:mod:`metaml._curves`), or None when it holds none.
    """

    model: MetaModel
    scorer: Any
    metadata: dict[str, Any]
    source: str
    version: int | None = None
    run_id: str | None = None
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    curve: Any = None

    @property
    def fast(self) -> bool:
        return isinstance(self.scorer, Scorer)

    def describe(self) -> dict[str, Any]:
        """What the API says about the served model."""
        return {"version": self.version, "run_id": self.run_id, "source": self.source, "loaded_at": self.loaded_at,
                "created_at": self.metadata.get("created_at"), "n_train_runs": self.metadata.get("n_train_runs"),
                "kb_snapshot": self.metadata.get("kb_snapshot"), "interval_level": self.scorer.level,
                "fast_path": self.fast}


class ModelHolder:
    """The process's served meta-model (or none); see the module docstring for the swap rule."""

    def __init__(self, loaded: LoadedModel | None = None) -> None:
        self._current = loaded
        #: Held while a promotion loads and swaps, so that two promotions in one process do not interleave.
        self.promoting = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def require(self) -> LoadedModel:
        """The served model.

        Raises:
            ModelUnavailable: none is loaded.
        """
        loaded = self._current
        if loaded is None:
            raise ModelUnavailable(NO_MODEL_MESSAGE)
        return loaded

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve ``loaded`` from now on (one reference assignment); returns the model it replaces."""
        previous, self._current = self._current, loaded
        return previous


def tracking_uri(settings: Settings) -> str:
    """The registry the service reads: the settings' ``tracking_uri``, else metaml's default."""
    from metaml._tracking import DEFAULT_TRACKING_URI

    return settings.tracking_uri or DEFAULT_TRACKING_URI


def load_registered(settings: Settings, *, version: int | None = None) -> LoadedModel | None:
    """Load ``version``, or the version the ``production`` alias points at (None when no version carries it; no
    MLflow import when the registry does not exist).

    Raises:
        TrackingError: the registry cannot be read, or has no such version.
        ArtifactError: the version's artifact is unreadable or incompatible.
    """
    from metaml._tracking import PRODUCTION_ALIAS, list_versions, load_version_and_curve

    uri = tracking_uri(settings)
    if version is None:
        versions = list_versions(tracking_uri=uri)
        if not any(PRODUCTION_ALIAS in v.aliases for v in versions):
            return None
    started = time.perf_counter()
    model, meta, curve = load_version_and_curve(tracking_uri=uri, version=version)
    registry = meta.get("registry", {})
    loaded = LoadedModel(model=model, scorer=build_scorer(model, threads=settings.predict_threads), metadata=meta,
                         source="registry", version=registry.get("version"), run_id=registry.get("run_id"),
                         curve=curve)
    log.info("loaded meta-model version %s in %.1fs", loaded.version, time.perf_counter() - started)
    return loaded


def load_local(path: Path, settings: Settings) -> LoadedModel:
    """Load the artifact directory ``path``.

    Raises:
        ArtifactError: missing, unreadable or incompatible.
    """
    from metaml._artifact import load_curve_model, load_model

    model, meta = load_model(path)
    return LoadedModel(model=model, scorer=build_scorer(model, threads=settings.predict_threads), metadata=meta,
                       source="path", curve=load_curve_model(path, meta))


def load_predictor(app: FastAPI, settings: Settings) -> None:
    """State loader: put a :class:`ModelHolder` in ``app.state.extensions["predictor"]``, holding the configured
    model when one can be loaded (a model that cannot be loaded is logged; the holder then starts empty)."""
    from metaml.errors import MetamlError

    holder = ModelHolder()
    app.state.extensions["predictor"] = holder
    try:
        loaded = load_local(settings.model_path, settings) if settings.model_path else load_registered(settings)
    except MetamlError as e:
        log.warning("no meta-model loaded: %s", e)
        return
    if loaded is None:
        log.info("no meta-model is promoted yet; the prediction endpoints answer 503 until one is")
        return
    holder.swap(loaded)


async def get_holder(request: Request) -> ModelHolder:
    """The app's model holder (an empty one when the state loader did not run, e.g. an app built without lifespan)."""
    extensions = request.app.state.extensions
    holder = extensions.get("predictor")
    if holder is None:
        holder = extensions.setdefault("predictor", ModelHolder())
    return holder


Holder = Annotated[ModelHolder, Depends(get_holder)]

"""The meta-estimators: outcome (a ranking view, points on the metric's scale, calibrated intervals), cost, failure.

Each follows the scikit-learn contract on a numeric matrix (``__init__`` stores parameters; ``fit`` validates, learns,
sets ``*_`` attributes, returns ``self``; predictions check the estimator is fitted). :class:`MetaModel` bundles a
:class:`~metaml._features.RunFeaturizer` with the three of them and works on runs-table rows directly; it is the one
artifact that is saved, versioned and served.

**The outcome, in two stages.** What an AutoML system compares is configurations *within* a task, so the first
stage (the ranking view, :meth:`OutcomeEstimator.rank_score`) learns the score standardized within its task
(``z``) from every feature. The second stage puts that standing on the metric's scale: a small model of the points
from the task's own description and ``z`` only, constrained to increase with ``z`` (LightGBM's monotone constraint).
So within one task the points rank candidates exactly as the ranking view does, whatever the source says, and a
task's level and spread come from what is known of the task.

**Intervals** are normalized, Mondrian split-conformal (crepes): out-of-fold residuals (two folds over datasets, so
each residual is one of an unseen dataset), divided by a learned difficulty (the expected absolute residual of a row,
itself fit out of fold), give per-bin quantiles (bins: the row's source family; a global bin for a source the
calibration did not see). Intervals and points never leave the metric's range.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import GroupKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from metaml._data import Rows, fill_missing, learning_frame, source_family, text_values, within_task_z
from metaml._features import TASK_COLUMNS, PairCodes, RunFeaturizer

warnings.filterwarnings("ignore", message=".*X does not have valid feature names.*")

#: Sources whose intervals are calibrated together (a source of its own where not listed).
SOURCE_FAMILIES: dict[str, str] = {"hub_samples": "hf_cards"}
#: Bin of the rows whose source the calibration never saw.
GLOBAL_BIN = "*"
#: Fewest calibration residuals a bin needs (else its rows use the global bin).
MIN_BIN_RESIDUALS = 50
#: The metric scales' ranges in points.
SCALE_RANGES = {"unit": (0.0, 100.0), "signed_unit": (-100.0, 100.0)}


def _lgb_params(est: Any, **override: Any) -> dict[str, Any]:
    params = {"n_estimators": est.n_estimators, "learning_rate": est.learning_rate, "num_leaves": est.num_leaves,
              "min_child_samples": est.min_child_samples, "subsample": 0.8, "subsample_freq": 1,
              "colsample_bytree": 0.8, "reg_lambda": 1.0, "random_state": est.random_state, "n_jobs": est.n_jobs,
              "verbose": -1}
    params.update(override)
    return params


class _LgbmEstimator(BaseEstimator):
    """Shared input handling: a float matrix (NaN allowed: LightGBM routes missing values), validated by scikit-learn
    the first time and checked for its width afterwards."""

    def _validate(self, X: Any, *, reset: bool = False) -> np.ndarray:
        """The prediction input as a float matrix of the fitted width (the featurizer's matrix is taken as it is
        when it passes the checks scikit-learn would make: its calls cost more than a served request's trees)."""
        if (not reset and isinstance(X, np.ndarray) and X.dtype == np.float64 and X.ndim == 2 and len(X)
                and X.shape[1] == getattr(self, "n_features_in_", None) and not np.isinf(X).any()):
            return X
        return validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64)

    def _validate_fit(self, X: Any, y: Any, *, classifier: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The training input (scikit-learn's own checks, so bad input fails as scikit-learn estimators do)."""
        X, y = validate_data(self, X, y, reset=True, ensure_all_finite="allow-nan", y_numeric=not classifier,
                             dtype=np.float64)
        if X.shape[0] < 2:
            raise ValueError(f"Found array with {X.shape[0]} sample(s) while a minimum of 2 is required")
        return X, y

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _fit_kwargs(categorical: Sequence[int] | None) -> dict[str, Any]:
    return {"categorical_feature": list(categorical)} if categorical else {}


class OutcomeEstimator(RegressorMixin, _LgbmEstimator):
    """The score of a configuration on a task: its standing within the task (ranking view), its points, and a
    calibrated interval (see the module docstring).

    Args:
        n_estimators, learning_rate, num_leaves, min_child_samples: the ranking view's LightGBM.
        alpha: miscoverage of the intervals (0.2 -> 80% intervals).
        rank_mode: ``relative`` (regression on the within-task standardized score) or ``lambdarank`` (LightGBM's
            LambdaRank on within-task grades).
        lookup_weight: with a ``base_column`` at fit (the experience lookup), the ranking view is
            ``(1 - lookup_weight) * learned + lookup_weight * scale * lookup``, ``scale`` the least-squares multiple
            of the lookup for the standardized scores: a learner that cannot stray far from what the experience
            says where nothing in the features corrects it (0: the learned view alone; 1: the lookup alone).
        calibration_folds: folds over datasets for the out-of-fold residuals (0: no intervals beyond the global
            residual spread, for tiny data).
        random_state, n_jobs: LightGBM's.
    """

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 63,
                 min_child_samples: int = 20, alpha: float = 0.2, rank_mode: str = "relative",
                 lookup_weight: float = 0.5, calibration_folds: int = 2, random_state: int = 0,
                 n_jobs: int = 1) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.alpha = alpha
        self.rank_mode = rank_mode
        self.lookup_weight = lookup_weight
        self.calibration_folds = calibration_folds
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, groups: Any = None, tasks: Any = None, *, bins: Any = None,
            task_columns: Sequence[int] | None = None, categorical: Sequence[int] | None = None,
            base_column: int | None = None) -> OutcomeEstimator:
        """Args:
            X: feature matrix. y: scores in points.
            groups: the held-out unit of the calibration folds (dataset names; default: ten arbitrary groups).
            tasks: task keys (default: one task).
            bins: interval bin of each row (source family; default: one bin).
            task_columns: columns of X that describe the task (default: none: the points are the task's level and
                spread from ``z`` alone).
            categorical: columns of X that hold category codes.
            base_column: the experience lookup's column (see ``lookup_weight``).
        """
        if self.rank_mode not in ("relative", "lambdarank"):
            raise ValueError(f"rank_mode must be relative or lambdarank, got {self.rank_mode!r}")
        X, y = self._validate_fit(X, y)
        n = len(y)
        groups = np.asarray(groups) if groups is not None else np.arange(n) % 10
        tasks = np.asarray(tasks) if tasks is not None else np.zeros(n)
        bins = np.asarray(bins, dtype=object) if bins is not None else np.full(n, GLOBAL_BIN, dtype=object)
        self.task_columns_ = list(task_columns or [])
        self.categorical_ = list(categorical or [])
        if not 0.0 <= self.lookup_weight <= 1.0:
            raise ValueError(f"lookup_weight must be within [0, 1], got {self.lookup_weight}")
        z = within_task_z(pd.Series(y), pd.Series(tasks)).to_numpy()
        self.base_column_ = base_column
        self.base_scale_ = 0.0
        if base_column is not None:
            base = np.nan_to_num(X[:, base_column], nan=0.0)
            denom = float(base @ base)
            self.base_scale_ = float(base @ z) / denom if denom > 0 else 0.0
        self.ranker_ = self._fit_ranker(X, y, z, tasks)
        self.level_ = self._fit_level(X, z, y)
        self._calibrate(X, y, z, groups, tasks, bins)
        return self

    # -- the two stages ------------------------------------------------------------------------------------------

    def _fit_ranker(self, X: np.ndarray, y: np.ndarray, z: np.ndarray, tasks: np.ndarray) -> Any:
        kw = _fit_kwargs(self.categorical_)
        if self.rank_mode == "relative":
            return lgb.LGBMRegressor(**_lgb_params(self)).fit(X, z, **kw)
        order = np.argsort(tasks, kind="stable")
        pct = pd.Series(y[order]).groupby(pd.Series(tasks[order])).rank(pct=True).to_numpy()
        grades = np.clip(np.floor(pct * 31.999), 0, 31).astype(int)
        _, first, sizes = np.unique(tasks[order], return_index=True, return_counts=True)
        sizes = sizes[np.argsort(first)]
        return lgb.LGBMRanker(**_lgb_params(self), label_gain=list(range(32))).fit(X[order], grades, group=sizes,
                                                                                  **kw)

    def _level_input(self, X: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.column_stack([X[:, self.task_columns_], z]) if self.task_columns_ else z[:, None]

    def _fit_level(self, X: np.ndarray, z: np.ndarray, y: np.ndarray) -> Any:
        """Points from the task's description and the standing, increasing in the standing."""
        inputs = self._level_input(X, z)
        monotone = [0] * (inputs.shape[1] - 1) + [1]
        cats = [i for i, c in enumerate(self.task_columns_) if c in self.categorical_]
        params = _lgb_params(self, n_estimators=150, num_leaves=31, learning_rate=0.1, colsample_bytree=1.0,
                             monotone_constraints=monotone, monotone_constraints_method="intermediate")
        return lgb.LGBMRegressor(**params).fit(inputs, y, **_fit_kwargs(cats))

    def _standing(self, X: np.ndarray, ranker: Any = None, center: float | None = None,
                  scale: float | None = None) -> np.ndarray:
        """The ranking view: the learned standing blended with the scaled lookup (see ``lookup_weight``)."""
        z = (ranker or self.ranker_).predict(X)
        if self.rank_mode == "lambdarank":  # LambdaRank scores have no scale: bring them to z's
            z = (z - (self.rank_center_ if center is None else center)) / (self.rank_scale_ if scale is None
                                                                            else scale)
        if self.base_column_ is None or self.lookup_weight == 0.0:
            return z
        lookup = self.base_scale_ * np.nan_to_num(X[:, self.base_column_], nan=0.0)
        return (1.0 - self.lookup_weight) * z + self.lookup_weight * lookup

    # -- calibration ---------------------------------------------------------------------------------------------

    def _calibrate(self, X: np.ndarray, y: np.ndarray, z: np.ndarray, groups: np.ndarray, tasks: np.ndarray,
                   bins: np.ndarray) -> None:
        """Out-of-fold residuals -> difficulty model and normalized Mondrian conformal quantiles; residual samples
        for :mod:`metaml._decision`."""
        from crepes import ConformalRegressor

        rng = np.random.default_rng(self.random_state)
        self.rank_center_, self.rank_scale_ = 0.0, 1.0
        if self.rank_mode == "lambdarank":
            raw = self.ranker_.predict(X)
            self.rank_center_, self.rank_scale_ = float(raw.mean()), float(raw.std() or 1.0)
        k = min(self.calibration_folds, len(np.unique(groups)))
        oof = np.full(len(y), np.nan)
        split: list[tuple[np.ndarray, np.ndarray]] = []
        if k >= 2:
            split = list(GroupKFold(n_splits=k).split(X, y, groups))
            for tr, te in split:
                ranker = self._fit_ranker(X[tr], y[tr], z[tr], tasks[tr])
                level = self._fit_level(X[tr], z[tr], y[tr])
                fitted = ranker.predict(X[tr]) if self.rank_mode == "lambdarank" else np.zeros(1)
                zhat = self._standing(X[te], ranker, float(fitted.mean()), float(fitted.std() or 1.0))
                oof[te] = level.predict(self._level_input(X[te], zhat))
        if np.isnan(oof).all():  # too little data for folds: the spread around the mean
            oof = np.full(len(y), float(y.mean()))
        resid = y - oof
        # difficulty: the expected absolute residual of a row, fit out of fold as well
        target = np.log(np.abs(resid) + 1.0)
        params = _lgb_params(self, n_estimators=100, num_leaves=15, learning_rate=0.1)
        sigma = np.full(len(y), float(np.exp(target.mean())))
        for tr, te in split:
            sigma[te] = np.exp(lgb.LGBMRegressor(**params).fit(X[tr], target[tr], **_fit_kwargs(self.categorical_))
                               .predict(X[te]))
        self.difficulty_ = lgb.LGBMRegressor(**params).fit(X, target, **_fit_kwargs(self.categorical_)) \
            if len(split) else None
        self.sigma_floor_ = float(np.quantile(sigma, 0.05))
        sigma = np.maximum(sigma, self.sigma_floor_)
        self.conformal_ = {GLOBAL_BIN: ConformalRegressor().fit(resid, sigmas=sigma)}
        for b in np.unique(bins):
            mask = bins == b
            if b != GLOBAL_BIN and mask.sum() >= MIN_BIN_RESIDUALS:
                self.conformal_[str(b)] = ConformalRegressor().fit(resid[mask], sigmas=sigma[mask])
        self.residuals_ = rng.choice(resid, size=min(len(resid), 20_000), replace=False).astype(np.float32)
        self.pair_residuals_ = _pair_residuals(y, oof, tasks, rng)

    # -- predictions ---------------------------------------------------------------------------------------------

    def rank_components(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """The learned standing and the scaled lookup the ranking view blends (``lookup_weight``)."""
        check_is_fitted(self, "ranker_")
        X = self._validate(X, reset=False)
        learned = self.ranker_.predict(X)
        if self.rank_mode == "lambdarank":
            learned = (learned - self.rank_center_) / self.rank_scale_
        lookup = self.base_scale_ * np.nan_to_num(X[:, self.base_column_], nan=0.0) if self.base_column_ is not None \
            else np.zeros(len(X))
        return learned, lookup

    def rank_score(self, X: Any) -> np.ndarray:
        """The ranking view: the expected standing within the task (higher is better)."""
        check_is_fitted(self, "ranker_")
        return self._standing(self._validate(X, reset=False))

    def predict(self, X: Any, *, rank_score: np.ndarray | None = None) -> np.ndarray:
        """Points (not clipped: :class:`MetaModel` clips to each row's metric range)."""
        check_is_fitted(self, "ranker_")
        X = self._validate(X, reset=False)
        z = self._standing(X) if rank_score is None else np.asarray(rank_score, dtype=float)
        return self.level_.predict(self._level_input(X, z))

    def difficulty(self, X: Any) -> np.ndarray:
        """The expected absolute residual (in log-units' scale) of each row: the intervals' widths follow it."""
        check_is_fitted(self, "ranker_")
        X = self._validate(X, reset=False)
        if self.difficulty_ is None:
            return np.ones(len(X))
        return np.maximum(np.exp(self.difficulty_.predict(X)), self.sigma_floor_)

    def predict_interval(self, X: Any, *, points: np.ndarray | None = None, bins: Any = None,
                         difficulty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the ``1 - alpha`` interval, in points (not clipped)."""
        check_is_fitted(self, "ranker_")
        X = self._validate(X, reset=False)
        points = self.predict(X) if points is None else np.asarray(points, dtype=float)
        sigma = self.difficulty(X) if difficulty is None else difficulty
        bins = np.full(len(X), GLOBAL_BIN, dtype=object) if bins is None else np.asarray(bins, dtype=object)
        lo, hi = np.empty(len(X)), np.empty(len(X))
        for b in np.unique(bins):
            mask = bins == b
            cr = self.conformal_.get(str(b), self.conformal_[GLOBAL_BIN])
            out = cr.predict_int(points[mask], sigmas=sigma[mask], confidence=1.0 - self.alpha)
            lo[mask], hi[mask] = out[:, 0], out[:, 1]
        return lo, hi


def _pair_residuals(y: np.ndarray, pred: np.ndarray, tasks: np.ndarray, rng: np.random.Generator,
                    n_pairs: int = 20_000) -> np.ndarray:
    """Errors of predicted score differences between two runs of one task: (y_i - y_j) - (p_i - p_j)."""
    frame = pd.DataFrame({"t": tasks, "y": y, "p": pred})
    counts = frame.groupby("t").size()
    eligible = counts[counts >= 2].index
    if len(eligible) == 0:
        return np.zeros(0, dtype=np.float32)
    out = []
    per_task = max(1, n_pairs // len(eligible))
    for _, g in frame[frame["t"].isin(eligible)].groupby("t"):
        i = rng.integers(0, len(g), per_task)
        j = rng.integers(0, len(g), per_task)
        keep = i != j
        yy, pp = g["y"].to_numpy(), g["p"].to_numpy()
        out.append((yy[i[keep]] - yy[j[keep]]) - (pp[i[keep]] - pp[j[keep]]))
    return np.concatenate(out).astype(np.float32)


class CostEstimator(RegressorMixin, _LgbmEstimator):
    """LightGBM regression of log10(1 + training runtime); :meth:`predict` returns seconds."""

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 10, random_state: int = 0, n_jobs: int = 1) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, *, categorical: Sequence[int] | None = None) -> CostEstimator:
        X, y = self._validate_fit(X, y)
        self.model_ = lgb.LGBMRegressor(**_lgb_params(self)).fit(X, np.sign(y) * np.log10(np.abs(y) + 1.0),
                                                                 **_fit_kwargs(categorical))
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        z = self.model_.predict(self._validate(X, reset=False))
        return np.sign(z) * (10 ** np.abs(z) - 1.0)


class FailureEstimator(ClassifierMixin, _LgbmEstimator):
    """LightGBM probability that a run fails (error status, or a diverged run at chance level)."""

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 20, random_state: int = 0, n_jobs: int = 1) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, *, categorical: Sequence[int] | None = None) -> FailureEstimator:
        X, y = self._validate_fit(X, y, classifier=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            self.model_ = None
            return self
        self.model_ = lgb.LGBMClassifier(**_lgb_params(self)).fit(X, y, **_fit_kwargs(categorical))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "classes_")
        X = self._validate(X, reset=False)
        if self.model_ is None:
            out = np.zeros((len(X), max(len(self.classes_), 1)))
            out[:, 0] = 1.0
            return out
        return self.model_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def p_fail(self, X: Any) -> np.ndarray:
        """P(failure) of each row (0 when training saw no failure, 1 when it saw nothing else)."""
        proba = self.predict_proba(X)
        return proba[:, list(self.classes_).index(1)] if 1 in self.classes_ else np.zeros(len(proba))


def source_bins(sources: Any) -> np.ndarray:
    """The interval bin of each row: its source family (:data:`SOURCE_FAMILIES`)."""
    codes, families = pd.factorize(source_family(sources))  # missing: -1, the global bin
    bins = [SOURCE_FAMILIES.get(s, s) for s in (*families.tolist(), GLOBAL_BIN)]
    return np.asarray(bins, dtype=object)[codes]


def metric_range(scales: Any) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest points each row's metric scale allows (infinite for an unbounded scale)."""
    codes, distinct = pd.factorize(np.asarray(scales, dtype=object))  # looked up once per scale; missing: -1
    ranges = np.array([SCALE_RANGES.get(s, (-np.inf, np.inf)) for s in (*distinct.tolist(), None)], dtype=float)
    return ranges[codes, 0], ranges[codes, 1]


class MetaModel(BaseEstimator):
    """The meta-learner on runs-table rows: featurizer + outcome + cost + failure.

    ``fit(runs)`` takes rows of the runs table (see :data:`metaml._data.LEARN_COLUMNS`), keeps the learnable runs,
    and learns all three targets; ``predict(runs)`` answers for candidate configurations written as runs-table rows
    (without outcome columns). Rows whose metric scale is unknown are taken to be on the ``unit`` scale.
    """

    def __init__(self, featurizer: RunFeaturizer | None = None, outcome: OutcomeEstimator | None = None,
                 cost: CostEstimator | None = None, failure: FailureEstimator | None = None,
                 max_rows_per_task: int | None = 400, random_state: int = 0) -> None:
        self.featurizer = featurizer
        self.outcome = outcome
        self.cost = cost
        self.failure = failure
        self.max_rows_per_task = max_rows_per_task
        self.random_state = random_state

    def fit(self, runs: pd.DataFrame, y: Any = None, *, parts: Sequence[str] = ("outcome", "cost", "failure"),
            keys: dict[str, np.ndarray] | None = None) -> MetaModel:
        """Learn from ``runs``.

        Args:
            parts: which estimators to fit besides the featurizer (an evaluation that reports only rankings can skip
                the cost and failure models; predictions then leave them NaN).
            keys: precomputed experience keys of ``runs`` (:meth:`metaml._experience.Experience.keys_of`).
        """
        df = learning_frame(runs).reset_index(drop=True)
        if df["points"].notna().sum() < 10:
            raise ValueError(f"too few learnable runs to fit a meta-model ({df['points'].notna().sum()})")
        # the experience comes from every run; the estimators learn from at most max_rows_per_task runs per task
        self.featurizer_ = _fresh(self.featurizer, RunFeaturizer)
        X = self.featurizer_.fit_transform_array(df, df["points"], keys=keys)
        if self.max_rows_per_task:
            draw = pd.Series(np.random.default_rng(self.random_state).random(len(df)), index=df.index)
            keep = (draw.groupby(df["task_key"]).rank(method="first") <= self.max_rows_per_task).to_numpy()
            df, X = df[keep].reset_index(drop=True), X[keep]
        cats = self.featurizer_.categorical_
        ok = df["points"].notna().to_numpy()
        self.outcome_ = _fresh(self.outcome, OutcomeEstimator).fit(
            X[ok], df.loc[ok, "points"].to_numpy(), groups=df.loc[ok, "dataset_name"].to_numpy(),
            tasks=df.loc[ok, "task_key"].to_numpy(), bins=source_bins(df.loc[ok, "provenance_source"]),
            task_columns=self.featurizer_.column_index(TASK_COLUMNS), categorical=cats,
            base_column=(self.featurizer_.column_index(["lookup"]) or [None])[0])
        rt = df["outcome_runtime_s"].notna().to_numpy() & ok
        self.cost_ = _fresh(self.cost, CostEstimator).fit(X[rt], df.loc[rt, "outcome_runtime_s"].to_numpy(),
                                                           categorical=cats) \
            if "cost" in parts and rt.sum() >= 20 else None
        self.failure_ = _fresh(self.failure, FailureEstimator).fit(X, df["failed"].to_numpy(), categorical=cats) \
            if "failure" in parts else None
        self.n_train_runs_ = len(df)
        self.train_tasks_ = df["task_key"].nunique()
        self.train_datasets_ = sorted(df["dataset_name"].unique())
        return self

    def predict_arrays(self, runs: Rows, outputs: Sequence[str] = ("rank_score", "runtime_s", "p_fail"), *,
                       pairs: np.ndarray | PairCodes | None = None) -> dict[str, np.ndarray]:
        """Per row: ``points``, ``lo``, ``hi`` (80% interval), and those of ``rank_score``, ``runtime_s`` (NaN
        without a cost model) and ``p_fail`` that ``outputs`` names, as arrays. Points and intervals are clipped to
        each row's metric range. ``runs`` and ``pairs``: as :meth:`RunFeaturizer.transform_array` reads them (the
        same answer)."""
        check_is_fitted(self, "outcome_")
        X = self.featurizer_.transform_array(runs, pairs=pairs)
        rank = self.outcome_.rank_score(X)
        low, high = metric_range(fill_missing(text_values(runs["task_metric_scale"]), "unit")
                                 if "task_metric_scale" in runs else np.full(len(X), "unit"))
        points = self.outcome_.predict(X, rank_score=rank)
        lo, hi = self.outcome_.predict_interval(X, points=points, bins=source_bins(runs["provenance_source"]))
        out = {"points": np.clip(points, low, high), "lo": np.clip(lo, low, high), "hi": np.clip(hi, low, high)}
        if "rank_score" in outputs:
            out["rank_score"] = rank
        if "runtime_s" in outputs:
            out["runtime_s"] = self.cost_.predict(X) if self.cost_ is not None else np.full(len(X), np.nan)
        if "p_fail" in outputs:
            out["p_fail"] = self.failure_.p_fail(X) if self.failure_ is not None else np.full(len(X), np.nan)
        return out

    def predict(self, runs: pd.DataFrame, *, pairs: np.ndarray | PairCodes | None = None) -> pd.DataFrame:
        """Per row: points, 80% interval (lo, hi), rank_score, runtime_s (NaN without cost data), p_fail (``pairs``:
        as :meth:`predict_arrays` reads it)."""
        out = self.predict_arrays(runs, pairs=pairs)
        return pd.DataFrame(out, index=runs.index)[["points", "lo", "hi", "rank_score", "runtime_s", "p_fail"]]

    def rank_score(self, runs: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "outcome_")
        return self.outcome_.rank_score(self.featurizer_.transform_array(runs))

    def rank_components(self, runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The learned standing and the scaled experience lookup its ranking view blends."""
        check_is_fitted(self, "outcome_")
        return self.outcome_.rank_components(self.featurizer_.transform_array(runs))


def _fresh(template: Any, cls: type) -> Any:
    """A new unfitted estimator with ``template``'s parameters (or the class defaults)."""
    return cls(**template.get_params()) if template is not None else cls()

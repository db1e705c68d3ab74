"""The meta-estimators: outcome (with calibrated intervals and a ranking view), cost and failure.

Each follows the scikit-learn contract on featurized input (``__init__`` stores parameters; ``fit`` validates,
learns, sets ``*_`` attributes, returns ``self``; predictions check the estimator is fitted). :class:`MetaModel`
bundles a :class:`~metaml._features.RunFeaturizer` with the three of them and works on runs-table rows directly; it is
the one artifact that is saved, versioned and served.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from metaml._data import learning_frame, within_task_z
from metaml._features import RunFeaturizer

warnings.filterwarnings("ignore", message=".*X does not have valid feature names.*")


def _lgb_params(est: Any) -> dict[str, Any]:
    return {"n_estimators": est.n_estimators, "learning_rate": est.learning_rate, "num_leaves": est.num_leaves,
            "min_child_samples": est.min_child_samples, "subsample": 0.8, "subsample_freq": 1,
            "colsample_bytree": 0.8, "reg_lambda": 1.0, "random_state": est.random_state, "n_jobs": est.n_jobs,
            "verbose": -1}


def _frame(arr: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


class _LgbmEstimator(BaseEstimator):
    """Shared input handling: the featurizer's DataFrames (categorical columns kept for LightGBM) as they are, any
    other input through scikit-learn's own validation; NaN allowed (LightGBM routes missing values)."""

    def _validate(self, X: Any, y: Any = None, *, reset: bool, classifier: bool = False) -> Any:
        if isinstance(X, pd.DataFrame) and any(isinstance(d, pd.CategoricalDtype) for d in X.dtypes):
            if reset:
                self.n_features_in_ = X.shape[1]
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input")
            if y is None:
                return X
            y = np.asarray(y) if classifier else _target(y, len(X))
            return X, y
        if y is None and not reset:
            return _frame(validate_data(self, X, reset=False, ensure_all_finite="allow-nan"))
        X, y = validate_data(self, X, y, reset=reset, ensure_all_finite="allow-nan", y_numeric=not classifier)
        if X.shape[0] < 2:
            raise ValueError(f"Found array with {X.shape[0]} sample(s) while a minimum of 2 is required")
        return _frame(X), y

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class OutcomeEstimator(RegressorMixin, _LgbmEstimator):
    """LightGBM regression of the score in points, with split-conformal intervals and a ranking view.

    Intervals: the model is first fit on ``1 - calibration_fraction`` of the groups (datasets), and the absolute
    residuals on the held-out groups give the ``1 - alpha`` quantile, separately for rows whose model the training
    data knows and rows whose model it does not (Mondrian conformal on the ``xp_model_n`` feature when present); the
    model is then refit on everything. Because the calibration groups are unseen datasets, the intervals are
    calibrated for unseen datasets, which is how they are used.

    Ranking view (``rank_mode``): ``absolute`` ranks by predicted points; ``relative`` fits a second LightGBM on
    scores standardized within their task (what an AutoML system compares), ``lambdarank`` fits LightGBM's LambdaRank
    on within-task grades. :meth:`rank_score` returns the chosen view.

    Args:
        alpha: miscoverage of the intervals (0.2 -> 80% intervals).
        calibration_fraction: share of groups held out for calibration.
        rank_mode: absolute, relative or lambdarank.
    """

    def __init__(self, n_estimators: int = 400, learning_rate: float = 0.05, num_leaves: int = 63,
                 min_child_samples: int = 20, alpha: float = 0.2, calibration_fraction: float = 0.2,
                 rank_mode: str = "relative", random_state: int = 0, n_jobs: int = 1) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.alpha = alpha
        self.calibration_fraction = calibration_fraction
        self.rank_mode = rank_mode
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, groups: Any = None, tasks: Any = None) -> OutcomeEstimator:
        """Args:
            X: featurized rows. y: scores in points. groups: held-out unit for calibration (dataset names).
            tasks: task keys, needed by the relative and lambdarank views (default: one task).
        """
        if self.rank_mode not in ("absolute", "relative", "lambdarank"):
            raise ValueError(f"rank_mode must be absolute, relative or lambdarank, got {self.rank_mode!r}")
        X, y = self._validate(X, y, reset=True)
        groups = np.asarray(groups) if groups is not None else np.arange(len(y)) % 10
        tasks = np.asarray(tasks) if tasks is not None else np.zeros(len(y))
        self.quantiles_ = self._calibrate(X, y, groups, tasks)
        self.model_ = lgb.LGBMRegressor(**_lgb_params(self)).fit(X, y)
        if self.rank_mode == "relative":
            z = within_task_z(pd.Series(y), pd.Series(tasks)).to_numpy()
            self.ranker_ = lgb.LGBMRegressor(**_lgb_params(self)).fit(X, z)
        elif self.rank_mode == "lambdarank":
            order = np.argsort(tasks, kind="stable")
            grades = _grades(y[order], tasks[order])
            _, sizes = np.unique(tasks[order], return_counts=True)
            _, first = np.unique(tasks[order], return_index=True)
            sizes = sizes[np.argsort(first)]
            self.ranker_ = lgb.LGBMRanker(**_lgb_params(self), label_gain=list(range(32))).fit(
                X.iloc[order], grades, group=sizes)
        else:
            self.ranker_ = None
        return self

    def _calibrate(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, tasks: np.ndarray) -> dict[str, float]:
        """Interval half-widths from residuals on held-out groups; keeps samples of signed residuals and of
        within-task pair residuals for :mod:`metaml._decision`."""
        rng = np.random.default_rng(self.random_state)
        if len(np.unique(groups)) < 2:
            resid = y - y.mean()
            self.residuals_ = resid.astype(np.float32)
            self.pair_residuals_ = np.zeros(0, dtype=np.float32)
            return {"all": float(np.quantile(np.abs(resid), 1 - self.alpha))}
        split = GroupShuffleSplit(n_splits=1, test_size=self.calibration_fraction, random_state=self.random_state)
        fit_idx, cal_idx = next(split.split(X, y, groups))
        model = lgb.LGBMRegressor(**_lgb_params(self)).fit(X.iloc[fit_idx], y[fit_idx])
        pred = model.predict(X.iloc[cal_idx])
        signed = y[cal_idx] - pred
        resid = np.abs(signed)
        self.residuals_ = rng.choice(signed, size=min(len(signed), 20_000), replace=False).astype(np.float32)
        self.pair_residuals_ = _pair_residuals(y[cal_idx], pred, tasks[cal_idx], rng)
        level = min(1.0, (1 - self.alpha) * (1 + 1 / max(len(resid), 1)))
        out = {"all": float(np.quantile(resid, level))}
        strata = self._strata(X.iloc[cal_idx])
        for name in ("known_model", "new_model"):
            r = resid[strata == name]
            if len(r) >= 30:
                out[name] = float(np.quantile(r, min(1.0, (1 - self.alpha) * (1 + 1 / len(r)))))
        return out

    @staticmethod
    def _strata(X: pd.DataFrame) -> np.ndarray:
        if "xp_model_n" not in X:
            return np.full(len(X), "all", dtype=object)
        return np.where(X["xp_model_n"].to_numpy() > 0, "known_model", "new_model").astype(object)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(self._validate(X, reset=False))

    def predict_interval(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the ``1 - alpha`` interval, in points."""
        X = self._validate(X, reset=False)
        pred = self.predict(X)
        half = np.array([self.quantiles_.get(s, self.quantiles_["all"]) for s in self._strata(X)], dtype=float)
        return pred - half, pred + half

    def rank_score(self, X: Any) -> np.ndarray:
        """Higher is better within a task."""
        check_is_fitted(self, "model_")
        if self.ranker_ is None:
            return self.predict(X)
        return self.ranker_.predict(self._validate(X, reset=False))


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


def _target(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim != 1:
        y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1D with {n} values, got shape {np.shape(y)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("Input y contains NaN or infinity")
    return y


def _grades(y: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Within-task percentile grades 0..31 for LambdaRank."""
    pct = pd.Series(y).groupby(pd.Series(tasks)).rank(pct=True).to_numpy()
    return np.clip(np.floor(pct * 31.999), 0, 31).astype(int)


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

    def fit(self, X: Any, y: Any) -> CostEstimator:
        X, y = self._validate(X, y, reset=True)
        self.model_ = lgb.LGBMRegressor(**_lgb_params(self)).fit(X, np.sign(y) * np.log10(np.abs(y) + 1.0))
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

    def fit(self, X: Any, y: Any) -> FailureEstimator:
        X, y = self._validate(X, y, reset=True, classifier=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            self.model_ = None
            return self
        self.model_ = lgb.LGBMClassifier(**_lgb_params(self)).fit(X, y)
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


class MetaModel(BaseEstimator):
    """The meta-learner on runs-table rows: featurizer + outcome + cost + failure.

    ``fit(runs)`` takes rows of the runs table (see :data:`metaml._data.LEARN_COLUMNS`), keeps the learnable runs,
    and learns all three targets; ``predict(runs)`` answers for candidate configurations written as runs-table rows
    (without outcome columns).
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

    def fit(self, runs: pd.DataFrame, y: Any = None) -> MetaModel:
        df = learning_frame(runs)
        if self.max_rows_per_task:
            draw = pd.Series(np.random.default_rng(self.random_state).random(len(df)), index=df.index)
            df = df[draw.groupby(df["task_key"]).rank(method="first") <= self.max_rows_per_task].reset_index(drop=True)
        if df["points"].notna().sum() < 10:
            raise ValueError(f"too few learnable runs to fit a meta-model ({df['points'].notna().sum()})")
        self.featurizer_ = _fresh(self.featurizer, RunFeaturizer)
        feats = self.featurizer_.fit_transform(df, df["points"])
        ok = df["points"].notna().to_numpy()
        self.outcome_ = _fresh(self.outcome, OutcomeEstimator).fit(
            feats[ok], df.loc[ok, "points"], groups=df.loc[ok, "dataset_name"], tasks=df.loc[ok, "task_key"])
        rt = df["outcome_runtime_s"].notna().to_numpy() & ok
        self.cost_ = _fresh(self.cost, CostEstimator).fit(feats[rt], df.loc[rt, "outcome_runtime_s"]) \
            if rt.sum() >= 20 else None
        self.failure_ = _fresh(self.failure, FailureEstimator).fit(feats, df["failed"])
        self.n_train_runs_ = len(df)
        self.train_tasks_ = df["task_key"].nunique()
        self.train_datasets_ = sorted(df["dataset_name"].unique())
        return self

    def predict(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Per row: points, 80% interval (lo, hi), rank_score, runtime_s (NaN without cost data), p_fail."""
        check_is_fitted(self, "outcome_")
        feats = self.featurizer_.transform(runs)
        lo, hi = self.outcome_.predict_interval(feats)
        out = pd.DataFrame({"points": self.outcome_.predict(feats), "lo": lo, "hi": hi,
                            "rank_score": self.outcome_.rank_score(feats)}, index=runs.index)
        out["runtime_s"] = self.cost_.predict(feats) if self.cost_ is not None else np.nan
        proba = self.failure_.predict_proba(feats)
        out["p_fail"] = proba[:, list(self.failure_.classes_).index(1)] if 1 in self.failure_.classes_ else 0.0
        return out

    def rank_score(self, runs: pd.DataFrame) -> np.ndarray:
        return self.outcome_.rank_score(self.featurizer_.transform(runs))


def _fresh(template: Any, cls: type) -> Any:
    """A new unfitted estimator with ``template``'s parameters (or the class defaults)."""
    return cls(**template.get_params()) if template is not None else cls()




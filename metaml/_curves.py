"""Predict a run's final score from its partial learning curve, and stop the runs that cannot win.

**Curves.** A run's curve is its primary metric's points in ``outcome.curve``, in points (100 x the normalized
value), on a **progress** axis: the share of the planned training done at each point. Progress is
``step / total_steps`` when every point has a step (``total_steps``: the planned ``max_steps`` when it is at least the
last step, else the last step scaled by planned epochs / last epoch when both are known, else the last step) and
``epoch / total_epochs`` otherwise (the planned epochs, or the last point's epoch when larger). Runs whose metric is
not learnable (lower-is-better or unbounded, see :mod:`metaml._data`) and runs without a final score (failed,
stopped) teach nothing about final scores and are left out.

**Features of a cut** (a run observed up to progress ``p``), all relative to the last observed value so that they
carry over between tasks whose scores sit at different levels: ``p``, the number of points, the drop from the best
value, the rise from the first, the recent mean's gap, the slope over the second half of the prefix and over all of
it, the step-to-step noise, the distance above the metric's chance level and below 100; what the **task's finished
runs** (the search's history) say at the same progress: how many, their mean and spread of gain from ``p`` to their
final score, the gain of the three whose value at ``p`` was nearest, how far the run lies above their mean there; and
the **meta-model's prior** for the configuration (predicted points minus the last value, interval width, failure
probability; NaN when not given).

**The estimator.** :class:`CurveEstimator` learns ``final - last`` with LightGBM (median regression: the jumps of
runs that diverge or recover late are rare and large), rows weighted so that each dataset weighs the square root of
its runs (one dataset with two thousand runs does not drown ninety with a few each); a second LightGBM learns the
log of the absolute error, the run's **scale**. Both are calibrated out of fold on unseen datasets (grouped k-fold):
the errors divided by their predicted scale form the standardized residual sample from which intervals and
``P(final > incumbent)`` are read. Refit on everything, it answers for a new dataset as its calibration folds did.

**Task recalibration.** Given the task's finished runs, each is cut at the same progress and predicted as if it were
running (its history: the other finished runs); their standardized errors give the task's bias and spread, shrunk
toward the calibration sample's with ``prior_weight`` pseudo-observations (the spread on the log scale) and widened
by the bias's own uncertainty, as the skip rule of :mod:`metaml._decision` does for configurations.

**Decision.** :func:`decide_curve` stops a run when ``P(final > incumbent + tolerance)`` is below ``max_false_stop``
(the stated error rate: per decision, the chance of stopping a run that would have finished above the bar) and it has
trained at least ``min_progress`` of its budget; else it continues.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils.validation import check_is_fitted

from metaml._data import LEARN_COLUMNS, chance_points, learning_frame

#: Columns :func:`curve_runs` reads: the meta-learner's and the curve.
CURVE_COLUMNS: tuple[str, ...] = (*LEARN_COLUMNS, "outcome_curve")
#: Features of a cut, in the estimator's column order.
FEATURES: tuple[str, ...] = (
    "progress", "n_points", "drop", "rise", "recent_gap", "slope_recent", "slope_all", "noise", "above_chance",
    "headroom", "n_history", "hist_gain_mean", "hist_gain_std", "hist_gain_near", "hist_level_gap", "prior_gap",
    "prior_width", "prior_p_fail",
)
#: The prior's features (the meta-model's answer for the configuration).
PRIOR_FEATURES: tuple[str, ...] = ("prior_gap", "prior_width", "prior_p_fail")
#: What the estimator reads: the last observed value (the prediction's anchor) and the features.
INPUTS: tuple[str, ...] = ("last", *FEATURES)
#: Progress levels the training cuts are taken at (each run contributes its distinct observed prefixes).
TRAIN_CUTS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: How many finished runs of the same task a training cut sees as its history (one size drawn per cut).
HISTORY_SIZES: tuple[int, ...] = (0, 1, 2, 3, 5, 8, 12, 20)

#: A finished run of the task: its curve's progress and values (points), and its final score (points).
Finished = tuple[np.ndarray, np.ndarray, float]


# -------------------------------------------------------------------------------------------------- curves of runs


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def primary_curve(points: Iterable[Mapping[str, Any]] | None, metric: str, *, max_steps: float | None = None,
                  epochs: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``metric`` curve of one run as ``(progress, value)`` arrays sorted by progress (see the module docstring
    for the progress axis; ``max_steps`` and ``epochs`` are the planned ones). Values stay on the metric's scale.
    Points at progress 0 and repeated positions (the last one kept) are dropped; empty arrays when no point holds
    ``metric`` or the points have neither steps nor epochs throughout."""
    pts = [p for p in (points if points is not None else []) if p.get("metric") == metric and _finite(p.get("value"))]
    empty = np.zeros(0), np.zeros(0)
    if not pts:
        return empty
    by_step = all(_finite(p.get("step")) for p in pts)
    with_epochs = all(_finite(p.get("epoch")) for p in pts)
    if not by_step and not with_epochs:
        return empty
    x = np.array([p["step"] if by_step else p["epoch"] for p in pts], dtype=float)
    v = np.array([float(p["value"]) for p in pts], dtype=float)
    ep = np.array([p["epoch"] if with_epochs else np.nan for p in pts], dtype=float)
    order = np.argsort(x, kind="stable")
    x, v, ep = x[order], v[order], ep[order]
    keep = np.r_[x[1:] != x[:-1], True]  # the last value reported at a position
    x, v, ep = x[keep], v[keep], ep[keep]
    last = float(x[-1])
    total = last
    if by_step:
        if _finite(max_steps) and float(max_steps) >= last:
            total = float(max_steps)
        elif _finite(epochs) and np.isfinite(ep[-1]) and ep[-1] > 0:
            total = max(last, last * float(epochs) / float(ep[-1]))
    elif _finite(epochs):
        total = max(last, float(epochs))
    if total <= 0:
        return empty
    progress = x / total
    ok = progress > 0
    return progress[ok], v[ok]


def curve_runs(runs: pd.DataFrame, *, min_points: int = 2) -> pd.DataFrame:
    """The learnable runs of ``runs`` (runs-table rows with ``outcome_curve``) that have a final score and a primary
    metric curve of at least ``min_points`` points: the learning frame's rows (``points``, ``task_key``...) plus
    ``curve_progress`` and ``curve_points`` (arrays; values in points).

    Raises:
        ValueError: ``runs`` has no ``outcome_curve`` column.
    """
    if "outcome_curve" not in runs:
        raise ValueError("the runs carry no outcome_curve column (read them with metaml._curves.CURVE_COLUMNS)")
    has = runs["outcome_curve"].map(lambda c: c is not None and len(c) >= min_points)
    df = learning_frame(runs[has].reset_index(drop=True))
    df = df[df["points"].notna()].reset_index(drop=True)
    progress, values = [], []
    for curve, metric, steps, epochs in zip(df["outcome_curve"], df["task_primary_metric"], df["hparams_max_steps"],
                                            df["hparams_epochs"], strict=True):
        p, v = primary_curve(curve, str(metric), max_steps=steps, epochs=epochs)
        progress.append(p)
        values.append(100.0 * v)
    df["curve_progress"] = progress
    df["curve_points"] = values
    keep = df["curve_progress"].map(len) >= min_points
    return df[keep].drop(columns=["outcome_curve"]).reset_index(drop=True)


def load_curve_runs(kb: Any) -> pd.DataFrame:
    """:func:`curve_runs` of a knowledge base (a :class:`~collector.store.KnowledgeBase`)."""
    return curve_runs(kb.scan(list(CURVE_COLUMNS), ordered=True).to_pandas())


# ------------------------------------------------------------------------------------------------------- features


#: Progress grid on which finished runs' curves are read (linear interpolation between its points).
HISTORY_GRID = 200


class History:
    """The task's finished runs, each curve read once on a grid of :data:`HISTORY_GRID` progress steps, so that what
    they say about a run at any progress costs one vectorized lookup.

    Args:
        runs: finished runs (their curves' progress and values in points, and final scores in points).
    """

    def __init__(self, runs: Iterable[Finished] = ()) -> None:
        self.runs: list[Finished] = []
        self._grid = np.linspace(0.0, 1.0, HISTORY_GRID + 1)
        self._values = np.zeros((0, HISTORY_GRID + 1))
        self._finals = np.zeros(0)
        for run in runs:
            self.append(run)

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Any:
        return iter(self.runs)

    def __getitem__(self, i: int) -> Finished:
        return self.runs[i]

    def append(self, run: Finished) -> None:
        p, v, final = run
        self.runs.append((np.asarray(p, dtype=float), np.asarray(v, dtype=float), float(final)))
        row = np.interp(self._grid, p, v)
        self._values = np.vstack([self._values, row[None, :]])
        self._finals = np.append(self._finals, float(final))

    @property
    def finals(self) -> np.ndarray:
        return self._finals

    def at(self, progress: float) -> np.ndarray:
        """Every finished run's value at ``progress`` (interpolated on the grid)."""
        x = min(max(float(progress), 0.0), 1.0) * HISTORY_GRID
        j = min(int(x), HISTORY_GRID - 1)
        w = x - j
        return (1.0 - w) * self._values[:, j] + w * self._values[:, j + 1]

    def features(self, progress: float, last: float, exclude: int | None = None) -> dict[str, float]:
        """What the finished runs (but ``exclude``) say about a run at ``progress`` whose value is ``last``
        (points): their mean and spread of gain from ``progress`` to their final score, the gain of the three whose
        value at ``progress`` was nearest ``last``, and how far ``last`` lies above their mean value there."""
        at, finals = self.at(progress), self._finals
        if exclude is not None:
            keep = np.arange(len(finals)) != exclude
            at, finals = at[keep], finals[keep]
        if len(at) == 0:
            return {"n_history": 0.0, "hist_gain_mean": np.nan, "hist_gain_std": np.nan, "hist_gain_near": np.nan,
                    "hist_level_gap": np.nan}
        gain = finals - at
        near = np.argsort(np.abs(at - last), kind="stable")[:3]
        return {"n_history": float(len(at)), "hist_gain_mean": float(gain.mean()),
                "hist_gain_std": float(gain.std()) if len(gain) > 1 else np.nan,
                "hist_gain_near": float(gain[near].mean()), "hist_level_gap": last - float(at.mean())}


def _as_history(history: History | Sequence[Finished] | None) -> History:
    return history if isinstance(history, History) else History(history or ())


def cut_features(progress: np.ndarray, values: np.ndarray, *, chance: float = np.nan,
                 history: History | Sequence[Finished] | None = None, exclude: int | None = None,
                 prior: Mapping[str, float] | None = None) -> dict[str, float]:
    """The inputs (:data:`INPUTS`) of one observed prefix: ``progress`` increasing in (0, 1], ``values`` in points;
    ``chance`` the metric's chance level in points; ``history`` the task's finished runs (but the one at index
    ``exclude``); ``prior`` the meta-model's ``points``, ``lo``, ``hi`` and ``p_fail`` for the configuration.

    Raises:
        ValueError: no point.
    """
    p = np.asarray(progress, dtype=float)
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        raise ValueError("a partial curve needs at least one point")
    last = float(v[-1])
    j = min(int(np.searchsorted(p, p[-1] / 2.0, side="left")), n - 1)
    out = {"last": last, "progress": float(p[-1]), "n_points": float(n), "drop": float(v.max()) - last,
           "rise": last - float(v[0]), "recent_gap": float(v[-3:].mean()) - last,
           "slope_recent": (last - float(v[j])) / (p[-1] - p[j]) if p[-1] > p[j] else np.nan,
           "slope_all": (last - float(v[0])) / (p[-1] - p[0]) if p[-1] > p[0] else np.nan,
           "noise": float(np.std(np.diff(v))) if n >= 3 else np.nan,
           "above_chance": last - chance if _finite(chance) else np.nan, "headroom": 100.0 - last}
    out.update(_as_history(history).features(float(p[-1]), last, exclude))
    prior = prior or {}
    points = float(prior.get("points", np.nan))
    out.update(prior_gap=points - last, prior_width=float(prior.get("hi", np.nan)) - float(prior.get("lo", np.nan)),
               prior_p_fail=float(prior.get("p_fail", np.nan)))
    return out


def prefix_at(progress: np.ndarray, level: float) -> int:
    """How many points of a curve a run has reported once it reaches ``level``: up to its first point at or past
    ``level`` (a decision at ``level`` waits for that evaluation)."""
    return min(int(np.searchsorted(progress, level - 1e-9, side="left")) + 1, len(progress))


def cut_frame(curves: pd.DataFrame, cuts: Sequence[float] = TRAIN_CUTS, *, priors: pd.DataFrame | None = None,
              history_sizes: Sequence[int] = HISTORY_SIZES, seed: int = 0) -> pd.DataFrame:
    """One row per (run, cut): the inputs of each run's curve observed up to each progress level in ``cuts`` (levels
    before the first point are skipped; levels that add no point to the previous one are kept once), plus ``row``
    (the run's position in ``curves``), ``cut``, ``final`` (its score, points) and ``group`` (its dataset).

    Each cut sees as its history a random draw of other runs of the same task (``task_key``), as many as a size drawn
    from ``history_sizes`` (fewer when the task has fewer): a search asks with as many finished runs as it has.

    Args:
        curves: :func:`curve_runs` output.
        cuts: progress levels.
        priors: per run (aligned with ``curves``) the meta-model's ``points``, ``lo``, ``hi``, ``p_fail``.
        history_sizes: history sizes drawn from, uniformly.
        seed: seed of the history draws.
    """
    rng = np.random.default_rng(seed)
    chance = chance_points(curves).to_numpy(dtype=float)
    prior_records = priors.reset_index(drop=True).to_dict("records") if priors is not None else None
    finished = [(p, v, float(f)) for p, v, f in zip(curves["curve_progress"], curves["curve_points"],
                                                     curves["points"], strict=True)]
    tasks = curves["task_key"].to_numpy()
    by_task = {k: np.asarray(ix) for k, ix in curves.groupby("task_key", sort=False).indices.items()}
    sizes = np.asarray(list(history_sizes), dtype=int)
    rows: list[dict[str, Any]] = []
    for i, (p, v, final) in enumerate(finished):
        peers = by_task[tasks[i]]
        peers = peers[peers != i]
        seen = 0
        for cut in cuts:
            k = int(np.searchsorted(p, cut + 1e-9, side="right"))
            if k == 0 or k == seen:
                continue
            seen = k
            size = min(int(rng.choice(sizes)), len(peers))
            history = History(finished[j] for j in rng.choice(peers, size=size, replace=False)) if size else None
            feats = cut_features(p[:k], v[:k], chance=chance[i], history=history,
                                 prior=prior_records[i] if prior_records is not None else None)
            rows.append({**feats, "row": i, "cut": cut, "final": final, "group": str(curves["dataset_name"].iat[i])})
    return pd.DataFrame(rows, columns=[*INPUTS, "row", "cut", "final", "group"])


# ------------------------------------------------------------------------------------------------------ estimator


def _matrix(X: Any) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        missing = [c for c in INPUTS if c not in X]
        if missing:
            raise ValueError(f"missing curve inputs: {', '.join(missing)}")
        return X[list(INPUTS)].to_numpy(dtype=float)
    arr = np.asarray(X, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(INPUTS):
        raise ValueError(f"expected a 2-D array with {len(INPUTS)} columns ({', '.join(INPUTS)}), got shape "
                         f"{arr.shape}")
    return arr


def dataset_weights(groups: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Row weights under which each group (dataset) weighs its number of rows to the ``power`` (0.5: the square
    root; 0: every dataset alike; 1: every row alike)."""
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    return counts[inverse].astype(float) ** (power - 1.0)


@dataclass(frozen=True)
class TaskCalibration:
    """A task's bias (in standardized residuals) and spread factor, from ``n`` finished runs."""

    shift: float = 0.0
    factor: float = 1.0
    n: int = 0


Calibrations = TaskCalibration | Sequence[TaskCalibration | None] | None


class CurveEstimator(RegressorMixin, BaseEstimator):
    """The final score (points) of a run from its cut inputs (:data:`INPUTS`, see :func:`cut_features`), with
    calibrated uncertainty (see the module docstring).

    Args:
        n_estimators, learning_rate, num_leaves, min_child_samples: LightGBM's, for both models.
        objective: LightGBM objective of the center (``l1``: the median of ``final - last``).
        weight_power: rows of a dataset weigh its row count to this power in total (:func:`dataset_weights`).
        use_prior: read the prior features (False: ignored, as if absent).
        n_folds: calibration folds (grouped by dataset; plain k-fold when fewer than 3 datasets).
        alpha: miscoverage of :meth:`predict_interval` (0.2: 80% intervals).
        prior_weight: pseudo-observations of the calibration sample in a task recalibration.
        random_state: seed.
        n_jobs: LightGBM threads.
    """

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 15,
                 min_child_samples: int = 20, objective: str = "l1", weight_power: float = 0.5,
                 use_prior: bool = True, n_folds: int = 5, alpha: float = 0.2, prior_weight: float = 5.0,
                 random_state: int = 0, n_jobs: int = 1) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.objective = objective
        self.weight_power = weight_power
        self.use_prior = use_prior
        self.n_folds = n_folds
        self.alpha = alpha
        self.prior_weight = prior_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _lgbm(self, objective: str) -> lgb.LGBMRegressor:
        return lgb.LGBMRegressor(objective=objective, n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                                 num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
                                 subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0,
                                 random_state=self.random_state, n_jobs=self.n_jobs, verbose=-1)

    def _inputs(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """The anchor (last value) and the feature matrix (prior features blanked without ``use_prior``)."""
        M = _matrix(X)
        F = M[:, 1:].copy()
        if not self.use_prior:
            F[:, [FEATURES.index(name) for name in PRIOR_FEATURES]] = np.nan
        return M[:, 0], F

    def _oof(self, F: np.ndarray, target: np.ndarray, w: np.ndarray, groups: np.ndarray,
             objective: str) -> np.ndarray:
        out = np.full(len(target), np.nan)
        n_groups = len(np.unique(groups))
        if n_groups >= 3:
            splits = GroupKFold(n_splits=min(self.n_folds, n_groups)).split(F, groups=groups)
        else:
            splits = KFold(n_splits=self.n_folds, shuffle=True, random_state=self.random_state).split(F)
        for train, test in splits:
            out[test] = self._lgbm(objective).fit(F[train], target[train], sample_weight=w[train]).predict(F[test])
        return out

    def fit(self, X: Any, y: Any, groups: Any = None) -> CurveEstimator:
        """Learn from cut inputs ``X`` (:func:`cut_frame`) and final scores ``y`` (points).

        Args:
            X: a frame with the :data:`INPUTS` columns, or an array of them in that order.
            y: the runs' final scores, points.
            groups: the dataset of each row: calibration folds and weights (default ``X["group"]`` when present,
                else one group).

        Raises:
            ValueError: fewer than 20 rows, mismatched lengths, non-finite scores.
        """
        last, F = self._inputs(X)
        y = np.asarray(y, dtype=float)
        if len(y) != len(F):
            raise ValueError(f"X has {len(F)} rows but y has {len(y)}")
        if len(y) < 20:
            raise ValueError(f"too few curve cuts to learn from ({len(y)}; at least 20)")
        if not (np.isfinite(y).all() and np.isfinite(last).all()):
            raise ValueError("y or the last values hold NaN or infinite scores")
        if groups is None:
            groups = X["group"].to_numpy() if isinstance(X, pd.DataFrame) and "group" in X else np.zeros(len(y))
        groups = np.asarray(groups).astype(str)
        delta = y - last
        w = dataset_weights(groups, self.weight_power)
        oof = self._oof(F, delta, w, groups, self.objective)
        err = np.abs(delta - oof)
        log_err = np.log(err + 0.05)
        scale = np.exp(self._oof(F, log_err, w, groups, "regression"))
        self.residuals_ = np.sort((delta - oof) / scale)
        self.calibration_ = ("out of fold, grouped by dataset" if len(np.unique(groups)) >= 3
                             else "out of fold, by row (fewer than 3 datasets)")
        self.center_ = self._lgbm(self.objective).fit(F, delta, sample_weight=w)
        self.scale_ = self._lgbm("regression").fit(F, log_err, sample_weight=w)
        self.n_features_in_ = len(INPUTS)
        self.n_train_rows_ = len(y)
        self.n_train_groups_ = len(np.unique(groups))
        self.oof_mae_ = float(np.average(err, weights=w))
        return self

    def predict_center_scale(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the predicted final score (points) and the predicted scale of its error."""
        check_is_fitted(self, "center_")
        last, F = self._inputs(X)
        # the boosters themselves: the scikit-learn wrapper's per-call overhead outweighs a few rows' prediction
        center = self.center_.booster_.predict(F, num_threads=self.n_jobs)
        return last + center, np.exp(self.scale_.booster_.predict(F, num_threads=self.n_jobs))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted final score of each row, in points (the median of the predictive distribution)."""
        return self.predict_center_scale(X)[0]

    @staticmethod
    def _shape(calibration: Calibrations, n: int) -> tuple[np.ndarray, np.ndarray]:
        if calibration is None or isinstance(calibration, TaskCalibration):
            c = calibration or TaskCalibration()
            return np.full(n, c.shift), np.full(n, c.factor)
        if len(calibration) != n:
            raise ValueError(f"{len(calibration)} calibrations for {n} rows")
        cs = [c or TaskCalibration() for c in calibration]
        return np.array([c.shift for c in cs]), np.array([c.factor for c in cs])

    def predict_interval(self, X: Any, alpha: float | None = None,
                         calibration: Calibrations = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``1 - alpha`` interval of each final score (points), recalibrated to a task when given (one
        calibration for every row, or one per row)."""
        a = self.alpha if alpha is None else alpha
        center, scale = self.predict_center_scale(X)
        shift, factor = self._shape(calibration, len(center))
        lo_q, hi_q = np.quantile(self.residuals_, [a / 2.0, 1.0 - a / 2.0])
        return center + (shift + lo_q * factor) * scale, center + (shift + hi_q * factor) * scale

    def p_above(self, X: Any, threshold: Any, calibration: Calibrations = None) -> np.ndarray:
        """P(final score > ``threshold``) per row (points; a scalar or one per row), from the standardized residual
        sample, recalibrated to a task when given (one calibration for every row, or one per row; +1 smoothing:
        never exactly 0 or 1)."""
        center, scale = self.predict_center_scale(X)
        shift, factor = self._shape(calibration, len(center))
        z = ((np.broadcast_to(np.asarray(threshold, dtype=float), center.shape) - center) / scale - shift) / factor
        above = self.residuals_.size - np.searchsorted(self.residuals_, z, side="right")
        return (above + 1.0) / (self.residuals_.size + 2.0)

    def calibrate(self, X: Any, finals: Any) -> TaskCalibration:
        """The task's bias and spread from its finished runs cut at one progress level (``X``, each with the other
        finished runs as history) and their final scores (see the module docstring)."""
        finals = np.asarray(finals, dtype=float)
        n = len(finals)
        if n == 0:
            return TaskCalibration()
        center, scale = self.predict_center_scale(X)
        z = (finals - center) / scale
        # robust location and spread: standardized errors have heavy tails (late divergences and recoveries)
        pooled = float(np.mean(np.abs(self.residuals_ - np.median(self.residuals_)))) or 1.0
        k = self.prior_weight
        med = float(np.median(z))
        shift = med * n / (n + k)  # shrunk toward no bias
        task = max(float(np.mean(np.abs(z - med))), 1e-3) if n >= 2 else pooled
        log_spread = (n * math.log(task) + k * math.log(pooled)) / (n + k)
        factor = math.exp(log_spread) / pooled * math.sqrt(1.0 + 1.0 / (n + k))
        return TaskCalibration(shift=shift, factor=factor, n=n)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


# ------------------------------------------------------------------------------------------------------- decision


@dataclass
class CurveDecision:
    """Continue or stop a run, with the probability behind it (scores in points)."""

    action: str
    p_above: float
    predicted: float
    lo: float
    hi: float
    incumbent: float
    tolerance: float
    progress: float
    threshold: float
    stated_error_rate: float
    n_history: int
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def history_cuts(level: float, history: History | Sequence[Finished], *, chance: float = np.nan,
                 priors: Sequence[Mapping[str, float] | None] | None = None) -> pd.DataFrame:
    """The finished runs cut at ``level`` (each with the others as its history): the rows a task recalibration
    reads."""
    history = _as_history(history)
    rows = []
    for i, (p, v, _) in enumerate(history):
        k = prefix_at(p, level)
        rows.append(cut_features(p[:k], v[:k], chance=chance, history=history, exclude=i,
                                 prior=priors[i] if priors is not None else None))
    return pd.DataFrame(rows, columns=list(INPUTS))


def decide_curve(estimator: CurveEstimator, progress: Sequence[float], values: Sequence[float], incumbent: float, *,
                 history: History | Sequence[Finished] = (), prior: Mapping[str, float] | None = None,
                 history_priors: Sequence[Mapping[str, float] | None] | None = None, chance: float = np.nan,
                 tolerance: float = 0.0, max_false_stop: float = 0.05, min_progress: float = 0.0,
                 min_history: int = 1, bounds: tuple[float, float] = (-np.inf, np.inf)) -> CurveDecision:
    """Continue or stop one run from its partial curve.

    Args:
        estimator: a fitted :class:`CurveEstimator`.
        progress: the run's points' progress (share of its planned training), increasing.
        values: their values, points.
        incumbent: the best final score so far on the task (points).
        history: the task's finished runs (their curves and final scores): features, and the task recalibration.
        prior: the meta-model's ``points``, ``lo``, ``hi``, ``p_fail`` for the run's configuration.
        history_priors: the same for each finished run (aligned with ``history``).
        chance: the metric's chance level (points), when known.
        tolerance: points above the incumbent the run must be able to reach to continue.
        max_false_stop: stop when P(final > incumbent + tolerance) is below this (the stated error rate).
        min_progress: never stop before this share of the planned training.
        min_history: never stop with fewer finished runs.
        bounds: the metric's range in points: the predicted final score and its interval are clipped to it (the
            probability is the estimator's own).
    """
    p = np.asarray(progress, dtype=float)
    v = np.asarray(values, dtype=float)
    history = _as_history(history)
    X = pd.DataFrame([cut_features(p, v, chance=chance, history=history, prior=prior)])[list(INPUTS)]
    level = float(p[-1])
    calibration = estimator.calibrate(history_cuts(level, history, chance=chance, priors=history_priors),
                                      history.finals) if len(history) >= 2 else None
    bar = incumbent + tolerance
    p_above = float(estimator.p_above(X, bar, calibration)[0])
    predicted = float(estimator.predict(X)[0])
    if calibration is not None:
        predicted += calibration.shift * float(estimator.predict_center_scale(X)[1][0])
    lo, hi = (float(a[0]) for a in estimator.predict_interval(X, calibration=calibration))
    predicted, lo, hi = (float(np.clip(x, *bounds)) for x in (predicted, lo, hi))
    basis = f"partial curve at {level:.0%} of the planned training"
    if calibration is not None:
        basis += f", recalibrated on {calibration.n} finished runs of the task"
    if estimator.use_prior and prior is not None and _finite(prior.get("points")):
        basis += ", with the meta-model's prior"
    held = []
    if level < min_progress:
        held.append(f"below the minimum progress {min_progress:.0%}")
    if len(history) < min_history:
        held.append(f"fewer than {min_history} finished runs")
    if held:
        basis += "; never stopped " + " and ".join(held)
    action = "stop" if p_above < max_false_stop and not held else "continue"
    return CurveDecision(action=action, p_above=p_above, predicted=predicted, lo=lo, hi=hi, incumbent=incumbent,
                         tolerance=tolerance, progress=level, threshold=max_false_stop,
                         stated_error_rate=max_false_stop, n_history=len(history), basis=basis)


def fit_curve_model(curves: pd.DataFrame, *, priors: pd.DataFrame | None = None, min_runs: int = 20,
                    seed: int = 0, **params: Any) -> CurveEstimator | None:
    """A :class:`CurveEstimator` fit on every run of ``curves`` (:func:`curve_runs`), or None when fewer than
    ``min_runs`` runs carry a curve. ``params`` go to the estimator (``use_prior`` is on only with ``priors``)."""
    if len(curves) < min_runs:
        return None
    X = cut_frame(curves, priors=priors, seed=seed)
    params.setdefault("use_prior", priors is not None)
    return CurveEstimator(random_state=seed, **params).fit(X, X["final"])


def describe_curve_model(estimator: CurveEstimator) -> dict[str, Any]:
    """What a fitted curve estimator says about itself (stored in the artifact's metadata, shown by the API)."""
    check_is_fitted(estimator, "center_")
    return {"n_train_rows": int(estimator.n_train_rows_), "n_train_datasets": int(estimator.n_train_groups_),
            "calibration": estimator.calibration_, "uses_prior": bool(estimator.use_prior),
            "interval_level": 1.0 - float(estimator.alpha), "oof_mae_points": round(float(estimator.oof_mae_), 3)}

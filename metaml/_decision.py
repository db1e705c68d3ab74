"""Decisions an AutoML system asks for: evaluate or skip a candidate, which candidates first, and with what prior.

**Skip rule.** For a candidate and the incumbent (best score so far on the task, in points), the probability that
the candidate beats ``incumbent - tolerance`` is read from residuals calibrated on *unseen datasets*
(:class:`~metaml._estimators.OutcomeEstimator` keeps them), on one of three bases, the first that applies:

* **task-recalibrated** (``history``: at least ``min_history`` configurations already scored on this task): the
  task's own residuals give its bias (mean of score - prediction) and its spread; the pooled within-task residual
  shape is rescaled to that spread, shrunk toward the pooled spread on the log scale with ``prior_weight``
  pseudo-observations, and widened by the bias's own uncertainty (``sqrt(1 + 1/n)``). Pooled residuals mix sources
  whose errors differ several fold (a few points on one task, twenty on another); this basis fits the task at hand;
* **within-task difference** (``incumbent_config``): the predicted gap between the candidate and the incumbent's
  configuration plus the calibrated error of such gaps, which cancels the task-level bias;
* **absolute prediction**: the candidate's prediction and the pooled residuals.

The rule skips when that probability is below ``max_false_skip``, the stated false-skip rate; the AutoML replay
benchmark measures the rate actually reached on held-out tasks.

**Recommendation.** Candidates are ranked by the ranking view, pulled toward the worst candidate by their failure
probability; the prior
over each choice (model, method, each hyperparameter) is a softmax over the candidates' predicted standing, exported
in shapes Optuna, Ray Tune and a probabilistic grammar search take directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metaml._estimators import MetaModel
from metaml._features import PairCodes


@dataclass
class Decision:
    """Evaluate or skip, with the probability behind it."""

    action: str
    p_beat: float
    predicted: float
    incumbent: float
    tolerance: float
    threshold: float
    stated_false_skip_rate: float
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _p_exceed(residuals: np.ndarray, margin: float) -> float:
    """P(residual > margin) from a residual sample (with a +1 smoothing so it is never exactly 0 or 1)."""
    if residuals.size == 0:
        return 0.5
    return float((np.count_nonzero(residuals > margin) + 1) / (residuals.size + 2))


def decide(model: MetaModel, candidate: pd.DataFrame, incumbent: float, *, tolerance: float = 0.0,
           incumbent_config: pd.DataFrame | None = None, history: pd.DataFrame | None = None,
           history_points: Sequence[float | None] | np.ndarray | None = None, max_false_skip: float = 0.05,
           min_history: int = 3, prior_weight: float = 5.0) -> Decision:
    """Evaluate or skip one candidate (a one-row runs-table frame) against the incumbent score (points).

    Args:
        model: a fitted meta-model (anything with ``predict`` and a fitted ``outcome_``).
        candidate: the candidate's runs-table row.
        incumbent: the best score so far on the task, in points.
        tolerance: points below the incumbent the candidate may land and still be worth evaluating.
        incumbent_config: the incumbent's runs-table row.
        history: runs-table rows of the configurations already evaluated on this task, with ``history_points``
            their scores in points (None or NaN for a failed run, which is left out).
        max_false_skip: skip when P(beat) is below this.
        min_history: scored configurations the task-recalibrated basis needs.
        prior_weight: pseudo-observations of the pooled spread in the task's spread estimate.
    """
    pred = float(model.predict(candidate)["points"].iloc[0])
    outcome = model.outcome_
    bar = incumbent - tolerance
    scored = _scored_history(history, history_points)
    if scored is not None and len(scored[1]) >= max(min_history, 2):
        rows, points = scored
        errors = points - model.predict(rows)["points"].to_numpy(dtype=float)
        shape, scale = _task_scale(outcome, errors, prior_weight)
        basis = f"task-recalibrated on {len(errors)} evaluated configurations"
        # P(scale x shape > margin): the shape sample is sorted, so this is one binary search
        above = shape.size - int(np.searchsorted(shape, (bar - pred - float(errors.mean())) / scale, side="right"))
        p_beat = (above + 1) / (shape.size + 2)
    elif incumbent_config is not None and len(outcome.pair_residuals_) >= 50:
        inc_pred = float(model.predict(incumbent_config)["points"].iloc[0])
        basis = "within-task difference to the incumbent's configuration"
        p_beat = _p_exceed(outcome.pair_residuals_, bar - incumbent - (pred - inc_pred))
    else:
        basis = "absolute prediction"
        p_beat = _p_exceed(outcome.residuals_, bar - pred)
    return Decision(action="skip" if p_beat < max_false_skip else "evaluate", p_beat=p_beat, predicted=pred,
                    incumbent=incumbent, tolerance=tolerance, threshold=max_false_skip,
                    stated_false_skip_rate=max_false_skip, basis=basis)


def _scored_history(history: pd.DataFrame | None, points: Sequence[float | None] | np.ndarray | None
                    ) -> tuple[pd.DataFrame, np.ndarray] | None:
    if history is None or points is None:
        return None
    values = np.array([np.nan if v is None else float(v) for v in points], dtype=float)
    if len(values) != len(history):
        raise ValueError(f"history has {len(history)} rows but {len(values)} scores")
    keep = np.isfinite(values)
    return history[keep], values[keep]


_SHAPES: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}


def _residual_shape(outcome: Any) -> tuple[np.ndarray, float]:
    """The pooled within-task residuals, centred, divided by their spread and sorted; and that spread (cached per
    fitted estimator: a search asks this once per proposal)."""
    pair = outcome.pair_residuals_
    hit = _SHAPES.get(id(pair))
    if hit is not None and hit[0] is pair:
        return hit[1], hit[2]
    values = np.asarray(pair, dtype=float)
    # a pair difference carries two runs' errors: its spread is sqrt(2) x one run's within-task error
    base = values / math.sqrt(2.0) if values.size >= 50 else np.asarray(outcome.residuals_, dtype=float)
    base = base - np.median(base)
    pooled = float(base.std()) or 1.0
    shape = np.sort(base / pooled)
    if len(_SHAPES) >= 16:
        _SHAPES.clear()
    _SHAPES[id(pair)] = (pair, shape, pooled)  # holding ``pair`` keeps its id from being reused
    return shape, pooled


def _task_scale(outcome: Any, errors: np.ndarray, prior_weight: float) -> tuple[np.ndarray, float]:
    """The standardized residual shape and this task's spread (see the module docstring)."""
    shape, pooled = _residual_shape(outcome)
    n = len(errors)
    task_var = max(float(errors.var(ddof=1)), 0.01)  # scores are in points: no task is known to 0.1 point
    # shrink on the log scale: pooled variances span two orders of magnitude, an arithmetic mean would let the
    # widest source decide every task's spread
    log_var = (n * math.log(task_var) + prior_weight * math.log(pooled**2)) / (n + prior_weight)
    return shape, math.exp(log_var / 2) * math.sqrt(1.0 + 1.0 / n)


@dataclass
class Recommendation:
    """Ranked candidates and priors over each choice."""

    ranked: pd.DataFrame
    priors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def optuna(self, top_k: int = 5) -> dict[str, Any]:
        """``enqueue_trial`` parameter dicts for the top candidates, and per-parameter prior weights."""
        return {"enqueue_trials": self._top_params(top_k), "distributions": self.priors}

    def ray_tune(self, top_k: int = 5) -> dict[str, Any]:
        """``points_to_evaluate`` and a param space with weighted choices / log-normal priors."""
        return {"points_to_evaluate": self._top_params(top_k), "param_space": self.priors}

    def grammar(self) -> dict[str, Any]:
        """Initial distribution of a probabilistic grammar search: one distribution per production."""
        return self.priors

    def _top_params(self, k: int) -> list[dict[str, Any]]:
        cols = [c for c in self.ranked.columns if c.startswith("param.")]
        return [{c[len("param."):]: _plain(v) for c, v in row.items() if v is not None and not _isnan(v)}
                for row in self.ranked.head(k)[cols].to_dict("records")]


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def recommend(model: MetaModel, candidates: pd.DataFrame, params: dict[str, str], *, budget: int | None = None,
              temperature: float = 1.0, pairs: np.ndarray | PairCodes | None = None) -> Recommendation:
    """Rank ``candidates`` (runs-table rows) and derive priors over each choice.

    Args:
        model: a fitted meta-model.
        candidates: one runs-table row per candidate configuration.
        params: search-space parameter name -> the runs-table column that holds it (``{"model": "model_id",
            "learning_rate": "hparams_learning_rate"}``).
        budget: how many candidates to return ranked (all when None).
        temperature: softmax temperature over predicted standings (lower = sharper priors).
        pairs: each candidate's (model, method) pair, as :meth:`MetaModel.predict_arrays` reads it.
    """
    pred = model.predict(candidates, pairs=pairs)
    p_fail = pred["p_fail"].fillna(0.0)
    # a likely failure counts as the worst candidate, whatever the sign of the ranking score
    utility = (1.0 - p_fail) * pred["rank_score"] + p_fail * pred["rank_score"].min()
    ranked = candidates[list(params.values())].copy()
    ranked.columns = [f"param.{p}" for p in params]
    ranked = pd.concat([ranked, pred], axis=1)
    ranked["utility"] = utility
    ranked["candidate"] = np.arange(len(ranked))
    ranked = ranked.sort_values("utility", ascending=False).reset_index(drop=True)
    priors: dict[str, dict[str, Any]] = {}
    spread = ranked["utility"].std()
    z = (ranked["utility"] - ranked["utility"].mean()) / (spread if spread and np.isfinite(spread) else 1.0)
    weight = np.exp(z / max(temperature, 1e-6))
    for name in params:
        col = ranked[f"param.{name}"]
        if pd.api.types.is_numeric_dtype(col) and col.nunique() > 5:
            values = col.astype(float)
            positive = bool((values > 0).all())
            v = np.log(values) if positive else values
            mu = float(np.average(v, weights=weight))
            sigma = float(math.sqrt(np.average((v - mu) ** 2, weights=weight)) or 1e-3)
            priors[name] = {"type": "lognormal" if positive else "normal", "mu": mu, "sigma": sigma,
                            "low": float(values.min()), "high": float(values.max())}
        else:
            w = pd.Series(weight.to_numpy(), index=col.astype(str)).groupby(level=0).mean()
            w = w / w.sum()
            priors[name] = {"type": "categorical", "values": [_plain(x) for x in w.index],
                            "weights": [float(x) for x in w.to_numpy()]}
    return Recommendation(ranked.head(budget) if budget else ranked, priors)

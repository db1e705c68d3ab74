"""Decisions an AutoML system asks for: evaluate or skip a candidate, which candidates first, and with what prior.

**Skip rule.** For a candidate and the incumbent (best score so far on the task, in points), the probability that
the candidate beats ``incumbent - tolerance`` is read from residuals calibrated on *unseen datasets*
(:class:`~metaml._estimators.OutcomeEstimator` keeps them). When the incumbent's own configuration is given, the
comparison uses within-task *differences* (predicted gap between the two configurations plus the calibrated error of
such gaps), which cancels the task-level bias of absolute predictions; otherwise it uses absolute residuals. The rule
skips when that probability is below ``max_false_skip``. Because a skipped candidate's chance of winning is below the
threshold under calibrated residuals, the threshold is the stated false-skip rate; the AutoML replay benchmark
measures the rate actually reached on held-out tasks.

**Recommendation.** Candidates are ranked by the ranking view, pulled toward the worst candidate by their failure
probability; the prior
over each choice (model, method, each hyperparameter) is a softmax over the candidates' predicted standing, exported
in shapes Optuna, Ray Tune and a probabilistic grammar search take directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metaml._estimators import MetaModel


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
           incumbent_config: pd.DataFrame | None = None, max_false_skip: float = 0.05) -> Decision:
    """Evaluate or skip one candidate (a one-row runs-table frame) against the incumbent score (points)."""
    pred = float(model.predict(candidate)["points"].iloc[0])
    outcome = model.outcome_
    bar = incumbent - tolerance
    if incumbent_config is not None and len(outcome.pair_residuals_) >= 50:
        inc_pred = float(model.predict(incumbent_config)["points"].iloc[0])
        residuals, basis = outcome.pair_residuals_, "within-task difference to the incumbent's configuration"
        margin = bar - incumbent - (pred - inc_pred)
    else:
        residuals, basis = outcome.residuals_, "absolute prediction"
        margin = bar - pred
    p_beat = _p_exceed(residuals, margin)
    return Decision(action="skip" if p_beat < max_false_skip else "evaluate", p_beat=p_beat, predicted=pred,
                    incumbent=incumbent, tolerance=tolerance, threshold=max_false_skip,
                    stated_false_skip_rate=max_false_skip, basis=basis)


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
              temperature: float = 1.0) -> Recommendation:
    """Rank ``candidates`` (runs-table rows) and derive priors over each choice.

    Args:
        model: a fitted meta-model.
        candidates: one runs-table row per candidate configuration.
        params: search-space parameter name -> the runs-table column that holds it (``{"model": "model_id",
            "learning_rate": "hparams_learning_rate"}``).
        budget: how many candidates to return ranked (all when None).
        temperature: softmax temperature over predicted standings (lower = sharper priors).
    """
    pred = model.predict(candidates)
    p_fail = pred["p_fail"].fillna(0.0)
    # a likely failure counts as the worst candidate, whatever the sign of the ranking score
    utility = (1.0 - p_fail) * pred["rank_score"] + p_fail * pred["rank_score"].min()
    ranked = candidates[list(params.values())].copy()
    ranked.columns = [f"param.{p}" for p in params]
    ranked = pd.concat([ranked, pred], axis=1)
    ranked["utility"] = utility
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

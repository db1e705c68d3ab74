"""The search engine behind ``POST /v1/suggest``: which configurations to evaluate next on a task, learning from the
task's own results through what the knowledge base knows.

Given a task's candidates (:class:`TaskKnowledge`: the meta-model's view of each, the past tasks' standings of them,
their configuration features) and the task's history (evaluated candidates with their score, or a failure, and
runtime), :meth:`SearchEngine.suggest` proposes the next ``k`` candidates. Stateless: everything comes in the call.

**Belief about each candidate's score** (in points):

* with fewer than ``min_history`` scored evaluations, the meta-model's prediction, shifted by the mean error on the
  evaluated ones, with the spread of its calibrated interval;
* then **evidence weighting** of experts (the RGPE / "active testing" idea): the meta-model's ranking view, the
  experience lookup (the candidates' standing averaged over past tasks) and every past task of the knowledge base
  that has a standing for these candidates (:meth:`metaml._experience.Experience.task_profiles`) each predict the
  scores linearly (``score ~ a + b * standing``, ``b >= 0`` shrunk toward the meta-model's scale), and are weighted
  by their likelihood on the scores observed so far (raised to ``temperature``; the meta-model's and the lookup's
  prior weight is ``prior_weight`` times a past task's): past tasks whose ranking disagrees with this task lose their
  say. The belief is the mixture: its mean, and its variance (each expert's residual variance, shrunk toward the
  meta-model's within-task spread, plus their disagreement);
* and a **Gaussian process on the residuals** (observed minus the mixture's mean) over configuration features, whose
  mean is therefore the knowledge's prediction (the HyperBO / FSBO idea): a Matérn 5/2 kernel, amplitude from the
  residuals, lengthscale chosen by marginal likelihood on a grid; near evaluated candidates the residuals carry over.

**Choice.** Expected improvement over the incumbent (the best score so far; with no history, the best predicted
mean), discounted by the probability of failure, per unit of predicted cost raised to ``cost_exponent`` (Quick-Tune's
cost-aware EI). Failure probabilities are updated per (model, method) group from the task's own failures (a Beta
update with ``fail_prior`` pseudo-evaluations behind the prediction); predicted runtimes are rescaled by the task's
observed runtime ratio. A candidate in the history is never proposed.

**Skip rule, per search.** Once ``min_history`` evaluations scored, the candidates least likely to beat the incumbent
are excluded while the sum of their probabilities of beating it stays within ``max_false_skip``: the expected number
of excluded candidates better than the incumbent, hence the probability that the search ends having excluded a
better one (the eventual best among them), is at most ``max_false_skip`` when the beliefs are calibrated. An excluded
candidate is never proposed; when every remaining candidate is excluded, the search is done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

#: Configuration columns the Gaussian process compares, as categories.
CATEGORICAL_CONFIG = ("model_id", "model_upstream_task", "model_family", "method_name", "method_config",
                      "hparams_lr_scheduler", "hparams_optimizer", "hparams_precision")
#: Configuration columns the Gaussian process compares as numbers (log-scaled where the scale is multiplicative).
NUMERIC_CONFIG = {"model_n_params": True, "method_lora_r": True, "method_lora_alpha": True,
                  "method_lora_dropout": False, "method_n_frozen_layers": False,
                  "method_adapter_reduction_factor": True,
                  "method_n_virtual_tokens": True, "hparams_learning_rate": True, "hparams_batch_size": True,
                  "hparams_epochs": False, "hparams_max_steps": True, "hparams_warmup_ratio": False,
                  "hparams_weight_decay": False, "hparams_max_seq_length": True, "hparams_dropout": False}
_SQRT5 = math.sqrt(5.0)


@dataclass
class TaskKnowledge:
    """What the engine knows about a task's candidates before any of them is evaluated.

    Attributes:
        points: the meta-model's predicted score of each candidate, in points.
        within_sd: how far, within one task, a score typically lands from where the meta-model's ranking puts it
            (points): the spread of its within-task pair residuals (:func:`within_task_sd`).
        rank_score: the meta-model's ranking view (standing within the task).
        p_fail: predicted probability of failure.
        cost: predicted runtime in seconds (1 where unknown: cost then counts evaluations).
        profiles: (past tasks, candidates) standings of the candidates on past tasks, NaN where a task has none.
        profile_tasks: the past tasks' keys.
        lookup: the candidates' standing averaged over the past tasks (the experience lookup, a best-on-average
            portfolio's order), or None.
        features: the candidates' configuration features for the Gaussian process (:class:`ConfigurationFeatures`, or
            a plain (candidates, d) matrix of numbers).
        groups: per candidate, its (model, method) group (failures are shared within a group).
    """

    points: np.ndarray
    within_sd: float
    rank_score: np.ndarray
    p_fail: np.ndarray
    cost: np.ndarray
    profiles: np.ndarray
    profile_tasks: list[str]
    features: ConfigurationFeatures | np.ndarray
    groups: np.ndarray
    lookup: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.points)

    @classmethod
    def from_model(cls, model: Any, rows: pd.DataFrame, pred: dict[str, np.ndarray] | None = None, *,
                   exclude_datasets: Sequence[str] = ()) -> TaskKnowledge:
        """Build it from a fitted :class:`~metaml.MetaModel`, the candidates' runs-table rows and the model's
        predictions for them (:meth:`~metaml.MetaModel.predict_arrays`; computed when not given). The model's past
        tasks (its experience) become the experts.

        Args:
            exclude_datasets: past tasks of these datasets are not experts (a replay's held-out dataset).
        """
        pred = pred if pred is not None else model.predict_arrays(rows)
        return cls.from_predictions(rows, pred, within_sd=within_task_sd(model.outcome_),
                                    experience=model.featurizer_.experience_, exclude_datasets=exclude_datasets)

    @classmethod
    def from_predictions(cls, rows: pd.DataFrame, pred: dict[str, np.ndarray], *, within_sd: float,
                         experience: Any = None, exclude_datasets: Sequence[str] = ()) -> TaskKnowledge:
        """Build it from the candidates' runs-table rows and predictions for them (``points``, ``rank_score``,
        ``runtime_s``, ``p_fail``).

        Args:
            within_sd: see the attribute.
            experience: an :class:`~metaml._experience.Experience` whose past tasks become experts.
            exclude_datasets: past tasks of these datasets are not experts.
        """
        n = len(rows)
        points = np.asarray(pred["points"], dtype=float)
        p_fail = np.clip(np.nan_to_num(np.asarray(pred.get("p_fail", np.zeros(n)), dtype=float), nan=0.0), 0, 0.99)
        cost = np.asarray(pred.get("runtime_s", np.full(n, np.nan)), dtype=float)
        cost = np.where(np.isfinite(cost) & (cost > 0), cost, np.nan)
        cost = np.nan_to_num(cost, nan=float(np.nanmedian(cost)) if np.isfinite(cost).any() else 1.0)
        lookup = None
        if experience is not None:
            profiles, tasks = experience.task_profiles(rows, exclude_datasets=exclude_datasets)
            lookup = experience.lookup(rows)
        else:
            profiles, tasks = np.zeros((0, n)), []
        groups = pd.factorize(rows["model_id"].astype(str) + "|" + rows["method_name"].astype(str))[0]
        return cls(points=points, within_sd=float(within_sd), rank_score=np.asarray(pred["rank_score"], dtype=float),
                   p_fail=p_fail,
                   cost=np.maximum(cost, 1e-3), profiles=profiles, profile_tasks=tasks,
                   features=configuration_features(rows), groups=groups, lookup=lookup)


def within_task_sd(outcome: Any) -> float:
    """The spread (points) of one run's score around the meta-model's within-task ranking: the robust standard
    deviation of the within-task pair residuals of a fitted outcome estimator (``pair_residuals_``) over sqrt(2),
    at least half a point."""
    pairs = np.asarray(getattr(outcome, "pair_residuals_", np.zeros(0)), dtype=float)
    pairs = pairs[np.isfinite(pairs)]
    if pairs.size < 30:
        return 5.0
    mad = float(np.median(np.abs(pairs - np.median(pairs))))
    return max(1.4826 * mad / math.sqrt(2.0), 0.5)


@dataclass
class ConfigurationFeatures:
    """The candidates' configurations as points for the Gaussian process: each varying category as a code (two
    different categories 1 apart, as one-hot vectors scaled by 1/sqrt(2) would be), each varying number standardized
    (log10 first where its scale is multiplicative) and halved, so that candidates differing in one choice are about 1
    apart whatever the number of choices. Distances are computed from the codes, never from one-hot matrices."""

    categories: np.ndarray  # (candidates, c) int codes
    numbers: np.ndarray  # (candidates, k) floats

    def sq_distances(self, a: np.ndarray | slice, b: np.ndarray | slice) -> np.ndarray:
        """Squared distances between candidates ``a`` and candidates ``b``."""
        na, nb = self.numbers[a], self.numbers[b]
        out = np.maximum((na**2).sum(1)[:, None] + (nb**2).sum(1)[None, :] - 2.0 * na @ nb.T, 0.0) \
            if self.numbers.shape[1] else 0.0
        ca, cb = self.categories[a], self.categories[b]
        for j in range(self.categories.shape[1]):
            out = out + (ca[:, j][:, None] != cb[:, j][None, :])
        return np.asarray(out, dtype=float)

    def __len__(self) -> int:
        return len(self.categories)


def configuration_features(rows: pd.DataFrame) -> ConfigurationFeatures:
    """:class:`ConfigurationFeatures` of the candidates' runs-table rows."""
    cats: list[np.ndarray] = []
    for col in CATEGORICAL_CONFIG:
        if col not in rows:
            continue
        codes, uniques = pd.factorize(rows[col].astype("string").fillna("<none>"))
        if len(uniques) > 1:
            cats.append(codes)
    nums: list[np.ndarray] = []
    for col, log in NUMERIC_CONFIG.items():
        if col not in rows:
            continue
        v = pd.to_numeric(rows[col], errors="coerce").astype(float).to_numpy()
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log10(np.where(v > 0, v, np.nan))
        finite = np.isfinite(v)
        if finite.sum() < 2:
            continue
        v = np.where(finite, v, np.median(v[finite]))
        sd = float(v.std())
        if not np.isfinite(sd) or sd == 0:
            continue
        nums.append((v - v.mean()) / sd / 2.0)
    n = len(rows)
    return ConfigurationFeatures(np.column_stack(cats) if cats else np.zeros((n, 0), dtype=np.int64),
                                 np.column_stack(nums) if nums else np.zeros((n, 0)))


@dataclass
class EngineSettings:
    """The engine's knobs. The defaults (experts, their prior mixture first, no Gaussian process, cost exponent 1) are
    the setting the replay's nested leave-one-dataset-out chose for 24 of its 26 held-out tasks (the other two:
    the same with cost exponent 0; see docs/automl_replay.md).

    Attributes:
        experts: weigh past tasks by evidence (else the meta-model's view alone).
        gp: model the residuals with a Gaussian process.
        cost_exponent: EI per cost**cost_exponent (0: ignore cost).
        temperature: power on the experts' likelihoods (1: Bayesian model averaging; lower: slower to commit).
        prior_weight: the meta-model expert's prior weight relative to one past task's.
        variance_prior: pseudo-observations of the meta-model's within-task spread behind every spread estimated
            from the history (an expert's, the Gaussian process's), so that a few lucky fits cannot claim certainty.
        max_false_skip: the per-search false-skip budget (0: never skip).
        min_history: scored evaluations before experts, the Gaussian process and the skip rule are used.
        fail_prior: pseudo-evaluations behind the predicted failure probability.
        max_experts: past tasks weighed at most (the best-covering ones).
        prior_experts: before ``min_history`` scores, rank by the experts' prior mixture (the past tasks' consensus,
            as a best-on-average order does) instead of the meta-model's predictions alone.
    """

    experts: bool = True
    gp: bool = False
    cost_exponent: float = 1.0
    temperature: float = 0.5
    prior_weight: float = 4.0
    variance_prior: float = 5.0
    max_false_skip: float = 0.05
    min_history: int = 3
    fail_prior: float = 4.0
    max_experts: int = 200
    prior_experts: bool = True


@dataclass
class Observation:
    """One evaluated candidate: its index, its score in points (None when the run failed), its runtime (s)."""

    index: int
    points: float | None
    runtime_s: float | None = None


@dataclass
class Suggestion:
    """One proposed candidate and why."""

    index: int
    acquisition: float
    expected_improvement: float
    p_beat: float
    mean: float
    sd: float
    runtime_s: float
    p_fail: float


@dataclass
class SuggestResult:
    """The proposals, the candidates the skip rule excluded, and what the belief rests on."""

    suggestions: list[Suggestion]
    excluded: np.ndarray
    spent: float
    incumbent: float | None
    basis: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Nothing left to propose: every remaining candidate was evaluated or excluded."""
        return not self.suggestions


class SearchEngine:
    """Proposes what to evaluate next on one task (see the module docstring).

    Args:
        knowledge: the task's candidates as the knowledge base sees them.
        settings: the knobs.
    """

    def __init__(self, knowledge: TaskKnowledge, settings: EngineSettings | None = None) -> None:
        self.k = knowledge
        self.s = settings or EngineSettings()
        features = knowledge.features
        self.features = features if isinstance(features, ConfigurationFeatures) else ConfigurationFeatures(
            np.zeros((len(features), 0), dtype=np.int64), np.asarray(features, dtype=float).reshape(len(features), -1))
        z = np.nan_to_num(np.asarray(knowledge.rank_score, dtype=float), nan=0.0)
        z = (z - z.mean()) / (z.std() or 1.0)
        experts = [z]
        log_prior = [math.log(max(self.s.prior_weight, 1e-12))]
        self.expert_names = ["meta-model"]
        if self.s.experts and knowledge.lookup is not None and np.std(knowledge.lookup) > 0:
            lookup = np.nan_to_num(np.asarray(knowledge.lookup, dtype=float), nan=0.0)
            experts.append((lookup - lookup.mean()) / lookup.std())
            log_prior.append(math.log(max(self.s.prior_weight, 1e-12)))
            self.expert_names.append("experience lookup")
        if self.s.experts and knowledge.profiles.size:
            profiles = knowledge.profiles[: self.s.max_experts]
            experts += list(np.where(np.isnan(profiles), z[None, :], profiles))  # abstain -> the meta-model's view
            coverage = np.mean(~np.isnan(profiles), axis=1)
            log_prior += list(np.log(np.maximum(coverage, 1e-3)))
            self.expert_names += knowledge.profile_tasks[: self.s.max_experts]
        self.M = np.vstack(experts)
        self.log_prior = np.asarray(log_prior)
        #: before min_history scores: the experts' prior mixture (the past tasks' consensus order) on the scale of
        #: the meta-model's points, or None to start from the meta-model's points alone
        self.prior_mean: np.ndarray | None = None
        if self.s.prior_experts and len(self.M) > 1:
            w = np.exp(self.log_prior - self.log_prior.max())
            mix = (w / w.sum()) @ self.M
            spread = float(np.std(knowledge.points)) or 1.0
            self.prior_mean = float(np.mean(knowledge.points)) + spread * (mix - mix.mean()) / (float(np.std(mix))
                                                                                                 or 1.0)
        self.b0 = (float(np.std(knowledge.points)) or 1.0) / (float(np.std(z)) or 1.0)

    # -- belief --------------------------------------------------------------------------------------------------

    def belief(self, idx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Mean and sd (points) of one evaluation of every candidate, given the scored ones ``idx`` with ``y``."""
        k, s = self.k, self.s
        n = len(idx)
        if n and not np.all(np.isfinite(y)):
            raise ValueError("scores must be finite (a failed run has no score)")
        prior_var = k.within_sd**2
        if n < s.min_history:
            shift = float(np.mean(y - k.points[idx])) * n / (n + 2.0) if n else 0.0
            if self.prior_mean is not None:
                shift = float(np.mean(y - self.prior_mean[idx])) * n / (n + 2.0) if n else 0.0
                return self.prior_mean + shift, np.full(k.n, k.within_sd), {"mechanism": "experts' prior",
                                                                            "history": n}
            return k.points + shift, np.full(k.n, k.within_sd), {"mechanism": "meta-model", "history": n}
        a, b, raw = _fit_lines(self.M[:, idx], y, self.b0, ridge=2.0)
        var = (n * raw + s.variance_prior * prior_var) / (n + s.variance_prior)
        loglik = -0.5 * n * np.log(var) - 0.5 * n * raw / var
        logw = self.log_prior + s.temperature * loglik
        w = np.exp(logw - logw.max())
        w /= w.sum()
        means = a[:, None] + b[:, None] * self.M
        mu = w @ means
        between = np.maximum(w @ means**2 - mu**2, 0.0)
        within = float(w @ var)
        top = np.argsort(-w)[:3]
        basis: dict[str, Any] = {"mechanism": "experts" if len(w) > 1 else "meta-model", "history": n,
                                 "experts": len(w) - 1, "meta_model_weight": round(float(w[0]), 4),
                                 "top_experts": [{"task": self.expert_names[i], "weight": round(float(w[i]), 4)}
                                                 for i in top]}
        if not s.gp:
            return mu, np.sqrt(within + between), basis
        r = y - mu[idx]
        total = (n * float(np.mean(r**2)) + s.variance_prior * within) / (n + s.variance_prior)
        gp_mu, gp_var, lengthscale = _gp_residuals(self.features, idx, r, total=total)
        basis["mechanism"] += "+gp"
        basis["gp_lengthscale"] = lengthscale
        return mu + gp_mu, np.sqrt(gp_var + between), basis

    # -- proposals -----------------------------------------------------------------------------------------------

    def suggest(self, history: Sequence[Observation], k: int = 1) -> SuggestResult:
        """The next ``k`` candidates to evaluate (fewer when fewer remain).

        Raises:
            ValueError: a history index is out of range, or ``k`` < 1.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        kn, s = self.k, self.s
        seen = np.zeros(kn.n, dtype=bool)
        idx: list[int] = []
        ys: list[float] = []
        fails = np.zeros(kn.groups.max() + 1 if kn.n else 1)
        tries = np.zeros_like(fails)
        log_ratio: list[float] = []
        for h in history:
            if not 0 <= h.index < kn.n:
                raise ValueError(f"history index {h.index} is not a candidate (0..{kn.n - 1})")
            seen[h.index] = True
            g = kn.groups[h.index]
            tries[g] += 1
            if h.points is None or not math.isfinite(h.points):
                fails[g] += 1
            else:
                idx.append(h.index)
                ys.append(float(h.points))
            if h.runtime_s is not None and math.isfinite(h.runtime_s) and h.runtime_s > 0:
                log_ratio.append(math.log(h.runtime_s / kn.cost[h.index]))
        idx_a, y = np.asarray(idx, dtype=int), np.asarray(ys, dtype=float)
        mu, sd, basis = self.belief(idx_a, y)
        sd = np.maximum(sd, 1e-6)
        p_fail = (kn.p_fail * s.fail_prior + fails[kn.groups]) / (s.fail_prior + tries[kn.groups])
        shift = sum(log_ratio) / (len(log_ratio) + 2.0)
        cost = kn.cost * math.exp(shift)
        avail = ~seen
        incumbent = float(y.max()) if len(y) else None
        target = incumbent if incumbent is not None else float(mu[avail].max()) if avail.any() else 0.0
        zed = (mu - target) / sd
        ei = sd * (zed * ndtr(zed) + np.exp(-0.5 * zed**2) / math.sqrt(2 * math.pi))
        p_beat = (1.0 - p_fail) * ndtr(zed)
        acq = (1.0 - p_fail) * ei / cost**s.cost_exponent
        excluded = np.zeros(kn.n, dtype=bool)
        spent = 0.0
        if incumbent is not None and len(y) >= s.min_history and s.max_false_skip > 0:
            order = np.flatnonzero(avail)[np.argsort(p_beat[avail], kind="stable")]
            within = np.cumsum(p_beat[order]) <= s.max_false_skip
            excluded[order[within]] = True
            spent = float(p_beat[order[within]].sum())
        choosable = avail & ~excluded
        picks = np.flatnonzero(choosable)[np.argsort(-acq[choosable], kind="stable")[:k]]
        suggestions = [Suggestion(index=int(i), acquisition=float(acq[i]), expected_improvement=float(ei[i]),
                                  p_beat=float(p_beat[i]), mean=float(mu[i]), sd=float(sd[i]),
                                  runtime_s=float(cost[i]), p_fail=float(p_fail[i])) for i in picks]
        basis.update(evaluated=int(seen.sum()), failed=int(fails.sum()), excluded=int(excluded.sum()))
        return SuggestResult(suggestions, np.flatnonzero(excluded), spent, incumbent, basis)


def _fit_lines(M: np.ndarray, y: np.ndarray, b0: float, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row m of ``M``: least squares ``y ~ a + b m`` with ``b >= 0`` pulled toward ``b0`` by ``ridge``
    pseudo-points; returns a, b and the residual variance."""
    mx = M.mean(axis=1)
    dx = M - mx[:, None]
    dy = y - y.mean()
    b = np.maximum((dx @ dy + ridge * b0) / ((dx**2).sum(axis=1) + ridge), 0.0)
    a = y.mean() - b * mx
    res = y[None, :] - (a[:, None] + b[:, None] * M)
    return a, b, (res**2).mean(axis=1)


def _matern52(sq: np.ndarray, lengthscale: float) -> np.ndarray:
    d = np.sqrt(sq) / lengthscale
    return (1.0 + _SQRT5 * d + 5.0 / 3.0 * d**2) * np.exp(-_SQRT5 * d)


def _gp_residuals(features: ConfigurationFeatures, idx: np.ndarray, r: np.ndarray, *, total: float,
                  lengthscales: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
                  noise_shares: Sequence[float] = (0.05, 0.2, 0.5)) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior mean and variance of one evaluation of every candidate under a zero-mean GP fit to the residuals
    ``r`` at candidates ``idx``: prior variance ``total`` (signal plus noise), lengthscale and noise share by marginal
    likelihood on a grid (the distances computed once)."""
    from scipy.linalg import cho_solve, solve_triangular

    total = max(float(total), 0.25)
    sq_hh = features.sq_distances(idx, idx)
    eye = np.eye(len(idx))
    best: tuple[float, float, float, np.ndarray, np.ndarray] | None = None
    for ls in lengthscales:
        base = _matern52(sq_hh, ls)
        for share in noise_shares:
            amp, noise = total * (1.0 - share), total * share
            try:
                L = np.linalg.cholesky(amp * base + noise * eye)
            except np.linalg.LinAlgError:
                continue
            alpha = cho_solve((L, True), r)
            lml = float(-0.5 * r @ alpha - np.log(np.diag(L)).sum())
            if best is None or lml > best[0]:
                best = (lml, ls, share, L, alpha)
    n = len(features)
    if best is None:
        return np.zeros(n), np.full(n, total), float("nan")
    _, ls, share, L, alpha = best
    amp, noise = total * (1.0 - share), total * share
    Ks = amp * _matern52(features.sq_distances(slice(None), idx), ls)
    v = solve_triangular(L, Ks.T, lower=True)
    var = np.maximum(amp - (v**2).sum(axis=0), 1e-9) + noise
    return Ks @ alpha, var, ls

"""An AutoGOAL-style probabilistic grammar search (PGE) with a uniform or a knowledge-biased initial distribution.

The distribution is a product of categorical distributions, one per choice of the :class:`SearchSpace` (model, then
method, then each hyperparameter; numeric choices discretized as the space does). A configuration is sampled like a
derivation of a grammar, one production after another: each choice is drawn from its distribution restricted to the
levels that still lead to an existing, not yet proposed configuration (renormalized), so every sample is a real
candidate and nothing needs mapping. After each **generation** of ``pop_size`` evaluations the distribution moves
toward the ``selection`` best configurations of that generation, as in AutoGOAL's probabilistic grammatical
evolution::

    p  <-  (1 - lr) * p  +  lr * freq(level among the best k)

Failed evaluations are never among the best, so they pull no probability toward their choices.

**Knowledge-biased prior** (:meth:`GrammarDistribution.biased`): each level's weight is the mean, over the
candidate configurations that take that level, of ``exp(z / temperature)`` where ``z`` is the meta-model's ranking
score standardized over the task's candidates; it is then multiplied by ``1 - mean predicted failure probability``
of those configurations (past failures of similar runs are evidence against a choice), normalized, and mixed with
the uniform distribution (``uniform_mix``) so that no choice is ever ruled out.
:meth:`GrammarDistribution.from_priors` reads the service's exported priors (:meth:`metaml._decision.Recommendation.
grammar`) instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from metaml.search._space import SearchSpace


class GrammarDistribution:
    """A product of categorical distributions over the choices of a :class:`SearchSpace`.

    Args:
        space: the search space.
        probs: one probability vector per dimension (normalized on construction).
    """

    def __init__(self, space: SearchSpace, probs: list[np.ndarray]) -> None:
        if len(probs) != len(space.dims):
            raise ValueError(f"need {len(space.dims)} probability vectors, got {len(probs)}")
        self.space = space
        self.probs = []
        for d, p in zip(space.dims, probs, strict=True):
            p = np.asarray(p, dtype=float)
            if p.shape != (d.n_levels,) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(f"bad probability vector for {d.name}: {p}")
            self.probs.append(p / p.sum())

    @classmethod
    def uniform(cls, space: SearchSpace) -> GrammarDistribution:
        """Every level of every choice equally likely (zero-shot)."""
        return cls(space, [np.full(d.n_levels, 1.0 / d.n_levels) for d in space.dims])

    @classmethod
    def biased(cls, space: SearchSpace, rank_score: np.ndarray, p_fail: np.ndarray | None = None, *,
               temperature: float = 1.0, uniform_mix: float = 0.1) -> GrammarDistribution:
        """The knowledge-biased initial distribution from per-configuration predictions.

        Args:
            space: the search space.
            rank_score: the meta-model's ranking score of each configuration (higher is better).
            p_fail: predicted failure probability of each configuration (evidence against its choices).
            temperature: softmax temperature over standardized scores (lower: sharper).
            uniform_mix: share of the uniform distribution mixed in.
        """
        score = np.asarray(rank_score, dtype=float)
        std = score.std()
        z = (score - score.mean()) / std if std > 0 else np.zeros_like(score)
        weight = np.exp(np.clip(z / max(temperature, 1e-6), -30, 30))
        fail = np.clip(np.nan_to_num(np.asarray(p_fail, dtype=float), nan=0.0), 0, 1) if p_fail is not None \
            else np.zeros_like(score)
        probs = []
        for j, d in enumerate(space.dims):
            w = np.zeros(d.n_levels)
            for k, members in enumerate(space.level_members(j)):
                if members.size:
                    w[k] = weight[members].mean() * (1.0 - fail[members].mean())
            w = w / w.sum() if w.sum() > 0 else np.full(d.n_levels, 1.0 / d.n_levels)
            probs.append((1 - uniform_mix) * w + uniform_mix / d.n_levels)
        return cls(space, probs)

    @classmethod
    def from_priors(cls, space: SearchSpace, priors: Mapping[str, Mapping[str, Any]], *,
                    uniform_mix: float = 0.1) -> GrammarDistribution:
        """The initial distribution from the priors :func:`metaml._decision.recommend` exports, keyed by the
        space's dimension names (runs-table columns): categorical weights by level label, or a (log)normal density
        evaluated at each numeric level (at the bin's geometric centre for a binned dimension)."""
        probs = []
        for d in space.dims:
            prior = priors.get(d.name)
            w = np.full(d.n_levels, 1.0)
            if prior and prior.get("type") == "categorical":
                table = {str(_norm(v)): float(x) for v, x in zip(prior["values"], prior["weights"], strict=True)}
                w = np.array([table.get(_norm_label(lv), 0.0) for lv in d.levels])
            elif prior and prior.get("type") in ("lognormal", "normal"):
                w = np.array([_density(prior, _level_value(lv)) for lv in d.levels])
            w = np.nan_to_num(w, nan=0.0)
            w = w / w.sum() if w.sum() > 0 else np.full(d.n_levels, 1.0 / d.n_levels)
            probs.append((1 - uniform_mix) * w + uniform_mix / d.n_levels)
        return cls(space, probs)

    def sample(self, rng: np.random.Generator, available: np.ndarray) -> int:
        """One configuration (index), drawn choice by choice among the available configurations."""
        mask = np.asarray(available, dtype=bool).copy()
        if not mask.any():
            raise ValueError("no configuration left to propose")
        for j, p in enumerate(self.probs):
            col = self.space.codes[:, j]
            present = np.bincount(col[mask], minlength=len(p)) > 0
            w = p * present
            w = w if w.sum() > 0 else present.astype(float)
            k = rng.choice(len(p), p=w / w.sum())
            mask &= col == k
        return int(rng.choice(np.flatnonzero(mask)))

    def update(self, best: np.ndarray, learning_rate: float) -> None:
        """Move every choice's distribution toward the level frequencies among the ``best`` configurations."""
        best = np.asarray(best, dtype=int)
        if best.size == 0:
            return
        for j, p in enumerate(self.probs):
            freq = np.bincount(self.space.codes[best, j], minlength=len(p)) / best.size
            self.probs[j] = (1 - learning_rate) * p + learning_rate * freq

    def probability(self, i: int) -> float:
        """Unrestricted probability of configuration ``i`` under the product distribution."""
        return float(np.prod([p[self.space.codes[i, j]] for j, p in enumerate(self.probs)]))

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {d.name: {lv: float(x) for lv, x in zip(d.levels, p, strict=True)}
                for d, p in zip(self.space.dims, self.probs, strict=True)}


def _norm(v: Any) -> Any:
    if v is None or v in ("None", "nan", "<NA>", "<none>"):
        return "<none>"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return "<none>" if math.isnan(f) else f"{f:.6g}"


def _norm_label(label: str) -> str:
    return str(_norm(label))


def _level_value(label: str) -> float:
    if label.startswith("["):
        lo, hi = (float(x) for x in label.strip("[]").split(","))
        return math.sqrt(lo * hi) if lo > 0 and hi > 0 else (lo + hi) / 2
    try:
        return float(label)
    except ValueError:
        return float("nan")


def _density(prior: Mapping[str, Any], x: float) -> float:
    if not math.isfinite(x):
        return float("nan")
    if prior["type"] == "lognormal":
        if x <= 0:
            return 0.0
        x = math.log(x)
    sigma = max(float(prior["sigma"]), 1e-6)
    return math.exp(-0.5 * ((x - float(prior["mu"])) / sigma) ** 2)


class GrammarSearcher:
    """Probabilistic grammar search over a task's configurations.

    Args:
        space: the search space.
        rng: random generator.
        distribution: the initial distribution (uniform when None).
        pop_size: evaluations per generation.
        selection: how many of a generation's best pull the distribution.
        learning_rate: AutoGOAL's ``lr``.
    """

    name = "grammar"

    def __init__(self, space: SearchSpace, rng: np.random.Generator, distribution: GrammarDistribution | None = None,
                 *, pop_size: int = 8, selection: int = 2, learning_rate: float = 0.2) -> None:
        self.space = space
        self.rng = rng
        self.distribution = distribution or GrammarDistribution.uniform(space)
        self.pop_size = pop_size
        self.selection = selection
        self.learning_rate = learning_rate
        self.generation: list[tuple[int, float | None]] = []
        self.generations = 0

    def ask(self, available: np.ndarray) -> int:
        return self.distribution.sample(self.rng, available)

    def tell(self, i: int, score: float | None) -> None:
        """Record an evaluation (``score`` None: it failed)."""
        self.generation.append((i, score))
        if len(self.generation) >= self.pop_size:
            scored = [(s, j) for j, s in self.generation if s is not None]
            scored.sort(key=lambda t: -t[0])
            self.distribution.update(np.array([j for _, j in scored[: self.selection]], dtype=int),
                                     self.learning_rate)
            self.generation = []
            self.generations += 1

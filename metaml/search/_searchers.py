"""Searchers over a task's configurations, each alone or with the knowledge base's help, and the replay loop.

Three searchers:

* ``random``: configurations drawn uniformly without replacement from the candidate set;
* ``tpe``: Optuna's TPE (:class:`optuna.samplers.TPESampler`, defaults) over one categorical parameter per
  dimension of the :class:`~metaml.search.SearchSpace` (its observed levels). A sampled point rarely is an existing
  configuration: it is mapped to the nearest not yet proposed one (:meth:`SearchSpace.nearest`); the asked trial is
  closed as FAIL (TPE ignores failed trials) and the configuration actually evaluated is added to the study as a
  complete trial with its real score, so TPE learns only from what was really run. A failed evaluation is added
  with the worst score observed so far (no trial when nothing has been observed yet);
* ``grammar``: the probabilistic grammar search of :mod:`metaml.search._grammar`.

Four variants of each (:data:`VARIANTS`):

* ``alone``: zero-shot;
* ``prior``: knowledge-biased start. Random search and TPE first evaluate the ``warm_k`` configurations the meta-model
  ranks best (TPE through ``study.enqueue_trial``), by expected standing: ``(1 - p_fail) z + p_fail min(z)`` with
  ``z`` the ranking score standardized over the task's candidates (a failure counts as the worst outcome). The
  grammar search starts from :meth:`GrammarDistribution.biased`;
* ``skip``: before each evaluation after the first, :func:`metaml._decision.decide` compares the candidate with the
  incumbent (its score and its configuration, and the search's history, so the residuals are recalibrated to the task
  once ``min_history`` configurations have scored) and the candidate is skipped when its calibrated probability of
  beating the incumbent is below ``max_false_skip``. A skipped candidate is removed from the candidate set, costs
  ``skip_cost_fraction`` of its cost (0 by default) and is recorded; the searcher receives no observation for it;
  the evaluation budget counts only evaluations that ran;
* ``prior+skip``: both.

The meta-model is queried once per task (:class:`Knowledge`): its predictions for every candidate are computed up
front and served to :func:`metaml._decision.decide` by index, which is exactly what ``decide`` would compute from
the model itself (a test checks they agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from metaml._decision import Decision, decide
from metaml.search._grammar import GrammarDistribution, GrammarSearcher
from metaml.search._replay import ReplayEnv, ReplayTask, SearchTrace
from metaml.search._space import SearchSpace

SEARCHERS = ("random", "tpe", "grammar")
VARIANTS = ("alone", "prior", "skip", "prior+skip")


@dataclass
class Residuals:
    """What :func:`metaml._decision.decide` reads from a fitted outcome estimator: calibrated residual samples."""

    residuals_: np.ndarray
    pair_residuals_: np.ndarray


class _PredictionLookup:
    """Stands in for a :class:`~metaml.MetaModel` inside :func:`decide`: serves the predictions computed once for
    the task's candidates, by row index, with the fitted outcome estimator's calibrated residuals."""

    def __init__(self, predictions: pd.DataFrame, outcome: Any) -> None:
        self._pred = predictions
        self.outcome_ = outcome

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self._pred.loc[rows.index]


@dataclass
class Knowledge:
    """The meta-model's view of one task's candidates.

    Attributes:
        predictions: per configuration (index 0..n-1): ``points``, ``lo``, ``hi``, ``rank_score``, ``runtime_s``,
            ``p_fail`` (:meth:`metaml.MetaModel.predict`).
        outcome: the outcome estimator's residual samples (:class:`Residuals` or the estimator itself).
    """

    predictions: pd.DataFrame
    outcome: Any
    _lookup: _PredictionLookup | None = field(default=None, repr=False)

    @classmethod
    def from_model(cls, model: Any, task: ReplayTask) -> Knowledge:
        """Score every candidate of ``task`` with a fitted :class:`~metaml.MetaModel` (one call)."""
        pred = model.predict(task.rows.reset_index(drop=True)).reset_index(drop=True)
        out = model.outcome_
        return cls(pred, Residuals(np.asarray(out.residuals_), np.asarray(out.pair_residuals_)))

    @property
    def standing(self) -> np.ndarray:
        """Expected standing: ``(1 - p_fail) z + p_fail min(z)``, z the standardized ranking score."""
        score = self.predictions["rank_score"].to_numpy(dtype=float)
        std = score.std()
        z = (score - score.mean()) / std if std > 0 else np.zeros_like(score)
        p = np.clip(self.predictions["p_fail"].fillna(0.0).to_numpy(dtype=float), 0, 1)
        return (1 - p) * z + p * z.min()

    def top(self, k: int) -> list[int]:
        """The ``k`` configurations with the best expected standing."""
        return [int(i) for i in np.argsort(-self.standing, kind="stable")[:k]]

    def decide(self, i: int, incumbent: float, incumbent_index: int | None, *, tolerance: float = 0.0,
               max_false_skip: float = 0.05, history: Sequence[tuple[int, float]] = ()) -> Decision:
        """:func:`metaml._decision.decide` for candidate ``i`` against the incumbent, with the search's
        ``history`` of (configuration, score) pairs (NaN for a failed one)."""
        if self._lookup is None:
            self._lookup = _PredictionLookup(self.predictions, self.outcome)
        inc = pd.DataFrame(index=[incumbent_index]) if incumbent_index is not None else None
        past = pd.DataFrame(index=[h[0] for h in history]) if history else None
        return decide(self._lookup, pd.DataFrame(index=[i]), incumbent, tolerance=tolerance, incumbent_config=inc,
                      history=past, history_points=[h[1] for h in history] if history else None,
                      max_false_skip=max_false_skip)

    def grammar_prior(self, space: SearchSpace, *, temperature: float = 1.0,
                      uniform_mix: float = 0.1) -> GrammarDistribution:
        return GrammarDistribution.biased(space, self.predictions["rank_score"].to_numpy(dtype=float),
                                          self.predictions["p_fail"].to_numpy(dtype=float),
                                          temperature=temperature, uniform_mix=uniform_mix)


class Searcher(Protocol):
    name: str

    def ask(self, available: np.ndarray) -> int: ...

    def tell(self, i: int, score: float | None, *, skipped: bool = False) -> None: ...


class RandomSearcher:
    """Uniform random search without replacement; ``warm_start`` configurations are proposed first."""

    name = "random"

    def __init__(self, space: SearchSpace, rng: np.random.Generator, warm_start: list[int] | None = None) -> None:
        self.space = space
        self.rng = rng
        self.queue = list(warm_start or [])

    def ask(self, available: np.ndarray) -> int:
        while self.queue:
            i = self.queue.pop(0)
            if available[i]:
                return i
        return int(self.rng.choice(np.flatnonzero(available)))

    def tell(self, i: int, score: float | None, *, skipped: bool = False) -> None:
        return None


class TPESearcher:
    """Optuna TPE over the space's categorical dimensions, each sample mapped to the nearest available
    configuration; ``warm_start`` configurations are enqueued first."""

    name = "tpe"

    def __init__(self, space: SearchSpace, rng: np.random.Generator, warm_start: list[int] | None = None,
                 *, seed: int = 0) -> None:
        import optuna
        from optuna.distributions import CategoricalDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.space = space
        self.rng = rng
        self.distributions = {d.name: CategoricalDistribution(list(d.levels)) for d in space.dims}
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        for i in warm_start or []:
            self.study.enqueue_trial(space.params(i))
        self._pending: Any = None
        self._observed: list[float] = []

    def ask(self, available: np.ndarray) -> int:
        self._pending = self.study.ask(self.distributions)
        if not self.space.dims:
            return int(self.rng.choice(np.flatnonzero(available)))
        point = self.space.encode(self._pending.params)
        return self.space.nearest(point, available, self.rng)

    def tell(self, i: int, score: float | None, *, skipped: bool = False) -> None:
        if self._pending is not None:
            self.study.tell(self._pending, state=self._optuna.trial.TrialState.FAIL)
            self._pending = None
        if skipped or not self.space.dims:
            return
        value = score if score is not None else (min(self._observed) if self._observed else None)
        if value is None:
            return
        if score is not None:
            self._observed.append(score)
        self.study.add_trial(self._optuna.trial.create_trial(params=self.space.params(i),
                                                             distributions=self.distributions, value=value))


@dataclass
class SearchSettings:
    """Knobs of the searchers and the skip rule (defaults fixed before the benchmark ran, not tuned on it).

    Attributes:
        warm_k: configurations proposed first by random search and TPE with the prior (the service's
            ``Recommendation.optuna`` default).
        max_false_skip: the skip rule's threshold (stated false-skip rate).
        tolerance: points below the incumbent a candidate must be likely to beat.
        skip_cost_fraction: share of a skipped candidate's cost charged.
        pop_size, selection, learning_rate: the grammar search's generation size, elite size and AutoGOAL ``lr``.
        temperature, uniform_mix: the biased grammar prior's sharpness and uniform share.
    """

    warm_k: int = 5
    max_false_skip: float = 0.05
    tolerance: float = 0.0
    skip_cost_fraction: float = 0.0
    pop_size: int = 8
    selection: int = 2
    learning_rate: float = 0.2
    temperature: float = 1.0
    uniform_mix: float = 0.1


def make_searcher(name: str, task: ReplayTask, *, prior: bool, knowledge: Knowledge | None, seed: int,
                  settings: SearchSettings) -> Searcher:
    """One searcher for one search."""
    rng = np.random.default_rng(seed)
    if prior and knowledge is None:
        raise ValueError("a knowledge-biased prior needs the meta-model's predictions")
    if name == "random":
        return RandomSearcher(task.space, rng, knowledge.top(settings.warm_k) if prior else None)
    if name == "tpe":
        return TPESearcher(task.space, rng, knowledge.top(settings.warm_k) if prior else None, seed=seed)
    if name == "grammar":
        dist = knowledge.grammar_prior(task.space, temperature=settings.temperature,
                                       uniform_mix=settings.uniform_mix) if prior else None
        return GrammarSearcher(task.space, rng, dist, pop_size=settings.pop_size, selection=settings.selection,
                               learning_rate=settings.learning_rate)
    raise ValueError(f"unknown searcher {name!r}; choose from {', '.join(SEARCHERS)}")


def run_search(task: ReplayTask, searcher: str, *, variant: str = "alone", knowledge: Knowledge | None = None,
               budget: int, seed: int = 0, settings: SearchSettings | None = None) -> SearchTrace:
    """Replay one search on ``task`` until ``budget`` evaluations ran (or the candidate set is exhausted).

    Args:
        task: the held-out task.
        searcher: ``random``, ``tpe`` or ``grammar``.
        variant: ``alone``, ``prior``, ``skip`` or ``prior+skip``.
        knowledge: the meta-model's predictions for the task (needed by every variant but ``alone``).
        budget: evaluations that run (skipped candidates do not count).
        seed: the search's seed.
        settings: searcher and skip-rule knobs.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    settings = settings or SearchSettings()
    use_skip = "skip" in variant
    if use_skip and knowledge is None:
        raise ValueError("the skip rule needs the meta-model's predictions")
    s = make_searcher(searcher, task, prior="prior" in variant, knowledge=knowledge, seed=seed, settings=settings)
    budget = min(budget, task.n_configs)
    env = ReplayEnv(task, skip_cost_fraction=settings.skip_cost_fraction,
                    trace=SearchTrace(task.task_key, searcher, variant, seed, budget))
    while env.n_evaluations < budget and env.available.any():
        i = s.ask(env.available)
        if use_skip and env.incumbent is not None:
            d = knowledge.decide(i, env.incumbent, env.incumbent_index, tolerance=settings.tolerance,
                                 max_false_skip=settings.max_false_skip,
                                 history=[(e[0], e[2]) for e in env.trace.evals])
            if d.action == "skip":
                env.skip(i, d.p_beat)
                s.tell(i, None, skipped=True)
                continue
        s.tell(i, env.evaluate(i))
    return env.trace

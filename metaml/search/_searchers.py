"""The searchers the replay compares, and the replay loop.

Zero-shot (they know nothing of other tasks):

* ``random``: configurations drawn uniformly without replacement;
* ``tpe`` / ``gp``: Optuna's :class:`~optuna.samplers.TPESampler` / :class:`~optuna.samplers.GPSampler` (defaults,
  seeded) over one categorical parameter per dimension of the :class:`~metaml.search.SearchSpace`. A sampled point is
  mapped to the nearest configuration not yet evaluated (:meth:`SearchSpace.nearest`); the asked trial is closed as
  FAIL (samplers ignore failed trials) and the configuration actually evaluated is added as a complete trial with its
  real score, so the sampler learns only from what really ran. A failed evaluation is added with the worst score seen
  so far;
* ``grammar``: the AutoGOAL-style probabilistic grammar search of :mod:`metaml.search._grammar`.

With knowledge (each built from a meta-model trained without the task's dataset):

* ``portfolio``: the configurations in their best-on-average order over the other tasks (the standing of the
  configuration, else of its checkpoint and method..., :meth:`metaml._experience.Experience.lookup`; an
  Auto-sklearn 2.0 style portfolio), ties in random order;
* ``static``: the meta-model's expected standing, ``(1 - p_fail) z + p_fail min(z)``, best first;
* ``warmstart``: the XAutoLM recipe: first the best configuration of each of the ``warm_k`` past tasks nearest to the
  task by dataset meta-features, then TPE;
* ``engine``: :class:`metaml.search.SearchEngine`, learning from the task's results through the knowledge; it may end
  a search early (every remaining candidate excluded by its skip rule).

:func:`run_search` replays one search until the target is reached or nothing is left to propose (uncensored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from metaml.search._engine import EngineSettings, Observation, SearchEngine, TaskKnowledge
from metaml.search._grammar import GrammarSearcher
from metaml.search._replay import ReplayEnv, ReplayTask, SearchTrace
from metaml.search._space import SearchSpace

ZERO_SHOT = ("random", "tpe", "gp", "grammar")
KNOWLEDGE = ("portfolio", "static", "warmstart")
SEARCHERS = (*ZERO_SHOT, *KNOWLEDGE, "engine")


class Searcher(Protocol):
    name: str

    def ask(self, available: np.ndarray) -> int | None:
        """The next configuration among ``available`` (None: the searcher proposes nothing more)."""

    def tell(self, i: int, score: float | None, runtime: float) -> None:
        """The result of evaluating configuration ``i`` (score None: it failed)."""


class RandomSearcher:
    """Uniform random search without replacement."""

    name = "random"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def ask(self, available: np.ndarray) -> int | None:
        return int(self.rng.choice(np.flatnonzero(available)))

    def tell(self, i: int, score: float | None, runtime: float) -> None:
        return None


class OrderSearcher:
    """A fixed order of preference (higher ``priority`` first; ties in random order)."""

    def __init__(self, name: str, priority: np.ndarray, rng: np.random.Generator) -> None:
        self.name = name
        self.order = np.lexsort((rng.random(len(priority)), -np.asarray(priority, dtype=float)))

    def ask(self, available: np.ndarray) -> int | None:
        for i in self.order:
            if available[i]:
                return int(i)
        return None

    def tell(self, i: int, score: float | None, runtime: float) -> None:
        return None


class OptunaSearcher:
    """An Optuna sampler over the space's categorical dimensions, each sample mapped to the nearest available
    configuration (see the module docstring)."""

    def __init__(self, name: str, space: SearchSpace, rng: np.random.Generator, *, seed: int,
                 warm_start: Sequence[int] = ()) -> None:
        import optuna
        from optuna.distributions import CategoricalDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.name = name
        self.space = space
        self.rng = rng
        self.distributions = {d.name: CategoricalDistribution(list(d.levels)) for d in space.dims}
        sampler = optuna.samplers.TPESampler(seed=seed) if name == "tpe" else \
            optuna.samplers.GPSampler(seed=seed)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.queue = list(warm_start)
        self._pending: Any = None
        self._observed: list[float] = []

    def ask(self, available: np.ndarray) -> int | None:
        while self.queue:
            i = self.queue.pop(0)
            if available[i]:
                return i
        if not self.space.dims:
            return int(self.rng.choice(np.flatnonzero(available)))
        self._pending = self.study.ask(self.distributions)
        return self.space.nearest(self.space.encode(self._pending.params), available, self.rng)

    def tell(self, i: int, score: float | None, runtime: float) -> None:
        if self._pending is not None:
            self.study.tell(self._pending, state=self._optuna.trial.TrialState.FAIL)
            self._pending = None
        if not self.space.dims:
            return
        value = score if score is not None else (min(self._observed) if self._observed else None)
        if value is None:
            return
        if score is not None:
            self._observed.append(score)
        self.study.add_trial(self._optuna.trial.create_trial(params=self.space.params(i),
                                                             distributions=self.distributions, value=value))


class GrammarReplaySearcher:
    """The grammar search behind the replay's interface."""

    name = "grammar"

    def __init__(self, space: SearchSpace, rng: np.random.Generator) -> None:
        self.inner = GrammarSearcher(space, rng)

    def ask(self, available: np.ndarray) -> int | None:
        return self.inner.ask(available)

    def tell(self, i: int, score: float | None, runtime: float) -> None:
        self.inner.tell(i, score)


class EngineSearcher:
    """:class:`~metaml.search.SearchEngine` behind the replay's interface (one proposal at a time)."""

    name = "engine"

    def __init__(self, knowledge: TaskKnowledge, settings: EngineSettings | None = None) -> None:
        self.engine = SearchEngine(knowledge, settings)
        self.history: list[Observation] = []
        self.excluded = np.zeros(0, dtype=int)

    def ask(self, available: np.ndarray) -> int | None:
        result = self.engine.suggest(self.history, 1)
        self.excluded = result.excluded
        return result.suggestions[0].index if result.suggestions else None

    def tell(self, i: int, score: float | None, runtime: float) -> None:
        self.history.append(Observation(i, score, runtime))


def run_search(task: ReplayTask, searcher: Searcher, *, target: float, seed: int = 0,
               max_evaluations: int | None = None) -> SearchTrace:
    """Replay one search on ``task`` until a configuration within ``target`` points of the best is found, the
    searcher proposes nothing more, or (``max_evaluations``) that many evaluations ran.

    Returns:
        The trace; ``trace.excluded`` lists what an engine searcher had excluded when it stopped.
    """
    env = ReplayEnv(task, trace=SearchTrace(task.task_key, searcher.name, "", seed, task.n_configs))
    limit = max_evaluations or task.n_configs
    while env.n_evaluations < limit and env.available.any():
        i = searcher.ask(env.available)
        if i is None:
            break
        score = env.evaluate(i)
        searcher.tell(i, score, float(task.cost[i]))
        if env.incumbent is not None and task.best - env.incumbent <= target + 1e-9:
            break
    env.trace.excluded = [int(j) for j in getattr(searcher, "excluded", [])]
    return env.trace

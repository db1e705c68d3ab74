"""The search space, the probabilistic grammar search and its priors, and the searchers on a hand-made space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metaml.search import (
    GrammarDistribution,
    GrammarSearcher,
    OptunaSearcher,
    OrderSearcher,
    RandomSearcher,
    ReplayTask,
    SearchSpace,
    run_search,
)
from metaml.search._searchers import GrammarReplaySearcher


def _configs() -> pd.DataFrame:
    """3 models x 2 methods x 2 learning rates = 12 configurations."""
    rows = [{"model_id": m, "method_name": me, "hparams_learning_rate": lr}
            for m in ("bert-base", "roberta-base", "t5-small")
            for me in ("full", "lora")
            for lr in (1e-5, 1e-4)]
    return pd.DataFrame(rows)


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_configs(_configs())


def test_space_has_one_dimension_per_varying_column_and_maps_points_to_configs(space: SearchSpace) -> None:
    """Each varying column is a dimension with its observed levels; a point maps to itself when it is a
    configuration, and to the nearest available configuration otherwise (numeric levels are ordered)."""
    assert space.names == ["model_id", "method_name", "hparams_learning_rate"]
    assert [d.n_levels for d in space.dims] == [3, 2, 2]
    assert space.dims[2].ordered and not space.dims[0].ordered
    rng = np.random.default_rng(0)
    everything = np.ones(space.n_configs, dtype=bool)
    for i in range(space.n_configs):
        assert space.nearest(space.codes[i], everything, rng) == i
    target = space.encode({"model_id": "roberta-base", "method_name": "lora", "hparams_learning_rate": "0.0001"})
    exact = int(np.flatnonzero((space.codes == target).all(axis=1))[0])
    available = everything.copy()
    available[exact] = False
    near = space.nearest(target, available, rng)
    assert (space.codes[near] != target).sum() == 1


def test_many_numeric_values_are_binned() -> None:
    """A numeric column with more distinct values than ``max_levels`` becomes ordered quantile bins."""
    df = pd.DataFrame({"hparams_learning_rate": np.logspace(-6, -3, 40), "model_id": ["a", "b"] * 20})
    s = SearchSpace.from_configs(df, max_levels=4)
    lr = s.dims[s.names.index("hparams_learning_rate")]
    assert lr.binned and lr.n_levels == 4
    codes = s.codes[:, s.names.index("hparams_learning_rate")]
    assert (np.diff(codes) >= 0).all()


def test_update_moves_probability_toward_the_best(space: SearchSpace) -> None:
    """p <- (1 - lr) p + lr freq(best): every choice of the best configuration gains probability, exactly by the
    AutoGOAL formula, and the distributions stay normalized."""
    dist = GrammarDistribution.uniform(space)
    best = 7
    before = [p.copy() for p in dist.probs]
    dist.update(np.array([best]), learning_rate=0.3)
    for j, (p0, p1) in enumerate(zip(before, dist.probs, strict=True)):
        k = space.codes[best, j]
        expected = 0.7 * p0
        expected[k] += 0.3
        np.testing.assert_allclose(p1, expected)
        assert p1[k] > p0[k] and p1.sum() == pytest.approx(1.0)
    assert dist.probability(best) > GrammarDistribution.uniform(space).probability(best)


def test_grammar_search_learns_where_the_good_configurations_are() -> None:
    """On a space where one model is always best, generations of the grammar search concentrate that model's
    probability well above uniform."""
    rows = [{"model_id": m, "hparams_learning_rate": lr, "hparams_batch_size": b}
            for m in ("a", "b", "c", "d") for lr in (1e-5, 3e-5, 1e-4, 3e-4) for b in (8, 16, 32, 64)]
    df = pd.DataFrame(rows)
    df["score"] = np.where(df["model_id"] == "c", 80.0, 50.0) + np.log10(df["hparams_learning_rate"])
    task = ReplayTask.from_table(df)
    s = GrammarSearcher(task.space, np.random.default_rng(0), pop_size=6, selection=2, learning_rate=0.3)
    available = np.ones(task.n_configs, dtype=bool)
    for _ in range(36):
        i = s.ask(available)
        available[i] = False
        s.tell(i, float(task.score[i]))
    j = task.space.names.index("model_id")
    assert s.distribution.probs[j][task.space.dims[j].levels.index("c")] > 0.5


def test_biased_prior_concentrates_mass_where_predictions_are_high(space: SearchSpace) -> None:
    """Choices whose configurations the meta-model predicts well get more initial probability than under the
    uniform prior; the uniform share keeps every choice possible."""
    model = space.codes[:, 0]
    rank_score = np.where(model == space.dims[0].levels.index("roberta-base"), 2.0, -1.0)
    dist = GrammarDistribution.biased(space, rank_score, uniform_mix=0.1)
    p = dist.probs[0]
    k = space.dims[0].levels.index("roberta-base")
    assert p[k] > 0.6 and p[k] == p.max()
    assert (p > 0.1 / 3 - 1e-12).all()
    np.testing.assert_allclose(dist.probs[1], [0.5, 0.5])
    samples = [dist.sample(np.random.default_rng(s), np.ones(space.n_configs, dtype=bool)) for s in range(300)]
    share = np.mean([space.codes[i, 0] == k for i in samples])
    assert share > 0.5


def test_failed_run_evidence_lowers_a_choice_weight(space: SearchSpace) -> None:
    """With equal predicted outcomes, a choice whose configurations are predicted to fail gets less prior mass,
    in proportion to 1 - mean failure probability."""
    j = space.names.index("method_name")
    lora = space.dims[j].levels.index("lora")
    p_fail = np.where(space.codes[:, j] == lora, 0.6, 0.0)
    flat = np.zeros(space.n_configs)
    dist = GrammarDistribution.biased(space, flat, p_fail, uniform_mix=0.0)
    assert dist.probs[j][lora] == pytest.approx(0.4 / 1.4)
    assert dist.probs[j][lora] < GrammarDistribution.biased(space, flat, None, uniform_mix=0.0).probs[j][lora]


def test_prior_from_the_service_priors(space: SearchSpace) -> None:
    """The grammar reads the priors ``recommend`` exports: categorical weights by label and (log)normal
    densities at numeric levels."""
    priors = {"model_id": {"type": "categorical", "values": ["bert-base", "roberta-base", "t5-small"],
                           "weights": [0.1, 0.8, 0.1]},
              "hparams_learning_rate": {"type": "lognormal", "mu": float(np.log(1e-4)), "sigma": 0.5,
                                        "low": 1e-5, "high": 1e-4}}
    dist = GrammarDistribution.from_priors(space, priors, uniform_mix=0.0)
    assert dist.probs[0].argmax() == space.dims[0].levels.index("roberta-base")
    lr = space.dims[2]
    assert dist.probs[2][lr.levels.index("0.0001")] > dist.probs[2][lr.levels.index("1e-05")]
    np.testing.assert_allclose(dist.probs[1], [0.5, 0.5])


@pytest.mark.parametrize("searcher", ["random", "tpe", "gp", "grammar"])
def test_zero_shot_searchers_run_uncensored_to_the_target(searcher: str) -> None:
    """Every zero-shot searcher (TPE and GP through nearest-configuration mapping) proposes each configuration at most
    once and stops as soon as a configuration within the target of the best is evaluated; with a target of 0 it
    goes on until it finds the best, however long that takes; with max_evaluations it stops there."""
    df = _configs()
    df["score"] = np.arange(len(df), dtype=float)
    df["cost"] = 1.0
    task = ReplayTask.from_table(df)

    def make(seed: int) -> object:
        rng = np.random.default_rng(seed)
        if searcher == "random":
            return RandomSearcher(rng)
        if searcher == "grammar":
            return GrammarReplaySearcher(task.space, rng)
        return OptunaSearcher(searcher, task.space, rng, seed=seed)

    trace = run_search(task, make(1), target=0.0)
    configs = [e[0] for e in trace.evals]
    assert len(configs) == len(set(configs)) and configs[-1] == task.best_index and trace.final_regret == 0.0
    near = run_search(task, make(2), target=2.0)
    assert task.best - task.score[near.evals[-1][0]] <= 2.0
    assert all(task.best - task.score[e[0]] > 2.0 for e in near.evals[:-1])
    short = run_search(task, make(3), target=0.0, max_evaluations=3)
    assert len(short.evals) <= 3


def test_order_searchers_follow_their_priority_with_random_ties() -> None:
    """A portfolio (or static) order evaluates by decreasing priority; equal priorities in a seeded random order."""
    df = _configs()
    df["score"] = np.arange(len(df), dtype=float)
    task = ReplayTask.from_table(df)
    priority = np.r_[np.arange(6, dtype=float), np.zeros(6)]
    trace = run_search(task, OrderSearcher("portfolio", priority, np.random.default_rng(0)), target=0.0)
    order = [e[0] for e in trace.evals]
    assert order[:5] == [5, 4, 3, 2, 1] and order[-1] == task.best_index

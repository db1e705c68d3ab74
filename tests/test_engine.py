"""The search engine behind /v1/suggest on hand-made knowledge: what it proposes first, how past tasks gain or lose
their say, what the Gaussian process carries over, failures, cost and the per-search skip budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metaml.search import EngineSettings, Observation, SearchEngine, TaskKnowledge, configuration_features


def _knowledge(n: int = 12, *, points: np.ndarray | None = None, profiles: np.ndarray | None = None,
               cost: np.ndarray | None = None, p_fail: np.ndarray | None = None, sd: float = 5.0,
               features: np.ndarray | None = None, groups: np.ndarray | None = None) -> TaskKnowledge:
    points = np.linspace(60, 80, n) if points is None else np.asarray(points, dtype=float)
    tasks = [] if profiles is None else [f"past|t{i}|acc|full" for i in range(len(profiles))]
    return TaskKnowledge(points=points, within_sd=sd, rank_score=(points - points.mean()) / (points.std() or 1.0),
                         p_fail=np.zeros(n) if p_fail is None else p_fail,
                         cost=np.ones(n) if cost is None else cost,
                         profiles=np.zeros((0, n)) if profiles is None else profiles,
                         profile_tasks=tasks,
                         features=np.arange(n, dtype=float)[:, None] / 4 if features is None else features,
                         groups=np.arange(n) if groups is None else groups)


def test_first_proposal_is_the_best_expected_utility_and_history_is_never_proposed() -> None:
    """With no history and equal costs the first proposal is the candidate predicted best; k proposals are distinct,
    best acquisition first; evaluated candidates never come back, failed ones included."""
    kn = _knowledge()
    engine = SearchEngine(kn, EngineSettings(cost_exponent=0.0, prior_experts=False))
    first = engine.suggest([], k=4)
    assert first.suggestions[0].index == 11 and first.incumbent is None
    acq = [s.acquisition for s in first.suggestions]
    assert acq == sorted(acq, reverse=True) and len({s.index for s in first.suggestions}) == 4
    history = [Observation(11, 79.0, 1.0), Observation(10, None, 1.0), Observation(9, 77.0, 1.0)]
    nxt = engine.suggest(history, k=12)
    assert not {s.index for s in nxt.suggestions} & {9, 10, 11}
    assert len(nxt.suggestions) + len(nxt.excluded) <= 9
    with pytest.raises(ValueError, match="not a candidate"):
        engine.suggest([Observation(12, 70.0)])
    with pytest.raises(ValueError, match="k must be"):
        engine.suggest([], k=0)


def test_past_tasks_that_agree_with_the_history_gain_the_say_and_those_that_disagree_lose_it() -> None:
    """The meta-model predicts the opposite of the truth; past task 0 ranks like the truth, past task 1 like the
    meta-model. After a few evaluations the belief follows task 0 (its weight grows with the evidence, the
    meta-model's and task 1's vanish) and the next proposal is the true best remaining, not the meta-model's
    favourite."""
    n = 20
    truth = np.linspace(50, 90, n)
    profiles = np.vstack([(truth - truth.mean()) / truth.std(), -(truth - truth.mean()) / truth.std()])
    kn = _knowledge(n, points=truth[::-1].copy(), profiles=profiles, sd=8.0)
    engine = SearchEngine(kn, EngineSettings(gp=False, cost_exponent=0.0, max_false_skip=0.0))
    history = [Observation(i, float(truth[i])) for i in (0, 5, 10, 15)]
    result = engine.suggest(history)
    weights = {e["task"]: e["weight"] for e in result.basis["top_experts"]}
    assert result.basis["mechanism"] == "experts" and weights["past|t0|acc|full"] > 0.6
    assert result.basis["meta_model_weight"] < 0.3 and weights.get("past|t1|acc|full", 0.0) < 0.1
    assert result.suggestions[0].index == n - 1
    more = engine.suggest([*history, *(Observation(i, float(truth[i])) for i in (2, 7, 12, 17))])
    assert more.basis["top_experts"][0] == {"task": "past|t0|acc|full", "weight": pytest.approx(1.0, abs=0.05)}
    assert more.basis["meta_model_weight"] < 0.05
    alone = SearchEngine(kn, EngineSettings(experts=False, gp=False, cost_exponent=0.0, max_false_skip=0.0))
    assert alone.suggest(history).suggestions[0].index != n - 1


def test_the_gaussian_process_carries_residuals_to_nearby_configurations() -> None:
    """Two clusters of configurations; the meta-model predicts them alike, but the evaluated members of cluster B
    score 10 points above their predictions: the posterior mean of B's unevaluated members rises, A's does not."""
    n = 16
    features = np.r_[np.zeros(8), np.full(8, 3.0)][:, None] + np.tile(np.linspace(0, 0.2, 8), 2)[:, None]
    points = np.full(n, 70.0) + np.tile(np.linspace(0, 1, 8), 2)
    kn = _knowledge(n, points=points, features=features)
    engine = SearchEngine(kn, EngineSettings(experts=False, gp=True, cost_exponent=0.0, max_false_skip=0.0))
    history = [Observation(0, 70.0), Observation(1, 70.1), Observation(8, 80.0), Observation(9, 80.2)]
    idx = np.array([h.index for h in history])
    mean, _, basis = engine.belief(idx, np.array([h.points for h in history]))
    assert "gp" in basis["mechanism"]
    assert mean[10:16].min() > mean[2:8].max() + 5
    assert engine.suggest(history).suggestions[0].index >= 10


def test_failures_raise_the_groups_failure_probability_and_cost_matters() -> None:
    """A failed evaluation raises the predicted failure probability of its (model, method) group only; with
    cost_exponent 1, of two candidates believed alike the cheaper is proposed first, and runtimes observed twice the
    prediction double every predicted cost."""
    groups = np.array([0, 0, 0, 1, 1, 1])
    kn = _knowledge(6, points=np.full(6, 70.0), groups=groups, p_fail=np.full(6, 0.05),
                    cost=np.array([100.0, 100, 100, 100, 100, 10]))
    engine = SearchEngine(kn, EngineSettings(cost_exponent=1.0, max_false_skip=0.0))
    assert engine.suggest([]).suggestions[0].index == 5
    result = engine.suggest([Observation(0, None, 200.0), Observation(1, None, 200.0)], k=4)
    p = {s.index: s.p_fail for s in result.suggestions}
    assert p[2] > 0.3 and p[3] == pytest.approx(0.05) and p[5] == pytest.approx(0.05)
    runtime = {s.index: s.runtime_s for s in result.suggestions}
    assert runtime[3] == pytest.approx(100 * np.exp(2 * np.log(2) / 4))


def test_the_skip_budget_excludes_hopeless_candidates_and_ends_the_search() -> None:
    """Once 3 evaluations scored, candidates far below the incumbent under a sharp belief are excluded, their summed
    probability of beating it within the budget; excluded ones are never proposed; when only excluded candidates
    remain the search is done. A budget of 0 excludes nothing."""
    points = np.r_[90.0, 89.0, 88.0, np.full(9, 40.0)]
    kn = _knowledge(12, points=points, sd=2.0)
    engine = SearchEngine(kn, EngineSettings(experts=False, gp=False, max_false_skip=0.05))
    history = [Observation(0, 90.0), Observation(1, 89.0), Observation(2, 88.0)]
    result = engine.suggest(history)
    assert set(result.excluded) == set(range(3, 12)) and result.spent <= 0.05 and result.done
    kept = SearchEngine(kn, EngineSettings(experts=False, gp=False, max_false_skip=0.0)).suggest(history)
    assert not len(kept.excluded) and kept.suggestions[0].index >= 3


def test_configuration_features_put_one_choice_about_one_apart() -> None:
    """Configurations differing in one categorical choice are about 1 apart, in the learning rate by a decade about
    half a standard deviation apart; constant columns add nothing."""
    rows = pd.DataFrame({"model_id": ["a", "b", "a", "a"], "method_name": ["full"] * 4,
                         "hparams_learning_rate": [1e-5, 1e-5, 1e-4, 1e-3], "hparams_epochs": [3, 3, 3, 3]})
    X = configuration_features(rows)
    d = np.sqrt(X.sq_distances(slice(None), slice(None)))
    assert X.categories.shape[1] == 1 and X.numbers.shape[1] == 1 and d[0, 1] == pytest.approx(1.0)
    assert d[0, 2] == pytest.approx(d[2, 3]) and d[0, 3] == pytest.approx(2 * d[0, 2])
    assert d[1, 2] == pytest.approx(np.sqrt(1.0 + d[0, 2] ** 2))


def test_the_experts_prior_orders_the_first_proposals_by_the_past_tasks_consensus() -> None:
    """With prior_experts, before any score the first proposal is the candidate the past tasks agree is best, not
    the meta-model's favourite; without it, the meta-model's."""
    n = 10
    consensus = np.linspace(-1.5, 1.5, n)
    profiles = np.vstack([consensus + 0.1 * np.sin(np.arange(n) + i) for i in range(8)])
    kn = _knowledge(n, points=np.linspace(80, 60, n), profiles=profiles)
    first = SearchEngine(kn, EngineSettings(cost_exponent=0.0, prior_experts=True)).suggest([])
    assert first.suggestions[0].index == n - 1 and first.basis["mechanism"] == "experts' prior"
    plain = SearchEngine(kn, EngineSettings(cost_exponent=0.0, prior_experts=False)).suggest([])
    assert plain.suggestions[0].index == 0 and plain.basis["mechanism"] == "meta-model"

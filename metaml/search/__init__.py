"""Replay AutoML search on held-out tasks: random search, Optuna TPE and an AutoGOAL-style probabilistic grammar
search, each alone, with the knowledge base's biased prior, with the skip rule, and with both."""

from metaml.search._grammar import GrammarDistribution, GrammarSearcher
from metaml.search._replay import ReplayEnv, ReplayTask, SearchTrace, eligible_tasks, sample_tasks
from metaml.search._searchers import (
    SEARCHERS,
    VARIANTS,
    Knowledge,
    RandomSearcher,
    Residuals,
    SearchSettings,
    TPESearcher,
    make_searcher,
    run_search,
)
from metaml.search._space import Dimension, SearchSpace

__all__ = [
    "SEARCHERS",
    "VARIANTS",
    "Dimension",
    "GrammarDistribution",
    "GrammarSearcher",
    "Knowledge",
    "RandomSearcher",
    "ReplayEnv",
    "ReplayTask",
    "Residuals",
    "SearchSettings",
    "SearchSpace",
    "SearchTrace",
    "TPESearcher",
    "eligible_tasks",
    "make_searcher",
    "run_search",
    "sample_tasks",
]

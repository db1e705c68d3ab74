"""Search on a task's candidates: the engine behind ``POST /v1/suggest`` (it learns from the task's own results
through the knowledge base), and the replay that measures it against zero-shot and knowledge-based searchers on
held-out tasks whose every configuration's outcome is known."""

from metaml.search._engine import (
    ConfigurationFeatures,
    EngineSettings,
    Observation,
    SearchEngine,
    Suggestion,
    SuggestResult,
    TaskKnowledge,
    configuration_features,
)
from metaml.search._grammar import GrammarDistribution, GrammarSearcher
from metaml.search._replay import ReplayEnv, ReplayTask, SearchTrace, eligible_tasks, sample_tasks
from metaml.search._searchers import (
    KNOWLEDGE,
    SEARCHERS,
    ZERO_SHOT,
    EngineSearcher,
    OptunaSearcher,
    OrderSearcher,
    RandomSearcher,
    run_search,
)
from metaml.search._space import Dimension, SearchSpace

__all__ = [
    "KNOWLEDGE",
    "SEARCHERS",
    "ZERO_SHOT",
    "ConfigurationFeatures",
    "Dimension",
    "EngineSearcher",
    "EngineSettings",
    "GrammarDistribution",
    "GrammarSearcher",
    "Observation",
    "OptunaSearcher",
    "OrderSearcher",
    "RandomSearcher",
    "ReplayEnv",
    "ReplayTask",
    "SearchEngine",
    "SearchSpace",
    "SearchTrace",
    "SuggestResult",
    "Suggestion",
    "TaskKnowledge",
    "configuration_features",
    "eligible_tasks",
    "run_search",
    "sample_tasks",
]

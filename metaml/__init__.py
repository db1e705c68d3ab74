"""Meta-learning over the knowledge base: featurization, estimators, baselines, protocols, evaluation."""

from metaml._baselines import BASELINES, GlobalMean, KNearestDatasets, ModelMethodMean, RandomBaseline
from metaml._data import LEARN_COLUMNS, learning_frame, load_runs, task_keys
from metaml._estimators import CostEstimator, FailureEstimator, MetaModel, OutcomeEstimator
from metaml._evaluate import EvaluationResult, default_predictors, evaluate, noise_floor
from metaml._features import RunFeaturizer
from metaml._metrics import per_task, summarize, task_metrics
from metaml._protocols import PROTOCOLS, folds, groups_for

__all__ = [
    "BASELINES",
    "LEARN_COLUMNS",
    "PROTOCOLS",
    "CostEstimator",
    "EvaluationResult",
    "FailureEstimator",
    "GlobalMean",
    "KNearestDatasets",
    "MetaModel",
    "ModelMethodMean",
    "OutcomeEstimator",
    "RandomBaseline",
    "RunFeaturizer",
    "default_predictors",
    "evaluate",
    "folds",
    "groups_for",
    "learning_frame",
    "load_runs",
    "noise_floor",
    "per_task",
    "summarize",
    "task_keys",
    "task_metrics",
]

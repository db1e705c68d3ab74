"""Per-task quality metrics of a meta-learner's predictions (in points: 100 x the normalized score).

Within each task (configurations an AutoML system compares), on the held-out runs:

* ``spearman`` / ``kendall`` — rank correlation of predicted and actual scores;
* ``ndcg@5`` — normalized discounted cumulative gain of the top 5 by prediction (gains: actual score minus the
  task's worst);
* ``regret@1`` / ``regret@5`` — best actual score minus the best actual score among the top 1 / top 5 predicted;
* ``rmse`` / ``mae`` — error of the predicted score; ``coverage`` — share of actual scores inside the interval.

Tasks are then averaged with equal weight. Failure probability is judged by ROC AUC and cost by MAPE over all
held-out runs (pooled, since a task often has a single runtime regime).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import ndcg_score, roc_auc_score

MIN_TASK_RUNS = 3
TASK_METRICS = ("spearman", "kendall", "ndcg@5", "regret@1", "regret@5", "rmse", "mae", "coverage")


def task_metrics(actual: np.ndarray, predicted: np.ndarray, rank_score: np.ndarray | None = None,
                 lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of one task; rank metrics use ``rank_score`` when given, error metrics use ``predicted``."""
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    ranking = np.asarray(rank_score if rank_score is not None else predicted, dtype=float)
    out: dict[str, float] = {"n": float(len(actual))}
    constant_truth = np.ptp(actual) == 0
    if constant_truth or np.ptp(ranking) == 0:
        out["spearman"] = out["kendall"] = 0.0 if not constant_truth else math.nan
    else:
        out["spearman"] = float(spearmanr(actual, ranking).statistic)
        out["kendall"] = float(kendalltau(actual, ranking).statistic)
    gains = actual - actual.min()
    out["ndcg@5"] = float(ndcg_score(gains[None, :], ranking[None, :], k=5)) if gains.max() > 0 else math.nan
    order = np.argsort(-ranking, kind="stable")
    best = actual.max()
    out["regret@1"] = float(best - actual[order[0]])
    out["regret@5"] = float(best - actual[order[:5]].max())
    err = predicted - actual
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    out["mae"] = float(np.mean(np.abs(err)))
    if lo is not None and hi is not None:
        out["coverage"] = float(np.mean((actual >= np.asarray(lo)) & (actual <= np.asarray(hi))))
    return out


def per_task(frame: pd.DataFrame) -> pd.DataFrame:
    """Metrics per task from a frame with ``task_key``, ``points`` and ``pred`` (+ ``rank``, ``lo``, ``hi``,
    ``config_key``).

    Ranking metrics compare *configurations*: runs of one configuration that differ only by seed or data split are
    averaged first (with ``config_key``), and tasks with fewer than :data:`MIN_TASK_RUNS` distinct configurations
    are skipped, since there is nothing to rank. Error and coverage metrics are computed on the individual runs.
    """
    rows = []
    for key, g in frame.groupby("task_key", sort=False):
        g = g[g["points"].notna()]
        configs = g.groupby("config_key")[["points", "pred", "rank"]].mean() if "config_key" in g else g
        if len(configs) < MIN_TASK_RUNS:
            continue
        m = task_metrics(configs["points"].to_numpy(), configs["pred"].to_numpy(),
                         configs["rank"].to_numpy() if "rank" in configs else None)
        err = g["pred"].to_numpy() - g["points"].to_numpy()
        m["rmse"], m["mae"] = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
        if "lo" in g and g["lo"].notna().any():
            m["coverage"] = float(np.mean((g["points"] >= g["lo"]) & (g["points"] <= g["hi"])))
        m["runs"] = float(len(g))
        m["task_key"] = key
        m["source"] = str(key).split("|")[0]
        rows.append(m)
    return pd.DataFrame(rows)


def summarize(tasks: pd.DataFrame) -> dict[str, float]:
    """Equal-weight mean of each metric over tasks (NaN-skipping), plus the task count."""
    out = {m: float(tasks[m].mean(skipna=True)) for m in TASK_METRICS if m in tasks}
    out["tasks"] = float(len(tasks))
    return out


def failure_auc(failed: np.ndarray, p_fail: np.ndarray) -> float:
    failed = np.asarray(failed)
    if len(np.unique(failed)) < 2:
        return math.nan
    return float(roc_auc_score(failed, p_fail))


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    ok = np.isfinite(actual) & np.isfinite(predicted) & (actual > 0)
    if not ok.any():
        return math.nan
    return float(np.mean(np.abs(predicted[ok] - actual[ok]) / actual[ok]))

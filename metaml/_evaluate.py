"""Run an evaluation protocol over the meta-learner and the baselines, and collect per-task metrics.

Every predictor is fit on each fold's training runs only and predicts the held-out runs; a test checks that no
held-out unit ever reaches training. The noise floor (seed-to-seed spread of identical configurations) is measured on
the knowledge base itself, next to the errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metaml._baselines import BASELINES
from metaml._data import learning_frame
from metaml._estimators import MetaModel, OutcomeEstimator
from metaml._metrics import failure_auc, mape, per_task, summarize
from metaml._protocols import folds, groups_for

Factory = Callable[[], Any]


def default_predictors(rank_modes: tuple[str, ...] = ("relative",), n_estimators: int = 300) -> dict[str, Factory]:
    """The meta-learner (one entry per ranking view) and every baseline."""
    out: dict[str, Factory] = {}
    for mode in rank_modes:
        name = "metaml" if len(rank_modes) == 1 else f"metaml[{mode}]"
        out[name] = lambda mode=mode: MetaModel(outcome=OutcomeEstimator(rank_mode=mode, n_estimators=n_estimators))
    for name, cls in BASELINES.items():
        out[name] = cls
    return out


@dataclass
class EvaluationResult:
    """Predictions of every predictor on every held-out run, and the metrics derived from them."""

    protocol: str
    predictions: pd.DataFrame
    folds: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def task_table(self) -> pd.DataFrame:
        """Per (predictor, task) metrics."""
        parts = []
        for name, g in self.predictions.groupby("predictor", sort=False):
            t = per_task(g)
            t.insert(0, "predictor", name)
            parts.append(t)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def summary(self) -> pd.DataFrame:
        """Per predictor: task-averaged metrics, failure AUC, cost MAPE, fit seconds."""
        rows = []
        tasks = self.task_table()
        for name, g in self.predictions.groupby("predictor", sort=False):
            row: dict[str, Any] = {"predictor": name, **summarize(tasks[tasks["predictor"] == name])}
            if "p_fail" in g and g["p_fail"].notna().any():
                row["failure_auc"] = failure_auc(g["failed"].to_numpy(), g["p_fail"].fillna(0).to_numpy())
            if "pred_runtime_s" in g and g["pred_runtime_s"].notna().any():
                row["cost_mape"] = mape(g["outcome_runtime_s"].to_numpy(), g["pred_runtime_s"].to_numpy())
            row["fit_seconds"] = self.seconds.get(name, float("nan"))
            rows.append(row)
        return pd.DataFrame(rows).set_index("predictor")

    def by_source(self, metric: str = "spearman") -> pd.DataFrame:
        """Task-averaged ``metric`` per predictor and source."""
        tasks = self.task_table()
        return tasks.pivot_table(index="source", columns="predictor", values=metric, aggfunc="mean")


def evaluate(runs: pd.DataFrame, protocol: str, *, predictors: Mapping[str, Factory] | None = None,
             max_folds: int | None = None, seed: int = 0, progress: bool = False,
             train_sources: Sequence[str] | None = None, test_sources: Sequence[str] | None = None) -> EvaluationResult:
    """Evaluate ``predictors`` under ``protocol`` on the runs (rows of the runs table).

    Args:
        train_sources: learn only from runs of these sources (default: all). With ``test_sources`` this measures
            transfer: does knowledge from other sources help on a source's held-out tasks?
        test_sources: evaluate only runs of these sources (held-out units are chosen among them).
    """
    frame = learning_frame(runs)
    predictors = predictors or default_predictors()
    candidates = frame if not test_sources else frame[frame["provenance_source"].isin(test_sources)]
    units = set(groups_for(candidates, protocol))
    fold_list = [f for f in folds(frame, protocol, max_folds=None if test_sources else max_folds, seed=seed)
                 if f[0] in units or protocol == "gkfold"]
    if test_sources and max_folds is not None and len(fold_list) > max_folds:
        rng = np.random.default_rng(seed)
        fold_list = [fold_list[i] for i in sorted(rng.choice(len(fold_list), max_folds, replace=False))]
    sources = frame["provenance_source"].to_numpy()
    if train_sources or test_sources:
        fold_list = [(u, tr[np.isin(sources[tr], list(train_sources))] if train_sources else tr,
                      te[np.isin(sources[te], list(test_sources))] if test_sources else te) for u, tr, te in fold_list]
    parts: list[pd.DataFrame] = []
    seconds: dict[str, float] = dict.fromkeys(predictors, 0.0)
    iterator: Any = fold_list
    if progress:
        from tqdm import tqdm

        iterator = tqdm(fold_list, desc=f"{protocol} folds", unit="fold")
    groups = groups_for(frame, protocol).to_numpy()
    for held_out, train_idx, test_idx in iterator:
        train, test = frame.iloc[train_idx], frame.iloc[test_idx]
        assert not set(groups[test_idx]) & set(groups[train_idx]), "a held-out unit reached training"
        base = test[["run_id", "task_key", "config_key", "points", "failed", "outcome_runtime_s",
                     "provenance_source"]].copy()
        base["fold"] = held_out
        for name, factory in predictors.items():
            started = time.perf_counter()
            model = factory().fit(train)
            seconds[name] += time.perf_counter() - started
            out = base.copy()
            out["predictor"] = name
            if isinstance(model, MetaModel):
                pred = model.predict(test)
                out["pred"], out["rank"] = pred["points"].to_numpy(), pred["rank_score"].to_numpy()
                out["lo"], out["hi"] = pred["lo"].to_numpy(), pred["hi"].to_numpy()
                out["p_fail"], out["pred_runtime_s"] = pred["p_fail"].to_numpy(), pred["runtime_s"].to_numpy()
            else:
                out["pred"] = model.predict(test)
                out["rank"] = model.rank_score(test)
            parts.append(out)
    predictions = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return EvaluationResult(protocol, predictions, [f[0] for f in fold_list], seconds)


def noise_floor(runs: pd.DataFrame, source: str = "taskweb") -> dict[str, float]:
    """Seed-to-seed spread of identical configurations (everything but the seed equal), in points.

    Returns the mean within-configuration standard deviation, the mean absolute difference between two seeds, and
    the mean per-task Spearman between two seeds' scores (the rank correlation a perfect predictor of one seed's
    score could reach against another seed's).
    """
    frame = learning_frame(runs)
    frame = frame[(frame["provenance_source"] == source) & frame["points"].notna()]
    if frame.empty:
        return {}
    config_cols = ["task_key", "model_id", "model_upstream_task", "method_name", "hparams_learning_rate",
                   "hparams_batch_size", "hparams_epochs"]
    key = frame[config_cols].astype(str).agg("|".join, axis=1)
    grouped = frame.groupby(key)["points"]
    sizes = grouped.transform("size")
    multi = frame[sizes > 1]
    std = multi.groupby(key[sizes > 1])["points"].std()
    first_two = multi.assign(_k=key[sizes > 1]).sort_values("hparams_seed").groupby("_k").head(2)
    pairs = first_two.groupby("_k")["points"].agg(["first", "last"])
    from scipy.stats import spearmanr

    pairs["task"] = first_two.groupby("_k")["task_key"].first()
    rhos = [spearmanr(g["first"], g["last"]).statistic for _, g in pairs.groupby("task") if len(g) >= 3]
    return {"configs": float(len(std)), "seed_std_points": float(std.mean()),
            "seed_abs_diff_points": float((pairs["first"] - pairs["last"]).abs().mean()),
            "seed_vs_seed_spearman": float(np.nanmean(rhos)) if rhos else float("nan")}

"""Run an evaluation protocol over the meta-learner and the baselines, and collect per-task metrics.

Every predictor is fit on each fold's training runs only and predicts the held-out runs; a test checks that no
held-out unit ever reaches training. By default every held-out unit with a task of at least ``min_configs`` distinct
configurations is evaluated (a ranking over fewer says little). Folds are made cheap so that this fits on a small
machine: the experience keys of every run are computed once, the meta-model learns from at most
``max_rows_per_task`` runs per task (its experience tables still read every training run), and the cost and failure
models are fit only in folds whose held-out runs can measure them (runtimes, failures).

The noise ceiling (:func:`noise_ceiling`) is what a perfect predictor of one half of a configuration's seeds reaches
against the other half; it is measured per source where configurations repeat over seeds.
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
from metaml._experience import Experience
from metaml._metrics import failure_auc, mape, per_task, summarize, task_metrics
from metaml._protocols import folds, groups_for

Factory = Callable[[], Any]
#: Fewest distinct configurations of a held-out task for its unit to be evaluated.
MIN_CONFIGS = 20


def default_predictors(rank_modes: tuple[str, ...] = ("relative",), n_estimators: int = 300,
                       max_rows_per_task: int | None = 400) -> dict[str, Factory]:
    """The meta-learner (one entry per ranking view) and every baseline."""
    out: dict[str, Factory] = {}
    for mode in rank_modes:
        name = "metaml" if len(rank_modes) == 1 else f"metaml[{mode}]"
        out[name] = lambda mode=mode: MetaModel(outcome=OutcomeEstimator(rank_mode=mode, n_estimators=n_estimators),
                                                max_rows_per_task=max_rows_per_task)
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
    fold_seconds: list[float] = field(default_factory=list)

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
                ok = g["p_fail"].notna()
                row["failure_auc"] = failure_auc(g.loc[ok, "failed"].to_numpy(), g.loc[ok, "p_fail"].to_numpy())
            if "pred_runtime_s" in g and g["pred_runtime_s"].notna().any():
                row["cost_mape"] = mape(g["outcome_runtime_s"].to_numpy(), g["pred_runtime_s"].to_numpy())
            row["fit_seconds"] = self.seconds.get(name, float("nan"))
            rows.append(row)
        return pd.DataFrame(rows).set_index("predictor")

    def by_source(self, metric: str = "spearman") -> pd.DataFrame:
        """Task-averaged ``metric`` per predictor and source."""
        tasks = self.task_table()
        return tasks.pivot_table(index="source", columns="predictor", values=metric, aggfunc="mean")

    def coverage_by_source(self, predictor: str = "metaml") -> pd.Series:
        """Share of held-out runs inside their interval, per source (pooled over runs)."""
        g = self.predictions[(self.predictions["predictor"] == predictor) & self.predictions["points"].notna()]
        if "lo" not in g or g["lo"].isna().all():
            return pd.Series(dtype=float)
        inside = (g["points"] >= g["lo"]) & (g["points"] <= g["hi"])
        return inside.groupby(g["provenance_source"]).mean()


def eligible_units(frame: pd.DataFrame, protocol: str, min_configs: int = MIN_CONFIGS) -> list[str]:
    """Held-out units that have a task with at least ``min_configs`` distinct scored configurations."""
    scored = frame[frame["points"].notna()]
    per_task = scored.groupby("task_key")["config_key"].nunique()
    big = scored[scored["task_key"].isin(per_task[per_task >= min_configs].index)]
    return sorted(set(groups_for(big, protocol)))


def evaluate(runs: pd.DataFrame, protocol: str, *, predictors: Mapping[str, Factory] | None = None,
             max_folds: int | None = None, seed: int = 0, progress: bool = False,
             train_sources: Sequence[str] | None = None, test_sources: Sequence[str] | None = None,
             min_configs: int = MIN_CONFIGS, units: Sequence[str] | None = None, jobs: int = 1) -> EvaluationResult:
    """Evaluate ``predictors`` under ``protocol`` on the runs (rows of the runs table).

    Args:
        max_folds: evaluate at most this many held-out units, sampled across sources (default: every eligible one).
        min_configs: a unit is eligible when one of its tasks has at least this many distinct configurations.
        units: evaluate exactly these held-out units.
        train_sources: learn only from runs of these sources (default: all). With ``test_sources`` this measures
            transfer: does knowledge from other sources help on a source's held-out tasks?
        test_sources: evaluate only runs of these sources (held-out units are chosen among them).
        jobs: folds fit in parallel worker processes.
    """
    frame = learning_frame(runs)
    predictors = predictors or default_predictors()
    candidates = frame if not test_sources else frame[frame["provenance_source"].isin(test_sources)]
    wanted = set(units) if units is not None else set(eligible_units(candidates, protocol, min_configs)) \
        if protocol != "gkfold" else None
    fold_list = list(folds(frame, protocol, max_folds=max_folds, seed=seed, units=wanted))
    sources = frame["provenance_source"].to_numpy()
    if train_sources or test_sources:
        fold_list = [(u, tr[np.isin(sources[tr], list(train_sources))] if train_sources else tr,
                      te[np.isin(sources[te], list(test_sources))] if test_sources else te) for u, tr, te in fold_list]
    keys = Experience().keys_of(frame)
    groups = groups_for(frame, protocol).to_numpy()
    for held_out, train_idx, test_idx in fold_list:
        assert not set(groups[test_idx]) & set(groups[train_idx]), f"{held_out}: a held-out unit reached training"
    iterator: Any = fold_list
    if progress:
        from tqdm import tqdm

        iterator = tqdm(fold_list, desc=f"{protocol} folds", unit="fold", disable=None)  # on a terminal only
    if jobs > 1:
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=jobs, prefer="processes", return_as="generator")(
            delayed(_fold)(frame, keys, predictors, *fold) for fold in fold_list)
        results = list(tqdm(done, total=len(fold_list), desc=f"{protocol} folds", unit="fold", disable=None)
                       if progress else done)
    else:
        results = [_fold(frame, keys, predictors, *fold) for fold in iterator]
    parts = [p for fold_parts, _, _ in results for p in fold_parts]
    seconds: dict[str, float] = dict.fromkeys(predictors, 0.0)
    for _, fold_seconds_by_name, _ in results:
        for name, secs in fold_seconds_by_name.items():
            seconds[name] += secs
    fold_seconds = [total for _, _, total in results]
    predictions = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return EvaluationResult(protocol, predictions, [f[0] for f in fold_list], seconds, fold_seconds)


def _fold(frame: pd.DataFrame, keys: Mapping[str, np.ndarray], predictors: Mapping[str, Factory], held_out: str,
          train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[list[pd.DataFrame], dict[str, float], float]:
    """Fit every predictor on one fold's training runs and predict its held-out runs."""
    started_fold = time.perf_counter()
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]
    train_keys = {k: v[train_idx] for k, v in keys.items()}
    base = test[["run_id", "task_key", "config_key", "points", "failed", "outcome_runtime_s",
                 "provenance_source"]].copy()
    base["fold"] = held_out
    measurable = ["outcome"]
    if test["outcome_runtime_s"].notna().any():
        measurable.append("cost")
    if test["failed"].nunique() > 1:
        measurable.append("failure")
    parts, seconds = [], {}
    for name, factory in predictors.items():
        started = time.perf_counter()
        model = factory()
        if isinstance(model, MetaModel):
            model.fit(train, parts=measurable, keys=train_keys)
        else:
            model.fit(train, keys=train_keys)
        seconds[name] = time.perf_counter() - started
        out = base.copy()
        out["predictor"] = name
        if isinstance(model, MetaModel):
            pred = model.predict(test)
            out["pred"], out["rank"] = pred["points"].to_numpy(), pred["rank_score"].to_numpy()
            out["lo"], out["hi"] = pred["lo"].to_numpy(), pred["hi"].to_numpy()
            out["p_fail"], out["pred_runtime_s"] = pred["p_fail"].to_numpy(), pred["runtime_s"].to_numpy()
            out["rank_learned"], out["rank_lookup"] = model.rank_components(test)
        else:
            out["pred"] = model.predict(test)
            out["rank"] = model.rank_score(test)
        parts.append(out)
    return parts, seconds, time.perf_counter() - started_fold


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


def noise_ceiling(runs: pd.DataFrame, *, min_configs: int = MIN_CONFIGS, seed: int = 0) -> pd.DataFrame:
    """Per source: what ranking one half of each configuration's seeds reaches against the other half.

    In every task with at least ``min_configs`` configurations run with two seeds or more, each configuration's runs
    are split at random into two halves; the halves' means are compared like a prediction and the truth (Spearman,
    top-1 regret in points). One row per source (mean over its tasks) with the number of tasks.
    """
    frame = learning_frame(runs)
    frame = frame[frame["points"].notna()]
    rng = np.random.default_rng(seed)
    rows = []
    for task, g in frame.groupby("task_key", sort=False):
        counts = g.groupby("config_key")["points"].transform("size")
        g = g[counts >= 2]
        if g["config_key"].nunique() < min_configs:
            continue
        half = g.groupby("config_key")["points"].transform(
            lambda s: pd.Series(rng.permutation(len(s)) % 2, index=s.index))
        a = g[half == 0].groupby("config_key")["points"].mean()
        b = g[half == 1].groupby("config_key")["points"].mean()
        both = a.index.intersection(b.index)
        m = task_metrics(b[both].to_numpy(), a[both].to_numpy())
        rows.append({"source": str(task).split("|")[0], "task_key": task, "spearman": m["spearman"],
                     "regret@1": m["regret@1"]})
    if not rows:
        return pd.DataFrame(columns=["spearman", "regret@1", "tasks"])
    table = pd.DataFrame(rows)
    out = table.groupby("source")[["spearman", "regret@1"]].mean()
    out["tasks"] = table.groupby("source").size()
    return out

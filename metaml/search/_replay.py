"""Replay search on a held-out task whose every configuration's outcome is already known.

A :class:`ReplayTask` is one task of the learning frame (``task_key``): its candidate set is the task's distinct
configurations (``config_key``), each with

* its real **outcome**: the mean of ``points`` over the configuration's runs that have a score (seeds, repeats);
  a configuration none of whose runs has a score is **failed** (status failed; a diverged run keeps its chance-level
  score, which is its real outcome);
* its real **cost**: the mean ``outcome_runtime_s`` over its runs (failed runs included). Where a configuration has
  no runtime the cost falls back, in this order, to the meta-model's cost prediction (``cost_fallback``), to the
  median real cost of the task, and to 1 (compute then counts evaluations); ``cost_source`` says which was used.

A :class:`ReplayEnv` is one search on the task: :meth:`~ReplayEnv.evaluate` looks a configuration up and charges its
cost (a failed configuration is an evaluation with cost and no score); :meth:`~ReplayEnv.skip` records a candidate
the skip rule declined and charges ``skip_cost_fraction`` of its cost (0 by default: a meta-model query costs
milliseconds against minutes to hours of training). The **normalized regret** of a search is
``(best - found) / (best - worst)`` over the task's scored configurations, where ``found`` is the best outcome
evaluated so far (1 before any scored evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metaml._data import CONFIG_COLUMNS, LEARN_COLUMNS
from metaml.search._space import SearchSpace

#: Columns cleared on the rows the meta-model scores: a candidate is described before it runs.
OUTCOME_COLUMNS = (*(c for c in LEARN_COLUMNS if c.startswith("outcome_")), "run_id", "hparams_seed")


@dataclass
class ReplayTask:
    """One held-out task as a table of candidate configurations with known outcomes and costs.

    Attributes:
        task_key: the learning frame's task key (``source|dataset|metric|regime``).
        rows: one runs-table row per configuration (outcome, run id and seed cleared), what the meta-model scores.
        score: real outcome in points (NaN for a failed configuration).
        cost: cost of one evaluation (seconds where ``cost_source`` is ``real``).
        cost_source: per configuration: ``real``, ``predicted``, ``task-median`` or ``unit``.
        n_runs: runs behind each configuration.
        space: the search space spanned by the configurations.
    """

    task_key: str
    rows: pd.DataFrame
    score: np.ndarray
    cost: np.ndarray
    cost_source: np.ndarray
    n_runs: np.ndarray
    space: SearchSpace
    config_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    runtime: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: per configuration: the standard deviation of its score over its runs (seeds; NaN with a single run)
    score_sd: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, task_key: str, *, max_levels: int = 8) -> ReplayTask:
        """The task ``task_key`` of a learning frame (:func:`metaml._data.learning_frame`).

        Args:
            frame: a learning frame (needs ``points``, ``task_key``, ``config_key``).
            task_key: which task.
            max_levels: numeric dimensions with more distinct values are binned.
        """
        runs = frame[frame["task_key"] == task_key]
        if runs.empty:
            raise ValueError(f"no runs for task {task_key!r}")
        grouped = runs.groupby("config_key", sort=True)
        first = grouped.head(1).set_index("config_key").sort_index()
        rows = first.reindex(columns=list(LEARN_COLUMNS)).copy()
        for col in OUTCOME_COLUMNS:
            if col in rows:
                rows[col] = None
        rows = rows.reset_index(drop=True)
        score = grouped["points"].mean().sort_index().to_numpy(dtype=float)
        runtime = grouped["outcome_runtime_s"].mean().sort_index().to_numpy(dtype=float)
        n_runs = grouped["points"].count().sort_index().to_numpy()
        score_sd = grouped["points"].std().sort_index().to_numpy(dtype=float)
        cost, source = _costs(runtime, None)
        space = SearchSpace.from_configs(rows, CONFIG_COLUMNS, max_levels=max_levels)
        return cls(task_key, rows, score, cost, source, n_runs, space, first.index.to_numpy(), runtime, score_sd)

    def fill_costs(self, predicted: np.ndarray | None) -> None:
        """Recompute the costs with ``predicted`` (per configuration, e.g. the meta-model's cost prediction)
        standing in for configurations without a real runtime."""
        runtime = self.runtime if len(self.runtime) else np.where(self.cost_source == "real", self.cost, np.nan)
        self.cost, self.cost_source = _costs(np.asarray(runtime, dtype=float), predicted)

    @classmethod
    def from_table(cls, table: pd.DataFrame, *, task_key: str = "toy", columns: Sequence[str] | None = None,
                   max_levels: int = 8) -> ReplayTask:
        """A hand-made task: one row per configuration with ``score`` (NaN = failed), ``cost`` and the columns
        that span the space (default: every other column)."""
        columns = list(columns) if columns is not None else [c for c in table.columns if c not in ("score", "cost")]
        rows = table[columns].reset_index(drop=True)
        cost = table["cost"].to_numpy(dtype=float) if "cost" in table else np.ones(len(table))
        return cls(task_key, rows, table["score"].to_numpy(dtype=float), cost,
                   np.full(len(table), "real", dtype=object), np.ones(len(table), dtype=int),
                   SearchSpace.from_configs(rows, columns, max_levels=max_levels),
                   np.arange(len(table)).astype(str).astype(object))

    @property
    def n_configs(self) -> int:
        return len(self.score)

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.score)

    @property
    def best(self) -> float:
        return float(np.nanmax(self.score))

    @property
    def worst(self) -> float:
        return float(np.nanmin(self.score))

    @property
    def best_index(self) -> int:
        return int(np.nanargmax(self.score))

    def noise_band(self, typical_seed_sd: float, *, min_share: float = 0.01) -> tuple[float, str]:
        """The target a search must reach, in points below the best configuration: the standard error of the best
        configuration's mean over its seeds, or ``min_share`` of the task's spread when larger; where the best
        configuration ran once (or twice), ``typical_seed_sd`` stands in for its seeds' spread. Returns the band and
        what it rests on."""
        i = self.best_index
        n = int(self.n_runs[i]) if len(self.n_runs) else 1
        sd = float(self.score_sd[i]) if len(self.score_sd) and n >= 3 and np.isfinite(self.score_sd[i]) else None
        se, basis = (sd / np.sqrt(n), f"its {n} seeds") if sd is not None else \
            (typical_seed_sd / np.sqrt(max(n, 1)), "the typical seed spread")
        floor = min_share * (self.best - self.worst)
        return (float(se), basis) if se >= floor else (float(floor), f"{100 * min_share:g}% of the spread")

    def regret(self, found: float | None) -> float:
        """Normalized regret of having found ``found`` points (1 when nothing was found)."""
        if found is None or np.isnan(found):
            return 1.0
        span = self.best - self.worst
        return float((self.best - found) / span) if span > 0 else 0.0

    def regret_array(self) -> np.ndarray:
        """Normalized regret of each configuration on its own (1 for a failed one)."""
        span = self.best - self.worst
        out = (self.best - self.score) / span if span > 0 else np.zeros(self.n_configs)
        return np.where(np.isnan(self.score), 1.0, out)

    def main_cost_source(self) -> str:
        values, counts = np.unique(self.cost_source.astype(str), return_counts=True)
        if len(values) == 1:
            return str(values[0])
        return "mixed: " + ", ".join(f"{v} {c}" for v, c in zip(values, counts, strict=True))

    def describe(self) -> dict[str, Any]:
        parts = self.task_key.split("|")
        return {"task": self.task_key, "source": parts[0], "dataset": parts[1] if len(parts) > 1 else "",
                "n_configs": self.n_configs, "n_failed_configs": int((~self.scored).sum()),
                "dimensions": {d.name: d.n_levels for d in self.space.dims},
                "best": self.best, "worst": self.worst, "mean_cost_s": float(np.mean(self.cost)),
                "total_cost_s": float(np.sum(self.cost)), "cost_source": self.main_cost_source()}


def _costs(runtime: np.ndarray, fallback: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    cost = runtime.copy()
    source = np.where(np.isfinite(runtime), "real", "").astype(object)
    missing = ~np.isfinite(cost)
    if fallback is not None and missing.any():
        fb = np.asarray(fallback, dtype=float)
        use = missing & np.isfinite(fb) & (fb > 0)
        cost[use], source[use] = fb[use], "predicted"
        missing = ~np.isfinite(cost)
    if missing.any() and np.isfinite(runtime).any():
        cost[missing], source[missing] = float(np.nanmedian(runtime)), "task-median"
        missing = ~np.isfinite(cost)
    cost[missing], source[missing] = 1.0, "unit"
    return np.maximum(cost, 0.0), source


@dataclass
class SearchTrace:
    """What one search did: every proposal in order, evaluated or skipped."""

    task_key: str
    searcher: str
    variant: str
    seed: int
    budget: int
    #: per evaluation: configuration index, its cost, its score (NaN when failed), cumulative compute, regret after
    evals: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    #: per skip: configuration index, p_beat, incumbent at the time, the configuration's real score, charged cost
    skips: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    #: configurations a searcher had excluded from its proposals when the search ended (the engine's skip rule)
    excluded: list[int] = field(default_factory=list)

    def eval_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals, columns=["config", "cost", "score", "compute", "regret"])

    def regret_by_evaluations(self, budget: int) -> np.ndarray:
        """Regret after 1..budget evaluations (the last value carried forward when the search stopped early)."""
        out = np.ones(budget)
        r = [e[4] for e in self.evals][:budget]
        if r:
            out[: len(r)] = r
            out[len(r):] = r[-1]
        return out

    def regret_at_compute(self, grid: np.ndarray) -> np.ndarray:
        """Regret once ``grid`` compute was spent (step function; 1 before the first scored evaluation)."""
        if not self.evals:
            return np.ones(len(grid))
        compute = np.array([e[3] for e in self.evals])
        regret = np.array([e[4] for e in self.evals])
        pos = np.searchsorted(compute, grid, side="right") - 1
        return np.where(pos >= 0, regret[np.clip(pos, 0, None)], 1.0)

    def compute_to(self, level: float) -> float:
        """Compute spent when regret first reached ``level`` or less (inf if never)."""
        for e in self.evals:
            if e[4] <= level + 1e-12:
                return float(e[3])
        return float("inf")

    def evals_to(self, level: float) -> float:
        for n, e in enumerate(self.evals, start=1):
            if e[4] <= level + 1e-12:
                return float(n)
        return float("inf")

    @property
    def final_regret(self) -> float:
        return float(self.evals[-1][4]) if self.evals else 1.0

    @property
    def compute(self) -> float:
        charged = sum(s[4] for s in self.skips)
        return float(self.evals[-1][3]) + charged if self.evals else charged


class ReplayEnv:
    """One search on a :class:`ReplayTask`: evaluations are look-ups, compute accumulates.

    Args:
        task: the task.
        skip_cost_fraction: share of a candidate's cost charged when it is skipped (0: free).
    """

    def __init__(self, task: ReplayTask, *, skip_cost_fraction: float = 0.0, trace: SearchTrace | None = None) -> None:
        self.task = task
        self.skip_cost_fraction = skip_cost_fraction
        self.trace = trace or SearchTrace(task.task_key, "", "", 0, 0)
        self.compute = 0.0
        self.n_evaluations = 0
        self.incumbent: float | None = None
        self.incumbent_index: int | None = None
        self.proposed = np.zeros(task.n_configs, dtype=bool)

    @property
    def available(self) -> np.ndarray:
        """Configurations not proposed yet."""
        return ~self.proposed

    @property
    def regret(self) -> float:
        return self.task.regret(self.incumbent)

    def evaluate(self, i: int) -> float | None:
        """Run configuration ``i``: charge its cost, return its score (None when it failed)."""
        if self.proposed[i]:
            raise ValueError(f"configuration {i} was already proposed")
        self.proposed[i] = True
        cost = float(self.task.cost[i])
        self.compute += cost
        self.n_evaluations += 1
        score = float(self.task.score[i])
        ok = not np.isnan(score)
        if ok and (self.incumbent is None or score > self.incumbent):
            self.incumbent, self.incumbent_index = score, i
        self.trace.evals.append((int(i), cost, score, self.compute, self.regret))
        return score if ok else None

    def skip(self, i: int, p_beat: float = float("nan")) -> None:
        """Decline configuration ``i`` without running it (charged ``skip_cost_fraction`` of its cost)."""
        if self.proposed[i]:
            raise ValueError(f"configuration {i} was already proposed")
        self.proposed[i] = True
        charged = self.skip_cost_fraction * float(self.task.cost[i])
        self.compute += charged
        incumbent = self.incumbent if self.incumbent is not None else float("nan")
        self.trace.skips.append((int(i), float(p_beat), incumbent, float(self.task.score[i]), charged))


def eligible_tasks(frame: pd.DataFrame, *, min_configs: int = 20, min_spread: float = 2.0,
                   sources: Sequence[str] | None = None, exclude_task_types: Sequence[str] = (),
                   require_runtime: bool = True) -> pd.DataFrame:
    """Tasks of a learning frame a replay can use: at least ``min_configs`` distinct configurations, a spread of at
    least ``min_spread`` points between the best and the worst configuration, (optionally) real runtimes on every
    configuration. One row per task with source, dataset, configurations and spread."""
    df = frame
    if sources:
        df = df[df["provenance_source"].isin(list(sources))]
    if exclude_task_types:
        df = df[~df["task_type"].isin(list(exclude_task_types))]
    per_config = df.groupby(["task_key", "config_key"]).agg(points=("points", "mean"),
                                                            runtime=("outcome_runtime_s", "mean"))
    per_task = per_config.groupby(level=0).agg(n_configs=("points", "size"), best=("points", "max"),
                                              worst=("points", "min"),
                                              runtime_share=("runtime", lambda s: float(s.notna().mean())))
    meta = df.groupby("task_key").agg(source=("provenance_source", "first"), dataset=("dataset_name", "first"),
                                      task_type=("task_type", "first"))
    out = per_task.join(meta)
    out["spread"] = out["best"] - out["worst"]
    keep = (out["n_configs"] >= min_configs) & (out["spread"] >= min_spread)
    if require_runtime:
        keep &= out["runtime_share"] >= 1.0
    return out[keep].sort_index()


def sample_tasks(eligible: pd.DataFrame, n: int, *, seed: int = 0) -> list[str]:
    """``n`` tasks sampled round-robin across sources (seeded), so that every source is represented."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[str]] = {}
    for task, row in eligible.iterrows():
        pools.setdefault(str(row["source"]), []).append(str(task))
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[str] = []
    while len(chosen) < n and any(pools.values()):
        for source in sorted(pools):
            if pools[source] and len(chosen) < n:
                chosen.append(pools[source].pop())
    return sorted(chosen)

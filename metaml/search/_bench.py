"""The AutoML replay benchmark: does the knowledge base make search on unseen tasks reach the same quality with less
compute than zero-shot search?

For each held-out task (sampled across sources among tasks with real runtimes on every configuration, see
:func:`metaml.search.eligible_tasks`), a meta-model is trained **leave-one-dataset-out** (every run on the task's
dataset, from every source, is excluded; fitted models are cached with joblib per held-out dataset and training
set), it scores the task's candidate configurations once, and every searcher x variant is replayed with many seeds
under a budget of evaluations. :func:`write_report` writes ``report.md``, ``results.json`` and PNG plots.

Definitions used by the report:

* **normalized regret** ``(best - found) / (best - worst)`` over the task's configurations;
* **compute to 1% regret**: cumulative cost (seconds of real training runtime) when a search first reaches a
  normalized regret of 0.01 or less. A search that never does within its budget is *censored* at the compute of its
  whole budget (a lower bound); per task the median over seeds is taken, and the share of seeds that reached 1% is
  reported beside it;
* **speed-up**: per task, (compute to 1% of the best zero-shot searcher) / (compute to 1% of the variant); the
  headline is its median over tasks. The best zero-shot searcher is the zero-shot searcher with the lowest median
  compute to 1% over the tasks (one searcher, as a user would pick one); a stricter per-task minimum over the three
  zero-shot searchers is also reported;
* **wrongly skipped best**: the share of searches (variants with the skip rule) in which the task's best
  configuration was proposed and skipped;
* **negative transfer**: a task where the variant with the biased prior ends the full budget with a higher mean
  normalized regret (over seeds) than the same searcher alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metaml._data import learning_frame
from metaml._protocols import groups_for
from metaml.search._replay import ReplayTask, SearchTrace, eligible_tasks, sample_tasks
from metaml.search._searchers import SEARCHERS, VARIANTS, Knowledge, SearchSettings, run_search

#: Sources whose runs carry real training runtimes (the compute claims are made on these).
RUNTIME_SOURCES = ("taskweb", "transfergraph", "peft_bench")
#: Task types left out by default: the product is about language models.
NON_LANGUAGE_TASK_TYPES = ("image-classification", "other")
REGRET_TARGET = 0.01
#: Secondary regret levels reported beside the goal's 1% (the plots show the whole curve).
SECONDARY_TARGETS = (0.10, 0.05)
CACHE_VERSION = "1"


@dataclass
class BenchConfig:
    """What the benchmark runs.

    Attributes:
        n_tasks: held-out tasks, sampled round-robin across sources.
        seeds: searches per (task, searcher, variant).
        budget: evaluations per search; None: 25% of the task's configurations, at most 50.
        searchers, variants: what to compare.
        sources: sources the held-out tasks come from.
        exclude_task_types: task types never held out.
        min_configs: fewest distinct configurations of a held-out task.
        min_spread: fewest points between the task's best and worst configuration (regret is meaningless below).
        task_seed: seed of the task sample.
        n_estimators: trees of the outcome model (``OutcomeEstimator(n_estimators=..., n_jobs=1)``).
        max_rows_per_task: rows per training task of the meta-model.
        jobs: worker processes for the searches.
        settings: searcher and skip-rule knobs.
    """

    n_tasks: int = 12
    seeds: int = 20
    budget: int | None = None
    searchers: tuple[str, ...] = SEARCHERS
    variants: tuple[str, ...] = VARIANTS
    sources: tuple[str, ...] = RUNTIME_SOURCES
    exclude_task_types: tuple[str, ...] = NON_LANGUAGE_TASK_TYPES
    min_configs: int = 20
    min_spread: float = 2.0
    task_seed: int = 0
    n_estimators: int = 150
    max_rows_per_task: int = 200
    jobs: int = 2
    settings: SearchSettings = field(default_factory=SearchSettings)

    def budget_for(self, n_configs: int) -> int:
        if self.budget is not None:
            return max(1, min(self.budget, n_configs))
        return max(1, min(50, math.ceil(0.25 * n_configs)))


@dataclass
class BenchResult:
    """Everything the report is written from."""

    config: BenchConfig
    tasks: list[dict[str, Any]]
    runs: pd.DataFrame
    curves_evals: dict[str, dict[str, list[float]]]
    curves_compute: dict[str, dict[str, list[float]]]
    compute_grid: list[float]
    seconds: dict[str, float]
    context: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- meta-models, cached


def _fit_key(held_out: str, train: pd.DataFrame, config: BenchConfig) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}|{held_out}|{config.n_estimators}|{config.max_rows_per_task}|".encode())
    h.update("\n".join(sorted(train["run_id"].astype(str))).encode())
    return h.hexdigest()[:20]


def fit_held_out(frame: pd.DataFrame, dataset: str, config: BenchConfig, cache_dir: Path | None) -> tuple[Any, float,
                                                                                                          bool]:
    """The meta-model trained without any run of ``dataset`` (leave one dataset out); from the cache when there.

    Returns the model, the seconds its fit took (0 when cached) and whether it came from the cache.
    """
    import joblib

    from metaml._estimators import MetaModel, OutcomeEstimator

    groups = groups_for(frame, "lodo").to_numpy()
    train = frame[groups != dataset]
    if (groups == dataset).sum() == 0:
        raise ValueError(f"dataset {dataset!r} has no runs")
    path = None
    if cache_dir is not None:
        safe = "".join(c if c.isalnum() else "_" for c in dataset)[:60]
        path = Path(cache_dir) / f"metamodel-{safe}-{_fit_key(dataset, train, config)}.joblib"
        if path.exists():
            try:
                return joblib.load(path), 0.0, True
            except Exception:  # a corrupt or incompatible cache entry is refitted
                path.unlink(missing_ok=True)
    started = time.perf_counter()
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=config.n_estimators, n_jobs=1),
                      max_rows_per_task=config.max_rows_per_task).fit(train)
    seconds = time.perf_counter() - started
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        joblib.dump(model, tmp)
        tmp.replace(path)
    return model, seconds, False


# ----------------------------------------------------------------------------------------------- the searches


def _search_job(task: ReplayTask, knowledge: Knowledge, searcher: str, variants: Sequence[str], seeds: int,
                budget: int, settings: SearchSettings) -> list[SearchTrace]:
    return [run_search(task, searcher, variant=v, knowledge=knowledge, budget=budget, seed=s, settings=settings)
            for v in variants for s in range(seeds)]


def _knowledge_quality(task: ReplayTask, knowledge: Knowledge) -> dict[str, Any]:
    """How well the meta-model ranks this task's configurations (context for the search results)."""
    from scipy.stats import spearmanr

    ok = task.scored
    rho = spearmanr(knowledge.predictions["rank_score"].to_numpy()[ok], task.score[ok]).statistic
    order = np.argsort(-knowledge.standing, kind="stable")
    regrets = np.array([task.regret(task.score[i]) if ok[i] else 1.0 for i in order])
    cum_cost = np.cumsum(task.cost[order])
    best_so_far = np.minimum.accumulate(regrets)
    hit = np.flatnonzero(best_so_far <= REGRET_TARGET + 1e-12)
    near = task.regret_array() <= REGRET_TARGET + 1e-12
    return {"spearman": float(rho) if np.isfinite(rho) else None,
            "top1_regret": float(regrets[0]), "top5_regret": float(regrets[:5].min()),
            "rank_of_best": int(np.flatnonzero(order == task.best_index)[0]) + 1,
            "ranked_evals_to_1pct": int(hit[0]) + 1 if hit.size else None,
            "ranked_compute_to_1pct": float(cum_cost[hit[0]]) if hit.size else None,
            "n_within_1pct": int(near.sum())}


def run_benchmark(runs: pd.DataFrame, config: BenchConfig | None = None, *, cache_dir: Path | None = None,
                  tasks: Sequence[str] | None = None,
                  progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run the replay benchmark on the runs of a knowledge base.

    Args:
        runs: rows of the runs table (:func:`metaml.load_runs`).
        config: what to run.
        cache_dir: where fitted meta-models are cached (None: no cache).
        tasks: task keys to hold out (default: sampled by :func:`sample_tasks`).
        progress: called with one line per step.
    """
    from joblib import Parallel, delayed

    config = config or BenchConfig()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    frame = learning_frame(runs)
    eligible = eligible_tasks(frame, min_configs=config.min_configs, min_spread=config.min_spread,
                              sources=config.sources, exclude_task_types=config.exclude_task_types)
    chosen = list(tasks) if tasks else sample_tasks(eligible, config.n_tasks, seed=config.task_seed)
    if not chosen:
        raise ValueError("no held-out task qualifies (need tasks with >= "
                         f"{config.min_configs} configurations and real runtimes in {', '.join(config.sources)})")
    say(f"{len(eligible)} eligible tasks; holding out {len(chosen)}")
    models: dict[str, Any] = {}
    fit_seconds: dict[str, float] = {}
    task_objs: dict[str, ReplayTask] = {}
    knowledge: dict[str, Knowledge] = {}
    infos: list[dict[str, Any]] = []
    for key in chosen:
        task = ReplayTask.from_frame(frame, key)
        dataset = str(frame.loc[frame["task_key"] == key, "dataset_name"].iloc[0])
        if dataset not in models:
            model, secs, cached = fit_held_out(frame, dataset, config, cache_dir)
            models[dataset], fit_seconds[dataset] = model, secs
            say(f"meta-model without {dataset}: {'cached' if cached else f'fitted in {secs:.0f} s'} "
                f"({model.n_train_runs_:,} training runs)")
        kn = Knowledge.from_model(models[dataset], task)
        task.fill_costs(kn.predictions["runtime_s"].to_numpy(dtype=float))
        task_objs[key], knowledge[key] = task, kn
        info = {**task.describe(), "held_out_dataset": dataset, "budget": config.budget_for(task.n_configs),
                "train_runs": int(models[dataset].n_train_runs_), "meta_model": _knowledge_quality(task, kn)}
        infos.append(info)
    t_models = time.perf_counter() - t0
    say(f"searching: {len(chosen)} tasks x {len(config.searchers)} searchers x {len(config.variants)} variants x "
        f"{config.seeds} seeds")
    jobs = [(key, s) for key in chosen for s in config.searchers]
    results = Parallel(n_jobs=config.jobs, prefer="processes")(
        delayed(_search_job)(task_objs[key], knowledge[key], s, config.variants, config.seeds,
                             config.budget_for(task_objs[key].n_configs), config.settings)
        for key, s in jobs)
    traces = [t for batch in results for t in batch]
    t_search = time.perf_counter() - t0 - t_models
    table = _trace_table(traces, task_objs)
    curves_e, curves_c, grid = _curves(traces, task_objs, config)
    return BenchResult(config, infos, table, curves_e, curves_c, grid.tolist(),
                       {"meta_models": t_models, "searches": t_search, "total": time.perf_counter() - t0},
                       {"fit_seconds": fit_seconds})


def _trace_table(traces: list[SearchTrace], tasks: dict[str, ReplayTask]) -> pd.DataFrame:
    rows = []
    for tr in traces:
        task = tasks[tr.task_key]
        regrets = task.regret_array()
        skipped = [s[0] for s in tr.skips]
        false_skips = sum(1 for s in tr.skips if not math.isnan(s[3]) and s[3] > s[2])
        total = tr.compute
        c1 = tr.compute_to(REGRET_TARGET)
        rows.append({
            "task": tr.task_key, "searcher": tr.searcher, "variant": tr.variant, "seed": tr.seed,
            "budget": tr.budget, "n_evals": len(tr.evals), "n_skips": len(tr.skips), "compute": total,
            "final_regret": tr.final_regret, "reached": bool(np.isfinite(c1)),
            "compute_to_1pct": c1, "compute_to_1pct_censored": _censor(c1, total),
            "evals_to_1pct": tr.evals_to(REGRET_TARGET),
            **{f"compute_to_{round(100 * lv)}pct_censored": _censor(tr.compute_to(lv), total)
               for lv in SECONDARY_TARGETS},
            "best_skipped": task.best_index in skipped,
            "near_best_skipped": any(regrets[i] <= REGRET_TARGET + 1e-12 for i in skipped),
            "false_skips": false_skips,
        })
    return pd.DataFrame(rows)


def _censor(value: float, total: float) -> float:
    return value if np.isfinite(value) else total


def _curves(traces: list[SearchTrace], tasks: dict[str, ReplayTask],
            config: BenchConfig) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]],
                                          np.ndarray]:
    """Per task and variant, the median over seeds of regret after n evaluations (n = 1..budget), and of regret
    once x average evaluations' worth of compute was spent (x on ``grid``, in units of the task's mean cost)."""
    max_budget = max(config.budget_for(t.n_configs) for t in tasks.values())
    grid = np.linspace(0, max_budget, 201)
    by: dict[tuple[str, str], list[SearchTrace]] = {}
    for tr in traces:
        by.setdefault((tr.task_key, f"{tr.searcher}:{tr.variant}"), []).append(tr)
    ev: dict[str, dict[str, list[float]]] = {}
    co: dict[str, dict[str, list[float]]] = {}
    for (task_key, name), group in by.items():
        unit = float(np.mean(tasks[task_key].cost)) or 1.0
        e = np.median([t.regret_by_evaluations(max_budget) for t in group], axis=0)
        c = np.median([t.regret_at_compute(grid * unit) for t in group], axis=0)
        ev.setdefault(name, {})[task_key] = [float(x) for x in e]
        co.setdefault(name, {})[task_key] = [float(x) for x in c]
    return ev, co, grid


# -------------------------------------------------------------------------------------------------- summaries


def summarize(result: BenchResult) -> dict[str, Any]:
    """Per variant and per task figures, and the verdict on each goal."""
    df = result.runs.copy()
    df["name"] = df["searcher"] + ":" + df["variant"]
    per_task = df.groupby(["name", "task"]).agg(
        compute_to_1pct=("compute_to_1pct_censored", "median"), reached_share=("reached", "mean"),
        evals_to_1pct=("evals_to_1pct", "median"), final_regret_mean=("final_regret", "mean"),
        final_regret_median=("final_regret", "median"), skips=("n_skips", "mean"), compute=("compute", "median"),
        best_skipped=("best_skipped", "mean"))
    zero = [f"{s}:alone" for s in result.config.searchers if "alone" in result.config.variants]
    med_zero = {n: float(per_task.loc[n, "compute_to_1pct"].median()) for n in zero}
    best_zero = min(zero, key=lambda n: (med_zero[n], float(per_task.loc[n, "final_regret_mean"].mean()))) \
        if zero else None
    tasks = sorted(df["task"].unique())
    variants: dict[str, dict[str, Any]] = {}
    for name, g in df.groupby("name", sort=False):
        pt = per_task.loc[name]
        row: dict[str, Any] = {
            "searcher": g["searcher"].iat[0], "variant": g["variant"].iat[0],
            "median_compute_to_1pct_s": float(pt["compute_to_1pct"].median()),
            "tasks_reaching_1pct_median_seed": int((pt["reached_share"] >= 0.5).sum()),
            "share_searches_reaching_1pct": float(g["reached"].mean()),
            "mean_final_regret": float(g["final_regret"].mean()),
            "median_final_regret": float(g["final_regret"].median()),
            "mean_evaluations": float(g["n_evals"].mean()), "mean_skips": float(g["n_skips"].mean()),
            "skip_share_of_proposals": float(g["n_skips"].sum() / max(g["n_evals"].sum() + g["n_skips"].sum(), 1)),
            "false_skip_share": float(g["false_skips"].sum() / g["n_skips"].sum()) if g["n_skips"].sum() else None,
            "best_wrongly_skipped_share": float(g["best_skipped"].mean()),
            "near_best_skipped_share": float(g["near_best_skipped"].mean()),
        }
        if best_zero is not None:
            ratios = per_task.loc[best_zero, "compute_to_1pct"] / pt["compute_to_1pct"]
            strict = per_task.loc[zero, "compute_to_1pct"].groupby(level="task").min() / pt["compute_to_1pct"]
            own = per_task.loc[f"{row['searcher']}:alone", "compute_to_1pct"] / pt["compute_to_1pct"] \
                if f"{row['searcher']}:alone" in per_task.index.get_level_values(0) else None
            row["speedup_vs_best_zero_shot_median"] = float(ratios.median())
            row["speedup_vs_best_zero_shot_per_task"] = {t: float(ratios.get(t, np.nan)) for t in tasks}
            row["speedup_vs_per_task_best_zero_shot_median"] = float(strict.median())
            row["speedup_vs_same_searcher_alone_median"] = float(own.median()) if own is not None else None
        for lv in SECONDARY_TARGETS:
            col = f"compute_to_{round(100 * lv)}pct_censored"
            med = df.groupby(["name", "task"])[col].median()
            zeros = {n: float(med.loc[n].median()) for n in zero}
            if zeros:
                ref = min(zeros, key=lambda n: zeros[n])
                row[f"speedup_to_{round(100 * lv)}pct_vs_best_zero_shot_median"] = float(
                    (med.loc[ref] / med.loc[name]).median())
                row[f"median_compute_to_{round(100 * lv)}pct_s"] = float(med.loc[name].median())
        variants[name] = row
    stats = df.groupby(["name", "task"])["final_regret"].agg(["mean", "std", "count"])
    negative: dict[str, list[dict[str, Any]]] = {}
    spreads = {t["task"]: t["best"] - t["worst"] for t in result.tasks}
    for name, row in variants.items():
        if "prior" not in row["variant"]:
            continue
        alone = f"{row['searcher']}:alone"
        if alone not in variants:
            continue
        out = []
        for t in tasks:
            a = float(per_task.loc[(alone, t), "final_regret_mean"])
            w = float(per_task.loc[(name, t), "final_regret_mean"])
            if w > a + 1e-9:
                sa, sw = stats.loc[(alone, t)], stats.loc[(name, t)]
                se = math.sqrt(sa["std"] ** 2 / sa["count"] + sw["std"] ** 2 / sw["count"])
                out.append({"task": t, "alone_final_regret": a, "warm_final_regret": w, "worse_by": w - a,
                            "worse_by_points": (w - a) * spreads[t], "standard_error": se,
                            "beyond_2_se": bool(w - a > 2 * se)})
        negative[name] = out
    knowledge_variants = [n for n, r in variants.items() if r["variant"] != "alone"]
    best_kv = max(knowledge_variants, key=lambda n: variants[n].get("speedup_vs_best_zero_shot_median", 0.0)) \
        if knowledge_variants and best_zero else None
    skip_variants = [n for n, r in variants.items() if "skip" in r["variant"]]
    prior_variants = [n for n, r in variants.items() if "prior" in r["variant"]]
    skip_searches = df[df["variant"].str.contains("skip")]
    goals = {
        "compute_10x": {
            "target": ">= 10x less compute than the best zero-shot searcher to reach 1% regret on the median task",
            "best_zero_shot": best_zero, "best_knowledge_variant": best_kv,
            "value": variants[best_kv]["speedup_vs_best_zero_shot_median"] if best_kv else None,
            "met": bool(best_kv and variants[best_kv]["speedup_vs_best_zero_shot_median"] >= 10)},
        "wrong_skip_under_5pct": {
            "target": "the best configuration wrongly skipped in < 5% of searches",
            "value": float(skip_searches["best_skipped"].mean()) if len(skip_searches) else None,
            "per_variant": {n: variants[n]["best_wrongly_skipped_share"] for n in skip_variants},
            "met": bool(len(skip_searches) and skip_searches["best_skipped"].mean() < 0.05)},
        "no_negative_transfer": {
            "target": "no task where the warm-started search ends worse than zero-shot after the full budget",
            "tasks_with_negative_transfer": {n: len(negative.get(n, [])) for n in prior_variants},
            "beyond_2_se": {n: sum(it["beyond_2_se"] for it in negative.get(n, [])) for n in prior_variants},
            "met": bool(prior_variants) and all(len(negative.get(n, [])) == 0 for n in prior_variants)},
    }
    per_task_out = per_task.reset_index().to_dict("records")
    return {"variants": variants, "best_zero_shot": best_zero, "negative_transfer": negative, "goals": goals,
            "per_task": per_task_out}


# ------------------------------------------------------------------------------------------------------ report


def _fmt_s(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 60:
        return f"{x / 60:.0f} min"
    return f"{x:.0f} s"


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _plots(result: BenchResult, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-3
    written = []
    colors = {"alone": "tab:gray", "prior": "tab:blue", "skip": "tab:orange", "prior+skip": "tab:green"}
    searchers = list(result.config.searchers)
    for kind, curves, xlabel, fname in (
            ("evaluations", result.curves_evals, "evaluations", "regret_vs_evaluations.png"),
            ("compute", result.curves_compute, "compute spent (in the task's mean evaluation cost)",
             "regret_vs_compute.png")):
        fig, axes = plt.subplots(1, len(searchers), figsize=(5 * len(searchers), 4), sharey=True, squeeze=False)
        for ax, s in zip(axes[0], searchers, strict=True):
            for v in result.config.variants:
                name = f"{s}:{v}"
                if name not in curves:
                    continue
                arr = np.array(list(curves[name].values()))
                y = np.maximum(arr.mean(axis=0), floor)
                x = np.arange(1, arr.shape[1] + 1) if kind == "evaluations" else np.array(result.compute_grid)
                ax.plot(x, y, label=v, color=colors.get(v), lw=2 if v != "alone" else 1.5,
                        ls="--" if v == "alone" else "-")
            ax.axhline(REGRET_TARGET, color="k", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.set_title(s)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("normalized regret (median over seeds, mean over tasks)")
        axes[0][-1].legend()
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    # per task: regret against compute in seconds, zero-shot (dashed) vs prior+skip (solid)
    tasks = [t["task"] for t in result.tasks]
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    scolors = {"random": "tab:gray", "tpe": "tab:purple", "grammar": "tab:green"}
    info = {t["task"]: t for t in result.tasks}
    for ax, t in zip(axes.ravel(), tasks, strict=False):
        unit = info[t]["mean_cost_s"]
        x = np.array(result.compute_grid) * unit / 3600
        for s in searchers:
            for v, ls in (("alone", "--"), ("prior+skip", "-")):
                name = f"{s}:{v}"
                if name in result.curves_compute and t in result.curves_compute[name]:
                    ax.plot(x, np.maximum(result.curves_compute[name][t], floor), ls=ls, color=scolors.get(s),
                            label=f"{s} {v}")
        ax.axhline(REGRET_TARGET, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_title(t.split("|")[0] + ": " + t.split("|")[1], fontsize=9)
        ax.set_xlabel("GPU hours (real runtimes)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "regret_vs_compute_per_task.png", dpi=100)
    plt.close(fig)
    written.append("regret_vs_compute_per_task.png")
    return written


def write_report(result: BenchResult, out_dir: Path, *, context: dict[str, Any] | None = None) -> Path:
    """Write ``report.md``, ``results.json`` and the plots into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    plots = _plots(result, out_dir)
    cfg = asdict(result.config)
    payload = {"config": cfg, "context": {**(context or {}), **result.context}, "seconds": result.seconds,
               "tasks": result.tasks, "summary": summary,
               "curves": {"evaluations": result.curves_evals, "compute": result.curves_compute,
                          "compute_grid_mean_costs": result.compute_grid},
               "plots": plots}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    result.runs.to_csv(out_dir / "searches.csv", index=False)
    report = out_dir / "report.md"
    report.write_text(render_markdown(result, summary, context=context))
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def render_markdown(result: BenchResult, summary: dict[str, Any], *, context: dict[str, Any] | None = None) -> str:
    cfg = result.config
    v = summary["variants"]
    g = summary["goals"]
    lines = ["# AutoML replay benchmark", ""]
    ctx = {**(context or {}), "held-out tasks": len(result.tasks), "seeds": cfg.seeds,
           "budget": cfg.budget if cfg.budget is not None else "25% of the task's configurations, at most 50",
           "meta-model": f"LODO MetaModel(outcome=OutcomeEstimator(n_estimators={cfg.n_estimators}, n_jobs=1), "
                         f"max_rows_per_task={cfg.max_rows_per_task})",
           "skip rule": f"decide(max_false_skip={cfg.settings.max_false_skip}, tolerance={cfg.settings.tolerance}), "
                        f"skipped candidates charged {cfg.settings.skip_cost_fraction:g} of their cost",
           "time": f"meta-models {result.seconds['meta_models']:.0f} s, searches {result.seconds['searches']:.0f} s, "
                   f"total {result.seconds['total']:.0f} s"}
    lines += [f"- **{k}**: {val}" for k, val in ctx.items()]
    lines += ["", "## Goals", "", "| goal | result | met |", "| --- | --- | --- |"]
    c = g["compute_10x"]
    lines.append(f"| {c['target']} | best knowledge variant `{c['best_knowledge_variant']}`: "
                 f"{_fmt(c['value'], 2)}x vs best zero-shot `{c['best_zero_shot']}` | {'yes' if c['met'] else 'no'} |")
    w = g["wrong_skip_under_5pct"]
    lines.append(f"| {w['target']} | {_fmt(100 * w['value'] if w['value'] is not None else None, 1)}% of searches "
                 f"with the skip rule | {'yes' if w['met'] else 'no'} |")
    n = g["no_negative_transfer"]
    counts = ", ".join(f"`{k}` {val} ({n['beyond_2_se'][k]} beyond 2 SE)"
                       for k, val in n["tasks_with_negative_transfer"].items())
    lines.append(f"| {n['target']} | tasks with negative transfer: {counts} | {'yes' if n['met'] else 'no'} |")
    lines += ["", "## Variants", "",
              "Compute to 1% regret: median over tasks of the per-task median over seeds (censored at the whole "
              "budget's compute when not reached). Speed-up: per task, best zero-shot compute / variant compute, "
              "median over tasks.", "",
              "| searcher | variant | compute to 1% | speed-up vs best zero-shot | vs per-task best zero-shot | "
              "vs same searcher alone | searches reaching 1% | mean final regret | skips / search | "
              "false skips | best skipped |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in v.values():
        lines.append(
            f"| {r['searcher']} | {r['variant']} | {_fmt_s(r['median_compute_to_1pct_s'])} | "
            f"{_fmt(r.get('speedup_vs_best_zero_shot_median'), 2)}x | "
            f"{_fmt(r.get('speedup_vs_per_task_best_zero_shot_median'), 2)}x | "
            f"{_fmt(r.get('speedup_vs_same_searcher_alone_median'), 2)}x | "
            f"{100 * r['share_searches_reaching_1pct']:.0f}% | {r['mean_final_regret']:.4f} | "
            f"{r['mean_skips']:.1f} | "
            f"{_fmt(100 * r['false_skip_share'] if r['false_skip_share'] is not None else None, 1)}% | "
            f"{100 * r['best_wrongly_skipped_share']:.1f}% |")
    lines += ["", "Secondary levels (the goal is 1%): median over tasks of the speed-up to reach 10% and 5% "
              "normalized regret, against the best zero-shot searcher at that level.", "",
              "| searcher | variant | compute to 10% | speed-up to 10% | compute to 5% | speed-up to 5% |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in v.values():
        lines.append(f"| {r['searcher']} | {r['variant']} | {_fmt_s(r.get('median_compute_to_10pct_s'))} | "
                     f"{_fmt(r.get('speedup_to_10pct_vs_best_zero_shot_median'), 2)}x | "
                     f"{_fmt_s(r.get('median_compute_to_5pct_s'))} | "
                     f"{_fmt(r.get('speedup_to_5pct_vs_best_zero_shot_median'), 2)}x |")
    lines += ["", "## Held-out tasks", "",
              "Meta-model quality on each task (trained without the task's dataset): Spearman of the ranking score "
              "with the real outcome, the normalized regret of its top-1 and best-of-top-5 configuration, the "
              "predicted rank of the real best configuration, and the evaluations / compute a search would need "
              "evaluating candidates in predicted order.", "",
              "| task | configs | budget | cost source | mean cost | spread (points) | Spearman | top-1 regret | "
              "top-5 regret | rank of best | ranked: evals to 1% | ranked: compute to 1% |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in result.tasks:
        q = t["meta_model"]
        lines.append(f"| {t['task']} | {t['n_configs']} | {t['budget']} | {t['cost_source']} | "
                     f"{_fmt_s(t['mean_cost_s'])} | {t['best'] - t['worst']:.1f} | {_fmt(q['spearman'], 2)} | "
                     f"{q['top1_regret']:.3f} | {q['top5_regret']:.3f} | {q['rank_of_best']} | "
                     f"{_fmt(q['ranked_evals_to_1pct'])} | {_fmt_s(q['ranked_compute_to_1pct'])} |")
    lines += ["", "## Compute to 1% regret per task (median over seeds)", ""]
    pt = pd.DataFrame(summary["per_task"])
    names = list(v)
    header = "| task | " + " | ".join(f"`{nm}`" for nm in names) + " |"
    lines += [header, "| --- |" + " --- |" * len(names)]
    for t in sorted(pt["task"].unique()):
        cells = []
        for nm in names:
            r = pt[(pt["name"] == nm) & (pt["task"] == t)]
            if r.empty:
                cells.append("—")
                continue
            r = r.iloc[0]
            mark = "" if r["reached_share"] >= 0.5 else " (>)"
            cells.append(f"{_fmt_s(r['compute_to_1pct'])}{mark}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "(>) : fewer than half the seeds reached 1% within the budget; the value is a lower bound.", "",
              "## Negative transfer", "",
              "Tasks where the variant with the biased prior ends the full budget with a higher mean normalized "
              "regret than the same searcher alone.", ""]
    any_neg = False
    for name, items in summary["negative_transfer"].items():
        for it in items:
            any_neg = True
            lines.append(f"- `{name}` on {it['task']}: {it['warm_final_regret']:.4f} vs {it['alone_final_regret']:.4f}"
                         f" alone (worse by {it['worse_by']:.4f} normalized, {it['worse_by_points']:.2f} points; "
                         f"{'beyond' if it['beyond_2_se'] else 'within'} 2 standard errors, "
                         f"SE {it['standard_error']:.4f})")
    if not any_neg:
        lines.append("- none")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in ("regret_vs_evaluations.png", "regret_vs_compute.png",
                                                             "regret_vs_compute_per_task.png")]
    return "\n".join(lines) + "\n"

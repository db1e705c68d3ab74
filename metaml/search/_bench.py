"""The AutoML replay benchmark: how much compute does a search need to reach the best configuration of a task it has
never seen, within the noise, with and without the knowledge base?

For every eligible held-out task (a language task with at least ``min_configs`` configurations and a real runtime on
each, :func:`metaml.search.eligible_tasks`), a meta-model is trained **leave-one-dataset-out** (no run of the task's
dataset, from any source; fitted models are cached with joblib), and every searcher of
:mod:`metaml.search._searchers` replays searches **uncensored**: until a configuration within the task's noise band
of the best one is evaluated, or nothing is left to propose.

Definitions used by the report:

* **noise band** (:meth:`ReplayTask.noise_band`): the standard error of the best configuration's mean over its seeds,
  or 1% of the task's spread when larger; where the best configuration ran once or twice, the typical seed standard
  deviation of the sources that repeat configurations (:func:`typical_seed_sd`) stands in;
* **compute to the band**: the sum of the real training runtimes of the evaluations until the band was reached;
  per task, the median over a stochastic searcher's seeds. A search that stopped without reaching it (only the
  engine can: its skip rule may exclude every remaining candidate) counts as the whole task's compute;
* **ratio** to a peer: per task, the peer's compute over the engine's; the headline is its median over tasks with a
  bootstrap 90% interval over tasks. The best zero-shot (knowledge) peer is the one whose median ratio is lowest,
  i.e. the hardest to beat;
* **negative transfer**: a task where the engine needs more compute than the best zero-shot peer's mean beyond two
  standard errors of that mean (over its seeds);
* **best wrongly skipped**: an engine search that ended with the task's best configuration among the candidates it
  excluded, or without reaching the band.

The engine's knobs are chosen by **nested leave-one-dataset-out**: for each task, the setting of ``engine_grid`` with
the lowest median log-ratio to the best zero-shot searcher on the tasks of the *other* datasets is the one reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metaml._data import learning_frame
from metaml._protocols import groups_for
from metaml.search._engine import EngineSettings, TaskKnowledge
from metaml.search._replay import ReplayTask, SearchTrace, eligible_tasks
from metaml.search._searchers import (
    KNOWLEDGE,
    ZERO_SHOT,
    EngineSearcher,
    GrammarReplaySearcher,
    OptunaSearcher,
    OrderSearcher,
    RandomSearcher,
    run_search,
)

#: Sources whose runs carry real training runtimes (the compute claims are made on these).
RUNTIME_SOURCES = ("taskweb", "transfergraph", "peft_bench")
#: Task types left out by default: the product is about language models.
NON_LANGUAGE_TASK_TYPES = ("image-classification", "other")
#: Sources whose repeated configurations give the typical seed spread.
SEED_SOURCES = ("taskweb", "opda", "model_recycling")
#: Normalized-regret levels reported beside the noise band.
REGRET_LEVELS = (0.01, 0.05, 0.10)
#: Evaluations after which the anytime regret is reported.
ANYTIME = (5, 10, 25)
#: The goal's limit on searches that wrongly skip the best configuration; the nested choice of engine settings keeps
#: to it.
MAX_BEST_EXCLUDED = 0.05
CACHE_VERSION = "2"


def default_engine_grid() -> dict[str, EngineSettings]:
    """The engine settings the nested selection chooses among: each mechanism alone and combined, with and without
    cost-awareness."""
    grid: dict[str, EngineSettings] = {}
    for name, experts, gp in (("prior", False, False), ("experts", True, False), ("gp", False, True),
                              ("experts+gp", True, True)):
        for c in (0.0, 0.5, 1.0):
            grid[f"{name}/cost{c:g}"] = EngineSettings(experts=experts, gp=gp, cost_exponent=c)
    for c in (0.0, 0.5, 1.0):  # the experts' consensus as the first order too
        grid[f"experts-first/cost{c:g}"] = EngineSettings(experts=True, gp=False, cost_exponent=c, prior_experts=True)
    return grid


@dataclass
class BenchConfig:
    """What the benchmark runs.

    Attributes:
        tasks: task keys to hold out (None: every eligible task).
        seeds: searches per stochastic searcher and task.
        gp_seeds: searches of the Optuna GP sampler (expensive: about a second per trial).
        searchers: which searchers (``engine`` included or not).
        sources, exclude_task_types, min_configs, min_spread: which tasks are eligible.
        n_estimators, max_rows_per_task: the leave-one-dataset-out meta-model's.
        warm_k: past tasks whose best configuration the XAutoLM-style warm start evaluates first.
        max_false_skip: the engine's per-search skip budget.
        engine_grid: the engine settings the nested selection chooses among.
        jobs: worker processes for the searches.
    """

    tasks: tuple[str, ...] | None = None
    seeds: int = 20
    gp_seeds: int = 3
    searchers: tuple[str, ...] = (*ZERO_SHOT, *KNOWLEDGE, "engine")
    sources: tuple[str, ...] = RUNTIME_SOURCES
    exclude_task_types: tuple[str, ...] = NON_LANGUAGE_TASK_TYPES
    min_configs: int = 20
    min_spread: float = 2.0
    n_estimators: int = 150
    max_rows_per_task: int = 100
    warm_k: int = 5
    max_false_skip: float = 0.05
    engine_grid: dict[str, EngineSettings] = field(default_factory=default_engine_grid)
    jobs: int = 2

    def seeds_of(self, searcher: str) -> int:
        if searcher == "gp":
            return self.gp_seeds
        return 1 if searcher in ("static", "engine") else self.seeds


@dataclass
class BenchResult:
    """Everything the report is written from."""

    config: BenchConfig
    tasks: list[dict[str, Any]]
    searches: pd.DataFrame
    curves: dict[str, dict[str, list[float]]]
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
    if (groups == dataset).sum() == 0:
        raise ValueError(f"dataset {dataset!r} has no runs")
    train = frame[groups != dataset]
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


def typical_seed_sd(frame: pd.DataFrame, sources: Sequence[str] = SEED_SOURCES) -> tuple[float, str]:
    """The median, over configurations run with three seeds or more in ``sources``, of their scores' standard
    deviation (points), and which sources it came from."""
    df = frame[frame["provenance_source"].isin(list(sources)) & frame["points"].notna()]
    g = df.groupby(["task_key", "config_key"])["points"].agg(["std", "count"])
    g = g[g["count"] >= 3]
    if g.empty:
        return 1.0, "no repeated configurations: 1 point assumed"
    used = sorted({str(t).split("|")[0] for t in g.index.get_level_values(0)})
    return float(g["std"].median()), f"median seed sd of {len(g):,} repeated configurations ({', '.join(used)})"


# ----------------------------------------------------------------------------------------------- one task


@dataclass
class PreparedTask:
    """A held-out task with what every searcher needs."""

    task: ReplayTask
    dataset: str
    band: float
    band_basis: str
    knowledge: TaskKnowledge
    portfolio: np.ndarray
    static: np.ndarray
    warm_start: list[int]


def prepare_task(frame: pd.DataFrame, key: str, model: Any, *, seed_sd: float, warm_k: int) -> PreparedTask:
    """The task ``key`` of ``frame`` as the searchers see it, with the (held-out) meta-model's knowledge."""
    task = ReplayTask.from_frame(frame, key)
    dataset = str(frame.loc[frame["task_key"] == key, "dataset_name"].iloc[0])
    rows = task.rows.reset_index(drop=True)
    pred = model.predict_arrays(rows)
    task.fill_costs(pred["runtime_s"])
    experience = model.featurizer_.experience_
    kn = TaskKnowledge.from_model(model, rows, pred, exclude_datasets=[dataset])
    z = pred["rank_score"]
    z = (z - z.mean()) / (z.std() or 1.0)
    p = np.nan_to_num(pred["p_fail"], nan=0.0)
    band, basis = task.noise_band(seed_sd)
    return PreparedTask(task, dataset, band, basis, kn, portfolio=experience.lookup(rows),
                        static=(1 - p) * z + p * z.min(), warm_start=_nearest_best(frame, rows, kn, warm_k))


def _nearest_best(frame: pd.DataFrame, rows: pd.DataFrame, kn: TaskKnowledge, k: int) -> list[int]:
    """XAutoLM's warm start: the best candidate of each of the ``k`` past tasks nearest by dataset meta-features
    (past tasks without meta-features come last, in order of coverage)."""
    from metaml._baselines import KNearestDatasets

    if not kn.profile_tasks:
        return []
    datasets = [t.split("|")[1] for t in kn.profile_tasks]
    meta = KNearestDatasets._meta(frame.groupby("dataset_name").first().reindex(datasets))
    target = KNearestDatasets._meta(rows.head(1).set_index("dataset_name")).iloc[0]
    scale = meta.std().replace(0, 1).fillna(1)
    diff = ((meta - target) / scale).abs()
    known = diff.notna() & target.notna()
    dist = (diff.where(known).sum(axis=1) / known.sum(axis=1).replace(0, np.nan)).to_numpy()
    dist = np.where(np.isfinite(dist), dist, np.inf)
    order = np.argsort(dist, kind="stable")[:k]
    out: list[int] = []
    for t in order:
        profile = kn.profiles[t]
        if np.isfinite(profile).any():
            best = int(np.nanargmax(profile))
            if best not in out:
                out.append(best)
    return out


def _searcher(name: str, pt: PreparedTask, seed: int, settings: EngineSettings | None) -> Any:
    rng = np.random.default_rng(seed)
    if name == "random":
        return RandomSearcher(rng)
    if name in ("tpe", "gp"):
        return OptunaSearcher(name, pt.task.space, rng, seed=seed)
    if name == "grammar":
        return GrammarReplaySearcher(pt.task.space, rng)
    if name == "portfolio":
        return OrderSearcher("portfolio", pt.portfolio, rng)
    if name == "static":
        return OrderSearcher("static", pt.static, rng)
    if name == "warmstart":
        s = OptunaSearcher("tpe", pt.task.space, rng, seed=seed, warm_start=pt.warm_start)
        s.name = "warmstart"
        return s
    if name == "engine":
        return EngineSearcher(pt.knowledge, settings)
    raise ValueError(f"unknown searcher {name!r}")


def _search_job(pt: PreparedTask, name: str, seeds: int,
                settings: Mapping[str, EngineSettings]) -> list[dict[str, Any]]:
    out = []
    variants: Mapping[str, EngineSettings | None] = settings if name == "engine" else {"": None}
    for variant, st in variants.items():
        for seed in range(seeds):
            started = time.perf_counter()
            trace = run_search(pt.task, _searcher(name, pt, seed, st), target=pt.band, seed=seed)
            out.append(_describe(pt, name, variant, seed, trace, time.perf_counter() - started))
    return out


def _describe(pt: PreparedTask, name: str, variant: str, seed: int, trace: SearchTrace,
              seconds: float) -> dict[str, Any]:
    task = pt.task
    scores = np.array([e[2] for e in trace.evals], dtype=float)
    compute = np.array([e[3] for e in trace.evals], dtype=float)
    best_so_far = np.fmax.accumulate(np.where(np.isnan(scores), -np.inf, scores)) if len(scores) else scores
    reached = bool(len(best_so_far) and task.best - best_so_far[-1] <= pt.band + 1e-9)
    total = float(np.sum(task.cost))
    row: dict[str, Any] = {
        "task": task.task_key, "searcher": name, "variant": variant, "seed": seed, "evaluations": len(scores),
        "reached": reached, "compute": float(compute[-1]) if reached else total,
        "evals_to_band": len(scores) if reached else task.n_configs,
        "final_points_regret": float(task.best - best_so_far[-1]) if len(scores) and np.isfinite(best_so_far[-1])
        else float(task.best - task.worst),
        "excluded": len(trace.excluded), "best_excluded": (task.best_index in trace.excluded) or not reached,
        "seconds": seconds, "ms_per_proposal": 1000.0 * seconds / max(len(scores), 1)}
    span = task.best - task.worst
    regret = (task.best - best_so_far) / span if span > 0 else np.zeros(len(scores))
    for level in REGRET_LEVELS:
        hit = np.flatnonzero(regret <= level + 1e-12)
        row[f"compute_to_{round(100 * level)}pct"] = float(compute[hit[0]]) if hit.size else np.nan
    for n in ANYTIME:
        row[f"regret_after_{n}"] = float(regret[min(n, len(regret)) - 1]) if len(regret) else 1.0
    row["trace"] = [(int(e[0]), float(e[3])) for e in trace.evals]
    return row


# ------------------------------------------------------------------------------------------------------- run


def run_benchmark(runs: pd.DataFrame, config: BenchConfig | None = None, *, cache_dir: Path | None = None,
                  progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run the replay benchmark on the runs of a knowledge base.

    Args:
        runs: rows of the runs table (:func:`metaml.load_runs`).
        config: what to run.
        cache_dir: where fitted meta-models are cached (None: no cache).
        progress: called with one line per step.
    """
    from joblib import Parallel, delayed

    config = config or BenchConfig()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    frame = learning_frame(runs)
    eligible = eligible_tasks(frame, min_configs=config.min_configs, min_spread=config.min_spread,
                              sources=config.sources, exclude_task_types=config.exclude_task_types)
    chosen = list(config.tasks) if config.tasks else list(eligible.index)
    if not chosen:
        raise ValueError("no held-out task qualifies (need tasks with >= "
                         f"{config.min_configs} configurations and real runtimes in {', '.join(config.sources)})")
    seed_sd, seed_basis = typical_seed_sd(frame)
    say(f"{len(eligible)} eligible tasks; holding out {len(chosen)}; typical seed sd {seed_sd:.2f} points")
    models: dict[str, Any] = {}
    fit_seconds: dict[str, float] = {}
    prepared: dict[str, PreparedTask] = {}
    for key in chosen:
        dataset = str(frame.loc[frame["task_key"] == key, "dataset_name"].iloc[0])
        if dataset not in models:
            model, secs, cached = fit_held_out(frame, dataset, config, cache_dir)
            models[dataset], fit_seconds[dataset] = model, secs
            say(f"meta-model without {dataset}: {'cached' if cached else f'fitted in {secs:.0f} s'}")
        prepared[key] = prepare_task(frame, key, models[dataset], seed_sd=seed_sd, warm_k=config.warm_k)
    t_models = time.perf_counter() - t0
    jobs = [(key, name) for key in chosen for name in config.searchers]
    say(f"searching: {len(jobs)} (task, searcher) jobs, {config.seeds} seeds per stochastic searcher")
    results = []
    for done, batch in enumerate(Parallel(n_jobs=config.jobs, prefer="processes", return_as="generator_unordered")(
            delayed(_search_job)(prepared[key], name, config.seeds_of(name), config.engine_grid)
            for key, name in jobs), start=1):
        results.append(batch)
        if batch:
            say(f"searches {done}/{len(jobs)}: {batch[0]['searcher']} on {batch[0]['task']} ({len(batch)} searches)")
    searches = pd.DataFrame([r for batch in results for r in batch])
    t_search = time.perf_counter() - t0 - t_models
    tasks = [{**p.task.describe(), "held_out_dataset": p.dataset, "band": p.band, "band_basis": p.band_basis,
              "n_within_band": int(np.sum(p.task.best - np.nan_to_num(p.task.score, nan=-np.inf) <= p.band + 1e-9)),
              "experts": len(p.knowledge.profile_tasks), "warm_start": p.warm_start}
             for p in prepared.values()]
    curves = _curves(searches, prepared)
    return BenchResult(config, tasks, searches, curves,
                       {"meta_models": t_models, "searches": t_search, "total": time.perf_counter() - t0},
                       {"fit_seconds": fit_seconds, "typical_seed_sd": seed_sd, "typical_seed_sd_basis": seed_basis})


def _curves(searches: pd.DataFrame, prepared: Mapping[str, PreparedTask]) -> dict[str, dict[str, list[float]]]:
    """Per searcher and task: the median over seeds of the points regret after x of the task's mean evaluation
    cost (x on a 0..50 grid of 101 steps)."""
    grid = np.linspace(0, 50, 101)
    out: dict[str, dict[str, list[float]]] = {}
    for (name, variant, task), g in searches.groupby(["searcher", "variant", "task"]):
        pt = prepared[task]
        unit = float(np.mean(pt.task.cost)) or 1.0
        curves = []
        for trace in g["trace"]:
            idx = np.array([t[0] for t in trace], dtype=int)
            compute = np.array([t[1] for t in trace], dtype=float)
            scores = pt.task.score[idx] if len(idx) else np.zeros(0)
            best = np.fmax.accumulate(np.where(np.isnan(scores), -np.inf, scores)) if len(idx) else scores
            regret = np.where(np.isfinite(best), pt.task.best - best, pt.task.best - pt.task.worst)
            pos = np.searchsorted(compute, grid * unit, side="right") - 1
            curves.append(np.where(pos >= 0, regret[np.clip(pos, 0, None)] if len(regret) else 0.0,
                                   pt.task.best - pt.task.worst))
        label = name if not variant else f"{name}[{variant}]"
        out.setdefault(label, {})[task] = [float(x) for x in np.median(curves, axis=0)]
    return out


# -------------------------------------------------------------------------------------------------- summaries


def _per_task(searches: pd.DataFrame) -> pd.DataFrame:
    """Per (searcher label, task): median compute to the band over seeds, its mean and standard error, reach."""
    df = searches.assign(label=np.where(searches["variant"] == "", searches["searcher"],
                                        searches["searcher"] + "[" + searches["variant"] + "]"))
    return df.groupby(["label", "task"]).agg(compute=("compute", "median"), mean=("compute", "mean"),
                                             sd=("compute", "std"), n=("compute", "size"),
                                             reached=("reached", "mean"), evals=("evals_to_band", "median"),
                                             best_excluded=("best_excluded", "mean"))


def choose_engine(searches: pd.DataFrame, task_dataset: Mapping[str, str],
                  peers: Sequence[str] = (*ZERO_SHOT, *KNOWLEDGE), *,
                  max_best_excluded: float = MAX_BEST_EXCLUDED) -> dict[str, str]:
    """Nested leave-one-dataset-out: for each task, the engine setting chosen on the tasks of the other datasets.

    Among the settings that wrongly skip the best configuration in at most ``max_best_excluded`` of those inner
    searches (the goal's own limit; when none does, the ones with the lowest rate), the one with the lowest mean
    log-ratio of its compute to the per-task best peer's (a geometric mean, so one task the setting loses badly
    on counts against it).
    """
    pt = _per_task(searches)
    compute = pt["compute"].unstack("label")
    excluded = pt["best_excluded"].unstack("label")
    ref = compute[[p for p in peers if p in compute]].min(axis=1)
    settings = [c for c in compute.columns if c.startswith("engine[")]
    log_ratio = np.log(compute[settings].div(ref, axis=0))
    chosen = {}
    for task in compute.index:
        inner = [t for t in compute.index if task_dataset[t] != task_dataset[task]]
        if not inner:
            chosen[task] = settings[0]
            continue
        rate = excluded.loc[inner, settings].mean()
        safe = rate[rate <= max_best_excluded].index if (rate <= max_best_excluded).any() else \
            rate[rate == rate.min()].index
        chosen[task] = str(log_ratio.loc[inner, list(safe)].mean().idxmin())
    return chosen


def _bootstrap_median(values: np.ndarray, *, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    draws = rng.choice(values, size=(n, len(values)), replace=True)
    meds = np.median(draws, axis=1)
    return float(np.quantile(meds, 0.05)), float(np.quantile(meds, 0.95))


def summarize(result: BenchResult) -> dict[str, Any]:
    """The headline ratios, per-task figures, negative transfer and the verdict on each goal."""
    searches = result.searches
    task_dataset = {t["task"]: t["held_out_dataset"] for t in result.tasks}
    pt = _per_task(searches)
    compute = pt["compute"].unstack("label")
    out: dict[str, Any] = {}
    has_engine = any(c.startswith("engine[") for c in compute.columns)
    if has_engine:
        chosen = choose_engine(searches, task_dataset)
        compute["engine"] = [compute.loc[t, chosen[t]] for t in compute.index]
        out["engine_settings"] = chosen
        engine_rows = pd.concat([searches[(searches["task"] == t) & (searches["searcher"] == "engine")
                                          & (searches["variant"] == chosen[t][len("engine["):-1])]
                                 for t in compute.index])
    peers = {"zero_shot": [z for z in ZERO_SHOT if z in compute], "knowledge": [k for k in KNOWLEDGE if k in compute]}
    ratios: dict[str, dict[str, Any]] = {}
    if has_engine:
        for group, names in peers.items():
            table = {}
            for name in names:
                r = compute[name] / compute["engine"]
                lo, hi = _bootstrap_median(r.to_numpy())
                table[name] = {"median": float(r.median()), "ci90": [lo, hi], "per_task": r.to_dict()}
            if table:
                best = min(table, key=lambda n: table[n]["median"])
                ratios[group] = {"best_peer": best, **table[best], "all": {n: t["median"] for n, t in table.items()}}
        zs_best = ratios.get("zero_shot", {}).get("best_peer")
        negative = []
        if zs_best:
            for t in compute.index:
                row = pt.loc[(zs_best, t)]
                se = (row["sd"] / math.sqrt(row["n"])) if row["n"] > 1 and np.isfinite(row["sd"]) else 0.0
                if compute.loc[t, "engine"] > row["mean"] + 2 * se:
                    negative.append({"task": t, "engine": float(compute.loc[t, "engine"]), "peer_mean": row["mean"],
                                     "peer_se": se, "ratio": float(compute.loc[t, zs_best] / compute.loc[t, "engine"])})
        out["negative_transfer"] = negative
        out["best_wrongly_skipped"] = float(engine_rows["best_excluded"].mean())
        out["engine_ms_per_proposal"] = float(engine_rows["ms_per_proposal"].median())
        zs = ratios.get("zero_shot", {})
        kp = ratios.get("knowledge", {})
        out["goals"] = {
            "vs_zero_shot_10x": {"target": ">= 10x less compute than the best zero-shot peer (median task)",
                                 "value": zs.get("median"), "peer": zs.get("best_peer"),
                                 "met": bool(zs and zs["median"] >= 10)},
            "vs_knowledge_1_5x": {"target": ">= 1.5x less compute than the best knowledge peer (median task)",
                                  "value": kp.get("median"), "peer": kp.get("best_peer"),
                                  "met": bool(kp and kp["median"] >= 1.5)},
            "no_negative_transfer": {"target": "no task where the engine needs more compute than the best zero-shot "
                                               "peer beyond two standard errors",
                                     "value": len(negative), "met": not negative},
            "best_skipped_under_5pct": {"target": "the best configuration wrongly skipped in < 5% of searches",
                                        "value": out["best_wrongly_skipped"],
                                        "met": out["best_wrongly_skipped"] < 0.05}}
    out["ratios"] = ratios
    out["median_compute"] = {c: float(compute[c].median()) for c in compute.columns}
    out["per_task_compute"] = compute.reset_index().to_dict("records")
    levels = {}
    df = searches.assign(label=np.where(searches["variant"] == "", searches["searcher"],
                                        searches["searcher"] + "[" + searches["variant"] + "]"))
    for level in REGRET_LEVELS:
        col = f"compute_to_{round(100 * level)}pct"
        levels[col] = df.groupby(["label", "task"])[col].median().unstack("label").median().to_dict()
    out["regret_levels"] = levels
    out["anytime"] = {f"after_{n}": df.groupby(["label", "task"])[f"regret_after_{n}"].median().unstack("label")
                      .mean().to_dict() for n in ANYTIME}
    return out


# ------------------------------------------------------------------------------------------------------ report


def _fmt_s(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 60:
        return f"{x / 60:.0f} min"
    return f"{x:.0f} s"


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _plots(result: BenchResult, summary: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ratios = summary.get("ratios", {})
    if ratios:
        tasks = sorted(ratios["zero_shot"]["per_task"])
        fig, ax = plt.subplots(figsize=(10, 0.32 * len(tasks) + 1.5))
        y = np.arange(len(tasks))
        for off, group, color in ((-0.2, "zero_shot", "tab:gray"), (0.2, "knowledge", "tab:blue")):
            if group in ratios:
                vals = [ratios[group]["per_task"][t] for t in tasks]
                ax.barh(y + off, vals, height=0.4, color=color,
                        label=f"vs best {group.replace('_', '-')} peer ({ratios[group]['best_peer']})")
        ax.axvline(1, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yticks(y, [t.split("|")[0] + ": " + t.split("|")[1] for t in tasks], fontsize=7)
        ax.set_xlabel("compute to the noise band: peer / engine (higher: the engine needs less)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "ratio_per_task.png", dpi=110)
        plt.close(fig)
        written.append("ratio_per_task.png")
    labels = ["engine"] if "engine" in summary.get("median_compute", {}) else []
    chosen = summary.get("engine_settings", {})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = np.linspace(0, 50, 101)
    for name in [*ZERO_SHOT, *KNOWLEDGE, *labels]:
        curves = result.curves.get(name)
        if name == "engine" and chosen:
            curves = {t: result.curves[c][t] for t, c in chosen.items() if c in result.curves}
        if not curves:
            continue
        spans = {t["task"]: t["best"] - t["worst"] for t in result.tasks}
        arr = np.array([np.asarray(v) / spans[t] for t, v in curves.items()])
        ax.plot(grid, np.maximum(arr.mean(axis=0), 1e-3), label=name, lw=2.2 if name == "engine" else 1.2,
                ls="-" if name in (*KNOWLEDGE, "engine") else "--")
    ax.set_yscale("log")
    ax.set_xlabel("compute spent (in the task's mean evaluation cost)")
    ax.set_ylabel("normalized regret (median over seeds, mean over tasks)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "regret_vs_compute.png", dpi=110)
    plt.close(fig)
    written.append("regret_vs_compute.png")
    return written


def write_report(result: BenchResult, out_dir: Path, *, context: dict[str, Any] | None = None) -> Path:
    """Write ``report.md``, ``results.json``, ``searches.csv`` and the plots into ``out_dir``; returns the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    plots = _plots(result, summary, out_dir)
    cfg = asdict(result.config)
    cfg["engine_grid"] = {k: asdict(v) for k, v in result.config.engine_grid.items()}
    payload = {"config": cfg, "context": {**(context or {}), **result.context}, "seconds": result.seconds,
               "tasks": result.tasks, "summary": summary, "curves": result.curves, "plots": plots}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    result.searches.drop(columns=["trace"]).to_csv(out_dir / "searches.csv", index=False)
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
    lines = ["# AutoML replay benchmark", ""]
    ctx = {**(context or {}), "held-out tasks": len(result.tasks),
           "seeds": f"{cfg.seeds} per stochastic searcher, {cfg.gp_seeds} for the Optuna GP sampler (about a second "
                    "per trial); 1 for the deterministic ones (static order, engine)",
           "meta-model": f"leave-one-dataset-out MetaModel(OutcomeEstimator(n_estimators={cfg.n_estimators}), "
                         f"max_rows_per_task={cfg.max_rows_per_task})",
           "noise band": f"SE of the best configuration's mean over its seeds, or 1% of the spread when larger; "
                         f"single-seed best configurations use a typical seed sd of "
                         f"{result.context.get('typical_seed_sd', float('nan')):.2f} points "
                         f"({result.context.get('typical_seed_sd_basis', '')})",
           "engine knobs": f"chosen per task by nested leave-one-dataset-out among {len(cfg.engine_grid)} settings",
           "skip budget": f"{cfg.max_false_skip:g} per search",
           "time": f"meta-models {result.seconds['meta_models']:.0f} s, searches {result.seconds['searches']:.0f} s, "
                   f"total {result.seconds['total']:.0f} s"}
    lines += [f"- **{k}**: {v}" for k, v in ctx.items()]
    goals = summary.get("goals", {})
    if goals:
        lines += ["", "## Goals", "", "| goal | result | met |", "| --- | --- | --- |"]
        for g in goals.values():
            value = g["value"]
            shown = f"{value:.2f}x (vs `{g.get('peer')}`)" if "peer" in g and value is not None else \
                f"{100 * value:.1f}% of engine searches" if isinstance(value, float) else str(value)
            lines.append(f"| {g['target']} | {shown} | {'yes' if g['met'] else 'no'} |")
    ratios = summary.get("ratios", {})
    if ratios:
        lines += ["", "## Compute to the noise band, median task", "",
                  "| against | best peer | median ratio (peer / engine) | bootstrap 90% interval | every peer |",
                  "| --- | --- | --- | --- | --- |"]
        for group, r in ratios.items():
            every = ", ".join(f"{n} {v:.2f}x" for n, v in r["all"].items())
            lines.append(f"| {group.replace('_', '-')} | `{r['best_peer']}` | **{r['median']:.2f}x** | "
                         f"{r['ci90'][0]:.2f}-{r['ci90'][1]:.2f}x | {every} |")
    mc = summary["median_compute"]
    names = [n for n in (*ZERO_SHOT, *KNOWLEDGE, "engine") if n in mc]
    lines += ["", "## Per task: compute to the noise band (median over seeds)", "",
              "| task | configs | band (points) | within band | " + " | ".join(f"`{n}`" for n in names) +
              " | engine setting |", "| --- |" + " --- |" * (len(names) + 4)]
    per_task = {r["task"]: r for r in summary["per_task_compute"]}
    info = {t["task"]: t for t in result.tasks}
    for t in sorted(per_task):
        r = per_task[t]
        lines.append(f"| {t} | {info[t]['n_configs']} | {info[t]['band']:.2f} | {info[t]['n_within_band']} | "
                     + " | ".join(_fmt_s(r.get(n)) for n in names)
                     + f" | {summary.get('engine_settings', {}).get(t, '')} |")
    lines.append("| **median** | | | | " + " | ".join(f"**{_fmt_s(mc[n])}**" for n in names) + " | |")
    if "negative_transfer" in summary:
        lines += ["", "## Negative transfer", "",
                  f"Tasks where the engine needs more compute than the best zero-shot peer's mean beyond two standard "
                  f"errors: {len(summary['negative_transfer'])}.", ""]
        lines += [f"- {n['task']}: engine {_fmt_s(n['engine'])} vs {_fmt_s(n['peer_mean'])} "
                  f"(SE {_fmt_s(n['peer_se'])}; ratio {n['ratio']:.2f}x)" for n in summary["negative_transfer"]]
        lines += ["", f"Best configuration wrongly skipped (or the band never reached) in "
                      f"{100 * summary['best_wrongly_skipped']:.1f}% of engine searches. Median engine time per "
                      f"proposal: {summary['engine_ms_per_proposal']:.1f} ms."]
    lines += ["", "## Other regret levels and anytime regret", "",
              "Median over tasks of the compute to reach 1%, 5% and 10% normalized regret, and the mean over tasks of "
              "the normalized regret after 5, 10 and 25 evaluations.", "",
              "| searcher | to 1% | to 5% | to 10% | after 5 | after 10 | after 25 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lv, an = summary["regret_levels"], summary["anytime"]
    for n in sorted(lv["compute_to_1pct"]):
        lines.append(f"| {n} | {_fmt_s(lv['compute_to_1pct'].get(n))} | {_fmt_s(lv['compute_to_5pct'].get(n))} | "
                     f"{_fmt_s(lv['compute_to_10pct'].get(n))} | {_fmt(an['after_5'].get(n), 3)} | "
                     f"{_fmt(an['after_10'].get(n), 3)} | {_fmt(an['after_25'].get(n), 3)} |")
    lines += ["", "## Plots", "", "![ratio per task](ratio_per_task.png)", "",
              "![regret vs compute](regret_vs_compute.png)"]
    return "\n".join(lines) + "\n"

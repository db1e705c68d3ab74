"""The multi-fidelity replay: does stopping runs from their partial curves save compute without losing the best?

**Tasks.** A replay task is one task of the knowledge base (``task_key``) with at least ``min_configs``
configurations whose runs carry a primary-metric curve (language tasks only). A **search** draws ``n_configs``
configurations at random (one of each configuration's runs, for configurations run several times) in a random order
and trains them one after the other. Training to progress ``p`` costs ``p`` x the run's full cost: its real
``runtime_s`` when every run of the task has one, else the examples it processes (planned steps x batch size), else
one unit per run. Decisions are taken on a grid of ``levels`` progress levels (``k / levels``); at a level a run has
reported its curve up to its first evaluation at or past it (:func:`metaml._curves.prefix_at`) and has paid for the
training up to that evaluation. A run that finishes reports its final score (``outcome.score``, which for some sources
is measured on another split than its curve).

**Methods**, each on the same draws:

* ``full``: every configuration trained to the end;
* ``curve``: the curve rule (:func:`metaml._curves.decide_curve`'s rule, batched per run): a run is stopped at the
  first level where P(final > incumbent) < ``max_false_stop``, once ``min_history`` runs have finished (the
  incumbent is the best final score so far, the finished runs are the history);
* ``top_k``: every configuration trained for one epoch (``1 / planned epochs`` of its budget; a third of it when
  the planned epochs are unknown; the whole run when it plans one epoch or less), then the ``k`` best at that point
  finished;
* ``asha`` / ``hyperband``: Syne Tune's asynchronous successive halving (one bracket) and its asynchronous Hyperband
  (all brackets), run by Syne Tune's own ``Tuner`` on its simulated backend over the tabulated curves (one worker, as
  the other methods; resource = level, grace period one level, reduction factor 3, configurations proposed in the
  draw's order, every run's reported value at a level being its curve's value there).

**Knobs** (``max_false_stop`` and ``min_history`` of the curve rule, ``k`` of top-k) are chosen by **nested
leave-one-dataset-out**: for a held-out task, on the other replay tasks only, with estimators that saw neither
dataset; the chosen knobs maximize compute saved subject to the eventual best configuration being stopped in at most
``max_best_stopped`` of the inner searches (the fewest such stops when no knob meets it).

**Measures** per search: compute against ``full``; whether the eventual best configuration of the draw was stopped
(or, for top-k, not finished); the regret in points (the draw's best final score minus the best final score the
method finished). At **equal compute**, the anytime results of ASHA and Hyperband are read at the compute the curve
rule spent on the same draw.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metaml._curves import INPUTS, CurveEstimator, History, cut_features, cut_frame, history_cuts, prefix_at
from metaml._data import chance_points

NON_LANGUAGE_TASK_TYPES = ("image-classification", "other")
MAX_FALSE_STOP_GRID = (0.02, 0.05, 0.1, 0.2, 0.3)
MIN_HISTORY_GRID = (1, 3)
TOP_K_GRID = (1, 2, 3, 5, 8, 13, 21)


# ---------------------------------------------------------------------------------------------------------- tasks


@dataclass
class CurveTask:
    """The configurations of one task with curves (one entry per run; ``config`` says which runs repeat one).

    Attributes:
        task_key: the learning frame's task key.
        dataset: its dataset.
        progress, values: per run its curve (progress in (0, 1], values in points).
        final: per run its final score (points).
        cost: per run the cost of training it to the end (``cost_unit``).
        first_epoch: per run the progress of its first epoch (NaN when its planned epochs are unknown).
        config: per run its configuration's id.
        priors: per run the meta-model's prior (``points``, ``lo``, ``hi``, ``p_fail``) or None.
        chance: the metric's chance level (points; NaN unknown).
        cost_unit: ``seconds``, ``examples`` or ``runs``.
    """

    task_key: str
    dataset: str
    progress: list[np.ndarray]
    values: list[np.ndarray]
    final: np.ndarray
    cost: np.ndarray
    first_epoch: np.ndarray
    config: np.ndarray
    priors: list[dict[str, float] | None]
    chance: float
    cost_unit: str

    @classmethod
    def from_curves(cls, curves: pd.DataFrame, task_key: str, priors: pd.DataFrame | None = None) -> CurveTask:
        """The runs of ``task_key`` in :func:`metaml._curves.curve_runs` output (``priors`` aligned with it)."""
        mask = (curves["task_key"] == task_key).to_numpy()
        if not mask.any():
            raise ValueError(f"no curve runs for task {task_key!r}")
        runs = curves[mask]
        runtime = runs["outcome_runtime_s"].to_numpy(dtype=float)
        examples = (runs["hparams_max_steps"].astype(float) * runs["hparams_batch_size"].astype(float)).to_numpy()
        if np.isfinite(runtime).all() and (runtime > 0).all():
            cost, unit = runtime, "seconds"
        elif np.isfinite(examples).all() and (examples > 0).all():
            cost, unit = examples, "examples"
        else:
            cost, unit = np.ones(len(runs)), "runs"
        epochs = runs["hparams_epochs"].to_numpy(dtype=float)
        first = np.where(np.isfinite(epochs) & (epochs > 0), 1.0 / np.maximum(epochs, 1e-9), np.nan)
        pri = (priors[mask].to_dict("records") if priors is not None else [None] * len(runs))
        chance = chance_points(runs).to_numpy(dtype=float)
        return cls(task_key=task_key, dataset=str(runs["dataset_name"].iat[0]),
                   progress=list(runs["curve_progress"]), values=list(runs["curve_points"]),
                   final=runs["points"].to_numpy(dtype=float), cost=cost, first_epoch=np.minimum(first, 1.0),
                   config=runs["config_key"].astype(str).to_numpy(), priors=pri,
                   chance=float(chance[0]) if len(chance) else np.nan, cost_unit=unit)

    @property
    def n_configs(self) -> int:
        return len(np.unique(self.config))

    def draw(self, n: int, rng: np.random.Generator) -> CurveTask:
        """A search's configurations: ``n`` distinct configurations (all when fewer) in random order, one of each
        configuration's runs drawn at random."""
        order: list[int] = []
        for c in rng.permutation(np.unique(self.config))[:n]:
            runs = np.flatnonzero(self.config == c)
            order.append(int(rng.choice(runs)))
        ix = np.asarray(order)
        return CurveTask(task_key=self.task_key, dataset=self.dataset, progress=[self.progress[i] for i in ix],
                         values=[self.values[i] for i in ix], final=self.final[ix], cost=self.cost[ix],
                         first_epoch=self.first_epoch[ix], config=self.config[ix],
                         priors=[self.priors[i] for i in ix], chance=self.chance, cost_unit=self.cost_unit)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task_key, "dataset": self.dataset, "n_runs": len(self.final),
                "n_configs": self.n_configs, "best": float(self.final.max()), "worst": float(self.final.min()),
                "median_points_per_curve": float(np.median([len(p) for p in self.progress])),
                "cost_unit": self.cost_unit}


def replay_tasks(curves: pd.DataFrame, *, min_configs: int = 20,
                 exclude_task_types: Sequence[str] = NON_LANGUAGE_TASK_TYPES) -> list[str]:
    """Task keys with at least ``min_configs`` configurations with curves, language task types only."""
    df = curves[~curves["task_type"].isin(list(exclude_task_types))]
    counts = df.groupby("task_key")["config_key"].nunique()
    return sorted(counts[counts >= min_configs].index)


# ---------------------------------------------------------------------------------------------------- the methods


@dataclass
class SearchResult:
    """What one method did on one draw.

    Attributes:
        method: ``full``, ``curve``, ``top_k``, ``asha`` or ``hyperband``.
        compute: what it spent (the task's cost unit).
        full_compute: what training every configuration to the end costs.
        found: the best final score it finished (points; NaN when it finished none).
        best: the draw's best final score.
        best_stopped: whether the draw's best configuration was stopped (not finished).
        n_stopped: configurations stopped early.
        trace: (cumulative compute, best final score finished so far) after each finished run.
    """

    method: str
    compute: float
    full_compute: float
    found: float
    best: float
    best_stopped: bool
    n_stopped: int
    trace: list[tuple[float, float]] = field(default_factory=list)

    @property
    def regret(self) -> float:
        return self.best - self.found if np.isfinite(self.found) else float("nan")

    def found_at(self, compute: float) -> float:
        """The best final score finished within ``compute`` (NaN before the first)."""
        found = float("nan")
        for c, f in self.trace:
            if c > compute * (1 + 1e-9):
                break
            found = f
        return found


def _levels(levels: int) -> np.ndarray:
    return np.arange(1, levels) / levels  # decisions before the end


def run_full(sample: CurveTask) -> SearchResult:
    """Every configuration trained to the end."""
    compute, found, trace = 0.0, -np.inf, []
    for c, f in zip(sample.cost, sample.final, strict=True):
        compute += float(c)
        found = max(found, float(f))
        trace.append((compute, found))
    return SearchResult("full", compute, float(sample.cost.sum()), found, float(sample.final.max()), False, 0, trace)


def run_curve(sample: CurveTask, estimator: CurveEstimator, *, max_false_stop: float, min_history: int = 1,
              levels: int = 27, min_progress: float = 0.0, use_prior: bool = True) -> SearchResult:
    """The curve rule (see the module docstring): per run, every level's decision in one batch (the incumbent and
    the history do not change while it trains)."""
    grid = _levels(levels)
    best_i = int(np.argmax(sample.final))
    history = History()
    history_priors: list[dict[str, float] | None] = []
    calibrations: dict[float, Any] = {}  # per grid level, for the current history
    incumbent = -np.inf
    compute, stopped, trace = 0.0, set(), []
    for i, (p, v, final, cost) in enumerate(zip(sample.progress, sample.values, sample.final, sample.cost,
                                                strict=True)):
        stop_at = None
        if len(history) >= max(min_history, 1):
            cuts, at, grid_at = [], [], []
            for level in grid:
                if level < min_progress:
                    continue
                k = prefix_at(p, level)
                if p[k - 1] >= 1.0 or (at and p[k - 1] == at[-1]):
                    continue
                cuts.append(k)
                at.append(float(p[k - 1]))
                grid_at.append(float(level))
            if cuts:
                prior = sample.priors[i] if use_prior else None
                X = np.array([[f[c] for c in INPUTS] for f in (
                    cut_features(p[:k], v[:k], chance=sample.chance, history=history, prior=prior) for k in cuts)])
                if len(history) >= 2:
                    for level in grid_at:
                        if level not in calibrations:
                            calibrations[level] = estimator.calibrate(
                                history_cuts(level, history, chance=sample.chance,
                                             priors=history_priors if use_prior else None),
                                history.finals)
                    cal = [calibrations[level] for level in grid_at]
                else:
                    cal = None
                pa = estimator.p_above(X, incumbent, cal)
                hit = np.flatnonzero(pa < max_false_stop)
                if hit.size:
                    stop_at = at[hit[0]]
        if stop_at is None:
            compute += float(cost)
            history.append((p, v, float(final)))
            history_priors.append(sample.priors[i])
            calibrations.clear()
            incumbent = max(incumbent, float(final))
            trace.append((compute, incumbent))
        else:
            compute += float(cost) * stop_at
            stopped.add(i)
    found = incumbent if np.isfinite(incumbent) else float("nan")
    return SearchResult("curve", compute, float(sample.cost.sum()), found, float(sample.final.max()),
                        best_i in stopped, len(stopped), trace)


def run_top_k(sample: CurveTask, k: int) -> SearchResult:
    """Every configuration trained for one epoch, then the ``k`` best at that point finished."""
    first = np.where(np.isfinite(sample.first_epoch), sample.first_epoch, 1.0 / 3.0)
    compute, at_first, done = 0.0, np.empty(len(sample.final)), np.zeros(len(sample.final), dtype=bool)
    trace: list[tuple[float, float]] = []
    found = -np.inf
    for i, (p, v) in enumerate(zip(sample.progress, sample.values, strict=True)):
        j = prefix_at(p, first[i])
        if p[j - 1] >= 1.0:  # one epoch is the whole run: it finishes
            compute += float(sample.cost[i])
            done[i] = True
            found = max(found, float(sample.final[i]))
            trace.append((compute, found))
            at_first[i] = sample.final[i]
        else:
            compute += float(sample.cost[i]) * float(p[j - 1])
            at_first[i] = v[j - 1]
    for i in np.argsort(-at_first, kind="stable")[:k]:
        if done[i]:
            continue
        j = prefix_at(sample.progress[i], first[i])
        compute += float(sample.cost[i]) * (1.0 - float(sample.progress[i][j - 1]))
        done[i] = True
        found = max(found, float(sample.final[i]))
        trace.append((compute, found))
    best_i = int(np.argmax(sample.final))
    return SearchResult("top_k", compute, float(sample.cost.sum()), found if np.isfinite(found) else float("nan"),
                        float(sample.final.max()), not bool(done[best_i]), int((~done).sum()), trace)


@contextlib.contextmanager
def _syne_tune_folder() -> Iterator[None]:
    """Syne Tune writes each tuning's results under ``$SYNETUNE_FOLDER``: a temporary directory, removed after."""
    before = os.environ.get("SYNETUNE_FOLDER")
    with tempfile.TemporaryDirectory(prefix="metaml-syne-") as tmp:
        os.environ["SYNETUNE_FOLDER"] = tmp
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("SYNETUNE_FOLDER", None)
            else:
                os.environ["SYNETUNE_FOLDER"] = before


def run_syne_tune(sample: CurveTask, *, brackets: int = 1, levels: int = 27, reduction_factor: float = 3,
                  seed: int = 0) -> SearchResult:
    """Syne Tune's ASHA (``brackets=1``) or asynchronous Hyperband (more brackets) on the draw, simulated by Syne
    Tune's ``Tuner`` over a tabulated blackbox (see the module docstring)."""
    import logging

    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.config_space import choice, randint
    from syne_tune.optimizer.baselines import ASHA
    from syne_tune.tuner_logger import TunerLogger

    n = len(sample.final)
    ids = [f"c{i}" for i in range(n)]
    # the simulator advances its clock in small steps: costs in units of the mean run keep the simulation short
    unit = float(np.mean(sample.cost)) or 1.0
    level_values = np.arange(1, levels + 1) / levels
    table = np.empty((n, 1, levels, 2))
    for i, (p, v) in enumerate(zip(sample.progress, sample.values, strict=True)):
        for j, level in enumerate(level_values):
            k = prefix_at(p, level) if j < levels - 1 else len(p)
            reached = 1.0 if j == levels - 1 else float(p[k - 1])
            table[i, 0, j, 0] = sample.final[i] if j == levels - 1 else v[k - 1]
            table[i, 0, j, 1] = float(sample.cost[i]) / unit * reached
    # the tabulated blackbox looks configurations up by a multi-column index: a second, constant column keeps it one
    space = {"config": choice(ids), "task": choice(["replay"])}
    blackbox = BlackboxTabular(hyperparameters=pd.DataFrame({"config": ids, "task": ["replay"] * n}),
                               configuration_space=space, fidelity_space={"level": randint(1, levels)},
                               objectives_evaluations=table, fidelity_values=np.arange(1, levels + 1),
                               objectives_names=["score", "elapsed"])

    class _Quiet(TunerLogger):
        def __getattribute__(self, name: str) -> Any:
            attr = super().__getattribute__(name)
            return (lambda *a, **k: None) if name.startswith("print") and callable(attr) else attr

    quiet = logging.getLogger("syne_tune")
    level_before = quiet.level
    quiet.setLevel(logging.ERROR)  # its tuner logs every trial; the ASHA baseline warns about a valid argument
    try:
        scheduler = ASHA(space, metric="score", do_minimize=False, time_attr="level", max_t=levels, grace_period=1,
                         reduction_factor=reduction_factor, brackets=brackets, random_seed=seed,
                         points_to_evaluate=[{"config": c, "task": "replay"} for c in ids])
        callback = SimulatorCallback()
        with _syne_tune_folder(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            Tuner(trial_backend=UserBlackboxBackend(blackbox=blackbox, elapsed_time_attr="elapsed"),
                  scheduler=scheduler, stop_criterion=StoppingCriterion(max_num_trials_finished=n - 1), n_workers=1,
                  sleep_time=0, callbacks=[callback], tuner_name="metaml-curve-replay", save_tuner=False,
                  print_update_interval=1e9, results_update_interval=1e9, output_logger=_Quiet()).run()
    finally:
        quiet.setLevel(level_before)
    results = callback.dataframe()
    results = results[results["trial_id"] < n].sort_values(["st_tuner_time", "trial_id", "level"])
    spent = np.zeros(n)
    compute, found, trace = 0.0, -np.inf, []
    finished = np.zeros(n, dtype=bool)
    for trial, level, elapsed in zip(results["trial_id"], results["level"], results["elapsed"], strict=True):
        t = int(trial)
        compute += max(float(elapsed) - spent[t], 0.0) * unit
        spent[t] = max(spent[t], float(elapsed))
        if int(level) >= levels and not finished[t]:
            finished[t] = True
            found = max(found, float(sample.final[t]))
            trace.append((compute, found))
    best_i = int(np.argmax(sample.final))
    return SearchResult("asha" if brackets == 1 else "hyperband", compute, float(sample.cost.sum()),
                        found if np.isfinite(found) else float("nan"), float(sample.final.max()),
                        not bool(finished[best_i]), int((~finished).sum()), trace)


# ------------------------------------------------------------------------------------------------ the benchmark


@dataclass
class CurveBenchConfig:
    """What the replay runs.

    Attributes:
        n_configs: configurations per search.
        seeds: searches per task.
        inner_seeds: searches per inner task when choosing knobs.
        levels: decision levels per run.
        max_best_stopped: the knob choice's constraint on the share of searches that stop the best configuration.
        max_false_stop_grid, min_history_grid, top_k_grid: the knobs tried.
        min_configs: fewest configurations of a replay task.
        use_prior: whether the curve estimator reads the meta-model's prior (needs ``priors``).
        estimator_params: :class:`CurveEstimator` parameters.
        syne_tune: whether to run ASHA and Hyperband.
        jobs: worker processes for the searches.
    """

    n_configs: int = 100
    seeds: int = 20
    inner_seeds: int = 10
    levels: int = 27
    max_best_stopped: float = 0.05
    max_false_stop_grid: tuple[float, ...] = MAX_FALSE_STOP_GRID
    min_history_grid: tuple[int, ...] = MIN_HISTORY_GRID
    top_k_grid: tuple[int, ...] = TOP_K_GRID
    min_configs: int = 20
    use_prior: bool = False
    estimator_params: dict[str, Any] = field(default_factory=dict)
    syne_tune: bool = True
    jobs: int = 1


@dataclass
class CurveBenchResult:
    """Everything the report is written from."""

    config: CurveBenchConfig
    tasks: list[dict[str, Any]]
    searches: pd.DataFrame
    knobs: dict[str, dict[str, Any]]
    sweep: pd.DataFrame
    seconds: dict[str, float]


def fit_estimator(curves: pd.DataFrame, exclude: Sequence[str], config: CurveBenchConfig,
                  priors: pd.DataFrame | None = None) -> CurveEstimator:
    """A curve estimator trained on the curve runs of every dataset but ``exclude``."""
    keep = ~curves["dataset_name"].astype(str).isin(list(exclude)).to_numpy()
    train = curves[keep].reset_index(drop=True)
    X = cut_frame(train, priors=priors[keep].reset_index(drop=True) if priors is not None else None)
    params = {"use_prior": config.use_prior, **config.estimator_params}
    return CurveEstimator(**params).fit(X, X["final"])


def _score(results: list[SearchResult]) -> tuple[float, float, float]:
    """(compute saved x, share of searches that stopped the best, mean regret)."""
    full = sum(r.full_compute for r in results)
    spent = sum(r.compute for r in results) or 1e-12
    return full / spent, float(np.mean([r.best_stopped for r in results])), float(
        np.nanmean([r.regret for r in results]))


def _choose(candidates: dict[Any, list[SearchResult]], limit: float) -> Any:
    """The knob with the most compute saved among those stopping the best in at most ``limit`` of the searches;
    else the one stopping it least (then saving most)."""
    scored = {k: _score(v) for k, v in candidates.items()}
    ok = [k for k, s in scored.items() if s[1] <= limit + 1e-12]
    if ok:
        return max(ok, key=lambda k: (scored[k][0], -scored[k][2]))
    return min(scored, key=lambda k: (scored[k][1], -scored[k][0]))


def _draws(task: CurveTask, n: int, seeds: Sequence[int]) -> list[CurveTask]:
    return [task.draw(n, np.random.default_rng(s)) for s in seeds]


def choose_knobs(inner: Sequence[tuple[CurveTask, CurveEstimator]], config: CurveBenchConfig) -> dict[str, Any]:
    """The curve rule's and top-k's knobs, chosen on inner tasks (each with an estimator that saw neither the held-out
    nor the inner dataset)."""
    curve: dict[Any, list[SearchResult]] = {}
    topk: dict[Any, list[SearchResult]] = {}
    for task, est in inner:
        draws = _draws(task, config.n_configs, range(1000, 1000 + config.inner_seeds))
        for eps in config.max_false_stop_grid:
            for mh in config.min_history_grid:
                curve.setdefault((eps, mh), []).extend(
                    run_curve(d, est, max_false_stop=eps, min_history=mh, levels=config.levels,
                              use_prior=config.use_prior) for d in draws)
        for k in config.top_k_grid:
            topk.setdefault(k, []).extend(run_top_k(d, k) for d in draws)
    if not curve:
        return {"max_false_stop": 0.05, "min_history": 3, "top_k": 5, "chosen_on": []}
    eps, mh = _choose(curve, config.max_best_stopped)
    return {"max_false_stop": eps, "min_history": mh, "top_k": _choose(topk, config.max_best_stopped),
            "chosen_on": sorted({t.task_key for t, _ in inner})}


def _search_job(draw: CurveTask, seed: int, est: CurveEstimator, knobs: dict[str, Any],
                config: CurveBenchConfig) -> list[dict[str, Any]]:
    out = [run_full(draw),
           run_curve(draw, est, max_false_stop=knobs["max_false_stop"], min_history=knobs["min_history"],
                     levels=config.levels, use_prior=config.use_prior),
           run_top_k(draw, knobs["top_k"])]
    if config.syne_tune:
        out += [run_syne_tune(draw, brackets=1, levels=config.levels, seed=seed),
                run_syne_tune(draw, brackets=4, levels=config.levels, seed=seed)]
    curve = out[1]
    rows = []
    for r in out:
        rows.append({"task": draw.task_key, "seed": seed, "method": r.method, "compute": r.compute,
                     "full_compute": r.full_compute, "saved": r.full_compute / max(r.compute, 1e-12),
                     "found": r.found, "best": r.best, "regret": r.regret, "best_stopped": r.best_stopped,
                     "n_stopped": r.n_stopped, "found_at_curve_compute": r.found_at(curve.compute),
                     "regret_at_curve_compute": r.best - r.found_at(curve.compute)})
    return rows


def _sweep_job(draw: CurveTask, seed: int, est: CurveEstimator, config: CurveBenchConfig) -> list[dict[str, Any]]:
    rows = []
    for eps in config.max_false_stop_grid:
        for mh in config.min_history_grid:
            r = run_curve(draw, est, max_false_stop=eps, min_history=mh, levels=config.levels,
                          use_prior=config.use_prior)
            rows.append({"task": draw.task_key, "seed": seed, "method": "curve", "knob": f"{eps}/{mh}",
                         "saved": r.full_compute / max(r.compute, 1e-12), "compute": r.compute,
                         "full_compute": r.full_compute, "best_stopped": r.best_stopped, "regret": r.regret})
    for k in config.top_k_grid:
        r = run_top_k(draw, k)
        rows.append({"task": draw.task_key, "seed": seed, "method": "top_k", "knob": str(k),
                     "saved": r.full_compute / max(r.compute, 1e-12), "compute": r.compute,
                     "full_compute": r.full_compute, "best_stopped": r.best_stopped, "regret": r.regret})
    return rows


def run_curve_benchmark(curves: pd.DataFrame, config: CurveBenchConfig | None = None, *,
                        tasks: Sequence[str] | None = None, priors: pd.DataFrame | None = None,
                        progress: Callable[[str], None] | None = None) -> CurveBenchResult:
    """The replay on every task with curves (or ``tasks``), held out one at a time.

    Args:
        curves: :func:`metaml._curves.curve_runs` of the knowledge base.
        config: what to run.
        tasks: task keys to hold out (default :func:`replay_tasks`).
        priors: the meta-model's cross-fitted prior per curve run (aligned with ``curves``), for ``use_prior``.
        progress: called with one line per step.

    Raises:
        ValueError: no replay task.
    """
    from joblib import Parallel, delayed

    config = config or CurveBenchConfig()
    say = progress or (lambda _msg: None)
    if config.use_prior and priors is None:
        raise ValueError("use_prior needs the meta-model's priors of the curve runs")
    keys = list(tasks) if tasks else replay_tasks(curves, min_configs=config.min_configs)
    if not keys:
        raise ValueError("no task with curves on enough configurations to replay")
    all_keys = replay_tasks(curves, min_configs=config.min_configs)
    started = time.perf_counter()
    task_objs = {k: CurveTask.from_curves(curves, k, priors) for k in set(keys) | set(all_keys)}
    rows: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    knobs: dict[str, dict[str, Any]] = {}
    fit_seconds = 0.0
    for key in keys:
        task = task_objs[key]
        t0 = time.perf_counter()
        est = fit_estimator(curves, [task.dataset], config, priors)
        inner = []
        for other in all_keys:
            o = task_objs[other]
            if other == key or o.dataset == task.dataset:
                continue
            inner.append((o, fit_estimator(curves, [task.dataset, o.dataset], config, priors)))
        fit_seconds += time.perf_counter() - t0
        say(f"{key}: estimators fitted ({time.perf_counter() - t0:.0f}s); choosing knobs on "
            f"{len(inner)} inner task(s)")
        knobs[key] = choose_knobs(inner, config)
        say(f"{key}: knobs {knobs[key]}; {config.seeds} searches of {min(config.n_configs, task.n_configs)} "
            "configurations")
        draws = _draws(task, config.n_configs, range(config.seeds))
        parallel = Parallel(n_jobs=config.jobs, prefer="processes")
        for part in parallel(delayed(_search_job)(d, s, est, knobs[key], config) for s, d in enumerate(draws)):
            rows.extend(part)
        for part in parallel(delayed(_sweep_job)(d, s, est, config) for s, d in enumerate(draws)):
            sweep.extend(part)
    seconds = {"fit": fit_seconds, "total": time.perf_counter() - started}
    return CurveBenchResult(config=config, tasks=[task_objs[k].describe() for k in keys],
                            searches=pd.DataFrame(rows), knobs=knobs, sweep=pd.DataFrame(sweep), seconds=seconds)


# -------------------------------------------------------------------------------------------------------- report


METHOD_LABELS = {"full": "every run to the end", "curve": "curve rule (metaml)", "top_k": "top-k after one epoch",
                 "asha": "ASHA (Syne Tune)", "hyperband": "Hyperband (Syne Tune)"}


def summarize(result: CurveBenchResult) -> dict[str, Any]:
    """Per task: per method compute saved (total full / total spent over its searches), share of searches that
    stopped the best, mean regret, and at the curve rule's compute the mean regret and best-found share. Pooled over
    tasks, each task weighing alike (their costs are in different units): the geometric mean of the tasks' compute
    saved and the mean of the rest. Then the goals' verdicts."""
    df = result.searches
    out: dict[str, Any] = {"tasks": {}, "pooled": {}}

    def block(d: pd.DataFrame) -> dict[str, Any]:
        b: dict[str, Any] = {}
        for method, g in d.groupby("method", sort=False):
            b[str(method)] = {"saved": float(g["full_compute"].sum() / g["compute"].sum()),
                              "saved_median": float(g["saved"].median()),
                              "best_stopped": float(g["best_stopped"].mean()),
                              "regret": float(g["regret"].mean()),
                              "found_best": float((g["regret"] <= 1e-9).mean()),
                              "regret_at_curve_compute": float(g["regret_at_curve_compute"].mean()),
                              "found_best_at_curve_compute": float((g["regret_at_curve_compute"] <= 1e-9).mean()),
                              "n_searches": len(g)}
        return b

    for task, g in df.groupby("task", sort=True):
        out["tasks"][str(task)] = block(g)
    for method in df["method"].unique():
        per = [t[method] for t in out["tasks"].values() if method in t]
        pooled = {k: float(np.mean([p[k] for p in per])) for k in per[0] if k not in ("saved", "saved_median",
                                                                                    "n_searches")}
        pooled["saved"] = float(np.exp(np.mean([np.log(p["saved"]) for p in per])))
        pooled["saved_median"] = float(np.exp(np.mean([np.log(p["saved_median"]) for p in per])))
        pooled["n_searches"] = int(sum(p["n_searches"] for p in per))
        out["pooled"][str(method)] = pooled
    curve = out["pooled"].get("curve", {})
    saved, stopped = curve.get("saved", 0.0), curve.get("best_stopped", 1.0)
    goals = {"saves_3x_without_losing_the_best": {
        "target": ">= 3x compute saved over every run to the end with the best configuration stopped in < 5% of "
                  "searches (pooled over tasks)",
        "value": {"saved": saved, "best_stopped": stopped,
                  "per task": {t: {"saved": b["curve"]["saved"], "best_stopped": b["curve"]["best_stopped"]}
                               for t, b in out["tasks"].items() if "curve" in b}},
        "met": bool(saved >= 3.0 and stopped < 0.05)}}
    for sched in ("asha", "hyperband"):
        if sched in out["pooled"]:
            s = out["pooled"][sched]
            goals[f"beats_{sched}_at_equal_compute"] = {
                "target": f"lower mean regret than {METHOD_LABELS[sched]} at the curve rule's compute",
                "value": {"curve": curve.get("regret"), sched: s["regret_at_curve_compute"]},
                "met": bool(curve.get("regret", np.inf) < s["regret_at_curve_compute"])}
    out["goals"] = goals
    return out


def _plots(result: CurveBenchResult, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    files = []
    tasks = sorted(result.searches["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sw = result.sweep[result.sweep["task"] == task]
        for method, marker in (("curve", "o"), ("top_k", "s")):
            g = sw[sw["method"] == method].groupby("knob").agg(full=("full_compute", "sum"), spent=("compute", "sum"),
                                                                stopped=("best_stopped", "mean"))
            ax.plot(g["full"] / g["spent"], 100 * g["stopped"], marker, alpha=0.7, label=f"{METHOD_LABELS[method]} "
                    "(knob grid)")
        s = result.searches[result.searches["task"] == task]
        for method, marker in (("curve", "*"), ("top_k", "P"), ("asha", "^"), ("hyperband", "v")):
            g = s[s["method"] == method]
            if len(g):
                ax.plot(g["full_compute"].sum() / g["compute"].sum(), 100 * g["best_stopped"].mean(), marker,
                        markersize=14, label=f"{METHOD_LABELS[method]}" + (" (nested choice)"
                                                                          if method in ("curve", "top_k") else ""))
        ax.axhline(5, color="grey", ls=":", lw=1)
        ax.axvline(3, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.set_xlabel("compute saved vs every run to the end (x)")
        ax.set_ylabel("searches that stopped the best configuration (%)")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "saved_vs_best_stopped.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path.name)
    return files


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def render_markdown(result: CurveBenchResult, summary: dict[str, Any], *,
                    context: dict[str, Any] | None = None) -> str:
    """The report (Markdown)."""
    lines = ["# Stopping runs from their partial curves: the replay", ""]
    for k, v in (context or {}).items():
        lines.append(f"- {k}: {v}")
    c = result.config
    lines += [f"- searches: {c.seeds} per task, {c.n_configs} configurations each (all when fewer), decisions at "
              f"{c.levels - 1} progress levels; knobs chosen by nested leave-one-dataset-out with best stopped in "
              f"at most {c.max_best_stopped:.0%} of the inner searches", ""]
    lines += ["## Tasks", "", "| task | runs | configurations | best | worst | points per curve | cost unit | knobs "
              "(max_false_stop / min_history, k) | chosen on |", "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- "
              "| --- |"]
    for t in result.tasks:
        kn = result.knobs.get(t["task"], {})
        lines.append(f"| {t['task']} | {t['n_runs']} | {t['n_configs']} | {t['best']:.1f} | {t['worst']:.1f} | "
                     f"{t['median_points_per_curve']:.0f} | {t['cost_unit']} | {kn.get('max_false_stop')} / "
                     f"{kn.get('min_history')}, {kn.get('top_k')} | {', '.join(kn.get('chosen_on', [])) or '—'} |")
    lines += ["", "## Results", "",
              "Compute saved = total compute of every run to the end / total compute of the method (same draws; "
              "pooled: the geometric mean over tasks, whose costs are in different units). "
              "Best stopped = share of searches in which the draw's best configuration was not finished. Regret = "
              "the draw's best final score minus the best finished (points). At the curve rule's compute: the "
              "method's best finished score once it had spent what the curve rule spent on the same draw.", "",
              "| task | method | compute saved | best stopped | mean regret | finds the best | regret at the curve "
              "rule's compute | finds the best at that compute |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | "
              "---: |"]
    for task, block in [*summary["tasks"].items(), ("pooled", summary["pooled"])]:
        for method, m in block.items():
            lines.append(f"| {task} | {METHOD_LABELS.get(method, method)} | {m['saved']:.2f}x | "
                         f"{100 * m['best_stopped']:.0f}% | {_fmt(m['regret'])} | {100 * m['found_best']:.0f}% | "
                         f"{_fmt(m['regret_at_curve_compute'])} | {100 * m['found_best_at_curve_compute']:.0f}% |")
    lines += ["", "## Goals", ""]
    for key, g in summary["goals"].items():
        lines.append(f"- {key}: {'met' if g['met'] else 'NOT met'} — {g['target']} (measured: {g['value']})")
    lines += ["", "![compute saved against best stopped](saved_vs_best_stopped.png)", "",
              f"Fitting the estimators took {result.seconds['fit']:.0f} s; the whole replay "
              f"{result.seconds['total']:.0f} s.", ""]
    return "\n".join(lines)


def write_report(result: CurveBenchResult, out_dir: Path, *, context: dict[str, Any] | None = None) -> Path:
    """``report.md``, ``results.json``, ``searches.csv``, ``sweep.csv`` and the plot in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    result.searches.to_csv(out_dir / "searches.csv", index=False)
    result.sweep.to_csv(out_dir / "sweep.csv", index=False)
    _plots(result, out_dir)
    (out_dir / "results.json").write_text(json.dumps(
        {"config": asdict(result.config), "tasks": result.tasks, "knobs": result.knobs, "summary": summary,
         "seconds": result.seconds, "context": context or {}}, indent=2, default=str) + "\n", encoding="utf-8")
    path = out_dir / "report.md"
    path.write_text(render_markdown(result, summary, context=context), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- the estimator's quality


def quality_folds(curves: pd.DataFrame, *, min_runs: int = 20, other_folds: int = 3) -> pd.Series:
    """The held-out unit of each curve run: its dataset when the dataset has at least ``min_runs`` runs with curves,
    else one of ``other_folds`` groups of the smaller datasets (grouped by dataset: a dataset is never split)."""
    from sklearn.model_selection import GroupKFold

    ds = curves["dataset_name"].astype(str)
    sizes = ds.value_counts()
    fold = ds.where(ds.map(sizes) >= min_runs, "")
    small = (fold == "").to_numpy()
    if small.any():
        n = min(other_folds, int(ds[small].nunique()))
        if n >= 2:
            for i, (_, test) in enumerate(GroupKFold(n_splits=n).split(ds[small], groups=ds[small])):
                fold.iloc[np.flatnonzero(small)[test]] = f"other datasets ({i + 1})"
        else:
            fold[small] = "other datasets (1)"
    return fold


def curve_quality(curves: pd.DataFrame, *, cuts: Sequence[float] = (0.1, 0.25, 0.5), history_size: int = 5,
                  min_runs: int = 20, other_folds: int = 3, seed: int = 0,
                  estimator_params: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Leave-one-dataset-out quality of the curve estimator: per held-out run and progress level in ``cuts`` (its
    curve up to that level), the final score predicted without history and with ``history_size`` finished runs of
    its task (features and recalibration), their 80% intervals, and the last observed value (the naive predictor).

    Returns:
        One row per (run, cut): ``fold``, ``dataset``, ``cut``, ``final``, ``last``, ``pred``, ``lo``, ``hi``,
        ``pred_hist``, ``lo_hist``, ``hi_hist``.
    """
    say = progress or (lambda _msg: None)
    folds = quality_folds(curves, min_runs=min_runs, other_folds=other_folds).to_numpy()
    rng = np.random.default_rng(seed)
    chance = chance_points(curves).to_numpy(dtype=float)
    finished = [(p, v, float(f)) for p, v, f in zip(curves["curve_progress"], curves["curve_points"],
                                                     curves["points"], strict=True)]
    tasks = curves["task_key"].to_numpy()
    rows = []
    for fold in sorted(set(folds)):
        test = np.flatnonzero(folds == fold)
        train = curves[folds != fold].reset_index(drop=True)
        X = cut_frame(train, seed=seed)
        est = CurveEstimator(**(estimator_params or {})).fit(X, X["final"])
        say(f"{fold}: fitted on {len(train):,} runs ({len(X):,} cuts), evaluating {len(test):,} runs")
        for i in test:
            p, v, final = finished[i]
            peers = np.flatnonzero((tasks == tasks[i]) & (np.arange(len(tasks)) != i))
            pick = rng.choice(peers, size=min(history_size, len(peers)), replace=False) if len(peers) else []
            history = History(finished[j] for j in pick)
            for cut in cuts:
                k = int(np.searchsorted(p, cut + 1e-9, side="right"))
                if k == 0:
                    continue
                cold = pd.DataFrame([cut_features(p[:k], v[:k], chance=chance[i])])
                warm = pd.DataFrame([cut_features(p[:k], v[:k], chance=chance[i], history=history)])
                cal = est.calibrate(history_cuts(float(p[k - 1]), history, chance=chance[i]), history.finals) \
                    if len(history) >= 2 else None
                lo, hi = est.predict_interval(cold)
                lo_h, hi_h = est.predict_interval(warm, calibration=cal)
                center, scale = est.predict_center_scale(warm)
                shift = cal.shift if cal is not None else 0.0
                rows.append({"fold": fold, "dataset": str(curves["dataset_name"].iat[i]), "cut": cut, "final": final,
                             "last": float(v[k - 1]), "pred": float(est.predict(cold)[0]), "lo": float(lo[0]),
                             "hi": float(hi[0]), "pred_hist": float(center[0] + shift * scale[0]),
                             "lo_hist": float(lo_h[0]), "hi_hist": float(hi_h[0]), "n_history": len(history)})
    return pd.DataFrame(rows)


def summarize_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Per held-out unit and cut, and over all units (each unit weighing alike): MAE (points) of the last value, of
    the estimator without history and with it, and the coverage of their 80% intervals."""
    df = frame.assign(e_last=(frame["last"] - frame["final"]).abs(), e_model=(frame["pred"] - frame["final"]).abs(),
                      e_hist=(frame["pred_hist"] - frame["final"]).abs(),
                      cov_model=(frame["final"] >= frame["lo"]) & (frame["final"] <= frame["hi"]),
                      cov_hist=(frame["final"] >= frame["lo_hist"]) & (frame["final"] <= frame["hi_hist"]))
    cols = ["e_last", "e_model", "e_hist", "cov_model", "cov_hist"]
    per = df.groupby(["fold", "cut"])[cols].mean()
    per["runs"] = df.groupby(["fold", "cut"]).size()
    overall = per.groupby(level="cut")[cols].mean()
    overall["runs"] = per.groupby(level="cut")["runs"].sum()
    overall.index = pd.MultiIndex.from_product([["mean over held-out units"], overall.index], names=["fold", "cut"])
    return pd.concat([per, overall]).rename(columns={
        "e_last": "MAE last value", "e_model": "MAE curve model", "e_hist": "MAE curve model + 5 finished",
        "cov_model": "80% coverage", "cov_hist": "80% coverage + 5 finished"})

"""``metaml bench``: benchmarks of the meta-learner inside AutoML (``metaml bench automl``) and of stopping runs from
their partial curves (``metaml bench curves``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from collector.errors import CollectorError
from collector.store import KnowledgeBase
from metaml.search._searchers import SEARCHERS
from service.cli._common import fail, json_option, kb_option, meta_model_size_options

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_OUT = Path("bench") / "out" / "automl"


def _command_line(ctx: click.Context) -> str:
    """The command as typed, up to option order: every option that differs from its default."""
    parts = [f"metaml bench {ctx.command.name}"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name == "DEFAULT":
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            if value:
                parts.append(flag)
        elif param.multiple:
            parts.extend(f"{flag} {v}" for v in value)
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _load(loader: Callable[[KnowledgeBase], pd.DataFrame], kb_path: Path, what: str) -> pd.DataFrame:
    """The runs ``loader`` reads from the knowledge base at ``kb_path``; a command failure when it cannot be read or
    holds none (``what`` names them in the message)."""
    try:
        runs = loader(KnowledgeBase(kb_path))
    except CollectorError as e:
        raise fail(str(e)) from e
    if runs.empty:
        raise fail(f"the knowledge base {kb_path} holds no {what}")
    return runs


def _progress() -> Callable[[str], None]:
    """A progress printer: each message on stderr, after the seconds since this call."""
    started = time.perf_counter()

    def say(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - started:6.0f}s] {msg}", err=True)

    return say


def _print_outcome(report: Path, seconds: dict[str, float], goals: dict[str, dict[str, object]],
                   as_json: bool) -> None:
    """A benchmark's goals (met or not) and where its report is, as text or JSON."""
    if as_json:
        click.echo(json.dumps({"report": str(report), "seconds": seconds, "goals": goals}, indent=2, default=str))
        return
    for key, goal in goals.items():
        click.echo(f"{key}: {'met' if goal['met'] else 'NOT met'} ({goal['target']})")
    click.echo(f"report: {report}  ({seconds['total']:.0f} s)")


@click.group("bench")
def bench() -> None:
    """Benchmarks: replay AutoML search on held-out tasks with and without the knowledge base, and stopping runs
    from their partial curves."""


@bench.command("automl")
@kb_option
@click.option("--task", "task_keys", multiple=True,
              help="Hold out this task key (source|dataset|metric|regime) (repeatable) [default: every eligible task].")
@click.option("--seeds", type=click.IntRange(1), default=20, show_default=True,
              help="Searches per stochastic searcher and task.")
@click.option("--gp-seeds", type=click.IntRange(1), default=3, show_default=True,
              help="Searches of the Optuna GP sampler per task (about a second per trial).")
@click.option("--searcher", "searchers", multiple=True, type=click.Choice(SEARCHERS),
              help="Only these searchers (repeatable) [default: all].")
@click.option("--source", "sources", multiple=True,
              help="Sources the held-out tasks come from (repeatable) [default: taskweb, transfergraph, peft_bench: "
                   "the sources with real runtimes].")
@click.option("--max-false-skip", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="The engine's per-search skip budget.")
@click.option("--warm-k", type=click.IntRange(0), default=5, show_default=True,
              help="Nearest past tasks whose best configuration the XAutoLM-style warm start evaluates first.")
@meta_model_size_options
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True, help="Worker processes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Report directory (report.md, results.json, searches.csv, PNG plots).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where fitted meta-models are cached [default: OUT/cache].")
@json_option
def automl(kb_path: Path, task_keys: tuple[str, ...], seeds: int, gp_seeds: int, searchers: tuple[str, ...],
           sources: tuple[str, ...], max_false_skip: float, warm_k: int, n_estimators: int, max_rows_per_task: int,
           jobs: int, out_dir: Path, cache_dir: Path | None, as_json: bool) -> None:
    """Replay AutoML searches on held-out tasks whose every configuration's outcome and runtime are known.

    \b
    Zero-shot searchers (random, Optuna TPE, Optuna GP, an AutoGOAL-style grammar search), knowledge peers (a
    best-on-average portfolio, the meta-model's static order, an XAutoLM-style nearest-datasets warm start) and the
    search engine behind /v1/suggest, each run uncensored until it reaches the best configuration within the noise;
    the meta-model is trained leave-one-dataset-out. Reports the compute to that band and its ratio to the best
    zero-shot and the best knowledge peer on the median task (bootstrap 90% interval), per-task tables, negative
    transfer, wrongly skipped best configurations and anytime regret.
    """
    from metaml._data import load_runs
    from metaml.search._bench import RUNTIME_SOURCES, BenchConfig, run_benchmark, summarize, write_report

    runs = _load(load_runs, kb_path, "runs")
    config = BenchConfig(tasks=task_keys or None, seeds=seeds, gp_seeds=gp_seeds,
                         searchers=searchers or BenchConfig().searchers, sources=sources or RUNTIME_SOURCES,
                         n_estimators=n_estimators, max_rows_per_task=max_rows_per_task, warm_k=warm_k,
                         max_false_skip=max_false_skip, jobs=jobs)
    for settings in config.engine_grid.values():
        settings.max_false_skip = max_false_skip
    try:
        result = run_benchmark(runs, config, cache_dir=cache_dir or out_dir / "cache", progress=_progress())
    except ValueError as e:
        raise fail(str(e)) from e
    report = write_report(result, out_dir, context={"command": _command_line(click.get_current_context()),
                                                    "knowledge base": str(kb_path), "runs": f"{len(runs):,}",
                                                    "sources": ", ".join(config.sources), "jobs": jobs})
    _print_outcome(report, result.seconds, summarize(result)["goals"], as_json)


DEFAULT_CURVES_OUT = Path("bench") / "out" / "curves"


@bench.command("curves")
@kb_option
@click.option("--task", "task_keys", multiple=True,
              help="Hold out this task key (source|dataset|metric|regime) [default: every language task with curves "
                   "on at least 20 configurations].")
@click.option("--seeds", type=click.IntRange(1), default=20, show_default=True, help="Searches per task.")
@click.option("--inner-seeds", type=click.IntRange(1), default=10, show_default=True,
              help="Searches per inner task when choosing the knobs.")
@click.option("--configs", "n_configs", type=click.IntRange(2), default=100, show_default=True,
              help="Configurations per search (all of the task's when it has fewer).")
@click.option("--levels", type=click.IntRange(3), default=27, show_default=True,
              help="Progress levels per run: the curve rule's decision points and ASHA/Hyperband's resource.")
@click.option("--max-best-stopped", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="The knob choice's limit on the share of inner searches that stop the best configuration.")
@click.option("--no-syne-tune", is_flag=True, help="Leave out ASHA and Hyperband (Syne Tune).")
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True, help="Worker processes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CURVES_OUT,
              show_default=True, help="Report directory (report.md, results.json, searches.csv, sweep.csv, a PNG).")
@json_option
def curves(kb_path: Path, task_keys: tuple[str, ...], seeds: int, inner_seeds: int, n_configs: int, levels: int,
           max_best_stopped: float, no_syne_tune: bool, jobs: int, out_dir: Path, as_json: bool) -> None:
    """Replay searches on the tasks whose runs carry learning curves, stopping runs from their partial curves.

    \b
    Compares the curve rule (metaml's curve estimator trained leave-one-dataset-out, its knobs chosen by nested
    leave-one-dataset-out) with training every configuration to the end, Syne Tune's ASHA and asynchronous Hyperband
    (simulated backend over the tabulated curves) and top-k after one epoch: compute saved, the share of searches that
    stopped the best configuration, regret, and regret at equal compute.
    """
    from metaml._curve_bench import CurveBenchConfig, run_curve_benchmark, summarize, write_report
    from metaml._curves import load_curve_runs

    runs = _load(load_curve_runs, kb_path, "runs with learning curves")
    config = CurveBenchConfig(n_configs=n_configs, seeds=seeds, inner_seeds=inner_seeds, levels=levels,
                              max_best_stopped=max_best_stopped, syne_tune=not no_syne_tune, jobs=jobs)
    try:
        result = run_curve_benchmark(runs, config, tasks=task_keys or None, progress=None if as_json else _progress())
    except ValueError as e:
        raise fail(str(e)) from e
    report = write_report(result, out_dir, context={"command": _command_line(click.get_current_context()),
                                                    "knowledge base": str(kb_path),
                                                    "runs with curves": f"{len(runs):,}", "jobs": jobs})
    _print_outcome(report, result.seconds, summarize(result)["goals"], as_json)

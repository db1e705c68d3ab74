"""Commands of the meta-learner: ``train`` and ``evaluate`` (``models`` lives in :mod:`.models`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from collector.errors import CollectorError
from collector.store import KnowledgeBase
from service.cli._common import fail, heartbeat, json_option, kb_option, meta_model_size_options

DEFAULT_REPORTS = Path("metaml-data") / "reports"


def _load(kb_path: Path, sources: tuple[str, ...]) -> Any:
    from metaml._data import load_runs

    try:
        runs = load_runs(KnowledgeBase(kb_path), sources=sources or None)
    except CollectorError as e:
        raise fail(str(e)) from e
    if runs.empty:
        raise fail(f"the knowledge base {kb_path} holds no runs{' from ' + ', '.join(sources) if sources else ''}")
    return runs


@click.command("evaluate")
@click.option("--protocol", type=click.Choice(["lodo", "lomo", "lofo", "loso", "gkfold"]), default="lodo",
              show_default=True,
              help="lodo: leave one dataset out; lomo: leave one model (with its derived checkpoints) out; lofo: "
                   "leave one model family out; loso: leave one source out; gkfold: grouped 5-fold by dataset.")
@kb_option
@click.option("--max-folds", type=click.IntRange(1), default=None,
              help="Evaluate at most this many held-out units, sampled across sources [default: every unit with a "
                   "task of at least --min-configs configurations]. Each fold trains on everything else.")
@click.option("--min-configs", type=click.IntRange(2), default=20, show_default=True,
              help="A held-out unit is evaluated when one of its tasks has at least this many configurations.")
@meta_model_size_options
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Folds fit in parallel worker processes.")
@click.option("--rank-mode", "rank_modes", multiple=True, type=click.Choice(["relative", "lambdarank"]),
              default=("relative",), show_default=True,
              help="Ranking view(s) of the outcome model to evaluate (repeat to compare).")
@click.option("--source", "sources", multiple=True, help="Only runs from this source (repeatable).")
@click.option("--train-source", "train_sources", multiple=True,
              help="Learn only from runs of this source (repeatable); with --test-source, measures transfer.")
@click.option("--test-source", "test_sources", multiple=True,
              help="Evaluate only held-out runs of this source (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default metaml-data/reports/<protocol>).")
@click.option("--seed", default=0, show_default=True)
@click.option("--tracking-uri", envvar="METAML_TRACKING_URI", default=None, show_envvar=True,
              help="Also log the evaluation to this MLflow tracking URI.")
@json_option
def evaluate_cmd(protocol: str, kb_path: Path, max_folds: int | None, min_configs: int, n_estimators: int,
                 max_rows_per_task: int, jobs: int, rank_modes: tuple[str, ...], sources: tuple[str, ...],
                 train_sources: tuple[str, ...], test_sources: tuple[str, ...], out_dir: Path | None, seed: int,
                 tracking_uri: str | None, as_json: bool) -> None:
    """Evaluate the meta-learner against the baselines (the experience lookup, random, global mean, best-on-average
    (model, method) mean, k-nearest datasets) under a leakage-free protocol, and write a report (Markdown + PNG).

    Metrics per held-out task, then averaged, overall and per source: Spearman and Kendall tau, NDCG@5, top-1/top-5
    regret and RMSE/MAE in points, interval coverage; ROC AUC of the failure probability and MAPE of the cost,
    pooled; the noise ceiling per source where configurations repeat over seeds.
    """
    from metaml._evaluate import default_predictors, evaluate, noise_ceiling, noise_floor
    from metaml._report import verdict, write_report

    runs = _load(kb_path, sources)
    started = time.perf_counter()
    with heartbeat(f"evaluating ({protocol})"):
        result = evaluate(runs, protocol,
                          predictors=default_predictors(rank_modes, n_estimators, max_rows_per_task),
                          max_folds=max_folds, seed=seed, progress=not as_json, min_configs=min_configs, jobs=jobs,
                          train_sources=train_sources or None, test_sources=test_sources or None)
    seconds = time.perf_counter() - started
    out_dir = out_dir or DEFAULT_REPORTS / protocol
    context = {"knowledge base": str(kb_path), "runs": f"{len(runs):,}", "protocol": protocol,
               "rank modes": ", ".join(rank_modes), "sources": ", ".join(sources) or "all",
               "meta-learner per fold": f"{n_estimators} trees, at most {max_rows_per_task} runs per task",
               "held-out units": f"every unit with a task of at least {min_configs} configurations"
               + (f", at most {max_folds} sampled across sources" if max_folds else ""),
               "trained on": ", ".join(train_sources) or "all sources",
               "evaluated on": ", ".join(test_sources) or "all sources",
               "evaluation time": f"{seconds:.0f} s"}
    report = write_report(result, out_dir, context=context, noise=noise_floor(runs), ceiling=noise_ceiling(runs),
                          learner="metaml" if len(rank_modes) == 1 else f"metaml[{rank_modes[0]}]")
    summary = result.summary()
    if tracking_uri:
        from metaml._tracking import log_evaluation

        log_evaluation(summary, protocol=protocol, tracking_uri=tracking_uri, report_dir=out_dir)
    if as_json:
        click.echo(json.dumps({"protocol": protocol, "report": str(report), "folds": result.folds,
                               "summary": json.loads(summary.to_json(orient="index")),
                               "verdict": verdict(summary)}, indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", 20):
            click.echo(summary.round(3).to_string())
        click.echo(f"report: {report}")


@click.command("train")
@kb_option
@click.option("--source", "sources", multiple=True, help="Only runs from this source (repeatable).")
@click.option("--exclude-source", "exclude_sources", multiple=True, envvar="METAML_EXCLUDE_SOURCES",
              show_envvar=True, callback=lambda ctx, param, value: tuple(
                  p.strip() for v in value for p in v.split(",") if p.strip()),
              help="Never learn from runs of this source (repeatable, or comma-separated); 'upload*' leaves out every "
                   "run uploaded over HTTP (sources upload:<key holder>).")
@click.option("--rank-mode", type=click.Choice(["relative", "lambdarank"]), default="relative", show_default=True,
              help="The outcome model's ranking view: regression on the within-task standardized score, or LambdaRank.")
@click.option("--evaluation", "evaluation_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A summary.json written by `metaml evaluate`, stored with the model as its "
                                 "evaluation metrics.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("metaml-data") / "models" / "latest", show_default=True,
              help="Where the model artifact is written.")
@click.option("--tracking-uri", envvar="METAML_TRACKING_URI", default=None, show_envvar=True,
              help="Log the run to MLflow and register the model as a new version (default: "
                   "sqlite:///metaml-data/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Only write the artifact; do not log or register it.")
@json_option
def train_cmd(kb_path: Path, sources: tuple[str, ...], exclude_sources: tuple[str, ...], rank_mode: str,
              evaluation_file: Path | None, out_dir: Path, tracking_uri: str | None, no_mlflow: bool,
              as_json: bool) -> None:
    """Train the meta-learner (outcome with calibrated intervals, cost, failure) on the whole knowledge base, save it
    as one versioned artifact, and register it in MLflow as a new model version."""
    from metaml._tracking import DEFAULT_TRACKING_URI
    from metaml._train import train_and_register
    from metaml.errors import MetamlError

    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file else {}
    try:
        with heartbeat("training"):
            result = train_and_register(
                kb_path, tracking_uri=None if no_mlflow else tracking_uri or DEFAULT_TRACKING_URI, sources=sources,
                exclude_sources=exclude_sources, rank_mode=rank_mode,
                evaluation=evaluation.get("summary", {}).get("metaml", evaluation.get("summary", {})),
                evaluation_protocol=evaluation.get("protocol"), out_dir=out_dir)
    except (CollectorError, MetamlError) as e:
        raise fail(str(e)) from e
    out: dict[str, Any] = {"artifact": str(result.artifact), "train_runs": result.train_runs,
                           "train_seconds": result.train_seconds, "curve_train_rows": result.curve_train_rows}
    if result.version is not None:
        out.update(version=result.version, run_id=result.run_id, tracking_uri=result.tracking_uri)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(f"trained on {result.train_runs:,} runs in {result.train_seconds:.0f}s; artifact: {result.artifact}")
        if result.curve_train_rows:
            click.echo(f"curve estimator (stopping runs from partial curves) on {result.curve_train_rows:,} curve cuts")
        if "version" in out:
            click.echo(f"registered as version {out['version']} (promote with `metaml models promote "
                       f"{out['version']}`)")


COMMANDS: list[click.Command] = [train_cmd, evaluate_cmd]

"""The replay environment, the noise band, and a small end-to-end replay benchmark on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaml.search import EngineSettings, ReplayEnv, ReplayTask
from metaml.search._bench import BenchConfig, choose_engine, run_benchmark, write_report


def _toy() -> ReplayTask:
    """Five configurations: scores 50..90 (one failed), costs 10..50."""
    table = pd.DataFrame({"model_id": ["a", "b", "c", "d", "e"],
                          "hparams_learning_rate": [1e-5, 1e-4, 1e-5, 1e-4, 1e-5],
                          "score": [50.0, 70.0, np.nan, 90.0, 60.0],
                          "cost": [10.0, 20.0, 30.0, 40.0, 50.0]})
    return ReplayTask.from_table(table)


def test_replay_env_accumulates_cost_and_reports_regret() -> None:
    """Each evaluation charges its configuration's cost; a failed one is charged but scores nothing; normalized
    regret is (best - found) / (best - worst) over the scored configurations, 1 before anything scored."""
    task = _toy()
    assert (task.best, task.worst, task.best_index) == (90.0, 50.0, 3)
    env = ReplayEnv(task)
    assert env.regret == 1.0
    assert env.evaluate(2) is None
    assert env.compute == 30.0 and env.regret == 1.0 and env.n_evaluations == 1
    assert env.evaluate(1) == 70.0
    assert env.compute == 50.0 and env.regret == pytest.approx(0.5)
    env.evaluate(0)
    assert env.incumbent == 70.0 and env.regret == pytest.approx(0.5)
    env.evaluate(3)
    assert env.compute == 100.0 and env.regret == 0.0
    trace = env.trace
    assert [e[4] for e in trace.evals] == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert trace.compute_to(0.01) == 100.0 and trace.evals_to(0.01) == 4
    assert trace.compute_to(0.6) == 50.0
    np.testing.assert_allclose(trace.regret_at_compute(np.array([0, 29, 30, 55, 100])), [1, 1, 1, 0.5, 0])
    np.testing.assert_allclose(trace.regret_by_evaluations(6), [1, 0.5, 0.5, 0, 0, 0])
    with pytest.raises(ValueError):
        env.evaluate(3)


def test_noise_band_is_the_best_configurations_standard_error_or_one_percent_of_the_spread() -> None:
    """The target of a search: the standard error of the best configuration's mean over its seeds, or 1% of the
    task's spread when that is larger; a best configuration run once uses the typical seed spread."""
    task = _toy()
    task.n_runs = np.array([1, 1, 1, 8, 1])
    task.score_sd = np.array([np.nan, np.nan, np.nan, 4.0, np.nan])
    band, basis = task.noise_band(2.0)
    assert band == pytest.approx(4.0 / np.sqrt(8)) and "8 seeds" in basis
    task.score_sd[3] = 0.1
    assert task.noise_band(2.0) == (pytest.approx(0.4), "1% of the spread")
    task.n_runs[3] = 1
    band, basis = task.noise_band(2.0)
    assert band == pytest.approx(2.0) and basis == "the typical seed spread"


def test_skip_cost_fraction_is_charged_when_set() -> None:
    """A skipped candidate costs ``skip_cost_fraction`` of its cost when that is set (0 by default)."""
    env = ReplayEnv(_toy(), skip_cost_fraction=0.1)
    env.skip(4)
    assert env.compute == pytest.approx(5.0)


@pytest.fixture(scope="module")
def transfergraph_kb(public_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A knowledge base of the TransferGraph runs (real runtimes on every configuration), from their shipped files."""
    from collector.enrich import enrich_models
    from collector.ingest import ingest_path
    from collector.store import KnowledgeBase

    kb = KnowledgeBase(tmp_path_factory.mktemp("replay") / "kb.duckdb")
    ingest_path(kb, public_data / "metadatasets" / "transfergraph")
    enrich_models(kb)
    return kb.path


@pytest.fixture(scope="module")
def transfergraph_runs(transfergraph_kb: Path) -> pd.DataFrame:
    """The runs of that knowledge base."""
    from collector.store import KnowledgeBase
    from metaml import load_runs

    return load_runs(KnowledgeBase(transfergraph_kb))


def test_end_to_end_replay_on_real_runs_writes_the_report(transfergraph_runs: pd.DataFrame, tmp_path: Path) -> None:
    """A small replay (2 held-out TransferGraph tasks, 2 seeds, a tiny leave-one-dataset-out meta-model) writes
    report.md, results.json, searches.csv and the plots; every search is uncensored (it reached the band, or the
    engine stopped with everything left excluded); the meta-model never saw the held-out dataset; the engine setting
    of each task was chosen on the other task; the cache serves the second fit."""
    from metaml._data import learning_frame
    from metaml.search._bench import fit_held_out

    tasks = ("transfergraph|tweet_eval/irony|accuracy|full", "transfergraph|rotten_tomatoes|accuracy|full")
    config = BenchConfig(tasks=tasks, seeds=2, gp_seeds=1, n_estimators=20, max_rows_per_task=40, jobs=1,
                         searchers=("random", "tpe", "portfolio", "static", "engine"),
                         engine_grid={"a": EngineSettings(cost_exponent=0.0), "b": EngineSettings(cost_exponent=1.0)})
    cache = tmp_path / "cache"
    result = run_benchmark(transfergraph_runs, config, cache_dir=cache)
    report = write_report(result, tmp_path / "out")
    for name in ("report.md", "results.json", "searches.csv", "ratio_per_task.png", "regret_vs_compute.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    text = report.read_text()
    assert "## Goals" in text and "tweet_eval/irony" in text and "noise band" in text
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    summary = payload["summary"]
    assert set(summary["goals"]) == {"vs_zero_shot_10x", "vs_knowledge_1_5x", "no_negative_transfer",
                                     "best_skipped_under_5pct"}
    assert set(summary["engine_settings"]) == set(tasks)
    assert set(summary["engine_settings"].values()) <= {"engine[a]", "engine[b]"}
    searches = result.searches
    assert len(searches) == 2 * (2 + 2 + 2 + 1 + 2)
    zero_shot = searches[searches["searcher"].isin(["random", "tpe"])]
    assert zero_shot["reached"].all()
    engine = searches[searches["searcher"] == "engine"]
    assert (engine["reached"] | (engine["excluded"] > 0)).all()
    assert {t["cost_source"] for t in result.tasks} == {"real"}

    frame = learning_frame(transfergraph_runs)
    model, _, cached = fit_held_out(frame, "tweet_eval/irony", config, cache)
    assert cached and "tweet_eval/irony" not in model.train_datasets_


def test_bench_automl_command(transfergraph_kb: Path, tmp_path: Path) -> None:
    """``metaml bench automl`` runs end to end on a knowledge base and prints the goals as JSON."""
    from click.testing import CliRunner

    from service.cli.bench import bench

    out = tmp_path / "automl"
    result = CliRunner().invoke(bench, ["automl", "--kb", str(transfergraph_kb), "--task",
                                        "transfergraph|glue/cola|accuracy|full", "--seeds", "1", "--gp-seeds", "1",
                                        "--searcher", "random", "--searcher", "portfolio", "--searcher", "engine",
                                        "--n-estimators", "10", "--max-rows-per-task", "20", "--jobs", "1",
                                        "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert Path(payload["report"]).exists() and "vs_zero_shot_10x" in payload["goals"]
    assert "--task transfergraph|glue/cola" in (out / "report.md").read_text()
    assert list((out / "cache").glob("*.joblib"))


def test_the_nested_engine_choice_keeps_the_best_skipped_limit_and_never_sees_the_task() -> None:
    """A setting that is faster but wrongly skips the best configuration in more than 5% of the inner searches loses
    to a safe one; each task's choice is made on the other datasets' tasks only, so a setting that is best only on
    the task itself is not chosen for it."""
    rows = []
    tasks = {f"src|d{i}|accuracy|full": f"d{i}" for i in range(4)}
    for t in tasks:
        rows.append({"task": t, "searcher": "tpe", "variant": "", "compute": 100.0, "best_excluded": False,
                     "reached": True, "evals_to_band": 10})
        for variant, compute, excluded in (("fast", 10.0, True), ("safe", 20.0, False),
                                           ("lucky", 1.0 if t.endswith("d0|accuracy|full") else 500.0, False)):
            rows.append({"task": t, "searcher": "engine", "variant": variant, "compute": compute,
                         "best_excluded": excluded, "reached": True, "evals_to_band": 2})
    chosen = choose_engine(pd.DataFrame(rows), tasks)
    assert set(chosen.values()) == {"engine[safe]"}
    assert choose_engine(pd.DataFrame(rows), tasks, max_best_excluded=1.0)["src|d1|accuracy|full"] == "engine[fast]"

"""The replay environment, the skip rule inside search, and a small end-to-end replay benchmark on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaml.search import Knowledge, ReplayEnv, ReplayTask, Residuals, run_search
from metaml.search._bench import BenchConfig, run_benchmark, write_report


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


def test_task_recalibrated_skip_rule_follows_the_tasks_own_errors() -> None:
    """Pooled residuals (here 20 points wide) never let the rule skip a candidate predicted 8 points under the
    incumbent. Once the search's history shows the predictions are within a point on this task, the recalibrated
    basis skips it; when the history shows large errors, it evaluates; a history whose predictions all ran 10 points
    low moves a candidate up by that bias (from skipped to evaluated). Failed runs in the history are left out;
    fewer than 3 scored falls back to the within-task difference."""
    rng = np.random.default_rng(0)
    pred = pd.DataFrame({"points": [82.0, 90.0, 70.0, 60.0, 75.0, 85.0], "rank_score": 0.0, "p_fail": 0.0})
    wide = rng.normal(0, 20, 4000).astype(np.float32)
    kn = Knowledge(pred, Residuals(wide, wide))
    assert kn.decide(0, 90.0, 1).action == "evaluate"
    accurate = [(1, 90.5), (2, 69.0), (3, 60.5), (4, 75.8)]
    d = kn.decide(0, 90.5, 1, history=accurate)
    assert d.basis == "task-recalibrated on 4 evaluated configurations"
    assert d.action == "skip" and d.p_beat < 0.05
    noisy = [(1, 90.5), (2, 95.0), (3, 40.0), (4, 60.0)]
    assert kn.decide(0, 95.0, 2, history=noisy).action == "evaluate"
    biased = [(1, 100.5), (2, 79.0), (3, 70.5), (4, 85.8)]
    assert kn.decide(5, 95.0, 1, history=biased).action == "evaluate"
    assert kn.decide(5, 95.0, 1, history=accurate).action == "skip"
    with_failures = [(1, 90.5), (2, float("nan")), (3, float("nan"))]
    assert kn.decide(0, 90.5, 1, history=with_failures).basis.startswith("within-task difference")


def _knowledge(task: ReplayTask, predicted: list[float]) -> Knowledge:
    """Predictions as given, calibrated residuals with a 3-point standard deviation."""
    rng = np.random.default_rng(0)
    pred = pd.DataFrame({"points": predicted, "lo": np.nan, "hi": np.nan, "rank_score": predicted,
                         "runtime_s": np.nan, "p_fail": 0.0})
    res = rng.normal(0, 3, 2000).astype(np.float32)
    return Knowledge(pred, Residuals(res, res))


def test_skip_rule_skips_a_clearly_bad_candidate_and_never_charges_it() -> None:
    """With an incumbent at 90 (predicted 90), a candidate predicted at 40 cannot plausibly win: the skip rule
    declines it, no cost is charged, the skip is recorded with the candidate's real score, and the evaluation
    budget is spent on the others."""
    task = _toy()
    kn = _knowledge(task, [40.0, 88.0, 87.0, 90.0, 89.0])
    d = kn.decide(0, incumbent=90.0, incumbent_index=3)
    assert d.action == "skip" and d.p_beat < 0.05
    assert kn.decide(4, incumbent=90.0, incumbent_index=3).action == "evaluate"
    env = ReplayEnv(task)
    env.evaluate(3)
    env.skip(0, d.p_beat)
    assert env.compute == 40.0 and env.n_evaluations == 1
    assert env.trace.skips[0][:1] == (0,) and env.trace.skips[0][3] == 50.0 and env.trace.skips[0][4] == 0.0
    # inside a search: the warm start evaluates the predicted best first; the bad candidate is proposed, skipped
    # and never paid for, whatever the searcher (once 3 have scored, the recalibrated rule may skip more)
    for searcher in ("random", "tpe", "grammar"):
        for seed in range(3):
            trace = run_search(task, searcher, variant="prior+skip", knowledge=kn, budget=5, seed=seed)
            skipped, evaluated = [s[0] for s in trace.skips], [e[0] for e in trace.evals]
            assert 0 in skipped and 3 in evaluated and sorted(skipped + evaluated) == [0, 1, 2, 3, 4]
            assert trace.compute == sum(task.cost[i] for i in evaluated) <= 140.0
    assert run_search(task, "random", variant="prior+skip", knowledge=kn, budget=5).evals[0][0] == 3


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
    report.md, results.json and the plots; the meta-model's training never saw the held-out datasets; the cache
    serves the second run; the index-served predictions give the same decisions as the model itself."""
    from metaml._data import learning_frame
    from metaml._decision import decide
    from metaml.search._bench import fit_held_out

    tasks = ["transfergraph|tweet_eval/irony|accuracy|full", "transfergraph|rotten_tomatoes|accuracy|full"]
    config = BenchConfig(seeds=2, budget=8, n_estimators=20, max_rows_per_task=40, jobs=1)
    cache = tmp_path / "cache"
    result = run_benchmark(transfergraph_runs, config, cache_dir=cache, tasks=tasks)
    report = write_report(result, tmp_path / "out")
    for name in ("report.md", "results.json", "searches.csv", "regret_vs_evaluations.png", "regret_vs_compute.png",
                 "regret_vs_compute_per_task.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    text = report.read_text()
    assert "## Goals" in text and "tweet_eval/irony" in text
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(payload["summary"]["goals"]) == {"compute_10x", "wrong_skip_under_5pct", "no_negative_transfer"}
    runs = result.runs
    assert len(runs) == 2 * 3 * 4 * 2
    assert (runs["n_evals"] <= 8).all() and runs["final_regret"].between(0, 1).all()
    assert {t["cost_source"] for t in result.tasks} == {"real"}

    frame = learning_frame(transfergraph_runs)
    model, _, cached = fit_held_out(frame, "tweet_eval/irony", config, cache)
    assert cached and "tweet_eval/irony" not in model.train_datasets_
    task = ReplayTask.from_frame(frame, tasks[0])
    kn = Knowledge.from_model(model, task)
    rows = task.rows.reset_index(drop=True)
    inc = int(np.nanargmax(task.score))
    for i in (0, 5, 17):
        a = kn.decide(i, float(task.score[inc]), inc)
        b = decide(model, rows.iloc[[i]], float(task.score[inc]), incumbent_config=rows.iloc[[inc]])
        assert a.action == b.action and a.p_beat == pytest.approx(b.p_beat)
        past = [inc, 1, 2, 3]
        a = kn.decide(i, float(task.score[inc]), inc, history=[(j, float(task.score[j])) for j in past])
        b = decide(model, rows.iloc[[i]], float(task.score[inc]), incumbent_config=rows.iloc[[inc]],
                   history=rows.iloc[past], history_points=task.score[past])
        assert a.basis == b.basis == "task-recalibrated on 4 evaluated configurations"
        assert a.action == b.action and a.p_beat == pytest.approx(b.p_beat)


def test_bench_automl_command(transfergraph_kb: Path, tmp_path: Path) -> None:
    """``metaml bench automl`` runs end to end on a knowledge base and prints the goals as JSON."""
    from click.testing import CliRunner

    from metaml._bench_cli import bench

    out = tmp_path / "automl"
    result = CliRunner().invoke(bench, ["automl", "--kb", str(transfergraph_kb), "--task",
                                        "transfergraph|glue/cola|accuracy|full", "--seeds", "1", "--budget", "4",
                                        "--n-estimators", "10", "--max-rows-per-task", "20", "--jobs", "1",
                                        "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert Path(payload["report"]).exists() and "compute_10x" in payload["goals"]
    assert "--task transfergraph|glue/cola" in (out / "report.md").read_text()
    assert list((out / "cache").glob("*.joblib"))

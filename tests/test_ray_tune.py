"""The Ray Tune integration (`metaml_client.ray_tune`) against a live server with a trained meta-model: the param-space
builder, warm-start points, the skip check across trials in Ray worker processes (with the incumbent shared through a
Ray actor), reporting completed trials back, the searcher over `/v1/suggest` under the FIFO and ASHA schedulers, and
the examples end to end."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from factories import example_module

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")

from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform  # noqa: E402

from metaml_client import Client  # noqa: E402
from metaml_client._proposer import Evaluated  # noqa: E402
from metaml_client._space import params_from_config, params_key  # noqa: E402
from metaml_client.ray_tune import (  # noqa: E402
    MetamlSearcher,
    ReportBack,
    SkipUnpromising,
    build_param_space,
    config_from_params,
    warm_start,
)
from service.testing import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPACE = {"models": [{"id": "roberta-base"}, {"id": "microsoft/deberta-base"}],
         "methods": [{"name": "full"}, {"name": "lora", "lora_r": 8}],
         "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}


def _run(trainable: Any, param_space: dict[str, Any], samples: int, callbacks: list[Any], storage: Path,
         points: list[dict[str, Any]] | None = None) -> tune.ResultGrid:
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=samples,
                                    search_alg=BasicVariantGenerator(points_to_evaluate=points, max_concurrent=2,
                                                                     random_state=0)),
        run_config=tune.RunConfig(storage_path=str(storage), callbacks=callbacks, verbose=0))
    return tuner.fit()


def test_importing_the_integration_pulls_in_neither_optuna_nor_the_service() -> None:
    code = ("import sys, metaml_client.ray_tune; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'collector', 'metaml', 'service', 'optuna'}); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_param_space_builder() -> None:
    space = {"models": [{"id": "roberta-base"}, {"id": "bert-base-uncased"}],
             "methods": [{"name": "full"}, {"name": "lora", "lora_alpha": 16, "lora_r": 8}],
             "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
                         "weight_decay": {"low": 0.0, "high": 0.1}, "batch_size": [16, 32],
                         "warmup_steps": {"low": 0, "high": 500}, "max_seq_length": {"low": 64.0, "high": 512.0,
                                                                                     "log": True}},
             "fixed": {"epochs": 3}}
    ps = build_param_space(space)
    assert set(ps) == {"model", "method", "learning_rate", "weight_decay", "batch_size", "warmup_steps",
                       "max_seq_length"}  # fixed ones are left to config_from_params
    assert isinstance(ps["model"], Categorical) and ps["model"].categories == ["roberta-base", "bert-base-uncased"]
    assert ps["method"].categories == ["full", "lora(lora_alpha=16, lora_r=8)"]
    lr, wd = ps["learning_rate"], ps["weight_decay"]
    assert isinstance(lr, Float) and isinstance(lr.get_sampler(), LogUniform) and (lr.lower, lr.upper) == (1e-5, 1e-3)
    assert isinstance(wd, Float) and isinstance(wd.get_sampler(), Uniform) and (wd.lower, wd.upper) == (0.0, 0.1)
    assert ps["batch_size"].categories == [16, 32]
    steps, seq = ps["warmup_steps"], ps["max_seq_length"]
    assert isinstance(steps, Integer) and (steps.lower, steps.upper) == (0, 501)  # Tune's upper bound is exclusive
    assert isinstance(seq, Integer) and isinstance(seq.get_sampler(), LogUniform)
    assert (seq.lower, seq.upper) == (64, 513)
    assert lr.is_valid(2e-5) and not lr.is_valid(2e-3) and not ps["method"].is_valid("lora(lora_r=8)")

    for _ in range(20):  # every sample reads back as a configuration of the space
        params = {name: domain.sample() for name, domain in ps.items()}
        config = config_from_params(params, space)
        assert config["method"] in space["methods"] and config["hparams"]["epochs"] == 3
        assert 1e-5 <= config["hparams"]["learning_rate"] <= 1e-3 and 0 <= config["hparams"]["warmup_steps"] <= 500

    # points make both agree: a model name the space lacks, a method label with its parameters in another order
    points = [{"model": "FacebookAI/roberta-base", "method": "lora(lora_r=8, lora_alpha=16)", "learning_rate": 1e-4}]
    ps = build_param_space(space, points)
    assert ps["model"].categories == ["roberta-base", "bert-base-uncased", "FacebookAI/roberta-base"]
    assert ps["method"].categories == ["full", "lora(lora_r=8, lora_alpha=16)"]
    assert all(ps[k].is_valid(v) for k, v in points[0].items())
    assert config_from_params(points[0], space)["method"] == {"name": "lora", "lora_alpha": 16, "lora_r": 8}


def test_warm_start_points_are_the_top_configurations(served_client: Client) -> None:
    start = warm_start(served_client, None, "glue/sst2", SPACE, 4, seed=5)
    rec = start.recommendation
    assert len(start.points_to_evaluate) == 4 and [r.rank for r in rec.ranked] == [1, 2, 3, 4]
    for point, ranked in zip(start.points_to_evaluate, rec.ranked, strict=True):
        assert set(point) == set(start.param_space) == {"model", "method", "learning_rate"}
        assert all(start.param_space[k].is_valid(v) for k, v in point.items()), point
        config = config_from_params(point, SPACE)
        assert config["model"] == ranked.config["model"] and config["method"] == ranked.config["method"]
        assert config["hparams"] == pytest.approx(ranked.config["hparams"])
    assert len({p["learning_rate"] for p in start.points_to_evaluate}) == 4


def test_skip_check_across_worker_processes(ray_session: None, served: ServerProcess, served_client: Client,
                                            served_world: dict[str, Any], tmp_path: Path) -> None:
    """An incumbent nothing can beat (0.99, P(beat) < 0.5 to skip) makes decide say skip, but only once two trials
    have completed; skipped trials end as NaN-scored results marked skip, never chosen as best, never posted."""
    key = served_world["keys"]["root"]
    skipper = SkipUnpromising(served.url, None, "glue/sst2", SPACE, api_key=key, incumbent=0.99,
                              incumbent_config=config_from_params({"model": "roberta-base", "method": "full",
                                                                   "learning_rate": 2e-5}, SPACE),
                              max_false_skip=0.5, min_completed=2)
    reporter = ReportBack(served.url, "glue/sst2", SPACE, api_key=key, provenance={"uri": "test-skip"})
    before = served_client.list_runs(source="ray_tune", limit=1000).count

    def objective(params: dict[str, Any]) -> float:
        return 0.5 + params["learning_rate"]  # distinct scores, all far below the incumbent

    results = _run(skipper.wrap(objective), build_param_space(SPACE), 4, [skipper, reporter], tmp_path)
    assert not results.errors and len(results) == 4
    rows = [r.metrics for r in results]
    skipped = [m for m in rows if m["metaml_action"] == "skip"]
    ran = [m for m in rows if m["metaml_action"] == "evaluate"]
    # the 4th trial starts once two have ended (two run at a time), so it at least is skipped
    assert len(skipped) + len(ran) == 4 and len(skipped) >= 1 and len(ran) >= 2
    for m in rows:  # nothing is skipped before two trials have completed
        assert m["metaml_completed"] >= 2 or m["metaml_action"] == "evaluate"
    for m in skipped:
        assert math.isnan(m["score"]) and m["metaml_p_beat"] < 0.5 and m["metaml_incumbent"] == 0.99
    for m in ran:
        assert 0.5 < m["score"] < 0.51
    assert {m["pid"] for m in rows}.isdisjoint({os.getpid()})  # trials ran in worker processes
    assert results.get_best_result().metrics["metaml_action"] == "evaluate"
    assert skipper.skipped == len(skipped)

    # the driver posted each trial that ran, and none that was skipped
    assert set(reporter.uploads) == {m["trial_id"] for m in ran} and not reporter.errors
    assert all(u.accepted == 1 for u in reporter.uploads.values())
    posted = [r for r in served_client.iter_runs(source="ray_tune") if r["provenance"].get("uri") == "test-skip"]
    assert len(posted) == len(ran) == served_client.list_runs(source="ray_tune", limit=1000).count - before
    experiment = Path(results.experiment_path).name
    assert {r["provenance"]["locator"] for r in posted} == {f"{experiment}/{m['trial_id']}" for m in ran}
    assert sorted(r["outcome"]["score"] for r in posted) == pytest.approx(sorted(m["score"] for m in ran))

    # a check whose callback was left out of the run says so
    alone = SkipUnpromising(served.url, None, "glue/sst2", SPACE, api_key=key)
    with pytest.raises(RuntimeError, match=r"RunConfig\(callbacks"):
        alone.check({"model": "roberta-base", "method": "full", "learning_rate": 1e-4})


def test_ray_tune_example_end_to_end(ray_session: None, served: ServerProcess, served_client: Client,
                                     served_world: dict[str, Any], tmp_path: Path) -> None:
    """The example warm-starts Tune with the recommendation, runs trials two at a time in worker processes, scores
    them from the knowledge base through SQL, and posts every completed trial back as a run."""
    spec = importlib.util.spec_from_file_location("ray_tune_warm_start", REPO / "examples" / "ray_tune_warm_start.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before = {r["run_id"] for r in served_client.iter_runs(source="ray_tune")}
    results = example.main(["--url", served.url, "--key", served_world["keys"]["root"], "--trials", "4",
                            "--budget", "3", "--seed", "1", "--storage-path", str(tmp_path)])
    assert ray.is_initialized()  # the example leaves a Ray instance it did not start alone
    assert not results.errors and len(results) == 4
    rows = [r.metrics for r in results]
    assert {m["metaml_action"] for m in rows} <= {"evaluate", "skip"}
    ran = [m for m in rows if m["metaml_action"] == "evaluate"]
    assert len(ran) >= 1 and all(0.0 < m["score"] <= 1.0 for m in ran)
    for m in rows:
        if m["metaml_action"] == "skip":
            assert m["metaml_completed"] >= 1 and m["metaml_p_beat"] < 0.05 and math.isnan(m["score"])
    pids = {m["pid"] for m in rows}
    assert os.getpid() not in pids and len(pids) >= 2

    # the recommendation's top configurations ran first
    start = warm_start(served_client, None, "glue/sst2", example._optuna_example().search_space(), 3, seed=1)
    first = sorted(results, key=lambda r: r.metrics["trial_id"])[:3]
    for point, result in zip(start.points_to_evaluate, first, strict=True):
        assert {k: result.config[k] for k in point} == pytest.approx(point)

    # every completed trial was posted back, under its experiment and trial id
    posted = [r for r in served_client.iter_runs(source="ray_tune") if r["run_id"] not in before]
    experiment = Path(results.experiment_path).name
    assert {r["provenance"]["locator"] for r in posted} == {f"{experiment}/{m['trial_id']}" for m in ran}
    assert {r["dataset"]["name"] for r in posted} == {"glue/sst2"}
    assert all(r["provenance"]["uploader"] == "root" and r["hparams"]["epochs"] == 3 for r in posted)


# -- the searcher over /v1/suggest ------------------------------------------------------------------------------------
#: Two models x two LoRA ranks x a learning-rate range; 2 draws per grid point: 8 candidates.
SUGGEST_SPACE = {"models": [{"id": "roberta-base"}, {"id": "microsoft/deberta-base"}],
                 "methods": [{"name": "lora", "lora_r": 8}, {"name": "lora", "lora_r": 16}],
                 "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}
KNOWN = ("model", "method", "learning_rate")


def _searcher(url: str, **kwargs: Any) -> MetamlSearcher:
    return MetamlSearcher(url, None, "glue/sst2", SUGGEST_SPACE, samples_per_point=2, seed=4, **kwargs)


def test_searcher_drives_a_tuning_run_until_the_service_is_done(ray_session: None, served: ServerProcess,
                                                                  served_client: Client, tmp_path: Path) -> None:
    """The first trial runs the service's first proposal (and errors: a failure the next requests carry); trials
    run two at a time, each on a distinct candidate; a parameter outside the space is drawn from its domain and a
    constant passes through; once the service has nothing left the searcher says FINISHED and the run ends before
    its 40 samples."""
    first = served_client.suggest(None, "glue/sst2", space=SUGGEST_SPACE, k=1, samples_per_point=2, seed=4)
    failing = params_from_config(first.suggestions[0].config, SUGGEST_SPACE)
    outcome = example_module("toy_finetuning").outcome

    def trainable(params: dict[str, Any]) -> dict[str, Any]:
        known = {k: params[k] for k in KNOWN}
        if known == failing:
            raise RuntimeError("CUDA out of memory")
        score, runtime = outcome(config_from_params(known, SUGGEST_SPACE))
        return {"score": score, "runtime_s": runtime, "pid": os.getpid()}

    searcher = _searcher(served.url)
    tuner = tune.Tuner(trainable, param_space={"dropout": tune.uniform(0.0, 0.3), "data": "sst2"},
                       tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=40, search_alg=searcher,
                                                   max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert searcher.finished and not searcher.running
    assert 2 <= len(results) <= first.n_candidates == 8
    assert len(results.errors) == 1
    configs = [r.config for r in results]
    assert len({params_key({k: c[k] for k in KNOWN}) for c in configs}) == len(configs)
    assert failing in [{k: c[k] for k in KNOWN} for c in configs]
    assert all(0.0 <= c["dropout"] <= 0.3 and c["data"] == "sst2" for c in configs)
    assert sum(e.score is None for e in searcher.evaluated) == 1 and len(searcher.evaluated) == len(results)
    for r in results:
        if r.error is None:
            config = config_from_params({k: r.config[k] for k in KNOWN}, SUGGEST_SPACE)
            assert r.metrics["score"] == pytest.approx(outcome(config)[0]) and r.metrics["pid"] != os.getpid()
    assert searcher.suggest("one-more") == Searcher.FINISHED


def test_searcher_under_asha_sends_only_final_results(ray_session: None, served: ServerProcess,
                                                      tmp_path: Path) -> None:
    """Under ASHA (3 epochs, halving after 1 and 2) a trial stopped early is no score of its configuration: it is
    left out of the history and never proposed again; the trials that ran all 3 epochs are the history."""
    curve = example_module("toy_finetuning").curve

    def trainable(params: dict[str, Any]) -> None:
        config = config_from_params({k: params[k] for k in KNOWN}, SUGGEST_SPACE)
        for epoch, score in enumerate(curve(config, 3), start=1):
            tune.report({"score": score, "epoch": epoch})

    searcher = _searcher(served.url, resource_attr="epoch", max_resource=3)
    scheduler = ASHAScheduler(time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2)
    results = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        metric="score", mode="max", num_samples=6, search_alg=searcher, scheduler=scheduler, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    n = len(results)  # all 6, or fewer when the service had nothing left worth evaluating
    assert not results.errors and 3 <= n <= 6 and (n == 6 or searcher.finished)
    epochs = {params_key({k: r.config[k] for k in KNOWN}): r.metrics["epoch"] for r in results}
    assert len(epochs) == n  # no configuration twice
    stopped = {k for k, e in epochs.items() if e < 3}
    assert stopped and searcher.stopped == stopped
    assert {params_key(e.params) for e in searcher.evaluated} == set(epochs) - stopped
    assert all(e.score is not None for e in searcher.evaluated)


def test_searcher_state_round_trips_and_refuses_minimizing(tmp_path: Path) -> None:
    """save/restore keep the history, the running trials and the stopped configurations; the searcher pickles
    without its client; a minimizing mode is refused."""
    import pickle

    a = _searcher("http://127.0.0.1:9")
    a.evaluated.append(Evaluated({"model": "roberta-base", "method": "lora(lora_r=8)", "learning_rate": 1e-4}, 0.91,
                                 120.0))
    a.running["t1"] = {"model": "roberta-base", "method": "lora(lora_r=16)", "learning_rate": 2e-4}
    a.stopped.add("k")
    a.save(str(tmp_path / "searcher.pkl"))
    b = _searcher("http://127.0.0.1:9")
    b.restore(str(tmp_path / "searcher.pkl"))
    assert b.get_state() == a.get_state() and b.evaluated[0].score == 0.91
    assert pickle.loads(pickle.dumps(a)).get_state() == a.get_state()
    with pytest.raises(ValueError, match="mode must be 'max'"):
        _searcher("http://127.0.0.1:9", mode="min")


def test_ray_tune_suggest_example_end_to_end(ray_session: None, served: ServerProcess, tmp_path: Path) -> None:
    """The suggest example: trials two at a time in worker processes, each on a configuration the service chose
    (never the same twice); the toy's diverging runs are errored trials; the best score is among the toy's good
    ones."""
    results = example_module("ray_tune_suggest").main(["--url", served.url, "--trials", "6", "--seed", "1",
                                                       "--storage-path", str(tmp_path)])
    assert ray.is_initialized() and len(results) == 6
    keys = {params_key({k: r.config[k] for k in KNOWN}) for r in results}
    assert len(keys) == 6
    toy = example_module("toy_finetuning")
    for r in results:
        config = config_from_params({k: r.config[k] for k in KNOWN}, toy.search_space())
        if r.error is None:
            assert r.metrics["score"] == pytest.approx(toy.outcome(config)[0])
        else:
            with pytest.raises(toy.Diverged):
                toy.outcome(config)
    assert results.get_best_result().metrics["score"] > 0.9

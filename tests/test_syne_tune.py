"""The Syne Tune searcher over `/v1/suggest` (`metaml_client.syne_tune.MetamlSearcher`) against a live server with a
trained meta-model, run by real Syne Tune tuners on the local backend (a training script per trial, in its own
process): the config-space builder, the FIFO scheduler until the service is done, ASHA stopping runs early (only final
results go to the service), and the example end to end."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest
from factories import example_module

pytest.importorskip("syne_tune")

from syne_tune import StoppingCriterion, Tuner
from syne_tune.backend import LocalBackend
from syne_tune.config_space import Categorical, Float, Integer
from syne_tune.optimizer.schedulers.asha import AsynchronousSuccessiveHalving
from syne_tune.optimizer.schedulers.single_objective_scheduler import SingleObjectiveScheduler

from metaml_client import Client
from metaml_client._space import params_from_config, params_key
from metaml_client.syne_tune import MetamlSearcher, build_config_space, config_from_params
from service.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]
#: Two models x two LoRA ranks x a learning-rate range; 3 draws per grid point: 12 candidates.
SPACE = {"models": [{"id": "roberta-base"}, {"id": "microsoft/deberta-base"}],
         "methods": [{"name": "lora", "lora_r": 8}, {"name": "lora", "lora_r": 16}],
         "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}
KNOWN = ("model", "method", "learning_rate")
ENTRY_POINT = f'''
"""The toy outcome of the examples, epoch by epoch; a learning rate above 7e-4 runs out of memory."""
import argparse, importlib.util, json
from syne_tune import Reporter
from syne_tune.utils import add_config_json_to_argparse, load_config_json
from metaml_client.syne_tune import config_from_params

parser = argparse.ArgumentParser()
add_config_json_to_argparse(parser)
args, _ = parser.parse_known_args()
given = load_config_json(vars(args))
spec = importlib.util.spec_from_file_location("toy", {str(REPO / "examples" / "toy_finetuning.py")!r})
toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)
if given["learning_rate"] > 7e-4:
    raise RuntimeError("CUDA out of memory")
config = config_from_params({{k: given[k] for k in {KNOWN!r}}}, json.loads({json.dumps(SPACE)!r}))
report = Reporter()
for epoch, score in enumerate(toy.curve(config, 3), start=1):
    report(epoch=epoch, score=score)
'''


TOY = example_module("toy_finetuning")


def test_config_space_builder() -> None:
    """The space's parameters as Syne Tune domains (integer bounds inclusive), constants as they are; a searcher
    refuses a config space without the space's parameters."""
    space = {**SPACE, "hparams": {**SPACE["hparams"], "batch_size": [16, 32], "warmup_steps": {"low": 0, "high": 500}}}
    cs = build_config_space(space, epochs=3, data="sst2")
    assert isinstance(cs["model"], Categorical) and cs["model"].categories == ["roberta-base", "microsoft/deberta-base"]
    assert cs["method"].categories == ["lora(lora_r=8)", "lora(lora_r=16)"]
    assert isinstance(cs["learning_rate"], Float) and (cs["learning_rate"].lower, cs["learning_rate"].upper) == (
        1e-5, 1e-3)
    assert isinstance(cs["warmup_steps"], Integer) and (cs["warmup_steps"].lower, cs["warmup_steps"].upper) == (0, 500)
    assert cs["batch_size"].categories == [16, 32] and (cs["epochs"], cs["data"]) == (3, "sst2")
    with pytest.raises(ValueError, match="lacks the space's parameters learning_rate"):
        MetamlSearcher("http://127.0.0.1:9", None, "glue/sst2", SPACE,
                       config_space={k: v for k, v in cs.items() if k != "learning_rate"})


def _tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, searcher: MetamlSearcher, scheduler: Any,
          trials: int) -> Tuner:
    monkeypatch.setenv("SYNETUNE_FOLDER", str(tmp_path / "results"))
    script = tmp_path / "train.py"
    script.write_text(ENTRY_POINT)
    tuner = Tuner(trial_backend=LocalBackend(entry_point=str(script), pass_args_as_json=True), scheduler=scheduler,
                  stop_criterion=StoppingCriterion(max_num_trials_started=trials), n_workers=2, sleep_time=0.1,
                  max_failures=trials, results_update_interval=5, print_update_interval=600,
                  wait_trial_completion_when_stopping=True, tuner_name="metaml-test")
    tuner.run()
    return tuner


def _results(tuner: Tuner) -> dict[int, dict[str, Any]]:
    """Each trial's last reported row (its parameters under their own names)."""
    import pandas as pd

    frame = pd.read_csv(Path(tuner.tuner_path) / "results.csv.zip")
    frame = frame.rename(columns={f"config_{k}": k for k in KNOWN})
    return {int(t): rows.sort_values("epoch").iloc[-1].to_dict() for t, rows in frame.groupby("trial_id")}


def test_fifo_runs_until_the_service_is_done(served: ServerProcess, served_client: Client, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The first trial runs the service's first proposal; two trials at a time, each on a distinct candidate;
    final scores and failures go back as the history; when the service has nothing left the searcher answers None
    and the tuner stops before its 30 trials."""
    cs = build_config_space(SPACE, epochs=3)
    searcher = MetamlSearcher(served.url, None, "glue/sst2", SPACE, config_space=cs, samples_per_point=3, seed=6)
    scheduler = SingleObjectiveScheduler(cs, metric="score", do_minimize=False, searcher=searcher, random_seed=0)
    tuner = _tune(tmp_path, monkeypatch, searcher, scheduler, trials=30)

    first = served_client.suggest(None, "glue/sst2", space=SPACE, k=1, samples_per_point=3, seed=6)
    assert searcher.suggested[0] == params_from_config(first.suggestions[0].config, SPACE)
    assert searcher.finished and len(searcher.suggested) <= first.n_candidates == 12
    keys = [params_key(p) for p in searcher.suggested]
    assert len(set(keys)) == len(keys)
    assert len(searcher.evaluated) == len(searcher.suggested)  # every trial ended: a score or a failure
    rows = _results(tuner)
    for e in searcher.evaluated:
        config = config_from_params(e.params, SPACE)
        if e.params["learning_rate"] > 7e-4:
            assert e.score is None
        else:
            assert e.score == pytest.approx(TOY.outcome(config)[0]) and e.runtime_s > 0
    assert {params_key({k: r[k] for k in KNOWN}) for r in rows.values()} <= set(keys)
    assert max(r["score"] for r in rows.values()) == pytest.approx(max(e.score for e in searcher.evaluated
                                                                        if e.score is not None))


def test_asha_sends_only_final_results(served: ServerProcess, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ASHA (3 epochs, halving after 1 and 2) a trial stopped early is not sent as a score and never
    proposed again; the trials that reached epoch 3 are the history."""
    cs = build_config_space(SPACE, epochs=3)
    searcher = MetamlSearcher(served.url, None, "glue/sst2", SPACE, config_space=cs, samples_per_point=3, seed=7,
                              max_resource=3)
    scheduler = AsynchronousSuccessiveHalving(cs, metric="score", do_minimize=False, searcher=searcher,
                                              time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2,
                                              random_seed=0)
    tuner = _tune(tmp_path, monkeypatch, searcher, scheduler, trials=8)
    rows = _results(tuner)
    keys = [params_key(p) for p in searcher.suggested]
    assert len(set(keys)) == len(keys) == len(rows)
    last_epoch = {params_key({k: r[k] for k in KNOWN}): r["epoch"] for r in rows.values()}
    stopped = {k for k, e in last_epoch.items() if e < 3}
    scored = {params_key(e.params) for e in searcher.evaluated if e.score is not None}
    assert stopped and not stopped & {params_key(e.params) for e in searcher.evaluated}
    assert scored == {k for k, e in last_epoch.items() if e == 3}
    counts = collections.Counter(e.score is None for e in searcher.evaluated)
    assert counts[False] == len(scored)


def test_syne_tune_example_end_to_end(served: ServerProcess, tmp_path: Path) -> None:
    """The example under asynchronous Hyperband: trials run the example's training script, the service chooses
    each configuration, and the best final score is among the toy's good ones."""
    tuner, searcher = example_module("syne_tune_suggest").main([
        "--url", served.url, "--trials", "6", "--scheduler", "hyperband", "--folder", str(tmp_path), "--seed", "1"])
    assert Path(tuner.tuner_path).is_relative_to(tmp_path)
    # the tuner checks its stop criterion between scheduling rounds, so on a slow machine each of the 2 workers may ask
    # for a configuration or two past the 6th trial; every one the service gives is new
    assert 6 <= len(searcher.suggested) <= 10 and len({params_key(p) for p in searcher.suggested}) == len(
        searcher.suggested)
    final = [e.score for e in searcher.evaluated if e.score is not None]
    assert final and max(final) > 0.9


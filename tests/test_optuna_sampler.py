"""The Optuna sampler over `/v1/suggest` (`metaml_client.optuna.MetamlSampler`) against a live server with a trained
meta-model: the parameters and their distributions, a study that follows the service and stops when it is done,
failed and pruned trials, the inner sampler for what the service does not cover, and two worker processes sharing
one storage (SQLite and a journal file) through the example."""

from __future__ import annotations

import collections
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from factories import example_module
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from metaml_client import Client
from metaml_client._space import config_from_params, params_from_config, params_key
from metaml_client.optuna import DONE_ATTR, SUGGESTION_ATTR, MetamlSampler, distributions, suggest_config
from service.testing import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
#: Two models x two LoRA ranks x a learning-rate range; 3 draws per grid point: 12 candidates.
SPACE = {"models": [{"id": "FacebookAI/roberta-base"}, {"id": "microsoft/deberta-base"}],
         "methods": [{"name": "lora", "lora_r": 8}, {"name": "lora", "lora_r": 16, "lora_alpha": 32}],
         "hparams": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}, "fixed": {"epochs": 3}}
DRAWS = 3


TOY = example_module("toy_finetuning")


def test_parameters_and_distributions_round_trip() -> None:
    """The space's parameters as Optuna distributions; a configuration the server sends back (its canonical model
    name, an integer method parameter as a float) reads as the parameters the space spells, and back."""
    space = {**SPACE, "hparams": {**SPACE["hparams"], "batch_size": [16, 32], "warmup_steps": {"low": 0, "high": 500}}}
    dists = distributions(space)
    assert dists["model"] == CategoricalDistribution(["FacebookAI/roberta-base", "microsoft/deberta-base"])
    assert dists["method"] == CategoricalDistribution(["lora(lora_r=8)", "lora(lora_r=16, lora_alpha=32)"])
    assert dists["learning_rate"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["batch_size"] == CategoricalDistribution([16, 32])
    assert dists["warmup_steps"] == IntDistribution(0, 500)

    served = {"model": {"id": "roberta-base"}, "method": {"name": "lora", "lora_alpha": 32.0, "lora_r": 16},
              "hparams": {"epochs": 3.0, "learning_rate": 2.5e-4, "batch_size": 32, "warmup_steps": 91}}
    params = params_from_config(served, space)
    assert params == {"model": "FacebookAI/roberta-base", "method": "lora(lora_r=16, lora_alpha=32)",
                      "learning_rate": 2.5e-4, "batch_size": 32, "warmup_steps": 91}
    assert all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in params.items())
    back = config_from_params(params, space)
    assert back["method"] == {"name": "lora", "lora_r": 16, "lora_alpha": 32} and back["hparams"]["epochs"] == 3
    assert params_key({"a": 16, "b": "x"}) == params_key({"b": "x", "a": 16.0}) != params_key({"a": 17, "b": "x"})
    with pytest.raises(ValueError, match="not one of the space's models"):
        params_from_config({**served, "model": {"id": "gpt2"}}, space)
    with pytest.raises(ValueError, match="not one of the space's methods"):
        params_from_config({**served, "method": {"name": "full"}}, space)


def _objective(space: dict[str, Any]) -> Any:
    """The toy outcome, but the second trial fails (out of memory) and the third is pruned after one report; an
    extra parameter the service knows nothing of (``dropout``) comes from the inner sampler."""

    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, space)
        trial.suggest_float("dropout", 0.0, 0.3)
        if trial.number == 1:
            raise RuntimeError("CUDA out of memory")
        if trial.number == 2:
            trial.report(0.6, step=1)
            raise optuna.TrialPruned()
        score, runtime = TOY.outcome(config)
        trial.set_user_attr("runtime_s", runtime)
        return score

    return objective


def test_a_study_follows_the_service_and_stops_when_it_is_done(served_client: Client) -> None:
    """The first trial is the service's first proposal; every trial evaluates a distinct candidate; each request
    carries the completed and failed trials before it (not the pruned ones, which are never proposed again); once
    the service has nothing left the trial that finds out ends PRUNED with ``metaml:done`` and optimize returns."""
    sampler = MetamlSampler(served_client, None, "glue/sst2", SPACE, samples_per_point=DRAWS, seed=3,
                            inner=optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective(SPACE), n_trials=40, catch=(RuntimeError,))

    first = served_client.suggest(None, "glue/sst2", space=SPACE, k=1, samples_per_point=DRAWS, seed=3)
    assert first.n_candidates == 2 * 2 * DRAWS
    trials = study.trials
    assert trials[0].params["model"] == "FacebookAI/roberta-base"  # the space's spelling of the server's name
    assert {k: trials[0].params[k] for k in ("model", "method", "learning_rate")} == \
        params_from_config(first.suggestions[0].config, SPACE)

    last = trials[-1]
    assert last.state == TrialState.PRUNED and last.system_attrs[DONE_ATTR] is True and not last.params
    ran = trials[:-1]
    assert len(ran) <= first.n_candidates < 40
    keys = [params_key({k: t.params[k] for k in ("model", "method", "learning_rate")}) for t in ran]
    assert len(set(keys)) == len(keys)  # never the same candidate twice (pruned ones included)
    assert [t.state for t in ran[:3]] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    assert sum(t.state == TrialState.COMPLETE for t in ran) >= 3
    for i, t in enumerate(ran):
        sent = sum(u.state in (TrialState.COMPLETE, TrialState.FAIL) for u in ran[:i])
        assert t.user_attrs[SUGGESTION_ATTR]["evaluated"] == sent
        assert t.user_attrs[SUGGESTION_ATTR]["failed"] == (i > 1)
        assert 0.0 <= t.params["dropout"] <= 0.3
    assert ran[0].user_attrs[SUGGESTION_ATTR]["mechanism"] == "experts' prior"
    assert {t.user_attrs[SUGGESTION_ATTR]["mechanism"] for t in ran[4:]} - {"experts' prior"}
    for t in ran:
        if t.state == TrialState.COMPLETE:
            config = config_from_params({k: t.params[k] for k in ("model", "method", "learning_rate")}, SPACE)
            assert t.value == pytest.approx(TOY.outcome(config)[0])


def test_the_inner_sampler_takes_over_when_the_service_is_away(caplog: pytest.LogCaptureFixture) -> None:
    """With no server to ask, the trials still run: every parameter comes from the inner sampler, within the
    space's distributions, and a warning says so."""
    with Client(f"http://127.0.0.1:{free_port()}", retries=0) as nowhere:
        sampler = MetamlSampler(nowhere, None, "glue/sst2", SPACE, inner=optuna.samplers.RandomSampler(seed=1))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        with caplog.at_level(logging.WARNING, logger="metaml_client"):
            study.optimize(lambda t: TOY.outcome(suggest_config(t, SPACE))[0], n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    dists = distributions(SPACE)
    for t in study.trials:
        assert SUGGESTION_ATTR not in t.user_attrs
        assert all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in t.params.items())
    assert sum("/v1/suggest failed" in r.getMessage() for r in caplog.records) == 3


def test_a_minimizing_study_is_refused(served_client: Client) -> None:
    study = optuna.create_study(direction="minimize", sampler=MetamlSampler(served_client, None, "glue/sst2", SPACE))
    with pytest.raises(ValueError, match="maximizes"):
        study.optimize(lambda t: TOY.outcome(suggest_config(t, SPACE))[0], n_trials=1)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_processes_share_one_storage(kind: str, served: ServerProcess, tmp_path: Path) -> None:
    """The Optuna example in two processes at once on one storage: every trial ends, each evaluated configuration
    is one of the service's candidates, none is evaluated more often than there are workers (a second time only
    when the history changed between the two workers' requests), and every score landed in the storage."""
    where = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.log")
    storage = example_module("optuna_suggest").storage(where)
    optuna.create_study(direction="maximize", storage=storage, study_name="shared")
    cmd = [sys.executable, str(REPO / "examples" / "optuna_suggest.py"), "--url", served.url, "--trials", "8",
           "--storage", where, "--study", "shared", "--seed", "2"]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 16 and all(t.state.is_finished() for t in trials)
    evaluated = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    counts = collections.Counter(params_key(t.params) for t in evaluated)
    assert max(counts.values()) <= 2
    repeats = sum(n - 1 for n in counts.values())
    assert repeats <= 1, counts
    space = TOY.search_space()
    for t in evaluated:
        assert t.user_attrs[SUGGESTION_ATTR]["index"] >= 0
        config = config_from_params(t.params, space)
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(TOY.outcome(config)[0])
            assert t.user_attrs["runtime_s"] == pytest.approx(TOY.outcome(config)[1])
        else:
            with pytest.raises(TOY.Diverged):
                TOY.outcome(config)


def test_optuna_example_end_to_end(served: ServerProcess) -> None:
    """The example runs a study the service drives: trials complete or fail (the toy's diverging runs), and the
    best one found is among the toy's best configurations."""
    study = example_module("optuna_suggest").main(["--url", served.url, "--trials", "12", "--seed", "1"])
    states = collections.Counter(t.state for t in study.trials)
    assert len(study.trials) == 12 and states[TrialState.COMPLETE] >= 8
    assert set(states) <= {TrialState.COMPLETE, TrialState.FAIL}
    assert study.best_value > 0.92
    assert len({params_key(t.params) for t in study.trials}) == 12

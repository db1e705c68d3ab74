"""Warm-start an Optuna study with the metaml service, skip unpromising trials, and report the trials back.

The search space is a few models of the knowledge base x full fine-tuning / LoRA x a learning-rate range. The study
is warm-started with the meta-learner's top configurations (``/v1/recommend``); each trial first asks ``/v1/decide``
whether it can beat the best score so far (skipped trials show as PRUNED, with ``metaml_p_beat``), then is
"trained" and posted back to the knowledge base as a run (``/v1/runs``).

No GPU is needed: the objective does not fine-tune anything. It looks the score up in the knowledge base through the
client's ``sql`` (the past run of the same model and method on the dataset with the nearest learning rate; another
dataset's when the dataset has none), so the example runs anywhere in seconds. Replace ``lookup_score`` with real
training to use it for real.

    python examples/optuna_warm_start.py --url http://127.0.0.1:8000 --key mk_... --trials 12

The key needs the ``analyst`` scope (SQL) and ``write`` (uploads), and ``read`` on a server that requires keys for
reads: e.g. an ``admin`` key. Without one, the example says which key to create and exits with code 2.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna

from metaml_client import Client
from metaml_client.optuna import SkipUnpromising, config_from_params, method_label, report_back, warm_start

MODELS = ("roberta-base", "bert-base-uncased", "microsoft/deberta-base")
METHODS = ({"name": "full"}, {"name": "lora", "lora_r": 8})
LR_LOW, LR_HIGH = 1e-5, 1e-3
SCOPES = ("read", "analyst", "write")
"""The scopes the example's key needs: read (recommend, decide), analyst (SQL), write (uploads)."""


def toy() -> SimpleNamespace:
    """What ``toy_finetuning.py`` beside this file defines (its ``run`` reports a missing key)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("toy_finetuning.py"))))


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def lookup_score(client: Client, dataset: str, config: Mapping[str, Any]) -> tuple[float, float | None]:
    """The score (and runtime) of the knowledge base's run nearest to ``config``: same model and method on
    ``dataset`` at the nearest learning rate, else same model and method anywhere, else same model anywhere."""
    model, method = config["model"]["id"], config["method"]["name"]
    lr = float(config["hparams"].get("learning_rate", 2e-5))
    near = f"abs(ln(coalesce(hparams_learning_rate, 2e-5)) - ln({lr!r}))"
    for where in (f"dataset_name = {_q(dataset)} AND model_id = {_q(model)} AND method_name = {_q(method)}",
                  f"model_id = {_q(model)} AND method_name = {_q(method)}",
                  f"model_id = {_q(model)}"):
        answer = client.sql(f"SELECT outcome_score, outcome_runtime_s FROM runs WHERE {where} "
                            f"AND outcome_status = 'ok' AND outcome_score IS NOT NULL ORDER BY {near} LIMIT 1")
        if answer.rows:
            score, runtime = answer.rows[0]
            return float(score), (float(runtime) if runtime is not None else None)
    return 0.5, None


def search_space() -> dict[str, Any]:
    """The models x full fine-tuning / LoRA x a learning-rate range, 3 epochs (the ``space`` of ``/v1/recommend``)."""
    return {"models": [{"id": m} for m in MODELS], "methods": [dict(m) for m in METHODS],
            "hparams": {"learning_rate": {"low": LR_LOW, "high": LR_HIGH, "log": True}}, "fixed": {"epochs": 3}}


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every example takes: server, key, trials, dataset, warm-start budget, seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=None, help="an API key with the read, analyst and write scopes")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--dataset", default="glue/sst2")
    parser.add_argument("--budget", type=int, default=4, help="configurations to warm-start with")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> optuna.Study:
    args = argument_parser(__doc__.splitlines()[0]).parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space()
    with Client(args.url, api_key=args.key) as client:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
        rec = warm_start(study, client, None, args.dataset, space, args.budget, seed=args.seed)
        # the server names models canonically: offer its names as the choices
        models = sorted({*MODELS, *(str(p["model"]) for p in rec.optuna_trials)})
        labels = [method_label(m) for m in METHODS]
        skipper = SkipUnpromising(client, None, args.dataset)

        def objective(trial: optuna.Trial) -> float:
            params = {"model": trial.suggest_categorical("model", models),
                      "method": trial.suggest_categorical("method", labels),
                      "learning_rate": trial.suggest_float("learning_rate", LR_LOW, LR_HIGH, log=True)}
            config = config_from_params(params, space)
            skipper.check(trial, config)  # raises optuna.TrialPruned when the meta-learner says skip
            score, runtime_s = lookup_score(client, args.dataset, config)  # stands in for training
            report_back(client, trial, config, score, runtime_s)
            return score

        study.optimize(objective, n_trials=args.trials)

    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    pruned = states.count(optuna.trial.TrialState.PRUNED)
    print(f"{len(states)} trials: {complete} completed, {pruned} skipped by metaml; best {study.best_value:.4f} "
          f"with {study.best_params}", file=sys.stderr)
    return study


if __name__ == "__main__":
    sys.exit(toy().run(main, scopes=SCOPES))

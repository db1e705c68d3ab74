"""Let the metaml service choose each configuration of an Optuna study (``MetamlSampler`` over ``/v1/suggest``).

Every trial, the sampler sends the study's finished trials (scores, failures, runtimes) to ``/v1/suggest`` and takes
the configuration the service proposes: the meta-learner's best expected improvement per unit of predicted cost,
learning from this task's results as they come. The study stops by itself when the service has nothing left worth
evaluating (the trial that finds out ends as PRUNED). The objective is the toy fine-tuning outcome of
``toy_finetuning.py`` (seconds, no GPU); full fine-tuning at a high learning rate diverges, a failed trial the service
learns from.

    python examples/optuna_suggest.py --url http://127.0.0.1:8000 --trials 20
    python examples/optuna_suggest.py --storage sqlite:///study.db --study sst2   # in several processes at once
    python examples/optuna_suggest.py --storage study.log --study sst2            # a journal file instead

A server that requires keys for reads needs ``--key`` with the ``read`` scope.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import optuna

from metaml_client import Client
from metaml_client.optuna import MetamlSampler, suggest_config


def toy() -> SimpleNamespace:
    """What ``toy_finetuning.py`` beside this file defines (run by its path: the examples are no package)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("toy_finetuning.py"))))


def storage(where: str | None) -> str | optuna.storages.BaseStorage | None:
    """An RDB URL as it is; any other path as a journal file (``JournalStorage``)."""
    if where is None or "://" in where:
        return where
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(where))


def main(argv: Sequence[str] | None = None) -> optuna.Study:
    example = toy()
    parser = example.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None,
                        help="an Optuna RDB URL (sqlite:///study.db) or a journal file, shared by several processes")
    parser.add_argument("--study", default=None, help="the study's name in --storage")
    args = parser.parse_args(argv)

    space = example.search_space()
    example.check_server(args.url, args.key, args.dataset, space, args.seed)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are counted below
    with Client(args.url, api_key=args.key) as client:
        sampler = MetamlSampler(client, None, args.dataset, space, seed=args.seed)
        study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage(args.storage),
                                    study_name=args.study, load_if_exists=args.storage is not None)

        def objective(trial: optuna.Trial) -> float:
            config = suggest_config(trial, space)  # raises SearchDone when the service has nothing left
            score, runtime_s = example.outcome(config)  # stands in for training; raises Diverged
            trial.set_user_attr("runtime_s", runtime_s)  # the service learns the task's cost from it
            return score

        study.optimize(objective, n_trials=args.trials, catch=(example.Diverged,))

    states = [t.state for t in study.trials]
    example.summary(len(states), states.count(optuna.trial.TrialState.COMPLETE),
                    states.count(optuna.trial.TrialState.FAIL),
                    any(t.system_attrs.get("metaml:done") for t in study.trials), study.best_value, study.best_params)
    return study


if __name__ == "__main__":
    sys.exit(toy().run(main))


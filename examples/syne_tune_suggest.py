"""Let the metaml service choose each configuration of a Syne Tune run (``MetamlSearcher`` over ``/v1/suggest``),
under the FIFO scheduler or ASHA / asynchronous Hyperband stopping runs early.

The space and the toy outcome are those of ``optuna_suggest.py`` (``toy_finetuning.py``); each trial runs
``syne_tune_trial.py`` in a process of Syne Tune's local backend and reports its score epoch by epoch. With
``--scheduler asha`` (or ``hyperband``) runs that fall behind are stopped at epoch 1 or 2; only the runs that reach
the last epoch are sent to the service as scores, the stopped ones are never proposed again. The run ends when the
service has nothing left worth evaluating, or after ``--trials`` trials.

    python examples/syne_tune_suggest.py --url http://127.0.0.1:8000 --trials 12 --scheduler asha

Results go to ``$SYNETUNE_FOLDER`` (``--folder``; default ``~/syne-tune``). A server that requires keys for reads
needs ``--key`` with the ``read`` scope.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from syne_tune import StoppingCriterion, Tuner
from syne_tune.backend import LocalBackend
from syne_tune.optimizer.schedulers.asha import AsynchronousSuccessiveHalving
from syne_tune.optimizer.schedulers.single_objective_scheduler import SingleObjectiveScheduler

from metaml_client.syne_tune import MetamlSearcher, build_config_space

HERE = Path(__file__).resolve().parent


def toy() -> SimpleNamespace:
    """What ``toy_finetuning.py`` beside this file defines (run by its path: the examples are no package)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("toy_finetuning.py"))))


def main(argv: Sequence[str] | None = None) -> tuple[Tuner, MetamlSearcher]:
    example = toy()
    parser = example.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--scheduler", choices=("fifo", "asha", "hyperband"), default="fifo")
    parser.add_argument("--workers", type=int, default=2, help="trials running at once")
    parser.add_argument("--folder", default=None, help="where Syne Tune keeps the results ($SYNETUNE_FOLDER)")
    args = parser.parse_args(argv)
    if args.folder:
        os.environ["SYNETUNE_FOLDER"] = args.folder

    space = example.search_space()
    example.check_server(args.url, args.key, args.dataset, space, args.seed)
    epochs = example.EPOCHS
    config_space = build_config_space(space, epochs=epochs)
    multi_fidelity = args.scheduler != "fifo"
    searcher = MetamlSearcher(args.url, None, args.dataset, space, config_space=config_space, api_key=args.key,
                              max_resource=epochs if multi_fidelity else None, seed=args.seed)
    if multi_fidelity:  # Hyperband: ASHA over several brackets
        scheduler = AsynchronousSuccessiveHalving(config_space, metric="score", do_minimize=False,
                                                  searcher=searcher, time_attr="epoch", max_t=epochs,
                                                  grace_period=1, reduction_factor=2,
                                                  brackets=2 if args.scheduler == "hyperband" else 1,
                                                  random_seed=args.seed)
    else:
        scheduler = SingleObjectiveScheduler(config_space, metric="score", do_minimize=False, searcher=searcher,
                                             random_seed=args.seed)
    tuner = Tuner(trial_backend=LocalBackend(entry_point=str(HERE / "syne_tune_trial.py"), pass_args_as_json=True),
                  scheduler=scheduler, stop_criterion=StoppingCriterion(max_num_trials_started=args.trials),
                  n_workers=args.workers, sleep_time=0.2, max_failures=args.trials, results_update_interval=5,
                  print_update_interval=600, wait_trial_completion_when_stopping=True,
                  tuner_name=f"metaml-{args.scheduler}")
    tuner.run()

    final = [e for e in searcher.evaluated if e.score is not None]
    best = max(final, key=lambda e: e.score) if final else None
    example.summary(len(searcher.suggested), len(final), len(searcher.evaluated) - len(final), searcher.finished,
                    best.score if best else None, best.params if best else None,
                    stopped=len(searcher.suggested) - len(searcher.evaluated))
    return tuner, searcher


if __name__ == "__main__":
    sys.exit(toy().run(main))

"""Warm-start a Ray Tune run with the metaml service, skip unpromising trials, and report the trials back.

The twin of ``optuna_warm_start.py``, on the same search space (a few models of the knowledge base x full fine-tuning
/ LoRA x a learning-rate range): the run starts with the meta-learner's top configurations (``/v1/recommend``) as
``points_to_evaluate``, then samples the param space; trials run concurrently in Ray worker processes. Each first asks
``/v1/decide`` whether it can beat the best score so far, shared by all trials (a skipped trial ends at once with
``metaml_action == "skip"`` and a NaN score), then is "trained"; the driver posts every completed trial back to the
knowledge base as a run (``/v1/runs``).

No GPU is needed: the objective is the Optuna example's ``lookup_score``, which looks the score up in the knowledge
base through the client's ``sql``. Replace it with real training to use it for real.

    python examples/ray_tune_warm_start.py --url http://127.0.0.1:8000 --key mk_... --trials 12

The key needs the ``analyst`` scope (SQL) and ``write`` (uploads), and ``read`` on a server that requires keys for
reads: e.g. an ``admin`` key (without one, the example says which key to create and exits 2). ``--address`` joins a
running Ray cluster (the workers must reach the server's URL); without it a local one with two CPUs is started.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import ray
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from metaml_client import Client
from metaml_client.ray_tune import ReportBack, SkipUnpromising, config_from_params, warm_start

RunConfig = getattr(tune, "RunConfig", None) or ray.train.RunConfig  # tune.RunConfig from Ray 2.41 on


def _optuna_example() -> ModuleType:
    """``optuna_warm_start.py`` beside this file, for its space and ``lookup_score``. Loaded from its path and not
    registered as a module, so Ray ships ``lookup_score`` to the workers by value (they need not find the file)."""
    path = Path(__file__).resolve().with_name("optuna_warm_start.py")
    spec = importlib.util.spec_from_file_location("_metaml_optuna_example", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> tune.ResultGrid:
    example = _optuna_example()
    parser = example.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: start a local one)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    parser.add_argument("--storage-path", default=None, help="where Tune keeps the results (default ~/ray_results)")
    args = parser.parse_args(argv)

    lookup_score = example.lookup_score
    space = example.search_space()
    with Client(args.url, api_key=args.key) as client:
        start = warm_start(client, None, args.dataset, space, args.budget, seed=args.seed)
    skipper = SkipUnpromising(args.url, None, args.dataset, space, api_key=args.key)
    reporter = ReportBack(args.url, args.dataset, space, api_key=args.key)
    url, key, dataset = args.url, args.key, args.dataset

    def objective(params: dict[str, Any]) -> dict[str, Any]:
        config = config_from_params(params, space)
        with Client(url, api_key=key) as client:  # built in the worker: clients do not travel
            score, runtime_s = lookup_score(client, dataset, config)  # stands in for training
        return {"score": score, "runtime_s": runtime_s}

    started = not ray.is_initialized()
    if started and args.address:
        ray.init(address=args.address)
    elif started:
        ray.init(num_cpus=2, include_dashboard=False)
    try:
        tuner = tune.Tuner(
            skipper.wrap(objective), param_space=start.param_space,
            tune_config=tune.TuneConfig(
                metric="score", mode="max", num_samples=args.trials,
                search_alg=BasicVariantGenerator(points_to_evaluate=start.points_to_evaluate,
                                                 max_concurrent=args.concurrency, random_state=args.seed)),
            run_config=RunConfig(storage_path=args.storage_path, callbacks=[skipper, reporter], verbose=0))
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()

    frame = results.get_dataframe()
    skipped = int((frame["metaml_action"] == "skip").sum()) if "metaml_action" in frame else 0
    best = results.get_best_result()
    print(f"{len(results)} trials: {len(results) - skipped} completed, {skipped} skipped by metaml, "
          f"{len(reporter.uploads)} reported back; best {best.metrics['score']:.4f} with {best.config}",
          file=sys.stderr)
    return results


if __name__ == "__main__":
    optuna_example = _optuna_example()
    sys.exit(optuna_example.toy().run(main, scopes=optuna_example.SCOPES))

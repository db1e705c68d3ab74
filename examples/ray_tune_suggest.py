"""Let the metaml service choose each configuration of a Ray Tune run (``MetamlSearcher`` over ``/v1/suggest``).

The twin of ``optuna_suggest.py`` on the same space and toy outcome (``toy_finetuning.py``): each new trial's
configuration is the service's best proposal given the trials finished so far; two trials run at a time in Ray
worker processes; a diverging run is an errored trial the service learns from; the run ends by itself when the
service has nothing left worth evaluating.

    python examples/ray_tune_suggest.py --url http://127.0.0.1:8000 --trials 20

``--address`` joins a running Ray cluster (the driver must reach the server's URL); without it a local one with two
CPUs is started. A server that requires keys for reads needs ``--key`` with the ``read`` scope.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ray
from ray import tune

from metaml_client.ray_tune import MetamlSearcher, config_from_params


def toy() -> SimpleNamespace:
    """What ``toy_finetuning.py`` beside this file defines (run by its path: the examples are no package, and what
    it defines is shipped to Ray workers by value)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("toy_finetuning.py"))))


def main(argv: Sequence[str] | None = None) -> tune.ResultGrid:
    example = toy()
    parser = example.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: start a local one)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    parser.add_argument("--storage-path", default=None, help="where Tune keeps the results (default ~/ray_results)")
    args = parser.parse_args(argv)

    space = example.search_space()
    example.check_server(args.url, args.key, args.dataset, space, args.seed)
    outcome = example.outcome

    def trainable(params: dict[str, Any]) -> dict[str, Any]:
        config = config_from_params(params, space)
        score, runtime_s = outcome(config)  # stands in for training; raises Diverged (an errored trial)
        return {"score": score, "runtime_s": runtime_s}

    searcher = MetamlSearcher(args.url, None, args.dataset, space, api_key=args.key, seed=args.seed)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, num_cpus=None if args.address else 2, include_dashboard=False)
    try:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=args.trials, search_alg=searcher,
                                        max_concurrent_trials=args.concurrency),
            run_config=tune.RunConfig(storage_path=args.storage_path, verbose=0))
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()

    best = results.get_best_result()
    example.summary(len(results), len(results) - len(results.errors), len(results.errors), searcher.finished,
                    best.metrics["score"], best.config)
    return results


if __name__ == "__main__":
    sys.exit(toy().run(main))

"""Time per proposal of the search engine behind /v1/suggest, against Optuna's samplers asked for the same next trial.

The engine's cost is one proposal given the task's candidates and history (``SearchEngine.suggest``: evidence
weighting of up to 200 past tasks, a Gaussian process on the residuals, the acquisition over every candidate), for
1,000 candidates and 100 evaluated ones, the replay's largest case. The candidates are real configurations of the
knowledge base (TaskWeb and TransferGraph), scored by a meta-model trained on the knowledge base's runs of those two
sources; their past-task standings come from its experience. Optuna's TPE and GP samplers are timed on the same
question: a study over the candidates' categorical dimensions with the same 100 trials told, then one ``ask``.

    python bench/engine_speed.py --kb metaml-data/kb.duckdb [--candidates 1000 --history 100 --repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", default="metaml-data/kb.duckdb")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import optuna
    from optuna.distributions import CategoricalDistribution

    from collector.store import KnowledgeBase
    from metaml import MetaModel, OutcomeEstimator, learning_frame, load_runs
    from metaml.search import EngineSettings, Observation, SearchEngine, SearchSpace, TaskKnowledge
    from metaml.search._replay import OUTCOME_COLUMNS

    runs = load_runs(KnowledgeBase(args.kb), sources=["taskweb", "transfergraph"])
    frame = learning_frame(runs)
    started = time.perf_counter()
    model = MetaModel(outcome=OutcomeEstimator(n_estimators=100), max_rows_per_task=50).fit(runs, parts=["outcome",
                                                                                                           "cost"])
    print(f"meta-model fitted on {len(runs):,} runs in {time.perf_counter() - started:.0f} s")
    configs = frame.drop_duplicates("config_key")
    rows = configs.sample(min(args.candidates, len(configs)), random_state=0).reset_index(drop=True)
    for col in OUTCOME_COLUMNS:
        if col in rows:
            rows[col] = None
    rows["provenance_source"] = "upload"
    pred = model.predict_arrays(rows)
    knowledge = TaskKnowledge.from_model(model, rows, pred)
    rng = np.random.default_rng(0)
    evaluated = rng.choice(len(rows), args.history, replace=False)
    scores = pred["points"][evaluated] + rng.normal(0, 3, args.history)
    history = [Observation(int(i), float(s), 600.0) for i, s in zip(evaluated, scores, strict=True)]
    engine = SearchEngine(knowledge, EngineSettings())
    timings = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        engine.suggest(history)
        timings.append(1000 * (time.perf_counter() - t))
    engine_ms = statistics.median(timings)
    print(f"engine: {len(rows)} candidates, {len(knowledge.profile_tasks)} past tasks, {args.history} evaluated: "
          f"{engine_ms:.1f} ms per proposal (median of {args.repeats})")

    space = SearchSpace.from_configs(rows)
    dists = {d.name: CategoricalDistribution(list(d.levels)) for d in space.dims}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {"engine": engine_ms}
    for name, sampler in (("optuna_tpe", optuna.samplers.TPESampler(seed=0)),
                          ("optuna_gp", optuna.samplers.GPSampler(seed=0))):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for i, s in zip(evaluated, scores, strict=True):
            study.add_trial(optuna.trial.create_trial(params=space.params(int(i)), distributions=dists,
                                                      value=float(s)))
        times = []
        for _ in range(max(3, args.repeats // 4)):
            t = time.perf_counter()
            trial = study.ask(dists)
            times.append(1000 * (time.perf_counter() - t))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        results[name] = statistics.median(times)
        print(f"{name}: {results[name]:.1f} ms per ask with the same {args.history} trials")
    print(pd.Series(results).round(1).to_string())
    print(f"ratio: Optuna TPE / engine = {results['optuna_tpe'] / engine_ms:.2f}x, "
          f"Optuna GP / engine = {results['optuna_gp'] / engine_ms:.2f}x")


if __name__ == "__main__":
    main()

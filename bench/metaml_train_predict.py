"""Meta-learner training time and prediction throughput on a real knowledge base.

Trains the full meta-model (featurizer, outcome with calibration and ranking view, cost, failure) on every learnable
run, then times predictions (featurize + all estimators) for batches of 1, 1,000 and 100,000 candidate rows.

Usage:
    python bench/metaml_train_predict.py --kb metaml-data/kb.duckdb [--n-jobs 2] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import lightgbm
import numpy as np

from collector.store import KnowledgeBase
from metaml import MetaModel, OutcomeEstimator, load_runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", type=Path, default=Path(os.environ.get("METAML_KB", "metaml-data/kb.duckdb")))
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args(argv)
    runs = load_runs(KnowledgeBase(args.kb))
    started = time.perf_counter()
    model = MetaModel(outcome=OutcomeEstimator(n_jobs=args.n_jobs)).fit(runs)
    train_s = time.perf_counter() - started
    print(f"trained on {model.n_train_runs_:,} runs ({len(runs):,} in the knowledge base) in {train_s:.1f}s")
    results = {"train_seconds": train_s, "train_runs": model.n_train_runs_, "predict": []}
    rng = np.random.default_rng(0)
    for n in (1, 1_000, 100_000):
        batch = runs.iloc[rng.integers(0, len(runs), n)].reset_index(drop=True)
        model.predict(batch)  # warm-up
        times = []
        for _ in range(args.repeats if n < 100_000 else 2):
            t0 = time.perf_counter()
            model.predict(batch)
            times.append(time.perf_counter() - t0)
        best = min(times)
        results["predict"].append({"rows": n, "seconds": best, "rows_per_s": n / best})
        print(f"predict {n:>7,} rows: {best * 1000:9.1f} ms  ({n / best:,.0f} rows/s)")
    results["environment"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "lightgbm": lightgbm.__version__, "n_jobs": args.n_jobs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metaml_train_predict.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Transfer across sources: leave-one-dataset-out on the four original sources, with the meta-learner trained on
those sources only versus on all nine. Writes docs/reports/transfer.json.

Usage:
    python bench/transfer_sources.py [--kb metaml-data/kb.duckdb] [--folds 8] [--out docs/reports/transfer.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from collector.store import KnowledgeBase
from metaml import MetaModel, ModelMethodMean, OutcomeEstimator, evaluate, load_runs

ORIGINAL = ["transfergraph", "taskweb", "opda", "hf_cards", "hub_samples"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", type=Path, default=Path("metaml-data/kb.duckdb"))
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/reports/transfer.json"))
    args = ap.parse_args(argv)
    runs = load_runs(KnowledgeBase(args.kb))
    predictors = {"metaml": lambda: MetaModel(outcome=OutcomeEstimator(n_estimators=300)),
                  "model_method_mean": ModelMethodMean}
    out = {}
    for name, train in (("original sources only", ORIGINAL), ("all nine sources", None)):
        started = time.time()
        result = evaluate(runs, "lodo", predictors=predictors, max_folds=args.folds, seed=args.seed,
                          train_sources=train, test_sources=ORIGINAL)
        summary = result.summary()
        out[name] = {"folds": result.folds, "seconds": time.time() - started,
                     "summary": json.loads(summary.to_json(orient="index")),
                     "by_source": json.loads(result.by_source().to_json(orient="index"))}
        print(name, result.folds)
        print(summary.round(3).to_string())
    args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

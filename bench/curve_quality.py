"""Leave-one-dataset-out quality of the curve estimator (metaml._curves): MAE of the final-score prediction at 10, 25
and 50% of the planned training, without and with 5 finished runs of the task, against the last observed value, and
the coverage of the 80% intervals. Datasets with at least 20 runs with curves are held out alone; the smaller ones in
three groups (a dataset is never split).

    python bench/curve_quality.py [--kb /work/kb/kb.duckdb] [--out bench/out/curves]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from collector.store import KnowledgeBase
from metaml._curve_bench import curve_quality, summarize_quality
from metaml._curves import load_curve_runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", type=Path, default=Path("metaml-data/kb.duckdb"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/curves"))
    args = ap.parse_args(argv)
    started = time.perf_counter()
    curves = load_curve_runs(KnowledgeBase(args.kb))
    frame = curve_quality(curves, progress=lambda m: print(f"[{time.perf_counter() - started:5.0f}s] {m}",
                                                           file=sys.stderr))
    table = summarize_quality(frame)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "quality_rows.csv", index=False)
    header = ["held out", "cut", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * len(table.columns)) + " |"]
    for (fold, cut), row in table.iterrows():
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append(f"| {fold} | {cut:.0%} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (args.out / "quality.md").write_text(f"# Curve estimator, leave one dataset out\n\n{len(curves):,} runs with "
                                         f"curves; {time.perf_counter() - started:.0f} s\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

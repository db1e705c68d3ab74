"""Stopping runs from their partial curves, replayed on the knowledge base's tasks with curves.

Compares the curve rule (metaml's curve estimator, knobs chosen by nested leave-one-dataset-out) with training every
configuration to the end, with Syne Tune's ASHA and asynchronous Hyperband (its own schedulers, on its simulated
backend over the tabulated curves), and with "top-k after one epoch". Same as ``metaml bench curves``; the report
goes to bench/out/curves/ (report.md, results.json, searches.csv, sweep.csv, a PNG).

    python bench/curve_stopping.py [--kb /work/kb/kb.duckdb] [--seeds 20] [--configs 100] [--jobs 2]
"""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "curves", *sys.argv[1:]]))

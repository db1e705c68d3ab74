"""The scan `metaml train` makes (``metaml._data.load_runs``: the learning columns of every run, as pandas) on the
DuckDB file and on a DuckLake lakehouse holding the same runs.

The lakehouse's catalog is a PostgreSQL server started for the run (``initdb``/``pg_ctl``, fsync on), its Parquet
files on the same disk as the file. The runs are copied from the file in batches of ``--batch`` (each one Parquet
file); with ``--inline N`` (below the flush threshold, 5,000) the last N runs are appended in batches of 100 rows,
the lakehouse's inlining limit, so they stay inside the catalog as small uploads leave them until a flush. Each scan
is timed ``--repeat`` times in this process after one warm-up; the median is reported.

Usage:
    python bench/lakehouse_scan.py --kb metaml-data/kb.duckdb [--repeat 5] [--inline 0] [--batch 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from collector.store import KnowledgeBase
from metaml._data import LEARN_COLUMNS, load_runs
from service.testing import PostgresServer


def _time(fn: Any, repeat: int) -> tuple[float, Any]:
    fn()
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", default=os.environ.get("METAML_KB", "metaml-data/kb.duckdb"),
                    help="a knowledge base as a DuckDB file (the source of the runs)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--inline", type=int, default=0, help="runs appended last in batches of 100 (kept inlined)")
    ap.add_argument("--batch", type=int, default=50_000, help="runs per append while copying")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    source = KnowledgeBase(args.kb)
    work = Path(tempfile.mkdtemp(prefix="metaml-bench-lake-"))
    try:
        with PostgresServer(durable=True) as postgres:
            lake = KnowledgeBase(postgres.lake(work / "lake"))
            t0 = time.perf_counter()
            pending = []
            for batch in source.iter_batches(args.batch):
                pending.append(batch)
            import pyarrow as pa

            table = pa.Table.from_batches(pending)
            bulk = table.slice(0, table.num_rows - args.inline)
            for start in range(0, bulk.num_rows, args.batch):
                lake.append(bulk.slice(start, args.batch))
            for start in range(bulk.num_rows, table.num_rows, 100):
                lake.append(table.slice(start, min(100, table.num_rows - start)))
            copy_s = time.perf_counter() - t0
            assert lake.count() == source.count()
            file_s, file_runs = _time(lambda: load_runs(source), args.repeat)
            lake_s, lake_runs = _time(lambda: load_runs(lake), args.repeat)
            assert len(file_runs) == len(lake_runs)
            file_all, _ = _time(lambda: source.scan().num_rows, args.repeat)
            lake_all, _ = _time(lambda: lake.scan().num_rows, args.repeat)
            result = {
                "runs": source.count(), "learn_columns": len(LEARN_COLUMNS), "inlined_runs": args.inline,
                "lake_data_files": lake.data_files(), "lake_copy_s": round(copy_s, 1),
                "load_runs_file_s": round(file_s, 3), "load_runs_lake_s": round(lake_s, 3),
                "load_runs_ratio_lake_over_file": round(lake_s / file_s, 2),
                "scan_all_columns_file_s": round(file_all, 3), "scan_all_columns_lake_s": round(lake_all, 3),
                "scan_all_ratio_lake_over_file": round(lake_all / file_all, 2),
                "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "load_average": os.getloadavg()[0], "repeat": args.repeat},
            }
            lake.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{result['runs']:,} runs ({result['inlined_runs']:,} inlined; {result['lake_data_files']} data files)")
    print(f"load_runs (metaml train's scan, {result['learn_columns']} columns): file {file_s:.2f}s, "
          f"lakehouse {lake_s:.2f}s = {result['load_runs_ratio_lake_over_file']}x")
    print(f"every column: file {file_all:.2f}s, lakehouse {lake_all:.2f}s = {result['scan_all_ratio_lake_over_file']}x")
    name = f"lakehouse_scan{'_inline' if args.inline else ''}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bulk ingestion throughput: `metaml ingest` into DuckDB vs logging the same runs to a local MLflow store.

The records are generated from the real runs' distributions: real runs are read from the public sources with the
project's own importers, then resampled with jitter (seed, learning rate, score, runtime, curve values) so that every
generated record is a distinct run of realistic shape and size (hyperparameters, metrics, learning curves).

Both sides do the whole job a researcher's tool does for a run: ours parses canonical JSONL, validates, normalizes,
hashes and stores in transactions; MLflow's fastest client path creates a run, logs params, tags and every metric
point (curves included) in one `log_batch`, and terminates it. MLflow is timed on a prefix of the same records (it is
slow enough that 100k would take hours) and reported as records/s.

Usage:
    python bench/ingest_vs_mlflow.py [--n 100000] [--mlflow-n 2000] [--public-data ../shared/data] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from collector.formats import get_format
from collector.ingest import ingest_path
from collector.store import KnowledgeBase

SEED_SOURCES = [("transfergraph", "metadatasets/transfergraph"), ("opda", "metadatasets/opda_deberta")]


def real_records(public: Path) -> list[dict[str, Any]]:
    """The real runs of the seed sources, as raw record dicts."""
    out: list[dict[str, Any]] = []
    for fmt, rel in SEED_SOURCES:
        reader = get_format(fmt)
        out.extend(item.data for item in reader.read(public / rel) if hasattr(item, "data"))
    if not out:
        sys.exit("no real records found: check --public-data")
    return out


def jitter(rec: dict[str, Any], i: int, rng: random.Random) -> dict[str, Any]:
    """A distinct run shaped like ``rec``: new seed, lr x lognormal, score and curve +/- noise, runtime x noise."""
    r = json.loads(json.dumps(rec))
    hp = r.setdefault("hparams", {})
    hp["seed"] = 1_000_000 + i
    if hp.get("learning_rate"):
        hp["learning_rate"] = hp["learning_rate"] * rng.lognormvariate(0, 0.3)
    out = r["outcome"]
    if out.get("score") is not None:
        scale = 100.0 if r.get("task", {}).get("metric_scale") == "percent" else 1.0
        out["score"] = min(scale, max(0.0, out["score"] + rng.gauss(0, 0.01 * scale)))
    if out.get("runtime_s"):
        out["runtime_s"] = out["runtime_s"] * rng.lognormvariate(0, 0.2)
    for p in out.get("curve", []):
        p["value"] = min(1.0, max(0.0, p["value"] + rng.gauss(0, 0.005)))
    r.pop("provenance", None)
    return r


def generate(public: Path, n: int, dest: Path, seed: int = 0) -> int:
    rng = random.Random(seed)
    base = real_records(public)
    with open(dest, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(jitter(base[i % len(base)], i, rng)) + "\n")
    return len(base)


def bench_metaml(src: Path, workdir: Path) -> dict[str, float]:
    kb = KnowledgeBase(workdir / "bench.duckdb")
    t0 = time.perf_counter()
    (report,) = ingest_path(kb, src)
    seconds = time.perf_counter() - t0
    assert report.rejected == 0, report.top_reasons()
    return {"records": report.ingested, "seconds": seconds, "records_per_s": report.ingested / seconds,
            "kb_mb": kb.path.stat().st_size / 1e6}


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif value is not None and not isinstance(value, list):
        out[prefix] = str(value)[:500]


def bench_mlflow(src: Path, workdir: Path, n: int, tracking_uri: str) -> dict[str, float]:
    """Log the first ``n`` records with MLflow's batch API: params, tags, final metrics and curves as steps."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 keeps the file store behind this switch
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment(f"bench-{time.time_ns()}")
    with open(src, encoding="utf-8") as f:
        recs = [json.loads(next(f)) for _ in range(n)]
    t0 = time.perf_counter()
    for r in recs:
        run = client.create_run(exp)
        params: dict[str, str] = {}
        for part in ("task", "dataset", "model", "method", "hparams"):
            _flatten(part, r.get(part, {}), params)
        now = int(time.time() * 1000)
        out = r["outcome"]
        metrics = [Metric("score", float(out["score"]), now, 0)] if out.get("score") is not None else []
        metrics += [Metric(k, float(v), now, 0) for k, v in (out.get("metrics") or {}).items()]
        if out.get("runtime_s"):
            metrics.append(Metric("runtime_s", float(out["runtime_s"]), now, 0))
        metrics += [Metric(f"curve_{p['metric']}", float(p["value"]), now, int(p.get("step") or p.get("epoch") or 0))
                    for p in out.get("curve", [])]
        client.log_batch(run.info.run_id, metrics=metrics[:1000], params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("source", "bench")])
        client.set_terminated(run.info.run_id)
    seconds = time.perf_counter() - t0
    return {"records": n, "seconds": seconds, "records_per_s": n / seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="records to generate and ingest")
    ap.add_argument("--mlflow-n", type=int, default=2_000, help="records logged to MLflow (a prefix)")
    ap.add_argument("--public-data", type=Path,
                    default=Path(os.environ.get("METAML_PUBLIC_DATA", Path(__file__).resolve().parents[2]
                                                / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="metaml-bench-"))
    try:
        src = work / "records.jsonl"
        n_real = generate(args.public_data, args.n, src)
        print(f"generated {args.n:,} records from {n_real:,} real runs ({src.stat().st_size / 1e6:.0f} MB)")
        ours = bench_metaml(src, work)
        print(f"metaml ingest: {ours['records']:,} records in {ours['seconds']:.1f}s = {ours['records_per_s']:,.0f}/s")
        results: dict[str, Any] = {"metaml": ours}
        for name, uri in (("mlflow_sqlite", f"sqlite:///{work / 'mlflow.db'}"),
                          ("mlflow_file", (work / "mlruns").as_uri())):
            try:
                results[name] = bench_mlflow(src, work, args.mlflow_n, uri)
            except Exception as e:
                results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"{name}: {results[name]['error']}")
                continue
            print(f"{name}: {args.mlflow_n:,} records in {results[name]['seconds']:.1f}s = "
                  f"{results[name]['records_per_s']:,.0f}/s")
        best = max((v["records_per_s"] for k, v in results.items() if k.startswith("mlflow") and "records_per_s" in v),
                   default=None)
        if best:
            results["ratio_vs_fastest_mlflow"] = ours["records_per_s"] / best
            print(f"ratio: {results['ratio_vs_fastest_mlflow']:,.0f}x the fastest MLflow store")
        import duckdb
        import mlflow

        results["environment"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                                  "duckdb": duckdb.__version__, "mlflow": mlflow.__version__,
                                  "n": args.n, "mlflow_n": args.mlflow_n}
        (args.out / "ingest_vs_mlflow.json").write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out / 'ingest_vs_mlflow.json'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

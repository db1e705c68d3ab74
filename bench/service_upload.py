"""Upload throughput of the HTTP service: runs/s over loopback, concurrent clients, batch sizes 1, 100 and 1000.

The records are the ingest benchmark's (``bench/ingest_vs_mlflow.py``: real runs from the public sources, resampled
with jitter so that every record is a distinct run). For each batch size a fresh server (``metaml serve``, one
uvicorn process, its own empty knowledge base) is started in a child process, and ``--clients`` client threads in
this process POST JSON arrays of that many records until all are sent. Bodies are encoded before the clock starts,
so the figure is the server's: parse, validate, normalize, hash, store in one transaction per request, commit,
answer per record.

Usage:
    python bench/service_upload.py [--n 20000] [--n-single 1000] [--clients 4] [--batch-sizes 1 100 1000]
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
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_vs_mlflow import generate  # the bench folder is not a package

from service.keys import create_key
from service.testing import ServerProcess


def run_one(records: list[bytes], batch: int, clients: int, work: Path) -> dict[str, Any]:
    """Start a fresh server, upload ``records`` in batches of ``batch`` from ``clients`` threads, time it."""
    kb_dir = work / f"batch-{batch}"
    kb_dir.mkdir()
    _, key = create_key(kb_dir / "keys.db", "bench", ["write"])
    bodies = [b"[" + b",".join(records[i:i + batch]) + b"]" for i in range(0, len(records), batch)]
    latencies: list[float] = []
    accepted = [0]
    errors: list[str] = []
    lock = threading.Lock()
    next_body = iter(range(len(bodies)))
    with ServerProcess(kb_dir / "kb.duckdb", settings={"max_batch_records": max(batch, 1000)}) as server:
        def client() -> None:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            with httpx.Client(base_url=server.url, timeout=300.0, headers=headers) as c:
                while True:
                    with lock:
                        i = next(next_body, None)
                    if i is None:
                        return
                    t0 = time.perf_counter()
                    r = c.post("/v1/runs", content=bodies[i])
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                        if r.status_code == 200:
                            accepted[0] += r.json()["accepted"]
                        else:
                            errors.append(f"{r.status_code}: {r.text[:200]}")

        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        commits = _commit_stats(httpx.get(f"{server.url}/metrics").text)
    latencies.sort()
    return {
        "batch_size": batch,
        "clients": clients,
        "requests": len(bodies),
        "records": len(records),
        "accepted": accepted[0],
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(seconds, 3),
        "runs_per_s": round(accepted[0] / seconds, 1),
        "requests_per_s": round(len(bodies) / seconds, 1),
        "latency_ms_p50": round(1000 * statistics.median(latencies), 1),
        "latency_ms_p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        **commits,
    }


def _commit_stats(metrics: str) -> dict[str, float]:
    """Transactions, uploads per transaction and seconds per transaction, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    n = values.get("metaml_kb_commit_uploads_count", 0.0)
    return {"transactions": int(n),
            "uploads_per_transaction": round(values["metaml_kb_commit_uploads_sum"] / n, 2) if n else 0.0,
            "seconds_per_transaction": round(values["metaml_kb_commit_duration_seconds_sum"] / n, 3) if n else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="records uploaded per batch size (>1)")
    ap.add_argument("--n-single", type=int, default=1_000, help="records uploaded one per request (batch size 1)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--public-data", type=Path,
                    default=Path(os.environ.get("METAML_PUBLIC_DATA", Path(__file__).resolve().parents[2]
                                                / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="metaml-bench-service-"))
    try:
        src = work / "records.jsonl"
        n_real = generate(args.public_data, args.n, src)
        with open(src, "rb") as f:
            records = [line.rstrip(b"\n") for line in f if line.strip()]
        print(f"generated {len(records):,} records from {n_real:,} real runs; {args.clients} clients, loopback")
        results = []
        for batch in args.batch_sizes:
            subset = records[:args.n_single] if batch == 1 else records
            res = run_one(subset, batch, args.clients, work)
            results.append(res)
            print(f"  batch {batch:>5}: {res['records']:>7,} runs in {res['seconds']:7.1f}s = "
                  f"{res['runs_per_s']:>8,.0f} runs/s  (p50 {res['latency_ms_p50']:.0f} ms, "
                  f"p95 {res['latency_ms_p95']:.0f} ms, errors {res['errors']}; {res['transactions']} transactions "
                  f"of {res['seconds_per_transaction']:.2f}s, {res['uploads_per_transaction']:.1f} uploads each)")
        print()
        print("| batch size | requests | runs | runs/s | requests/s | p50 ms | p95 ms |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            print(f"| {r['batch_size']} | {r['requests']:,} | {r['records']:,} | {r['runs_per_s']:,.0f} | "
                  f"{r['requests_per_s']:,.1f} | {r['latency_ms_p50']:,.0f} | {r['latency_ms_p95']:,.0f} |")
        import duckdb
        import fastapi
        import uvicorn

        payload = {"results": results,
                   "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                   "duckdb": duckdb.__version__, "fastapi": fastapi.__version__,
                                   "uvicorn": uvicorn.__version__, "server_workers": 1, "clients": args.clients,
                                   "transport": "HTTP/1.1 over loopback, JSON array bodies"}}
        (args.out / "service_upload.json").write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.out / 'service_upload.json'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Upload throughput of the HTTP service: runs/s over loopback, concurrent clients, batch sizes 1, 100 and 1000, on
the DuckDB file and on the DuckLake lakehouse.

The records are the ingest benchmark's (``bench/ingest_vs_mlflow.py``: real runs from the public sources, resampled
with jitter so that every record is a distinct run). For each backend and batch size, fresh servers (``metaml serve``
processes, ``--servers`` of them on one new, empty knowledge base) are started in child processes, and ``--clients``
client threads in this process POST JSON arrays of that many records, each client to one server (round robin),
until all are sent. Bodies are encoded before the clock starts, so the figure is the servers': parse, validate,
normalize, hash, store in one transaction per request (or per group of concurrent requests), commit, answer per
record.

The lakehouse's catalog is a PostgreSQL server started for the run (``initdb``/``pg_ctl``, fsync on), its data a
directory on the same disk. After each lakehouse run the Parquet files on disk and the data files the current
snapshot reads are counted, then again after ``metaml kb compact``: with ``--n-single 10000`` the batch-1 row is the
file count after 10,000 single-run uploads.

Usage:
    python bench/service_upload.py [--n 20000] [--n-single 1000] [--clients 4] [--batch-sizes 1 100 1000]
                                   [--backends file lakehouse] [--servers 1]
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

from collector.store import KnowledgeBase
from service.keys import create_key
from service.testing import PostgresServer, ServerProcess


def run_one(records: list[bytes], batch: int, clients: int, work: Path, *, backend: str = "file",
            servers: int = 1, postgres: PostgresServer | None = None) -> dict[str, Any]:
    """Start ``servers`` fresh servers on one new knowledge base of ``backend``, upload ``records`` in batches of
    ``batch`` from ``clients`` threads, time it (and count the lakehouse's files)."""
    kb_dir = work / f"{backend}-batch-{batch}"
    kb_dir.mkdir()
    _, key = create_key(kb_dir / "keys.db", "bench", ["write"])
    if backend == "file":
        location = str(kb_dir / "kb.duckdb")
    else:
        assert postgres is not None
        location = postgres.lake(kb_dir / "lake")
    bodies = [b"[" + b",".join(records[i:i + batch]) + b"]" for i in range(0, len(records), batch)]
    latencies: list[float] = []
    accepted = [0]
    errors: list[str] = []
    lock = threading.Lock()
    next_body = iter(range(len(bodies)))
    procs = [ServerProcess(location, keys_db=kb_dir / "keys.db", log_path=kb_dir / f"server{i}.log",
                           settings={"max_batch_records": max(batch, 1000)}) for i in range(servers)]
    try:
        for p in procs:
            p.start(timeout=120)

        def client(server: ServerProcess) -> None:
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

        threads = [threading.Thread(target=client, args=(procs[j % servers],)) for j in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        commits = _commit_stats([httpx.get(f"{p.url}/metrics").text for p in procs])
    finally:
        for p in procs:
            p.stop()
    files = _lake_files(location, kb_dir / "lake") if backend == "lakehouse" else {}
    latencies.sort()
    return {
        "backend": backend,
        "servers": servers,
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
        **files,
    }


def _lake_files(location: str, data: Path) -> dict[str, int]:
    """Parquet files on disk and data files the current snapshot reads, before and after compaction."""
    kb = KnowledgeBase(location)
    out = {"parquet_files_on_disk": len(list(data.rglob("*.parquet"))), "data_files": kb.data_files(),
           "runs_stored": kb.count()}
    kb.compact()
    out.update(parquet_files_on_disk_compacted=len(list(data.rglob("*.parquet"))),
               data_files_compacted=kb.data_files())
    kb.close()
    return out


def _commit_stats(pages: list[str]) -> dict[str, float]:
    """Transactions, uploads per transaction and seconds per transaction, from the servers' /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for page in pages:
        for f in text_string_to_metric_families(page):
            for sample in f.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
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
    ap.add_argument("--backends", nargs="+", choices=["file", "lakehouse"], default=["file"])
    ap.add_argument("--servers", type=int, default=1, help="server processes per run (one knowledge base)")
    ap.add_argument("--public-data", type=Path,
                    default=Path(os.environ.get("METAML_PUBLIC_DATA", Path(__file__).resolve().parents[2]
                                                / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="metaml-bench-service-"))
    postgres = PostgresServer(durable=True).start() if "lakehouse" in args.backends else None
    try:
        src = work / "records.jsonl"
        n_real = generate(args.public_data, args.n, src)
        with open(src, "rb") as f:
            records = [line.rstrip(b"\n") for line in f if line.strip()]
        print(f"generated {len(records):,} records from {n_real:,} real runs; {args.clients} clients, "
              f"{args.servers} server process(es), loopback")
        results = []
        for backend in args.backends:
            for batch in args.batch_sizes:
                subset = records[:args.n_single] if batch == 1 else records
                res = run_one(subset, batch, args.clients, work, backend=backend, servers=args.servers,
                              postgres=postgres)
                results.append(res)
                _report(res)
        print()
        print("| backend | servers | batch size | requests | runs | runs/s | requests/s | p50 ms | p95 ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            print(f"| {r['backend']} | {r['servers']} | {r['batch_size']} | {r['requests']:,} | {r['records']:,} | "
                  f"{r['runs_per_s']:,.0f} | {r['requests_per_s']:,.1f} | {r['latency_ms_p50']:,.0f} | "
                  f"{r['latency_ms_p95']:,.0f} |")
        import duckdb
        import fastapi
        import uvicorn

        payload = {"results": results,
                   "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                   "duckdb": duckdb.__version__, "fastapi": fastapi.__version__,
                                   "uvicorn": uvicorn.__version__, "server_workers": args.servers,
                                   "clients": args.clients,
                                   "transport": "HTTP/1.1 over loopback, JSON array bodies"}}
        name = "service_upload.json" if args.backends == ["file"] and args.servers == 1 else \
            f"service_upload_{'_'.join(args.backends)}_{args.servers}s.json"
        (args.out / name).write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.out / name}")
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["errors"] == 0 for r in results) else 1


def _report(res: dict[str, Any]) -> None:
    files = (f"; Parquet files {res['parquet_files_on_disk']} on disk, {res['data_files']} read, "
             f"{res['parquet_files_on_disk_compacted']}/{res['data_files_compacted']} after compaction"
             if "data_files" in res else "")
    print(f"  {res['backend']:<9} batch {res['batch_size']:>5}: {res['records']:>7,} runs in {res['seconds']:7.1f}s = "
          f"{res['runs_per_s']:>8,.0f} runs/s  (p50 {res['latency_ms_p50']:.0f} ms, "
          f"p95 {res['latency_ms_p95']:.0f} ms, "
          f"errors {res['errors']}; {res['transactions']} transactions of {res['seconds_per_transaction']:.2f}s, "
          f"{res['uploads_per_transaction']:.1f} uploads each{files})")


if __name__ == "__main__":
    sys.exit(main())

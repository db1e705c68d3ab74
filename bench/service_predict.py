"""Latency and throughput of ``POST /v1/predict`` against ``mlflow models serve`` of the same LightGBM outcome model.

Setup (in a temporary directory): a knowledge base from the public TransferGraph and OPDA files (SST-2's meta-features
computed from its text), the meta-model ``metaml train`` fits (default parameters), logged and promoted in a SQLite
MLflow registry. Two servers on 127.0.0.1, one process each (``--workers N``: N each):

* **metaml**: ``metaml serve`` (``service.testing.ServerProcess``), loading the promoted version. A request carries
  the task (``glue/sst2``, meta-features from the knowledge base) and N candidate configurations in the record's
  nested shape; the answer holds, per candidate, points, interval, ranking view, cost, failure probability and the
  3 nearest past runs (the default request: four boosters and the support lookup). Measured twice: with that
  default request, and with ``outputs: [], support: 0`` (points and interval only: the outcome booster alone, the
  same work as mlflow's).
* **mlflow**: ``mlflow models serve -m <run>/outcome_lgbm --env-manager local``: the outcome booster alone. A
  request carries the featurized rows (``metaml._tracking.served_outcome_frame``: 80 float columns) as
  ``dataframe_split``; the answer holds the predicted points.

Before timing, both answers are checked for the same N candidates: metaml's points against the same model in process
on LightGBM's own trees, mlflow's answer against the ranking view's trees in process (each identical to 1e-9). Then, for
N = 1 and N = 1,000, a separate client process (``httpx.AsyncClient``, ``--clients`` concurrent requests, bodies
encoded beforehand) sends requests for ``--seconds`` after a warm-up, and the script reports requests/s, rows/s,
p50/p99 latency, and, from 20 sequential requests of one client, metaml's ``model_ms`` (featurize + predict), its
server time (the ``Server-Timing`` header: the app's time from the request to its answer) and the whole round trip
over loopback.

Usage:
    python bench/service_predict.py [--clients 8] [--seconds 10] [--batch-sizes 1 1000] [--lightgbm-trees]
                                    [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from metaml_client import as_columns
from service.testing import free_port, sample_candidates, wait_until_answering

ROOT = Path(__file__).resolve().parents[1]


# -- the load generator (runs in its own process) --------------------------------------------------------------------


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    body = Path(spec["body_file"]).read_bytes()
    headers = {"Content-Type": "application/json"}
    if spec.get("fresh_connections"):  # each request on its own connection, so the kernel spreads them on the workers
        headers["Connection"] = "close"
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=spec["clients"], max_keepalive_connections=spec["clients"])
    async with httpx.AsyncClient(base_url=spec["url"], timeout=120.0, limits=limits) as client:
        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                r = await client.post(spec["path"], content=body, headers=headers)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    errors += 1
                elif record:
                    latencies.append(dt)

        warm_until = time.perf_counter() + spec["warmup"]
        await asyncio.gather(*(worker(warm_until, False) for _ in range(spec["clients"])))
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + spec["seconds"], True) for _ in range(spec["clients"])))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies}


def run_load(url: str, path: str, body: bytes, *, clients: int, seconds: float, warmup: float,
             work: Path, fresh_connections: bool = False) -> dict[str, Any]:
    """Drive ``url + path`` with ``body`` from a separate process; requests/s and latency percentiles.
    ``fresh_connections``: a connection per request (a server of several worker processes gets each connection on
    whichever worker accepts it first, and a kept-alive one stays there)."""
    body_file = work / f"body-{abs(hash((url, path, len(body))))}.json"
    body_file.write_bytes(body)
    spec = {"url": url, "path": path, "body_file": str(body_file), "clients": clients, "seconds": seconds,
            "warmup": warmup, "fresh_connections": fresh_connections}
    done = subprocess.run([sys.executable, __file__, "--load", json.dumps(spec)], capture_output=True, text=True,
                          timeout=seconds + warmup + 300, check=True)
    raw = json.loads(done.stdout)
    lat = np.array(raw["latencies"]) * 1000.0
    return {"requests": raw["requests"], "errors": raw["errors"], "seconds": round(raw["seconds"], 2),
            "requests_per_s": round(raw["requests"] / raw["seconds"], 1),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


# -- setup ------------------------------------------------------------------------------------------------------------


def build(public_data: Path, work: Path) -> dict[str, Any]:
    """Knowledge base, the default meta-model, its registered and promoted version."""
    from collector.enrich import enrich_datasets, enrich_models
    from collector.ingest import ingest_path
    from collector.store import KnowledgeBase
    from metaml._tracking import promote
    from metaml._train import train_and_register

    kb = KnowledgeBase(work / "kb.duckdb")
    for source in ("transfergraph", "opda_deberta"):
        ingest_path(kb, public_data / "metadatasets" / source)
    enrich_models(kb)
    enrich_datasets(kb, public_data / "text", names=["glue_sst2"], progress=False)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    result = train_and_register(kb.path, tracking_uri=uri, out_dir=work / "model")
    assert result.version is not None
    info = promote(result.version, tracking_uri=uri)
    return {"kb": kb.path, "uri": uri, "version": result.version, "train_runs": result.train_runs,
            "outcome_uri": info.outcome_uri, "artifact": result.artifact}


class MlflowServer:
    """``mlflow models serve`` of a model URI on 127.0.0.1, in its own process group."""

    def __init__(self, model_uri: str, log_path: Path, *, workers: int = 1) -> None:
        self.model_uri = model_uri
        self.log_path = log_path
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MlflowServer:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # its uvicorn
        self._log = open(self.log_path, "wb")  # closed in __exit__
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workers)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_answering(self.proc, f"{self.url}/ping", timeout=180, log_path=self.log_path, poll=0.2)
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self._log.close()


def mlflow_body(model: Any, answer: dict[str, Any], configs: list[dict[str, Any]]) -> bytes:
    """The featurized rows of the same candidates, for the served outcome model (``dataframe_split``)."""
    from collector.schema import DatasetMeta
    from metaml._tracking import served_outcome_frame
    from metaml.serving import candidate_rows, task_row

    meta = DatasetMeta.model_validate({k: v for k, v in answer["task"]["meta"].items() if v is not None})
    rows = candidate_rows(task_row({"primary_metric": "accuracy"}, {"name": answer["task"]["dataset"]},
                                   dataset_meta=meta), configs)
    frame = served_outcome_frame(model, rows)
    data = [[None if v != v else v for v in row] for row in frame.to_numpy(dtype=float).tolist()]  # NaN -> null
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": data}}).encode()


def wait_for_trees(url: str, compiled: bool, timeout: float = 900.0, *, workers: int = 1) -> bool:
    """Wait until the server at ``url`` serves compiled trees (when ``compiled``); whether it does. With several
    worker processes, until 20 answers in a row on fresh connections (any worker may take one) say so."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while True:
        current = httpx.get(f"{url}/v1/models", timeout=30.0).json().get("loaded") or {}
        if not compiled:
            return bool(current.get("compiled_trees"))
        in_a_row = in_a_row + 1 if current.get("compiled_trees") else 0
        if in_a_row >= (1 if workers == 1 else 20):
            return True
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not compile its trees in {timeout:.0f}s")
        time.sleep(1.0 if in_a_row == 0 else 0.05)


def same_answers(model: Any, answer: dict[str, Any], configs: list[dict[str, Any]],
                 served: dict[str, Any]) -> dict[str, Any]:
    """metaml's points against the in-process model on LightGBM's own trees, and mlflow's answer (the ranking view's
    trees) against the same trees in process."""
    from collector.schema import DatasetMeta
    from metaml.serving import candidate_rows, task_row

    meta = DatasetMeta.model_validate({k: v for k, v in answer["task"]["meta"].items() if v is not None})
    rows = candidate_rows(task_row({"primary_metric": "accuracy"}, {"name": answer["task"]["dataset"]},
                                   dataset_meta=meta), configs)
    local = model.predict_arrays(rows)
    ours = np.array([p["points"] for p in answer["predictions"]])
    learned = model.outcome_.ranker_.predict(model.featurizer_.transform_array(rows))
    theirs = np.asarray(served["predictions"], dtype=float).ravel()
    d_ours = float(np.max(np.abs(ours - local["points"])))
    d_theirs = float(np.max(np.abs(theirs - learned)))
    return {"max_abs_diff_points": d_ours, "max_abs_diff_mlflow": d_theirs,
            "identical_1e-9": d_ours <= 1e-9 and d_theirs <= 1e-9}


# -- main -------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent requests of the load process")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per server and batch size")
    ap.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each measurement")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--public-data", type=Path,
                    default=Path(os.environ.get("METAML_PUBLIC_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes of each server (metaml serve --workers, mlflow models serve -w); above "
                         "1, each request of the load opens its own connection, so the workers share the load")
    ap.add_argument("--lightgbm-trees", action="store_true",
                    help="serve LightGBM's own trees (default: wait until the server has compiled them)")
    ap.add_argument("--load", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load:
        print(json.dumps(asyncio.run(_load(json.loads(args.load)))))
        return 0

    from metaml._artifact import load_model
    from metaml._compiled import boosters
    from service.testing import ServerProcess

    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="metaml-bench-predict-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        setup = build(args.public_data, work)
        model, _ = load_model(setup["artifact"])
        trees = {b.name: b.estimator.booster_.num_trees() for b in boosters(model)}
        print(f"knowledge base and model ready in {time.perf_counter() - t0:.0f}s: version {setup['version']}, "
              f"{setup['train_runs']:,} training runs, trees {trees}", file=sys.stderr)
        settings = {"tracking_uri": setup["uri"], "compile_trees": not args.lightgbm_trees,
                    "compiled_cache": args.out / "compiled"}
        ours_server = ServerProcess(setup["kb"], settings=settings, log_path=work / "metaml.log",
                                    workers=args.workers)
        with ours_server as ours, MlflowServer(setup["outcome_uri"], work / "mlflow.log",
                                               workers=args.workers) as theirs:
            compiled = wait_for_trees(ours.url, not args.lightgbm_trees, workers=args.workers)
            print(f"metaml serves {'compiled' if compiled else 'LightGBM'} trees", file=sys.stderr)
            for n in args.batch_sizes:
                configs = sample_candidates(n, seed=n)
                ours_body = json.dumps({"dataset": {"name": "glue/sst2"}, "candidates": configs}).encode()
                lean_body = json.dumps({"dataset": {"name": "glue/sst2"}, "candidates": configs, "support": 0,
                                        "outputs": []}).encode()
                columns_body = json.dumps({"dataset": {"name": "glue/sst2"}, "columns": as_columns(configs)}).encode()
                lean_columns_body = json.dumps({"dataset": {"name": "glue/sst2"}, "columns": as_columns(configs),
                                                "support": 0, "outputs": []}).encode()
                with httpx.Client(timeout=120.0) as c:
                    answer = c.post(f"{ours.url}/v1/predict", content=ours_body,
                                    headers={"Content-Type": "application/json"}).json()
                    assert answer["model"]["compiled_trees"] == compiled, answer["model"]
                    theirs_body = mlflow_body(model, answer, configs)
                    served = c.post(f"{theirs.url}/invocations", content=theirs_body,
                                    headers={"Content-Type": "application/json"}).json()
                    ours_bodies = {"metaml": ours_body, "metaml-points": lean_body, "metaml-columns": columns_body,
                                   "metaml-columns-points": lean_columns_body}
                    model_ms: dict[str, list[float]] = {name: [] for name in ours_bodies}
                    round_trip_ms: dict[str, list[float]] = {name: [] for name in ours_bodies}
                    server_ms: dict[str, list[float]] = {name: [] for name in ours_bodies}
                    for _ in range(20):
                        for name, body in ours_bodies.items():
                            t0 = time.perf_counter()
                            r = c.post(f"{ours.url}/v1/predict", content=body,
                                       headers={"Content-Type": "application/json"})
                            round_trip_ms[name].append((time.perf_counter() - t0) * 1000.0)
                            server_ms[name].append(float(r.headers["server-timing"].partition(";dur=")[2]))
                            model_ms[name].append(r.json()["model_ms"])
                check = same_answers(model, answer, configs, served)
                checks.append({"batch_size": n, **check})
                print(f"batch {n}: answers identical to 1e-9: {check['identical_1e-9']} (metaml points against "
                      f"in-process LightGBM: max |diff| {check['max_abs_diff_points']:.3g}; mlflow's ranking trees "
                      f"against in-process LightGBM: {check['max_abs_diff_mlflow']:.3g}); request bodies: metaml "
                      f"{len(ours_body):,} B, mlflow {len(theirs_body):,} B", file=sys.stderr)
                for name, url, path, body in (*((name, ours.url, "/v1/predict", body)
                                                for name, body in ours_bodies.items()),
                                              ("mlflow", theirs.url, "/invocations", theirs_body)):
                    res = run_load(url, path, body, clients=args.clients, seconds=args.seconds,
                                   warmup=args.warmup, work=work, fresh_connections=args.workers > 1)
                    res.update(server=name, batch_size=n, rows_per_s=round(res["requests_per_s"] * n, 1),
                               request_bytes=len(body))
                    if name in model_ms:
                        res["model_ms_p50"] = round(statistics.median(model_ms[name]), 3)
                        res["server_ms_p50"] = round(statistics.median(server_ms[name]), 2)
                        res["one_client_ms_p50"] = round(statistics.median(round_trip_ms[name]), 2)
                    results.append(res)
                    print(f"  {name:<21} batch {n:>5}: {res['requests_per_s']:>8,.1f} req/s "
                          f"({res['rows_per_s']:>10,.0f} rows/s), p50 {res['latency_ms_p50']} ms, "
                          f"p99 {res['latency_ms_p99']} ms, errors {res['errors']}", file=sys.stderr)

    rows = []
    for n in args.batch_sizes:
        by = {r["server"]: r for r in results if r["batch_size"] == n}
        theirs_r = by["mlflow"]
        for name, label in (("metaml", "full answer: 5 boosters + 3 support runs"),
                            ("metaml-points", "points + interval only (3 boosters)"),
                            ("metaml-columns", "full answer, candidates as columns"),
                            ("metaml-columns-points", "points + interval, candidates as columns")):
            r = by[name]
            rows.append({"batch_size": n, "metaml": label, "metaml_requests_per_s": r["requests_per_s"],
                         "mlflow_requests_per_s": theirs_r["requests_per_s"],
                         "throughput_ratio": round(r["requests_per_s"] / theirs_r["requests_per_s"], 2),
                         "metaml_p50_ms": r["latency_ms_p50"], "metaml_p99_ms": r["latency_ms_p99"],
                         "mlflow_p50_ms": theirs_r["latency_ms_p50"], "mlflow_p99_ms": theirs_r["latency_ms_p99"],
                         "metaml_model_ms_p50": r["model_ms_p50"], "metaml_server_ms_p50": r["server_ms_p50"],
                         "metaml_one_client_ms_p50": r["one_client_ms_p50"]})
    print()
    print("| candidates | metaml answer | metaml req/s | mlflow req/s | ratio | metaml p50 / p99 ms | "
          "mlflow p50 / p99 ms | metaml model ms (p50) | metaml server ms (p50) | metaml one client, ms (p50) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch_size']:,} | {r['metaml']} | {r['metaml_requests_per_s']:,.1f} | "
              f"{r['mlflow_requests_per_s']:,.1f} | {r['throughput_ratio']:.2f}x | {r['metaml_p50_ms']} / "
              f"{r['metaml_p99_ms']} | {r['mlflow_p50_ms']} / {r['mlflow_p99_ms']} | {r['metaml_model_ms_p50']} | "
              f"{r['metaml_server_ms_p50']} | {r['metaml_one_client_ms_p50']} |")
    import lightgbm
    import mlflow

    payload = {"summary": rows, "results": results, "identical_predictions": checks,
               "model": {"trees": trees, "train_runs": setup["train_runs"], "compiled_trees": compiled},
               "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                               "load_average": os.getloadavg(), "mlflow": mlflow.__version__,
                               "lightgbm": lightgbm.__version__, "clients": args.clients,
                               "seconds": args.seconds, "server_processes": args.workers,
                               "transport": "HTTP/1.1 over loopback, JSON bodies encoded before timing"
                                            + (", a connection per request" if args.workers > 1 else
                                               ", kept-alive connections")}}
    (args.out / "service_predict.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out / 'service_predict.json'}")
    ok = all(c["identical_1e-9"] for c in checks) and all(r["errors"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the HTTP service, and a throwaway PostgreSQL server, in child processes on loopback, for tests and benchmarks
(seams offered on purpose), and the served setup those tests and the docs' examples share.

``ServerProcess`` starts ``python -m service.cli serve`` (``metaml serve``) on 127.0.0.1 with a free port,
waits until ``/healthz`` answers, and stops it gracefully (``stop``) or abruptly (``kill``: SIGKILL, as a crash).
``PostgresServer`` runs ``initdb`` and ``pg_ctl`` (Debian's ``postgresql`` package) in a fresh directory, as an
unprivileged user when called as root (PostgreSQL refuses to run as root), and makes databases for lakehouses.
``build_served_world`` builds what such a server serves: a knowledge base of real public files, a small meta-model
registered and promoted in a fresh MLflow registry, and API keys.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def wait_until_answering(proc: subprocess.Popen, url: str, *, timeout: float, log_path: Path,
                         poll: float = 0.05) -> None:
    """Wait until ``url`` answers 200 while the child ``proc`` runs.

    Raises:
        RuntimeError: the process exited, or ``url`` did not answer within ``timeout`` (the log's tail attached).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"server did not answer within {timeout:g}s:\n{_tail(log_path)}")


#: Models of the public sources that candidate factories draw from.
SAMPLE_MODELS = ("roberta-base", "bert-base-uncased", "microsoft/deberta-base", "distilbert-base-uncased")


def sample_candidates(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` candidate configurations across :data:`SAMPLE_MODELS`, full fine-tuning and LoRA, log-uniform learning
    rates (for tests and benchmarks of ``/v1/predict``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        method = {"name": "lora", "lora_r": int(rng.choice([4, 8, 16]))} if i % 3 == 2 else {"name": "full"}
        out.append({"model": {"id": SAMPLE_MODELS[i % len(SAMPLE_MODELS)]}, "method": method,
                    "hparams": {"learning_rate": float(10 ** rng.uniform(-5.5, -3)),
                                "batch_size": int(rng.choice([16, 32, 64])), "epochs": int(rng.integers(1, 6))}})
    return out


def served_knowledge_base(public_data: Path, work: Path) -> Any:
    """The knowledge base the service and client tests serve (``work/kb.duckdb``): the real TransferGraph and OPDA
    DeBERTa files, model features, and SST-2's and MultiNLI's meta-features computed from their text."""
    from collector.enrich import enrich_datasets, enrich_models
    from collector.ingest import ingest_path
    from collector.store import KnowledgeBase

    kb = KnowledgeBase(work / "kb.duckdb")
    for source in ("transfergraph", "opda_deberta"):
        ingest_path(kb, public_data / "metadatasets" / source)
    enrich_models(kb)
    enrich_datasets(kb, public_data / "text", names=["glue_sst2", "glue_mnli"])
    return kb


def register_meta_model(kb: Any, tracking_uri: str, *, seed: int = 0, curve: bool = False,
                        evaluation: dict[str, float] | None = None) -> Any:
    """Fit a small meta-model (50 outcome trees, LightGBM seeded by ``seed``, one thread) on every run of ``kb``, with
    the curve estimator fit on its learning curves when ``curve``, and log it as a new version of the registry at
    ``tracking_uri`` (its metadata: the knowledge base's snapshot and ``evaluation``). Returns the meta-model."""
    from metaml._artifact import snapshot_id
    from metaml._curves import fit_curve_model, load_curve_runs
    from metaml._data import load_runs
    from metaml._estimators import MetaModel, OutcomeEstimator
    from metaml._tracking import log_model_version

    model = MetaModel(outcome=OutcomeEstimator(n_estimators=50, random_state=seed), random_state=seed)
    model.fit(load_runs(kb))
    curve_model = fit_curve_model(load_curve_runs(kb), n_estimators=100, seed=seed) if curve else None
    log_model_version(model, {"kb_snapshot": snapshot_id(kb), "evaluation": dict(evaluation or {})},
                      tracking_uri=tracking_uri, curve=curve_model)
    return model


def build_served_world(public_data: Path, work: Path, keys: dict[str, list[str]], *, curve: bool = False,
                       evaluation: dict[str, float] | None = None) -> dict[str, Any]:
    """What a test server serves, built in ``work``: :func:`served_knowledge_base`, one meta-model
    (:func:`register_meta_model`) registered as version 1 of a fresh SQLite registry and promoted, and one API key per
    name of ``keys`` (name -> scopes).

    Returns:
        ``{"work", "kb", "uri" (the tracking URI), "keys" (name -> key)}``.
    """
    from metaml._tracking import promote
    from service.keys import create_key

    kb = served_knowledge_base(public_data, work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    register_meta_model(kb, uri, curve=curve, evaluation=evaluation)
    promote(1, tracking_uri=uri)
    made = {name: create_key(work / "keys.db", name, scopes)[1] for name, scopes in keys.items()}
    return {"work": work, "kb": kb, "uri": uri, "keys": made}


class ServerProcess:
    """One server process for the knowledge base ``kb``.

    Args:
        kb: the knowledge base it serves (a DuckDB file or a lakehouse location).
        keys_db: its API key file (default: ``keys.db`` in the knowledge base's home directory).
        settings: other settings, as field name -> value (passed as ``METAML_<NAME>`` in its environment).
        workers: uvicorn worker processes.
        log_path: where its output goes (default: ``server-<port>.log`` in ``keys_db``'s directory).
    """

    def __init__(self, kb: str | Path, *, keys_db: Path | None = None, settings: dict[str, Any] | None = None,
                 workers: int = 1, log_path: Path | None = None) -> None:
        from collector.store import parse_kb_location

        self.kb = kb if isinstance(kb, Path) else parse_kb_location(kb).path or kb  # a file stays a Path
        self.home = parse_kb_location(kb).home
        self.keys_db = Path(keys_db) if keys_db else self.home / "keys.db"
        self.settings = dict(settings or {})
        self.workers = workers
        self.port = 0
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the server and wait until it answers ``/healthz``.

        Raises:
            RuntimeError: it exited, or did not answer within ``timeout`` seconds (its log is in the message).
        """
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAML_") or k == "METAML_PUBLIC_DATA"}
        env.update({f"METAML_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in self.settings.items()})
        log_path = self.log_path or self.keys_db.parent / f"server-{self.port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--kb", str(self.kb), "--keys-db", str(self.keys_db), "--workers", str(self.workers),
               "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_until_answering(self.proc, f"{self.url}/healthz", timeout=timeout, log_path=log_path)
        except RuntimeError:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully (SIGTERM to its process group), then SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL the server's whole process group, as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)
        self._close()

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def postgres_bindir() -> Path | None:
    """The directory of PostgreSQL's ``initdb`` and ``pg_ctl`` (on PATH, else Debian's ``/usr/lib/postgresql/N/bin``,
    the newest), or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(dirs[-1]).parent if dirs else None


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication, superuser ``metaml``) in a fresh directory.

    Args:
        durable: keep PostgreSQL's fsync on (benchmarks); off by default (tests: faster, and a crash of the machine
            is not what they test).
        run_as: the user the server runs as when this process is root (PostgreSQL refuses root); default
            ``postgres`` (created by Debian's package), else ``nobody``.

    Raises:
        RuntimeError: PostgreSQL is not installed, or the server did not start (its log in the message).
    """

    def __init__(self, *, durable: bool = False, run_as: str | None = None) -> None:
        self.durable = durable
        self.run_as = run_as
        self.port = 0
        self.root: Path | None = None
        self._ids = itertools.count(1)
        self._user: dict[str, Any] = {}

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, check=check, **self._user)

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="metaml-pg-"))
        if os.geteuid() == 0:
            name = self.run_as or next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
            if name is None:
                raise RuntimeError("running as root, and no unprivileged user (postgres, nobody) to run PostgreSQL")
            pw = pwd.getpwnam(name)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": str(self.root)}
        data = self.root / "data"
        try:
            self._run(str(bindir / "initdb"), "-D", str(data), "-U", "metaml", "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--no-instructions")
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"initdb failed: {e.stderr or e.stdout}") from e
        self.port = free_port()
        settings = [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=400",
                    "-c shared_buffers=64MB"]
        if not self.durable:
            settings.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        start = self._run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w",
                          "-t", str(int(timeout)), "-o", " ".join(settings), "start", check=False)
        if start.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"PostgreSQL did not start: {start.stderr}{log}")
        return self

    @property
    def conninfo(self) -> str:
        """libpq ``KEY=VALUE`` pairs of the server (without a database name)."""
        return f"host=127.0.0.1 port={self.port} user=metaml"

    def create_database(self, name: str | None = None) -> str:
        """Create a database (default: a new ``kb<n>``) and return its name."""
        name = name or f"kb{next(self._ids)}"
        createdb = self.bindir / "createdb"
        try:
            self._run(str(createdb), "-h", "127.0.0.1", "-p", str(self.port), "-U", "metaml", name)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"createdb {name} failed: {e.stderr}") from e
        return name

    def lake(self, data: str | Path, database: str | None = None, **options: Any) -> str:
        """The location of a lakehouse in a new database (or ``database``) with its Parquet files under ``data``;
        ``options`` are added as ``KEY=VALUE`` (e.g. ``inline=0``)."""
        database = database or self.create_database()
        extra = "".join(f" {k}={v}" for k, v in options.items())
        return f"ducklake:postgres:dbname={database} {self.conninfo} data={data}{extra}"

    def stop(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        if self.root is None:
            return
        if self.port:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop",
                      check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True

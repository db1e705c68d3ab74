"""Run the HTTP service in a child process on loopback, for tests and benchmarks (a seam offered on purpose).

``ServerProcess`` starts ``python -m service.cli serve`` (``metaml serve``) on 127.0.0.1 with a free port,
waits until ``/healthz`` answers, and stops it gracefully (``stop``) or abruptly (``kill``: SIGKILL, as a crash).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


class ServerProcess:
    """One server process for the knowledge base ``kb``.

    Args:
        kb: the DuckDB file it serves.
        keys_db: its API key file (default: ``keys.db`` beside ``kb``).
        settings: other settings, as field name -> value (passed as ``METAML_<NAME>`` in its environment).
        workers: uvicorn worker processes.
        log_path: where its output goes (default: ``server-<port>.log`` beside ``kb``).
    """

    def __init__(self, kb: Path, *, keys_db: Path | None = None, settings: dict[str, Any] | None = None,
                 workers: int = 1, log_path: Path | None = None) -> None:
        self.kb = Path(kb)
        self.keys_db = Path(keys_db) if keys_db else self.kb.parent / "keys.db"
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
        log_path = self.log_path or self.kb.parent / f"server-{self.port}.log"
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

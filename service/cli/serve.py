"""``metaml serve``: run the HTTP API with uvicorn.

Exposes the click command :data:`serve`; the root CLI registers it. Options override the settings read from the
environment (``METAML_*``, see :mod:`service.settings`); they are passed to the server processes through the same
environment, so ``--workers`` and ``--reload`` processes see them too.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

from service.cli._common import check_kb_location
from service.settings import get_settings


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_reads_warning(host: str) -> str:
    """What `serve` says when it listens beyond this machine with reads open to anyone."""
    line = "=" * 100
    return (f"{line}\nWARNING: serving on {host} with METAML_READ_REQUIRES_KEY=false: ANYONE who can reach this "
            "address can read\nevery run, the statistics and the predictions without a key. Set "
            "METAML_READ_REQUIRES_KEY=true\n(and give readers `read` keys), or listen on 127.0.0.1 only.\n" + line)


@click.command("serve")
@click.option("--host", default=None, help="Interface to listen on [default: $METAML_HOST, else 127.0.0.1].")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port [default: $METAML_PORT, else 8000].")
@click.option("--kb", "kb_path", default=None, metavar="LOCATION", callback=check_kb_location,
              help="The knowledge base, a DuckDB file or a lakehouse URI [default: $METAML_KB, else "
                   "metaml-data/kb.duckdb].")
@click.option("--keys-db", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="The API key file [default: $METAML_KEYS_DB, else keys.db beside the knowledge base].")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Server processes (they share a DuckDB file through its lock, a lakehouse without one).")
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(host: str | None, port: int | None, kb_path: str | None, keys_db: Path | None, workers: int,
          reload: bool, log_level: str) -> None:
    """Serve the HTTP API (/v1/runs, /v1/datasets/describe, /v1/sql, /v1/stats, /healthz, /readyz, /metrics).

    Manage its keys with `metaml keys`; the API is described at /docs and /openapi.json. Listening beyond this
    machine (e.g. --host 0.0.0.0) while reads need no key (METAML_READ_REQUIRES_KEY=false) prints a warning.
    """
    import uvicorn

    if kb_path is not None:
        os.environ["METAML_KB"] = kb_path
    if keys_db is not None:
        os.environ["METAML_KEYS_DB"] = str(keys_db)
    get_settings.cache_clear()
    settings = get_settings()
    bind = host or settings.host
    if not settings.read_requires_key and not is_loopback(bind):
        click.secho(open_reads_warning(bind), fg="red", bold=True, err=True)
    uvicorn.run(
        "service.api.main:create_app",
        factory=True,
        host=bind,
        port=settings.port if port is None else port,
        workers=None if reload else workers,
        reload=reload,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
    )

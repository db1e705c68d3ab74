"""What every command of the ``metaml`` command line shares: exit codes, the ``--kb`` and ``--json`` options, the
error exit, JSON output, and where the public data is by default.

Exit codes (stable, for scripts):

* 0 — done; every record read was stored or was already there.
* 1 — error: bad usage, an unreadable input, a refused query, a busy or missing knowledge base. Nothing further was
  written after the error.
* 2 — done, but some records were rejected (listed, with the rejects report written to a file).
"""

from __future__ import annotations

import json
import os
from enum import IntEnum
from pathlib import Path
from typing import Any

import click

DEFAULT_KB = Path("metaml-data") / "kb.duckdb"
#: Environment variable naming the shared ``data`` folder (``metadatasets/`` and ``text/``).
PUBLIC_DATA_ENV = "METAML_PUBLIC_DATA"
#: The checkout this package runs from (``../shared/data`` beside it is the public data by default).
CHECKOUT = Path(__file__).resolve().parents[2]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    REJECTS = 2


def kb_option(f: Any) -> Any:
    """``--kb PATH`` (env ``METAML_KB``), shared by every command that opens the knowledge base."""
    return click.option(
        "--kb",
        "kb_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="METAML_KB",
        default=DEFAULT_KB,
        show_default=True,
        show_envvar=True,
        help="The knowledge base (a DuckDB file; created on first ingest).",
    )(f)


def json_option(f: Any) -> Any:
    """``--json``: machine-readable output on stdout (progress and messages stay on stderr)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON on stdout instead of the human summary.")(f)


def fail(message: str) -> click.exceptions.Exit:
    """Print ``message`` on stderr and return the exception that exits with code 1."""
    click.secho(f"error: {message}", fg="red", err=True)
    return click.exceptions.Exit(ExitCode.ERROR)


def emit_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON on stdout."""
    click.echo(json.dumps(payload, indent=2, default=str))


def default_public_data(environ: dict[str, str] | None = None) -> Path | None:
    """``$METAML_PUBLIC_DATA``, else ``../shared/data`` beside the working directory or the checkout, when it
    exists."""
    env = os.environ if environ is None else environ
    if env.get(PUBLIC_DATA_ENV):
        return Path(env[PUBLIC_DATA_ENV])
    for candidate in (Path("..") / "shared" / "data", CHECKOUT.parent / "shared" / "data"):
        if (candidate / "metadatasets").is_dir():
            return candidate
    return None


def default_public_text_root(environ: dict[str, str] | None = None) -> Path:
    """The public text datasets folder: ``$METAML_PUBLIC_DATA/text``, else ``../shared/data/text`` beside the checkout.

    Args:
        environ: the environment to read (``os.environ`` when ``None``).

    Returns:
        The folder (not checked to exist).
    """
    env = os.environ if environ is None else environ
    if env.get(PUBLIC_DATA_ENV):
        return Path(env[PUBLIC_DATA_ENV]) / "text"
    return CHECKOUT.parent / "shared" / "data" / "text"


__all__ = ["CHECKOUT", "DEFAULT_KB", "PUBLIC_DATA_ENV", "ExitCode", "default_public_data", "default_public_text_root",
           "emit_json", "fail", "json_option", "kb_option"]

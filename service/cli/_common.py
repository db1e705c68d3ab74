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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any

import click

from collector.errors import CollectorError
from collector.ingest import IngestReport, top_reasons
from collector.progress import every, progress_interval
from collector.sources import PUBLIC_DATA_ENV, public_data_root
from collector.store import parse_kb_location

DEFAULT_KB = Path("metaml-data") / "kb.duckdb"


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    REJECTS = 2


def check_kb_location(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> str | None:
    """Click callback: ``value`` as a knowledge-base location, checked by the store's one parser."""
    if value is None:
        return None
    try:
        return parse_kb_location(value).text
    except CollectorError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from e


#: Help of every ``--kb`` option.
KB_HELP = ("The knowledge base: a DuckDB file (created on first ingest), or a lakehouse "
           "'ducklake:postgres:dbname=DB host=HOST ... data=DIR' (see docs/lakehouse.md).")


def kb_option(f: Any) -> Any:
    """``--kb LOCATION`` (env ``METAML_KB``), shared by every command that opens the knowledge base."""
    return click.option(
        "--kb",
        "kb_path",
        type=str,
        envvar="METAML_KB",
        default=str(DEFAULT_KB),
        show_default=True,
        show_envvar=True,
        callback=check_kb_location,
        metavar="LOCATION",
        help=KB_HELP,
    )(f)


def json_option(f: Any) -> Any:
    """``--json``: machine-readable output on stdout (progress and messages stay on stderr)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON on stdout instead of the human summary.")(f)


def meta_model_size_options(f: Any) -> Any:
    """``--n-estimators`` and ``--max-rows-per-task``: the size of each meta-model a command fits (evaluation folds,
    the replay's leave-one-dataset-out models)."""
    f = click.option("--max-rows-per-task", type=click.IntRange(10), default=100, show_default=True,
                     help="Runs per task each meta-model's estimators learn from (its experience reads all).")(f)
    return click.option("--n-estimators", type=click.IntRange(10), default=150, show_default=True,
                        help="Trees of each meta-model's ranking view (fewer: cheaper fits).")(f)


def fail(message: str) -> click.exceptions.Exit:
    """Print ``message`` on stderr and return the exception that exits with code 1."""
    click.secho(f"error: {message}", fg="red", err=True)
    return click.exceptions.Exit(ExitCode.ERROR)


def emit_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON on stdout."""
    click.echo(json.dumps(payload, indent=2, default=str))


def rejects_lines(reports: Sequence[IngestReport], report_path: Path, *, reasons: int = 5) -> list[str]:
    """What a command prints after an ingest that rejected records: how many, where each one is reported with its
    place and reason (``report_path``, written by :func:`collector.ingest.write_rejects`), and the ``reasons`` most
    common reasons with their counts (none when ``reasons`` is 0). Empty when nothing was rejected."""
    rejected = sum(r.rejected for r in reports)
    if not rejected:
        return []
    read = sum(r.read for r in reports)
    lines = [f"rejected {rejected:,} of {read:,} records; each one, with its place and reason, is in {report_path}"]
    top = top_reasons(reports, reasons) if reasons else []
    if top:
        lines.append("top reasons:")
        lines += [f"  {n:>7,} x {reason[:110]}" for reason, n in top]
    return lines


def default_public_data(environ: dict[str, str] | None = None) -> Path | None:
    """``$METAML_PUBLIC_DATA``, else ``../shared/data`` beside the working directory when it holds metadatasets/
    (:func:`collector.sources.public_data_root`)."""
    env = os.environ if environ is None else environ
    root = public_data_root(env)
    return root if env.get(PUBLIC_DATA_ENV) or (root / "metadatasets").is_dir() else None


def default_public_text_root(environ: dict[str, str] | None = None) -> Path:
    """The public text datasets folder: ``text/`` of :func:`collector.sources.public_data_root`
    (``$METAML_PUBLIC_DATA``, else ``../shared/data`` beside the working directory).

    Args:
        environ: the environment to read (``os.environ`` when ``None``).

    Returns:
        The folder (not checked to exist).
    """
    return public_data_root(environ) / "text"


__all__ = ["DEFAULT_KB", "KB_HELP", "PUBLIC_DATA_ENV", "ExitCode", "check_kb_location", "default_public_data",
           "default_public_text_root", "emit_json", "fail", "json_option", "kb_option", "rejects_lines"]


@contextmanager
def heartbeat(label: str, *, indent: str = "      ") -> Iterator[None]:
    """While the block runs, print ``<label>: still working (Ns)`` on stderr every
    :func:`~collector.progress.progress_interval` seconds: a step with no progress of its own (fitting a model,
    attaching features) never leaves a log, a CI job or a terminal silent for longer than that."""
    started = time.perf_counter()

    def beat() -> None:
        click.echo(f"{indent}{label}: still working ({time.perf_counter() - started:.0f}s)", err=True)

    with every(progress_interval(), beat, name="metaml-heartbeat"):
        yield

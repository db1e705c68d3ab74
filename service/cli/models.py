"""``metaml models``: the registered versions of the meta-model (``list``) and which one is served (``promote``).

Exit codes: 0 done; 1 error (a one-line message on stderr), like every ``metaml`` command.
"""

from __future__ import annotations

import json
from typing import Any

import click

from metaml._tracking import DEFAULT_TRACKING_URI, PRODUCTION_ALIAS, REGISTERED_MODEL, ModelVersionInfo
from metaml.errors import MetamlError
from service.cli._common import fail, json_option, kb_option


def tracking_uri_option(f: Any) -> Any:
    """``--tracking-uri URI`` (env ``METAML_TRACKING_URI``), shared by the commands that use the MLflow registry."""
    return click.option("--tracking-uri", envvar="METAML_TRACKING_URI", default=DEFAULT_TRACKING_URI,
                        show_default=True, show_envvar=True,
                        help="The MLflow tracking and registry URI (sqlite:///path, http://host:port).")(f)


def _snapshot(value: str | None) -> str:
    """``sha256:<hex>:<n>`` -> ``<first 12 hex> (<n> runs)``."""
    if not value or value == "None":
        return "-"
    parts = value.split(":")
    return f"{parts[1][:12]} ({int(parts[2]):,} runs)" if len(parts) == 3 and parts[2].isdigit() else value


def _table(versions: list[ModelVersionInfo]) -> str:
    metric_names = list(dict.fromkeys(name for v in versions for name in v.key_metrics()))
    header = ["version", "aliases", "created (UTC)", "kb snapshot", *metric_names]
    rows = [[str(v.version), ",".join(v.aliases) or "-", (v.created_at or "-").replace("T", " ")[:16],
             _snapshot(v.kb_snapshot), *(f"{v.metrics[m]:.3f}" if m in v.metrics else "-" for m in metric_names)]
            for v in versions]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


@click.group("models")
def models() -> None:
    """The registered versions of the meta-model, and the one promoted to production (the one loaded by default).

    `metaml train` registers every trained model as a new version in the MLflow registry.
    """


@models.command("list")
@tracking_uri_option
@json_option
def list_cmd(tracking_uri: str, as_json: bool) -> None:
    """List the versions: aliases, creation time, knowledge-base snapshot, key evaluation metrics."""
    from metaml._tracking import list_versions

    try:
        versions = list_versions(tracking_uri=tracking_uri)
    except MetamlError as e:
        raise fail(str(e)) from e
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in versions], indent=2, default=str))
    elif not versions:
        click.echo(f"no version of {REGISTERED_MODEL} is registered at {tracking_uri}; train one with `metaml train`",
                   err=True)
    else:
        click.echo(_table(versions))


@models.command("promote")
@click.argument("version", type=click.IntRange(1))
@tracking_uri_option
@kb_option
@click.option("--compile/--no-compile", "compile_trees", default=True, show_default=True,
              envvar="METAML_COMPILE_TREES", show_envvar=True,
              help="Compile the version's trees now (when the `compiled` extra is installed), into the cache the "
                   "servers of this knowledge base read (METAML_COMPILED_CACHE, default compiled/ beside it), so "
                   "they serve compiled trees from their first request.")
def promote_cmd(version: int, tracking_uri: str, kb_path: str, compile_trees: bool) -> None:
    """Promote VERSION to production: point the 'production' alias at it (the version loaded by default)."""
    from metaml._compiled import available, compile_model
    from metaml._tracking import load_version, promote
    from service.settings import Settings

    try:
        info = promote(version, tracking_uri=tracking_uri)
    except MetamlError as e:
        raise fail(str(e)) from e
    click.echo(f"version {info.version} of {info.registered_name} is now '{PRODUCTION_ALIAS}'")
    if not compile_trees:
        return
    if not available():
        click.echo("its trees are served by LightGBM: install the `compiled` extra (pip install 'metaml[compiled]') "
                   "to serve them compiled", err=True)
        return
    cache = Settings(kb=kb_path).compiled_dir
    try:
        model, _ = load_version(tracking_uri=tracking_uri, version=version)
        compile_model(model, cache, progress=lambda message: click.echo(message + " ...", err=True))
    except MetamlError as e:
        raise fail(f"version {version} is promoted, but its trees could not be compiled ({e}); servers answer with "
                   "LightGBM's trees") from e
    click.echo(f"its trees are compiled in {cache}", err=True)


__all__ = ["models", "tracking_uri_option"]

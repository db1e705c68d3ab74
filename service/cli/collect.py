"""Commands over the collector: ``ingest``, ``formats`` and the ``kb`` group (exit codes: :mod:`._common`)."""

from __future__ import annotations

from pathlib import Path

import click

from collector.errors import CollectorError
from collector.formats import FORMATS, available_formats, get_format
from collector.formats.canonical import write_jsonl
from collector.ingest import DEFAULT_CHUNK_SIZE, IngestReport, ingest_path, write_rejects
from collector.ingest import rejects_path as default_rejects_path
from collector.schema import arrow_schema, columns, duckdb_ddl, json_schema
from collector.store import KnowledgeBase
from service.cli._common import ExitCode, emit_json, fail, json_option, kb_option, rejects_lines


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default=None,
              help="Read PATHS in this format instead of detecting it (see `metaml formats`).")
@kb_option
@json_option
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write rejected records (uri, locator, field, reason) to this JSONL file. "
                   "Default: <kb dir>/rejects/<time>.jsonl when there are any.")
@click.option("--uploader", default=None, help="Recorded as provenance.uploader on records that lack one.")
@click.option("--chunk-size", default=DEFAULT_CHUNK_SIZE, show_default=True, type=click.IntRange(1),
              help="Records per transaction.")
@click.option("--experiment", "experiments", multiple=True,
              help="MLflow: read only this experiment (repeatable); default every active experiment.")
@click.option("--study", "studies", multiple=True,
              help="Optuna: read only this study (repeatable); default every study in the storage.")
@click.option("--mapping", "mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Optuna, Ray Tune, Syne Tune: a YAML/JSON file saying what the trials' parameters are (model, "
                   "method, learning rate...), and the dataset, task and metric (docs/sources/tuner_mapping.md).")
@click.option("--enrich/--no-enrich", default=True, show_default=True,
              help="After storing, fill the runs' model features from the registry and attach stored dataset "
                   "meta-features.")
def ingest(paths: tuple[str, ...], fmt: str | None, kb_path: str, as_json: bool, rejects_path: Path | None,
           uploader: str | None, chunk_size: int, experiments: tuple[str, ...] = (), studies: tuple[str, ...] = (),
           mapping: Path | None = None, enrich: bool = True) -> None:
    """Validate, normalize, deduplicate and store the runs found in PATHS.

    PATHS are files, directories or archives in any format of `metaml formats`, MLflow tracking URIs
    (sqlite:///mlflow.db, http://host:5000) or Optuna storage URLs (sqlite:///optuna.db; other RDB URLs with
    --format optuna); a directory holding several sources is walked and each part read with its own format.
    Every record is accounted for: ingested, duplicate (same content id as a stored run) or rejected (with its
    place and reason). Re-running the same ingest adds nothing.

    Exit code 0: all stored or duplicate; 2: some records rejected; 1: an input could not be read at all.
    """
    kb = KnowledgeBase(kb_path)
    reports: list[IngestReport] = []
    for path in paths:
        try:
            options = {k: v for k, v in (("experiments", list(experiments)), ("studies", list(studies)),
                                         ("mapping", mapping)) if v}
            target = path if "://" in path else Path(path)
            reports.extend(ingest_path(kb, target, fmt, options=options, uploader=uploader, chunk_size=chunk_size,
                                       progress=not as_json))
        except CollectorError as e:
            reports.append(IngestReport(uri=str(path), format=fmt, error=str(e)))
    if enrich and any(r.ingested for r in reports):
        from collector.enrich import enrich_models

        enrich_models(kb)
        kb.attach_features()
    rejects = any(rep.rejects for rep in reports)
    if rejects:
        rejects_path = rejects_path or default_rejects_path(kb.home)
        write_rejects(reports, rejects_path)
    totals = {k: sum(getattr(r, k) for r in reports) for k in ("read", "ingested", "duplicates", "rejected")}
    errors = [r for r in reports if r.error]
    if as_json:
        emit_json({"kb": str(kb), **totals, "errors": len(errors),
                    "rejects_file": str(rejects_path) if rejects else None,
                    "inputs": [r.to_dict() for r in reports]})
    else:
        _print_ingest_summary(reports, totals, rejects_path if rejects else None, kb)
    if errors:
        raise click.exceptions.Exit(ExitCode.ERROR)
    if rejects:
        raise click.exceptions.Exit(ExitCode.REJECTS)


def _print_ingest_summary(reports: list[IngestReport], totals: dict[str, int], rejects_path: Path | None,
                          kb: KnowledgeBase) -> None:
    shown = [r for r in reports if not r.skipped]
    width = min(max([len(r.uri) for r in shown] + [10]), 70)
    click.echo(f"{'input':<{width}}  {'format':<15}{'read':>9}{'ingested':>10}{'dupes':>8}{'rejected':>10}{'time':>8}")
    for r in shown:
        uri = r.uri if len(r.uri) <= width else "…" + r.uri[-(width - 1):]
        click.echo(f"{uri:<{width}}  {r.format or '-':<15}{r.read:>9,}{r.ingested:>10,}{r.duplicates:>8,}"
                   f"{r.rejected:>10,}{r.seconds:>7.1f}s")
        for reason, n in r.top_reasons(3):
            click.echo(f"{'':<{width}}    {n:>6,} x {reason[:110]}")
        if r.error:
            click.secho(f"{'':<{width}}    error: {r.error}", fg="red")
    if len(shown) > 1:
        click.echo(f"{'total':<{width}}  {'':<15}{totals['read']:>9,}{totals['ingested']:>10,}"
                   f"{totals['duplicates']:>8,}{totals['rejected']:>10,}")
    skipped = [r.uri for r in reports if r.skipped]
    if skipped:
        click.echo(f"skipped {len(skipped)} file(s) holding no runs (documentation, aggregates): "
                   f"{', '.join(Path(s).name for s in skipped[:5])}")
    if rejects_path:
        several = sum(1 for r in shown if r.rejects) > 1
        for line in rejects_lines(reports, rejects_path, reasons=5 if several else 0):
            click.echo(line)
    click.echo(f"knowledge base: {kb}")


@click.command("formats")
@json_option
def formats_cmd(as_json: bool) -> None:
    """List the input formats `metaml ingest` reads, in auto-detection order.

    Auto-detection tries them top to bottom; name one with `metaml ingest PATH --format NAME` to skip detection.
    A directory that no format recognizes as a whole is walked and each file or sub-directory is detected on its
    own, so one command can ingest a folder holding several sources.
    """
    rows = []
    for name in available_formats():
        f = get_format(name)
        rows.append({"name": name, "source": f.source, "description": f.description})
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<16}{r['description']}")


@click.group("kb")
def kb_group() -> None:
    """Inspect, query, export and import the knowledge base."""


@kb_group.command("stats")
@kb_option
@json_option
def kb_stats(kb_path: str, as_json: bool) -> None:
    """Counts of runs by source, task, method, model family and status, and feature coverage."""
    try:
        stats = KnowledgeBase(kb_path).stats()
    except CollectorError as e:
        raise fail(str(e)) from e
    if as_json:
        emit_json(stats)
        return
    click.echo(f"{stats['path']}  (schema {stats['schema_version']})")
    click.echo(f"runs {stats['runs']:,}   datasets {stats['datasets']:,}   models {stats['models']:,}   "
               f"described datasets {stats['described_datasets']:,}   registered models "
               f"{stats['registered_models']:,}")
    for key in ("by_source", "by_task_type", "by_method", "by_model_family", "by_status"):
        items = list(stats[key].items())
        more = f" … (+{len(items) - 12})" if len(items) > 12 else ""
        click.echo(f"{key[3:]:<13}" + ", ".join(f"{k} {v:,}" for k, v in items[:12]) + more)
    click.echo("coverage     " + ", ".join(f"{k} {v:.0%}" for k, v in stats["coverage"].items()))


@kb_group.command("sql")
@click.argument("query")
@kb_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--max-rows", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds before the query is interrupted.")
@click.option("--memory-limit", "memory_mb", default=2048, show_default=True, type=click.IntRange(16),
              help="Memory (MB) the query may use; a query needing more is refused.")
def kb_sql(query: str, kb_path: str, fmt: str, max_rows: int, timeout_s: float, memory_mb: int) -> None:
    """Run one read-only SQL query (DuckDB dialect) on the knowledge base.

    Tables: runs (one row per run, flat columns: `metaml kb schema --format columns`), datasets (meta-features per
    dataset), models (features per model). Statements that write, attach, install or load extensions, copy, or
    read any file are refused, as are the functions that show files and settings or run SQL given as text.

    Example: metaml kb sql "SELECT method_name, count(*), avg(outcome_score) FROM runs GROUP BY 1"
    """
    try:
        result = KnowledgeBase(kb_path).sql(query, max_rows=max_rows, timeout_s=timeout_s, memory_limit_mb=memory_mb,
                                            max_bytes=None)
    except CollectorError as e:
        raise fail(str(e)) from e
    df = result.table.to_pandas()
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", max_rows, "display.max_columns", 50, "display.width", 200):
            click.echo(df.to_string(index=False) if len(df) else "(no rows)")
    if result.truncated:
        click.secho(f"(output cut at {max_rows} rows; raise --max-rows to see more)", fg="yellow", err=True)


@kb_group.command("export")
@click.argument("dest", type=click.Path(path_type=Path))
@kb_option
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl", "csv"]), default="parquet",
              show_default=True)
@click.option("--partition-by", multiple=True, default=(),
              help="Write a hive-partitioned Parquet directory partitioned by these columns "
                   "(e.g. --partition-by provenance_source).")
def kb_export(dest: Path, kb_path: str, fmt: str, partition_by: tuple[str, ...]) -> None:
    """Write every run to DEST in a canonical format (readable again by `metaml kb import`)."""
    kb = KnowledgeBase(kb_path)
    try:
        if fmt == "jsonl":
            dest.parent.mkdir(parents=True, exist_ok=True)
            n = write_jsonl(kb.iter_batches(), dest)
        else:
            kb.export(dest, fmt=fmt, partition_by=partition_by)
            n = kb.count()
    except CollectorError as e:
        raise fail(str(e)) from e
    click.echo(f"exported {n:,} runs to {dest}")


@kb_group.command("import")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@kb_option
@json_option
@click.pass_context
def kb_import(ctx: click.Context, src: Path, kb_path: str, as_json: bool) -> None:
    """Import runs from a canonical export (Parquet file or partitioned directory, JSONL, CSV).

    The same as `metaml ingest SRC`: every record is validated again and deduplicated by content id.
    """
    ctx.invoke(ingest, paths=(str(src),), fmt=None, kb_path=kb_path, as_json=as_json, rejects_path=None,
               uploader=None, chunk_size=DEFAULT_CHUNK_SIZE, experiments=(), enrich=True)


@kb_group.command("compact")
@kb_option
@json_option
def kb_compact(kb_path: str, as_json: bool) -> None:
    """Reorganize the knowledge base's storage. On a lakehouse: write the runs kept in the catalog out to Parquet,
    merge small data files, forget snapshots older than a day and delete files no snapshot reads. Safe while
    servers and ingests write (conflicting writers retry)."""
    try:
        done = KnowledgeBase(kb_path).compact()
    except CollectorError as e:
        raise fail(str(e)) from e
    if as_json:
        emit_json(done)
    else:
        click.echo(", ".join(f"{k} {v:,}" for k, v in done.items()) or "nothing to do for a DuckDB file")


@kb_group.command("enrich")
@kb_option
@click.option("--public-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              envvar="METAML_PUBLIC_DATA", default=None, show_envvar=True,
              help="Folder holding text/ (the raw text datasets) to compute dataset meta-features from.")
@click.option("--datasets/--no-datasets", "with_datasets", default=True, show_default=True,
              help="Compute dataset meta-features from the raw text datasets (about a minute).")
def kb_enrich(kb_path: str, public_data: Path | None, with_datasets: bool) -> None:
    """Attach features to the stored runs: model features from the registry (data/models.csv, or inferred from the
    Hub id), and dataset meta-features computed from the raw text datasets under PUBLIC_DATA/text."""
    from collector.enrich import enrich_datasets, enrich_models

    kb = KnowledgeBase(kb_path)
    try:
        n_models = enrich_models(kb)
        click.echo(f"model features: {n_models:,} models")
        if with_datasets:
            if public_data is None or not (public_data / "text").is_dir():
                raise fail("no text datasets: pass --public-data DIR (the folder holding text/) or set "
                           "METAML_PUBLIC_DATA, or use --no-datasets")
            n = enrich_datasets(kb, public_data / "text", progress=True)
            click.echo(f"dataset meta-features: {n} datasets")
        stats = kb.stats()
    except CollectorError as e:
        raise fail(str(e)) from e
    click.echo("coverage     " + ", ".join(f"{k} {v:.0%}" for k, v in stats["coverage"].items()))


@kb_group.command("schema")
@click.option("--format", "fmt", type=click.Choice(["json", "ddl", "arrow", "columns"]), default="columns",
              show_default=True)
def kb_schema(fmt: str) -> None:
    """Print the run record's schema: JSON Schema, DuckDB DDL, Arrow schema, or the flat column list."""
    if fmt == "json":
        emit_json(json_schema())
    elif fmt == "ddl":
        click.echo(duckdb_ddl() + ";")
    elif fmt == "arrow":
        click.echo(str(arrow_schema()))
    else:
        for c in columns():
            click.echo(f"{c.name:<42}{c.duckdb:<60}{'required' if c.required else ''}")


COMMANDS: list[click.Command] = [ingest, formats_cmd, kb_group]

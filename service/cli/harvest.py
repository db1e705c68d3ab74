"""``metaml harvest``: collect run records from public sources (``harvest hub``: Hugging Face Hub model cards).

The group is exposed as :data:`harvest` (a :class:`click.Group`) for the root CLI to add. Exit codes follow
``metaml ingest``: 0 done; 1 the harvest or the ingest could not run; 2 done, but some models could not be fetched or
some cards were rejected by the ingest (listed in the summary and the rejects file).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from collector.errors import CollectorError
from service.cli._common import ExitCode, kb_option


@click.group("harvest")
def harvest() -> None:
    """Collect fine-tuning runs from public sources into a directory, then ingest them."""


@harvest.command("hub")
@click.option("--task", required=True, help="Hub pipeline tag, e.g. text-classification, token-classification.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True,
              help="How many models to list (the most downloaded first).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the cards go (<author>/<model>/README.md + config.json) with the resume state.")
@click.option("--offline-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Read cards from this directory of <author>/<model>/README.md instead of the Hub.")
@kb_option
@click.option("--ingest/--no-ingest", "do_ingest", default=True, show_default=True,
              help="Ingest the harvested cards into the knowledge base (format hf_cards).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue an earlier harvest into the same --out (skip models already fetched).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def hub(task: str, limit: int, out_dir: Path, offline_dir: Path | None, kb_path: Path, do_ingest: bool,
        resume: bool, as_json: bool) -> None:
    """Download the model cards of TASK's most downloaded Hub models into --out, resumably, and ingest them.

    Rate limits (HTTP 429) are retried with exponential backoff honoring Retry-After. A re-run with the same --out
    fetches only what is missing. The --out directory can also be ingested later with
    `metaml ingest OUT --format hf_cards`.
    """
    from tqdm import tqdm

    from collector.importers.hf.harvest import harvest_hub

    with tqdm(total=None, unit="model", desc=f"harvest {task}", disable=True if as_json else None,
              mininterval=0.5) as bar:
        def listed(n: int) -> None:
            bar.total = n
            bar.refresh()

        def done(model_id: str, status: str) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{status} {model_id}"[:60], refresh=False)

        try:
            result = harvest_hub(task, limit, out_dir, offline_dir=offline_dir, resume=resume, on_listed=listed,
                                 on_model=done)
        except CollectorError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            raise click.exceptions.Exit(ExitCode.ERROR) from e
    summary: dict[str, object] = {"harvest": result.to_dict()}
    code = ExitCode.REJECTS if result.failed else ExitCode.OK
    if do_ingest:
        ingest_summary, ingest_code = _ingest(out_dir, kb_path)
        summary["ingest"] = ingest_summary
        code = max(code, ingest_code)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print(summary)
    if code != ExitCode.OK:
        raise click.exceptions.Exit(code)


def _ingest(out_dir: Path, kb_path: Path) -> tuple[dict[str, object], ExitCode]:
    from collector.ingest import ingest_path
    from collector.store import KnowledgeBase

    if not any(out_dir.glob("*/*/README.md")):
        return {"skipped": "no cards harvested"}, ExitCode.OK
    try:
        reports = ingest_path(KnowledgeBase(kb_path), out_dir, "hf_cards")
    except CollectorError as e:
        return {"error": str(e)}, ExitCode.ERROR
    totals = {k: sum(getattr(r, k) for r in reports) for k in ("read", "ingested", "duplicates", "rejected")}
    errors = [r.error for r in reports if r.error]
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, n in r.top_reasons(10):
            reasons[reason] = reasons.get(reason, 0) + n
    code = ExitCode.ERROR if errors else ExitCode.REJECTS if totals["rejected"] else ExitCode.OK
    return {"kb": str(kb_path), **totals, "errors": errors, "top_reasons": reasons}, code


def _print(summary: dict[str, object]) -> None:
    h = summary["harvest"]
    assert isinstance(h, dict)
    click.echo(f"harvest {h['task']}: listed {h['listed']}, fetched {h['fetched']}, already there {h['skipped']}, "
               f"failed {len(h['failed'])}, configs {h['configs']}, rate-limit retries {h['retries']} "
               f"({h['waited_s']}s waited), {h['seconds']}s")
    for model_id, reason in list(h["failed"].items())[:10]:
        click.echo(f"    failed {model_id}: {reason}")
    click.echo(f"cards in {h['out_dir']}: {h['cards']}, usable runs {h['usable']}")
    for reason, n in list(h["rejected"].items())[:5]:
        click.echo(f"    {n:>6,} x {reason[:110]}")
    ingest = summary.get("ingest")
    if isinstance(ingest, dict):
        if "read" in ingest:
            click.echo(f"ingest into {ingest['kb']}: read {ingest['read']}, ingested {ingest['ingested']}, "
                       f"duplicates {ingest['duplicates']}, rejected {ingest['rejected']}")
            for err in ingest.get("errors") or []:
                click.secho(f"    error: {err}", fg="red")
        else:
            click.echo(f"ingest: {ingest.get('error') or ingest.get('skipped')}")


__all__ = ["harvest"]

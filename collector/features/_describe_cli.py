"""``metaml describe``: print the meta-features of a text dataset.

Exposes the click command :data:`describe`; the root CLI registers it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from collector.errors import CollectorError
from collector.features._public_text import load_public_text, public_text_source
from collector.features._text_io import load_text_dataset
from collector.sources import PUBLIC_DATA_ENV, public_data_root


def default_public_text_root(environ: dict[str, str] | None = None) -> Path:
    """The public text datasets folder: ``text/`` of :func:`collector.sources.public_data_root`
    (``$METAML_PUBLIC_DATA``, else ``../shared/data`` beside the working directory).

    Args:
        environ: the environment to read (``os.environ`` when ``None``).

    Returns:
        The folder (not checked to exist).
    """
    return public_data_root(environ) / "text"


@click.command("describe")
@click.argument("path")
@click.option("--split", default=None, help="Split to read from a DatasetDict or split folder [default: train].")
@click.option("--text-column", default=None, help="Text column (found by name when omitted).")
@click.option("--label-column", default=None, help="Label column (found by name when omitted).")
@click.option("--text-pair-column", default=None, help="Second text column of a sentence-pair dataset.")
@click.option("--name", default=None, help="Dataset name to report (default: file stem or canonical name).")
@click.option("--domain", default=None, help="Domain to record (news, reviews, social...); never guessed.")
@click.option(
    "--landmark-sample",
    default=2000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rows for the TF-IDF + logistic regression landmark (0 skips it).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every sample drawn.")
@click.option(
    "--public-root",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Folder of the public text datasets [default: ${PUBLIC_DATA_ENV}/text, else ../shared/data/text].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(
    path: str,
    split: str | None,
    text_column: str | None,
    label_column: str | None,
    text_pair_column: str | None,
    name: str | None,
    domain: str | None,
    landmark_sample: int,
    seed: int,
    public_root: Path | None,
    as_json: bool,
) -> None:
    """Print the dataset meta-features of PATH.

    PATH is a CSV/TSV/JSONL/Parquet file, a Hugging Face save_to_disk folder, or the name of a public text dataset
    (folder or canonical name, e.g. glue_sst2 or glue/sst2) under --public-root.
    """
    from collector.features._dataset import compute_meta_features

    try:
        if Path(path).exists():
            ds = load_text_dataset(
                path,
                split=split or "train",
                text_column=text_column,
                label_column=label_column,
                text_pair_column=text_pair_column,
            )
        elif _is_public_name(path):
            source = public_text_source(path)
            if split is not None and split != source.split:
                raise click.ClickException(f"public dataset {source.name} holds only its {source.split} split here")
            if text_column or label_column or text_pair_column:
                raise click.ClickException("column options do not apply to a public dataset (its layout is known)")
            ds = load_public_text(public_root or default_public_text_root(), path)
            domain = domain or source.domain
        else:
            raise click.ClickException(f"{path}: no such file or folder, and not a public text dataset name")
        if name:
            ds = replace(ds, name=name)
        meta = compute_meta_features(
            ds.texts,
            ds.labels,
            text_pairs=ds.text_pairs,
            landmark_sample=landmark_sample,
            seed=seed,
            domain=domain,
        )
    except (CollectorError, ValueError, OSError) as e:
        raise click.ClickException(_one_line(e)) from None
    header = {"name": ds.name, "split": ds.split, "source": ds.source}
    if as_json:
        click.echo(json.dumps({**header, "meta": meta.model_dump(mode="json")}, indent=2))
    else:
        click.echo(_table({**header, **meta.model_dump(mode="json")}))


def _is_public_name(name: str) -> bool:
    try:
        public_text_source(name)
    except CollectorError:
        return False
    return True


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: dict[str, Any]) -> str:
    """Rows as two aligned columns: field name, value."""
    width = max(len(k) for k in rows)
    return "\n".join(f"{key:<{width}}  {_format(value)}" for key, value in rows.items())

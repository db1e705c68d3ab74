"""``metaml quickstart``: from nothing to a served meta-model in one command.

Steps (progress on stderr; the summary on stdout):

1. **Public data.** ``--from PATH``, else ``$METAML_PUBLIC_DATA``, else ``../shared/data`` (beside the working
   directory, then beside the checkout); with none of them, the sources of ``data/sources.toml`` are fetched into
   ``<kb dir>/sources`` (needs the internet; files that cannot be downloaded are reported).
2. **Knowledge base.** ``ingest <from>/metadatasets`` (a second run adds nothing: runs are deduplicated by content),
   then model features from the registry.
3. **Dataset meta-features** of the text datasets under ``<from>/text`` (``kb enrich``), skipping those described
   already.
4. **Meta-learner.** Evaluated on ``--max-folds`` held-out datasets (leave-one-dataset-out; 0 skips), trained on the
   whole knowledge base, registered as a new version in the MLflow registry and promoted to ``production``. When a
   version is registered already it is reused (promoted if none is) unless ``--retrain``.
5. **API key.** An ``admin`` key is created when the key file holds no active admin key; its secret is printed once.
6. **Serve** the API (unless ``--no-serve``).

Every location comes from the service settings (``METAML_KB``, ``METAML_KEYS_DB``, ``METAML_TRACKING_URI``,
``METAML_HOST``, ``METAML_PORT``) unless an option overrides it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from collector.errors import CollectorError
from collector.progress import progress_interval
from service.cli._common import check_kb_location, default_public_data, heartbeat, rejects_lines
from service.errors import KeyStoreError
from service.settings import get_settings

ADMIN_KEY_NAME = "admin"


def _step(n: int, total: int, message: str) -> float:
    click.secho(f"[{n}/{total}] {message}", err=True, bold=True)
    return time.perf_counter()


def _info(message: str) -> None:
    click.echo(f"      {message}", err=True)


def fetch_public_data(dest: Path) -> Path:
    """Fetch every source of the manifest into ``dest`` (files in place already are kept); returns ``dest``."""
    from collector.sources import SourceError, fetch, load_manifest

    for source in load_manifest():
        try:
            fetch(source, dest)
            _info(f"fetched {source.name}")
        except SourceError as e:
            _info(f"{source.name}: {str(e).splitlines()[0]}")
    return dest


def _ingest(kb: Any, root: Path) -> tuple[dict[str, int], list[str]]:
    """Ingest ``root``; returns the totals and, when records were rejected, the lines that say where the rejects
    report is and the top reasons (the report is written to ``<kb dir>/rejects/``)."""
    from collector.enrich import enrich_models
    from collector.ingest import ingest_path, rejects_path, write_rejects

    reports = ingest_path(kb, root, progress=True, progress_interval=progress_interval())
    totals = {k: sum(getattr(r, k) for r in reports) for k in ("read", "ingested", "duplicates", "rejected")}
    errors = [r for r in reports if r.error]
    for r in errors:
        _info(f"could not read {r.uri}: {r.error}")
    rejects: list[str] = []
    if totals["rejected"]:
        path = rejects_path(kb.home)
        write_rejects(reports, path)
        rejects = rejects_lines(reports, path)
    if totals["ingested"]:
        with heartbeat("attaching model and dataset features"):
            enrich_models(kb)
            kb.attach_features()
    return {**totals, "errors": len(errors)}, rejects


def _describe_texts(kb: Any, text_root: Path) -> tuple[int, int]:
    """Describe the public text datasets present under ``text_root`` that the datasets table lacks; returns (new,
    already described)."""
    from collector.enrich import enrich_datasets
    from collector.features import PUBLIC_TEXT_DATASETS

    present = sorted(p.name for p in text_root.iterdir() if p.is_dir() and p.name in PUBLIC_TEXT_DATASETS) \
        if text_root.is_dir() else []
    described = set(kb.table("datasets").column("name").to_pylist()) if kb.exists() else set()
    todo = [f for f in present if PUBLIC_TEXT_DATASETS[f].name not in described]
    if todo:
        with heartbeat(f"describing {len(todo)} dataset(s)"):
            enrich_datasets(kb, text_root, names=todo, progress=True)
    return len(todo), len(present) - len(todo)


#: The held-out check's figures, as printed: (summary column, heading).
CHECK_METRICS = (("spearman", "spearman"), ("ndcg@5", "ndcg@5"), ("regret@1", "regret@1"), ("rmse", "rmse"))


def _evaluation(kb_path: str, max_folds: int) -> tuple[dict[str, Any], list[str]]:
    """The quick held-out check: leave-one-dataset-out on ``max_folds`` datasets, the meta-learner beside every
    baseline in the same folds. Returns the meta-learner's metrics (recorded with the registered model) and the
    lines that say what the check is, its figures, and where the full evaluation is."""
    from collector.store import KnowledgeBase
    from metaml._data import load_runs
    from metaml._evaluate import default_predictors, evaluate

    with heartbeat("evaluating"):
        runs = load_runs(KnowledgeBase(kb_path))
        result = evaluate(runs, "lodo", predictors=default_predictors(), max_folds=max_folds, progress=True)
    summary = result.summary()
    metrics = {str(k): float(v) for k, v in summary.loc["metaml"].items()} if "metaml" in summary.index else {}
    return metrics, check_lines(result.folds, summary)


def check_lines(held_out: list[str], summary: Any) -> list[str]:
    """What the quickstart prints about its held-out check: the protocol, which datasets were held out and how many
    tasks they hold, the units, one row per predictor (the meta-learner first, then the baselines of the same folds),
    and the command giving the full report."""
    tasks = int(summary["tasks"].max()) if "tasks" in summary and len(summary) else 0
    names = ", ".join(held_out[:5]) + (f" and {len(held_out) - 5} more" if len(held_out) > 5 else "")
    lines = [f"held-out check: leave-one-dataset-out on {len(held_out)} held-out dataset(s) ({names}; {tasks} "
             "task(s)), each fold trained on every other dataset;",
             "  per task, averaged: spearman and ndcg@5 of the predicted ranking of the held-out configurations "
             "(1 is best), regret@1 and rmse in score points, 0-100 (0 is best)",
             f"  {'predictor':<20}" + "".join(f"{head:>10}" for _, head in CHECK_METRICS)]
    for name, row in summary.iterrows():
        lines.append(f"  {name!s:<20}" + "".join(f"{row[col]:>10.3f}" if col in row else f"{'-':>10}"
                                                for col, _ in CHECK_METRICS))
    lines.append(f"  a check on {len(held_out)} dataset(s) is noisy: `metaml evaluate --protocol lodo` holds out every "
                 "eligible dataset and writes the full report (per source, intervals, noise ceiling)")
    return lines


def _model(kb_path: str, uri: str, artifact_dir: Path, *, retrain: bool, max_folds: int) -> dict[str, Any]:
    """Reuse the registered model, or evaluate, train, register; then make sure a version is in production."""
    from metaml._tracking import PRODUCTION_ALIAS, list_versions, promote
    from metaml._train import train_and_register

    versions = list_versions(tracking_uri=uri)
    if versions and not retrain:
        served = next((v for v in versions if PRODUCTION_ALIAS in v.aliases), None)
        if served is not None:
            _info(f"reusing version {served.version} ({PRODUCTION_ALIAS}); --retrain trains a new one")
            return {"version": served.version, "trained": False, "promoted": False}
        latest = versions[-1]
        promote(latest.version, tracking_uri=uri)
        _info(f"reusing version {latest.version}, now promoted to {PRODUCTION_ALIAS}")
        return {"version": latest.version, "trained": False, "promoted": True}
    evaluation: dict[str, Any] = {}
    if max_folds > 0:
        _info(f"evaluating on {max_folds} held-out datasets (leave-one-dataset-out) against the baselines")
        evaluation, lines = _evaluation(kb_path, max_folds)
        for line in lines:
            _info(line)
    _info("training on the whole knowledge base")
    with heartbeat("training"):
        result = train_and_register(kb_path, tracking_uri=uri, evaluation=evaluation,
                                    evaluation_protocol="lodo" if evaluation else None, out_dir=artifact_dir)
    _info(f"trained on {result.train_runs:,} runs in {result.train_seconds:.0f}s; registered as version "
          f"{result.version}")
    assert result.version is not None
    promote(result.version, tracking_uri=uri)
    _info(f"version {result.version} promoted to {PRODUCTION_ALIAS}")
    return {"version": result.version, "trained": True, "promoted": True, "train_runs": result.train_runs}


def _admin_key(keys_path: Path) -> dict[str, Any]:
    from service.keys import create_key, list_keys

    active = list_keys(keys_path, include_revoked=False)
    admin = next((k for k in active if "admin" in k.scopes), None)
    if admin is not None:
        return {"key_id": admin.key_id, "name": admin.name, "secret": None}
    taken = {k.name for k in active}
    name = ADMIN_KEY_NAME if ADMIN_KEY_NAME not in taken else f"quickstart-{ADMIN_KEY_NAME}"
    key, secret = create_key(keys_path, name, ["admin"])
    return {"key_id": key.key_id, "name": key.name, "secret": secret}


@click.command("quickstart")
@click.option("--from", "from_path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of the public data (metadatasets/, text/) [default: $METAML_PUBLIC_DATA, else "
                   "../shared/data, else fetched from the sources' repositories].")
@click.option("--kb", "kb_path", default=None, metavar="LOCATION", callback=check_kb_location,
              help="The knowledge base, a DuckDB file or a lakehouse URI [default: $METAML_KB, else "
                   "metaml-data/kb.duckdb].")
@click.option("--tracking-uri", default=None,
              help="MLflow registry [default: $METAML_TRACKING_URI, else sqlite:///metaml-data/mlflow.db].")
@click.option("--keys-db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The API key file [default: $METAML_KEYS_DB, else keys.db beside the knowledge base].")
@click.option("--host", default=None, help="Interface the API listens on [default: $METAML_HOST, else 127.0.0.1].")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port [default: $METAML_PORT, else 8000].")
@click.option("--max-folds", default=3, show_default=True, type=click.IntRange(0),
              help="Held-out datasets the meta-learner is evaluated on before training (0: skip the evaluation).")
@click.option("--retrain", is_flag=True, help="Train and promote a new version even when one is registered.")
@click.option("--no-serve", is_flag=True, help="Prepare everything, print where it is, and exit.")
def quickstart(from_path: Path | None, kb_path: str | None, tracking_uri: str | None, keys_db: Path | None,
               host: str | None, port: int | None, max_folds: int, retrain: bool, no_serve: bool) -> None:
    """Build the knowledge base from the public sources, train and promote the meta-learner, create an admin key,
    and serve the API. Run it again: it reuses what exists (ingest adds nothing; no retraining without --retrain)."""
    from collector.store import KnowledgeBase
    from metaml._tracking import DEFAULT_TRACKING_URI
    from metaml.errors import MetamlError

    settings = get_settings()
    kb_path = kb_path or settings.kb
    kb = KnowledgeBase(kb_path)
    keys_path = keys_db or (settings.keys_path if kb_path == settings.kb else kb.home / "keys.db")
    uri = tracking_uri or settings.tracking_uri or DEFAULT_TRACKING_URI
    host = host or settings.host
    port = settings.port if port is None else port
    total = 6
    try:
        started = _step(1, total, "public data")
        root = from_path or default_public_data()
        if root is None:
            dest = kb.home / "sources"
            _info(f"no local copy found: fetching the public sources into {dest}")
            root = fetch_public_data(dest)
        _info(f"reading {root}")

        started = _step(2, total, f"knowledge base {kb}: ingesting {root / 'metadatasets'}")
        if not (root / "metadatasets").is_dir():
            raise click.ClickException(f"{root} holds no metadatasets/ folder")
        ingested, rejects = _ingest(kb, root / "metadatasets")
        _info(f"read {ingested['read']:,}: ingested {ingested['ingested']:,}, already there "
              f"{ingested['duplicates']:,}, rejected {ingested['rejected']:,} ({time.perf_counter() - started:.0f}s)")
        for line in rejects:
            _info(line)
        runs = kb.count()
        if runs == 0:
            raise click.ClickException(f"no runs could be read from {root / 'metadatasets'}")

        started = _step(3, total, f"dataset meta-features from {root / 'text'}")
        new, known = _describe_texts(kb, root / "text")
        if ingested["ingested"]:
            with heartbeat("attaching dataset features"):
                kb.attach_features()
        _info(f"described {new} dataset(s), {known} already described ({time.perf_counter() - started:.0f}s)")

        started = _step(4, total, f"meta-learner (registry {uri})")
        model = _model(kb_path, uri, kb.home / "models" / "latest", retrain=retrain, max_folds=max_folds)
        _info(f"done ({time.perf_counter() - started:.0f}s)")

        _step(5, total, f"API keys {keys_path}")
        key = _admin_key(keys_path)
        _info(f"created admin key {key['key_id']}" if key["secret"] else
              f"an admin key exists ({key['key_id']}, {key['name']})")
    except (CollectorError, MetamlError, KeyStoreError) as e:
        raise click.ClickException(str(e)) from e

    url = f"http://{host}:{port}"
    lines = [
        "metaml is ready",
        f"  knowledge base   {kb} ({runs:,} runs)",
        f"  meta-model       version {model['version']} (production)" + (" - trained now" if model["trained"] else ""),
        f"  MLflow registry  {uri}",
        f"  API keys         {keys_path}",
    ]
    if key["secret"]:
        lines.append(f"  admin key        {key['secret']}")
        lines.append("                   (shown once: store it now; send it as 'Authorization: Bearer <key>')")
    else:
        lines.append(f"  admin key        {key['key_id']} ({key['name']}); its secret was shown when it was created")
    lines += [f"  API              {url}" + (" (not started: --no-serve)" if no_serve else ""),
              f"  docs             {url}/docs"]
    click.echo("\n".join(lines))
    if no_serve:
        return
    _step(6, total, f"serving on {url} (Ctrl-C stops)")
    from service.cli.serve import serve

    os.environ["METAML_TRACKING_URI"] = uri
    click.get_current_context().invoke(serve, host=host, port=port, kb_path=kb_path, keys_db=keys_path, workers=1,
                                       reload=False, log_level="info")


__all__ = ["default_public_data", "fetch_public_data", "quickstart"]

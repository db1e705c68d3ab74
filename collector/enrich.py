"""Attach features to stored runs: model features from the registry, dataset meta-features from raw text.

What a run is given when it is stored, whether by ``metaml ingest`` or an upload over HTTP: model features for the
models it names (:func:`model_features`, kept in the ``models`` table), and its missing dataset meta-features and
model features from the ``datasets`` and ``models`` tables (``KnowledgeBase.attach_features``; an upload does both in
its own transaction, ``KnowledgeBase.append(..., models=..., attach_features=True)``).

Features are enrichment, not identity: they live in the ``models`` and ``datasets`` tables and fill the runs' missing
feature columns (values a run carries itself are never overwritten), so a run's id does not change when its features
are computed later.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from collector.features import ModelRegistry, describe_public_texts, public_text_source
from collector.store import KnowledgeBase


def model_features(ids: Iterable[str | None], registry: ModelRegistry | None = None) -> dict[str, dict[str, Any]]:
    """The registry's features (or what the id alone tells) of each model id, with their ``feature_source``; ids
    nothing is known of are left out.

    Args:
        ids: model ids (None and empty ones are skipped).
        registry: the model registry (default: the shipped one).
    """
    registry = registry if registry is not None else ModelRegistry.load_default()
    features = {}
    for mid in sorted({i for i in ids if i}):
        found = registry.lookup(mid)
        if found:
            features[mid] = {**found, "feature_source": found.get("feature_source") or
                             ("registry" if mid in registry else "inferred")}
    return features


def batch_model_ids(batch: pa.Table) -> set[str]:
    """The model ids and base-model ids the rows of ``batch`` (runs-table columns) name."""
    ids = set()
    for col in ("model_id", "model_base_model"):
        if col in batch.column_names:
            ids |= {v for v in batch.column(col).unique().to_pylist() if v}
    return ids


def enrich_models(kb: KnowledgeBase, registry: ModelRegistry | None = None) -> int:
    """Store the registry's features (or what the id alone tells) for every model and base model the runs name.

    Returns:
        The number of models written to the ``models`` table.
    """
    ids = set(kb.scan(["model_id"]).column(0).to_pylist())
    ids |= {b for b in kb.scan(["model_base_model"]).column(0).to_pylist() if b}
    return kb.upsert_models(model_features(ids, registry))


def enrich_datasets(kb: KnowledgeBase, text_root: Path, names: list[str] | None = None, *,
                    progress: bool = False) -> int:
    """Compute the meta-features of the public text datasets under ``text_root`` and attach them to their runs.

    ``n_samples`` is the official train-split size when the folder holds only a sample or another split, so that it
    means the same for every dataset: how many examples a full fine-tuning run could see.

    Returns:
        The number of datasets written to the ``datasets`` table.
    """
    metas = describe_public_texts(text_root, names=names, progress=progress)
    for name, meta in metas.items():
        official = public_text_source(name).official_train_size
        if official:
            meta.n_samples = official
    return kb.upsert_datasets(metas, source="public-text")

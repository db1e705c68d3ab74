"""Attach features to stored runs: model features from the registry, dataset meta-features from raw text.

Features are enrichment, not identity: they live in the ``models`` and ``datasets`` tables and fill the runs' missing
feature columns (values a run carries itself are never overwritten), so a run's id does not change when its features
are computed later.
"""

from __future__ import annotations

from pathlib import Path

from collector.features import ModelRegistry, describe_public_texts, public_text_source
from collector.store import KnowledgeBase


def enrich_models(kb: KnowledgeBase, registry: ModelRegistry | None = None) -> int:
    """Store the registry's features (or what the id alone tells) for every model and base model the runs name.

    Returns:
        The number of models written to the ``models`` table.
    """
    registry = registry if registry is not None else ModelRegistry.load_default()
    ids = set(kb.scan(["model_id"]).column(0).to_pylist())
    ids |= {b for b in kb.scan(["model_base_model"]).column(0).to_pylist() if b}
    features = {}
    for mid in sorted(ids):
        found = registry.lookup(mid)
        if found:
            features[mid] = {**found, "feature_source": found.get("feature_source") or
                             ("registry" if mid in registry else "inferred")}
    return kb.upsert_models(features)


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

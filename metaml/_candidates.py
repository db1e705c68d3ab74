"""Candidate configurations for a new task, written as runs-table rows the meta-model can score.

A caller describes the task once (dataset name and/or meta-features, task type, metric, regime) and each candidate
configuration in the record's own nested shape (``model``, ``method``, ``hparams``); :func:`candidate_rows` validates
them with the record's own parts (so method names, model ids and metric names are normalized exactly as on ingest),
fills model features from the registry and dataset meta-features from the knowledge base when they are missing, and
returns one flat row per candidate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from collector.features import ModelRegistry
from collector.schema import Dataset, DatasetMeta, Hyperparameters, Method, Model, Task
from metaml._data import LEARN_COLUMNS


def _flatten(prefix: str, model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in model.model_dump(mode="json", exclude_none=True).items():
        if isinstance(value, dict) and key in ("meta",):
            out.update({f"{prefix}_{key}_{k}": v for k, v in value.items()})
        elif isinstance(value, dict):
            out[f"{prefix}_{key}"] = value
        else:
            out[f"{prefix}_{key}"] = value
    return out


def task_row(task: Mapping[str, Any], dataset: Mapping[str, Any], *, source: str = "upload",
             dataset_meta: DatasetMeta | None = None) -> dict[str, Any]:
    """The task part of every candidate row: task, dataset and its meta-features, provenance source.

    Args:
        task: ``Task`` fields (``primary_metric`` at least, e.g. ``{"primary_metric": "accuracy"}``).
        dataset: ``Dataset`` fields (``name`` at least); ``meta`` may carry meta-features.
        source: what the rows are compared with (``upload`` for a new task).
        dataset_meta: meta-features to use where ``dataset`` carries none (e.g. from the knowledge base).
    """
    t = Task.model_validate(dict(task))
    d = Dataset.model_validate(dict(dataset))
    if dataset_meta is not None:
        merged = {**dataset_meta.model_dump(exclude_none=True), **d.meta.model_dump(exclude_none=True)}
        d.meta = DatasetMeta.model_validate(merged)
    row = {**_flatten("task", t), **_flatten("dataset", d), "provenance_source": source}
    return row


def candidate_rows(task: Mapping[str, Any], configs: Sequence[Mapping[str, Any]], *,
                   registry: ModelRegistry | None = None) -> pd.DataFrame:
    """One runs-table row per candidate configuration (``{"model": {...}, "method": {...}, "hparams": {...}}``).

    Args:
        task: the output of :func:`task_row`.
        configs: candidate configurations in the record's nested shape.
        registry: model features for models the configuration does not describe (default: the shipped registry).

    Raises:
        pydantic.ValidationError: a configuration is invalid (unknown method, negative learning rate...).
    """
    registry = registry if registry is not None else ModelRegistry.load_default()
    rows = []
    for config in configs:
        model = Model.model_validate(dict(config["model"]))
        found = registry.lookup(model.id)
        filled = {k: v for k, v in found.items() if k in Model.model_fields and getattr(model, k) is None}
        model = Model.model_validate({**model.model_dump(exclude_none=True), **filled})
        method = Method.model_validate(dict(config.get("method") or {"name": "full"}))
        hparams = Hyperparameters.model_validate(dict(config.get("hparams") or {}))
        row = {**task, **_flatten("model", model), **_flatten("method", method), **_flatten("hparams", hparams)}
        if isinstance(row.get("method_config"), dict):
            row["method_config"] = json.dumps(row["method_config"], sort_keys=True) if row["method_config"] else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in LEARN_COLUMNS:
        if col not in frame:
            frame[col] = None
    return frame[list(LEARN_COLUMNS)]

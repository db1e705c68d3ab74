"""Factories for records in the canonical shape (tests build their inputs with these, then vary one thing)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE: dict[str, Any] = {
    "task": {"type": "text-classification", "primary_metric": "accuracy"},
    "dataset": {"name": "glue/sst2", "n_train_used": 1000},
    "model": {"id": "roberta-base"},
    "method": {"name": "lora", "lora_r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]},
    "hparams": {"learning_rate": 3e-4, "batch_size": 16, "epochs": 3, "seed": 1, "lr_scheduler": "linear"},
    "outcome": {
        "score": 0.91,
        "split": "validation",
        "metrics": {"accuracy": 0.91, "loss": 0.25},
        "runtime_s": 1234.5,
        "curve": [{"epoch": 1, "metric": "accuracy", "value": 0.88}, {"epoch": 2, "metric": "accuracy", "value": 0.9}],
    },
    "hardware": {"accelerator": "NVIDIA A100", "accelerator_count": 1, "software": {"transformers": "4.44.0"}},
    "provenance": {"source": "upload", "license": "cc-by-4.0"},
}


def record(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid record; ``i`` varies the seed and score so records differ; ``overrides`` set dotted paths."""
    rec = copy.deepcopy(BASE)
    rec["hparams"]["seed"] = i
    rec["outcome"]["score"] = round(0.5 + (i % 997) / 2000, 6)
    for dotted, value in overrides.items():
        node = rec
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return rec


DELETE = object()


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def example_module(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module, loaded by its path and not registered (the examples are no package; Ray
    ships what such a module defines to its workers by value)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def curve_knowledge_base(public_data: Path, work: Path) -> Any:
    """A knowledge base of the real files whose runs carry learning curves: the OPDA DeBERTa random search on
    MultiNLI (accuracy every 1,000 steps) and the PEFT method comparison (GSM8K and an image task)."""
    from collector.ingest import ingest_path
    from collector.store import KnowledgeBase

    kb = KnowledgeBase(work / "kb.duckdb")
    for source in ("opda_deberta", "peft_method_comparison"):
        ingest_path(kb, public_data / "metadatasets" / source)
    return kb


def curve_model_artifact(kb: Any, directory: Path) -> Path:
    """A small meta-model of ``kb`` with the curve estimator fit on its curves, saved as one artifact."""
    from metaml._artifact import save_model
    from metaml._curves import fit_curve_model, load_curve_runs
    from metaml._data import load_runs
    from metaml._estimators import MetaModel, OutcomeEstimator

    model = MetaModel(outcome=OutcomeEstimator(n_estimators=30, random_state=0), random_state=0).fit(load_runs(kb))
    return save_model(model, directory, curve=fit_curve_model(load_curve_runs(kb), n_estimators=100))

"""TaskWeb (github.com/danieljkim0118/TaskWeb): Trainer output directories ``<TARGET>/<SOURCE>/<RUN>`` of
intermediate-task transfer, mapped by their path and TaskWeb's tables.

Each run fine-tuned a base model on SOURCE, then on TARGET. TARGET gives the dataset, task, primary metric and
evaluation split (:data:`TASKWEB_TASKS`); SOURCE the upstream task; the run name (``t5b-lora-e10-lr1e3-b8-s20``) the
model (:data:`TASKWEB_MODELS`), method (:data:`TASKWEB_METHODS`), epochs, learning rate, batch size and seed. Why
each table says what it says (T5 v1.1 LM-adapted ids, imdb's test split, stsb's Spearman, ignored card datasets) is
in ``docs/sources/hf_trainer.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from collector.formats._base import RecordProblem
from collector.importers.hf.run_mapping import (
    Draft,
    TrainerReport,
    adapter_method,
    apply_train_results,
    eval_metrics,
    mark_failure,
    merge_hparams,
    own_percent,
    software,
    state_curve,
    state_extra,
    state_hparams,
    trusted_card,
)

#: TaskWeb task name -> (canonical dataset, task type, primary metric, evaluation split).
TASKWEB_TASKS: dict[str, tuple[str, str, str, str]] = {
    "anli_r3": ("anli/r3", "text-classification", "accuracy", "validation"),
    "boolq": ("super_glue/boolq", "text-classification", "accuracy", "validation"),
    "cb": ("super_glue/cb", "text-classification", "accuracy", "validation"),
    "copa": ("super_glue/copa", "multiple-choice", "accuracy", "validation"),
    "cosmosqa": ("cosmos_qa", "multiple-choice", "accuracy", "validation"),
    "hellaswag": ("hellaswag", "multiple-choice", "accuracy", "validation"),
    "imdb": ("imdb", "text-classification", "accuracy", "test"),
    "mrpc": ("glue/mrpc", "text-classification", "accuracy", "validation"),
    "piqa": ("piqa", "multiple-choice", "accuracy", "validation"),
    "qnli": ("glue/qnli", "text-classification", "accuracy", "validation"),
    "qqp": ("glue/qqp", "text-classification", "accuracy", "validation"),
    "quartz": ("quartz", "multiple-choice", "accuracy", "validation"),
    "rotten_tomatoes": ("rotten_tomatoes", "text-classification", "accuracy", "validation"),
    "rte": ("glue/rte", "text-classification", "accuracy", "validation"),
    "scitail": ("scitail", "text-classification", "accuracy", "validation"),
    "snli": ("snli", "text-classification", "accuracy", "validation"),
    "socialiqa": ("social_i_qa", "multiple-choice", "accuracy", "validation"),
    "squad_v2": ("squad_v2", "question-answering", "f1", "validation"),
    "sst2": ("glue/sst2", "text-classification", "accuracy", "validation"),
    "stsb": ("glue/stsb", "text-regression", "spearman", "validation"),
    "wic": ("super_glue/wic", "text-classification", "accuracy", "validation"),
    "winogrande": ("winogrande", "multiple-choice", "accuracy", "validation"),
    "wsc": ("super_glue/wsc", "text-classification", "accuracy", "validation"),
}
#: TaskWeb run-name model prefix -> (Hub id, family).
TASKWEB_MODELS: dict[str, tuple[str, str]] = {
    "gpt2m": ("gpt2-medium", "gpt2"),
    "roberta": ("roberta-base", "roberta"),
    "t5s": ("google/t5-small-lm-adapt", "t5"),
    "t5b": ("google/t5-base-lm-adapt", "t5"),
    "t5l": ("google/t5-large-lm-adapt", "t5"),
}
#: TaskWeb run-name method token (absent = full fine-tuning) -> (method name, adapter architecture).
TASKWEB_METHODS: dict[str | None, tuple[str, str | None]] = {
    None: ("full", None), "bitfit": ("bitfit", None), "lora": ("lora", None), "pfeiffer": ("adapter", "pfeiffer"),
}
_TASKWEB_RUN = re.compile(
    r"(?P<model>[a-z0-9]+)(?:-(?P<method>[a-z]+))?-e(?P<epochs>\d+)-lr(?P<lr_m>\d+)e(?P<lr_e>\d+)"
    r"-b(?P<batch>\d+)-s(?P<seed>\d+)"
)


@dataclass
class TaskWebRun:
    """What a TaskWeb run's path says."""

    target: str
    source: str
    model: str
    method: str | None
    epochs: int
    learning_rate: float
    batch: int
    seed: int


def taskweb_run(path: str) -> TaskWebRun | None:
    """The TaskWeb run at ``path`` (``.../<TARGET>/<SOURCE>/<RUN>``, both task names known and a TaskWeb run name),
    or None for any other path."""
    parts = path.split("/")
    if len(parts) < 3:
        return None
    target, source, run = parts[-3:]
    match = _TASKWEB_RUN.fullmatch(run)
    if match is None or target not in TASKWEB_TASKS or source not in TASKWEB_TASKS:
        return None
    return TaskWebRun(
        target=target, source=source, model=match.group("model"), method=match.group("method"),
        epochs=int(match.group("epochs")), learning_rate=float(f"{match.group('lr_m')}e-{match.group('lr_e')}"),
        batch=int(match.group("batch")), seed=int(match.group("seed")),
    )


def build_taskweb(report: TrainerReport, tw: TaskWebRun, locator: str, license: str | None) -> Draft:
    """The record draft of one TaskWeb run (metric scale decided later, with its group: target, model, method).

    Raises:
        RecordProblem: an unknown model prefix or method token, or the target's primary metric is missing.
    """
    if tw.model not in TASKWEB_MODELS:
        raise RecordProblem("model.id", f"unknown TaskWeb model prefix {tw.model!r} (known: "
                            f"{', '.join(TASKWEB_MODELS)})")
    if tw.method not in TASKWEB_METHODS:
        raise RecordProblem("method.name", f"unknown TaskWeb method token {tw.method!r} (known: bitfit, lora, "
                            "pfeiffer, none)")
    dataset_name, task_type, primary, split = TASKWEB_TASKS[tw.target]
    model_id, family = TASKWEB_MODELS[tw.model]
    run = eval_metrics(report.eval)
    if primary not in run.reported:
        raise RecordProblem("outcome.score", f"{report.eval_file} has no {primary} (the primary metric of "
                            f"{tw.target}); it reports: {', '.join(sorted(run.metrics)) or 'nothing'}")
    outcome: dict[str, Any] = {"status": "ok", "split": split}
    dataset: dict[str, Any] = {"name": dataset_name}
    run.extra["upstream_task"] = TASKWEB_TASKS[tw.source][0]
    apply_train_results(report.train, report.state, run, outcome, dataset)
    run.extra.update(state_extra(report.state))
    mark_failure(run, primary, outcome)

    card = trusted_card(report, run)
    upstream = _upstream_checkpoint(report, card)
    if upstream:
        run.extra["upstream_checkpoint"] = upstream
    name_hp = {"learning_rate": tw.learning_rate, "batch_size": tw.batch, "epochs": float(tw.epochs),
               "seed": tw.seed}
    layers = [("state", state_hparams(report.state)), ("dirname", name_hp), ("extra", {"extra": run.extra})]
    if card is not None:
        layers.append(("card", card.record_hparams()))
    method_name, architecture = TASKWEB_METHODS[tw.method]
    method = adapter_method(report.adapter, report.head) or {"name": method_name}
    method["name"] = method_name
    if architecture:
        method.setdefault("config", {})["adapter_architecture"] = architecture
    data: dict[str, Any] = {
        "task": {"type": task_type, "primary_metric": primary},
        "dataset": dataset,
        "model": {"id": model_id, "family": family, "upstream_task": TASKWEB_TASKS[tw.source][0]},
        "method": method,
        "hparams": merge_hparams(layers),
        "outcome": outcome,
        "provenance": {"source": "taskweb", "license": license},
    }
    versions = software(report, card)
    if versions:
        data["hardware"] = {"software": versions}
    curve = state_curve(report.state) or (card.curve() if card is not None else [])
    return Draft(data=data, locator=locator, metrics=run.metrics, primary=primary, curve=curve,
                 own_percent=own_percent(run.metrics), group=(tw.target, tw.model, method_name))


def _upstream_checkpoint(report: TrainerReport, card: Any) -> str | None:
    """The SOURCE-stage checkpoint a TaskWeb run started from, when its card or config.json names it."""
    for value in (card.base_model if card is not None else None, (report.config or {}).get("_name_or_path")):
        if isinstance(value, str) and "/outputs/" in value:
            return value
    return None


__all__ = ["TASKWEB_METHODS", "TASKWEB_MODELS", "TASKWEB_TASKS", "TaskWebRun", "build_taskweb", "taskweb_run"]

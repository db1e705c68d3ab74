"""Importer of the PEFT method comparison suite's result files (``--format peft_bench``).

Source: ``huggingface/peft``, folder ``method_comparison/`` (Apache-2.0): every historical version of
``method_comparison/<benchmark>/results/*.json``, shipped as ``results_raw.tar.gz`` with members
``raw/<benchmark>/results/<experiment>[--<created_at>]__blob-<hash>.json`` (418 files, read in place). Input: the
source folder or the archive itself. Details and measured counts: ``docs/sources/peft_bench.md``.

One run per distinct experiment
-------------------------------
A run is identified by ``(benchmark, run_info.experiment_name, run_info.created_at)``: 418 files hold 271 runs
(239 MetaMathQA, 32 image-gen); the other 147 files are the same run re-committed after the suite renamed keys
(``cuda_memory_*`` -> ``accelerator_memory_*``, ``system_info.gpu`` -> ``accelerator``, ``train_config.max_length``
-> ``max_seq_length``, one ``acceelrator_memory_max`` typo). Every spelling is read, the record is built from one
representative version per run (the one with the most fields, then the first member name) and yielded once per
file, so the pipeline stores it once and counts the re-commits as duplicates. ``created_at`` is kept in
``hparams.extra`` so two real re-runs of the same experiment stay two runs.

Field mapping (``run_info`` / ``train_info`` / ``meta_info``)
---------------------------------------------------------------
* task: MetaMathQA -> ``text-generation``, primary metric ``accuracy`` (exact-answer accuracy on GSM8K, unit scale;
  the suite calls it "test accuracy"; ``accuracy`` rather than ``exact_match`` because the answer is extracted and
  compared numerically). image-gen -> ``other``, primary metric ``dino_similarity`` (cosine similarity of DINOv2
  embeddings of generated vs reference images; declared ``signed_unit``, higher is better). The image-gen runs are
  KEPT: same methods, same cost columns, and the task type keeps them apart from the text tasks.
* dataset: MetaMathQA -> ``gsm8k`` (evaluation set; trained on MetaMathQA: ``hparams.extra.train_dataset =
  "meta-math/MetaMathQA"``), ``n_train_used`` = the final "train samples" (examples seen, 20,000 at 5,000 steps x
  4); image-gen -> ``train_config.dataset_id``; ``n_train_used`` None (the few images are repeated).
* model: ``train_config.model_id`` (``meta-llama/Llama-3.2-3B`` / ``black-forest-labs/FLUX.2-klein-base-4B``),
  ``model.revision`` = ``meta_info.model_info.sha``.
* method: ``peft_config.peft_type`` lower-cased through ``canonical_method`` (``LORA`` -> lora, ``P_TUNING`` ->
  p_tuning, ...); ``LORA`` with ``use_dora: true`` -> ``dora``; no ``peft_config`` (experiment
  ``full-finetuning/...``) -> ``full``. Types the vocabulary does not know are passed as they are, so the schema
  REJECTS them with "unknown method" (listed in the docs). ``r`` -> ``lora_r`` for the rank-based methods
  (:data:`RANK_METHODS`); ``lora_alpha``, ``lora_dropout``, ``target_modules`` (a regex string becomes a one-item
  list), ``num_virtual_tokens`` -> ``n_virtual_tokens``; ``train_info.num_trainable_params`` -> ``trainable_params``;
  the whole ``peft_config`` (minus ``peft_version`` and ``base_model_name_or_path``) -> ``method.config``.
* hparams: ``optimizer_type`` (AdamW, lora-fa), ``optimizer_kwargs.lr`` / ``weight_decay`` (other optimizer kwargs ->
  ``extra.optimizer_kwargs``), ``lr_scheduler``, ``batch_size``, ``max_steps``, ``seed``, ``dtype`` -> precision
  (bfloat16 -> bf16), ``max_seq_length`` / ``max_length``, ``warmup_step_ratio`` -> ``warmup_ratio``; the other
  train_config keys (eval_steps, batch_size_eval, grad_norm_clip, query_template, generation_kwargs, compile, use_amp,
  ...; image-gen prompts and DINO settings) -> ``hparams.extra`` with ``experiment_name``, ``created_at``,
  ``peft_branch``, ``benchmark``.
* outcome: ``train_info.status`` "success" -> ok; anything else -> failed (``error_kind`` oom / timeout / error from
  ``run_info.error_msg``). Score = the final metrics entry's ``test accuracy`` / ``test dino_similarity``;
  ``outcome.metrics`` = that metric plus ``forgetting`` / ``drift``, ``train_loss`` and ``train_total_tokens``;
  ``train_time`` -> ``runtime_s``; ``accelerator_memory_max`` (or ``cuda_memory_max``) bytes / 2**30 ->
  ``peak_memory_gb``; curve = per eval step ``{step, metric: accuracy|dino_similarity, value: valid ...}`` and
  ``{step, metric: loss, value: train loss}``. Per-step timing / memory / tokens-per-second columns are not kept.
* hardware: ``system_info.accelerator`` (or ``gpu``) -> ``accelerator``; package versions -> ``software``.
* Not kept: ``pytorch_info`` (build flags), ``system_info`` kernel strings, ``total_time`` (includes evaluation;
  ``train_time`` is the runtime), ``file_size`` and ``num_total_params`` go to ``hparams.extra``.

Rejected: a member that is not JSON or lacks ``run_info`` / ``train_info``; an ok run without its test metric.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.importers._failures import error_kind
from collector.schema._vocab import canonical_method

ARCHIVE = "results_raw.tar.gz"
LICENSE = "Apache-2.0"
GIB = float(2**30)

_MEMBER = re.compile(r"^raw/(?P<bench>[^/]+)/results/(?P<file>[^/]+\.json)$")

#: PEFT types whose ``r`` is a rank (stored as ``method.lora_r``); for OFT/BOFT ``r`` counts blocks and stays in config.
RANK_METHODS = frozenset({
    "LORA", "ADALORA", "LOHA", "LOKR", "VERA", "RANDLORA", "DELORA", "GRALORA", "VBLORA", "HRA", "BONE", "MISS",
    "LILY", "PSOFT", "PVERA", "TINYLORA", "UNILORA", "BDLORA", "HIRA", "GLORA", "FROD",
})

#: benchmark -> (task type, primary metric key in the metrics entries, task block).
BENCHMARKS: dict[str, dict[str, Any]] = {
    "MetaMathQA": {
        "task": {"type": "text-generation", "primary_metric": "accuracy"},
        "source_metric": "accuracy",
        "dataset": "gsm8k",
        "train_dataset": "meta-math/MetaMathQA",
    },
    "image-gen": {
        "task": {"type": "other", "primary_metric": "dino_similarity", "metric_scale": "signed_unit",
                 "higher_is_better": True},
        "source_metric": "dino_similarity",
        "dataset": None,
        "train_dataset": None,
    },
}

_TRAIN_CONFIG_MAPPED = {"model_id", "dtype", "batch_size", "max_steps", "seed", "optimizer_type", "optimizer_kwargs",
                        "lr_scheduler", "max_seq_length", "max_length", "warmup_step_ratio"}
_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class _Skip(Exception):
    """A result file that cannot become a record; the message is the reason."""


class PeftMethodComparison(Format):
    """PEFT's method comparison suite: 41+ PEFT methods and full fine-tuning on Llama-3.2-3B (MetaMathQA -> GSM8K)."""

    name: ClassVar[str] = "peft_bench"
    priority: ClassVar[int] = 120
    description: ClassVar[str] = "PEFT method_comparison result JSON files (results_raw.tar.gz)"
    source: ClassVar[str] = "peft_bench"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """The source folder (only this archive, no SetFit curves beside it) or the archive, by its members."""
        if path.is_dir():
            return (path / ARCHIVE).is_file() and _archive_is_peft(path / ARCHIVE)
        return path.is_file() and path.name.endswith(".tar.gz") and _archive_is_peft(path)

    def estimate(self, path: Path) -> int | None:
        """About one item per result file."""
        return 420

    def read(self, path: Path) -> Iterator[Item]:
        """Read every result file, group the versions of each run, yield one record per file.

        Raises:
            FormatError: the archive is missing, truncated or corrupt (the runs read before the damage are yielded
                first).
        """
        archive = path / ARCHIVE if path.is_dir() else path
        if not archive.is_file():
            raise FormatError(f"missing required file {ARCHIVE}", uri=str(archive))
        uri = str(archive)
        groups: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]] = {}
        rejects: list[Item] = []
        error: FormatError | None = None
        last = "the start"
        try:
            for name, data in archive_files(archive):
                last = name
                _collect(name, data, groups, rejects, uri)
        except ARCHIVE_ERRORS as e:
            error = FormatError(f"truncated or corrupt archive after member {last}: {e}", uri=uri)
        yield from rejects
        for key in sorted(groups):
            yield from _group_items(key[0], sorted(groups[key], key=lambda v: v[0]), uri)
        if error is not None:
            raise error


def _archive_is_peft(archive: Path) -> bool:
    """Peek at the first members: ``raw/<benchmark>/results/<name>.json``, and no SetFit folders."""
    for name, kind in peek_members(archive, 17):
        if kind == "file":
            return _MEMBER.match(name) is not None
        if re.match(r"^raw/(final_results_|tfew_)", name):
            return False
    return False


def _collect(name: str, data: bytes, groups: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]],
             rejects: list[Item], uri: str) -> None:
    m = _MEMBER.match(name)
    if m is None:
        rejects.append(Rejected(name, "unrecognized file in the archive (expected raw/<benchmark>/results/*.json)",
                                uri=uri))
        return
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        rejects.append(Rejected(name, f"malformed JSON: {e}", uri=uri))
        return
    run_info = doc.get("run_info") if isinstance(doc, dict) else None
    if not isinstance(run_info, dict) or not isinstance(doc.get("train_info"), dict):
        rejects.append(Rejected(name, "result file without run_info / train_info", uri=uri))
        return
    key = (m["bench"], str(run_info.get("experiment_name")), str(run_info.get("created_at")))
    groups.setdefault(key, []).append((name, doc))


def _richness(doc: dict[str, Any]) -> int:
    """How many leaf values a version holds (newer versions add fields, never drop them)."""
    if isinstance(doc, dict):
        return sum(_richness(v) for v in doc.values())
    if isinstance(doc, list):
        return sum(_richness(v) for v in doc)
    return 0 if doc is None else 1


def _group_items(bench: str, versions: list[tuple[str, dict[str, Any]]], uri: str) -> Iterator[Item]:
    """The same record once per version of the run (the pipeline counts all but one as duplicates)."""
    representative = max(versions, key=lambda v: _richness(v[1]))  # versions are sorted: ties go to the first
    try:
        record = _record(bench, representative[1])
    except _Skip as e:
        for name, _ in versions:
            yield Rejected(name, str(e), uri=uri)
        return
    for name, _ in versions:
        yield RawRecord(json.loads(json.dumps(record)), locator=name, uri=uri)


def _record(bench: str, doc: dict[str, Any]) -> dict[str, Any]:
    if bench not in BENCHMARKS:
        raise _Skip(f"unknown benchmark folder {bench!r} (known: {', '.join(BENCHMARKS)})")
    spec = BENCHMARKS[bench]
    run_info, train_info = doc["run_info"], doc["train_info"]
    train_config = run_info.get("train_config") or {}
    meta = doc.get("meta_info") or {}
    entries = [e for e in train_info.get("metrics") or [] if isinstance(e, dict)]
    final = entries[-1] if entries else {}
    outcome = _outcome(spec["source_metric"], train_info, run_info, entries, final)
    dataset_name = spec["dataset"] or train_config.get("dataset_id")
    if not dataset_name:
        raise _Skip("no dataset: train_config.dataset_id is missing")
    return {
        "task": dict(spec["task"]),
        "dataset": {
            "name": dataset_name,
            "n_train_used": final.get("train samples") if spec["dataset"] else None,
        },
        "model": {"id": train_config.get("model_id"), "revision": (meta.get("model_info") or {}).get("sha")},
        "method": _method(run_info.get("peft_config"), train_info),
        "hparams": _hparams(bench, spec, run_info, train_config, train_info, final),
        "outcome": outcome,
        "hardware": _hardware(meta),
        "provenance": {"license": LICENSE},
    }


def _method(peft_config: dict[str, Any] | None, train_info: dict[str, Any]) -> dict[str, Any]:
    trainable = train_info.get("num_trainable_params")
    if not peft_config:
        return {"name": "full", "trainable_params": trainable}
    peft_type = str(peft_config.get("peft_type") or "")
    if not peft_type:
        raise _Skip("peft_config without peft_type")
    name = peft_type.lower()
    if peft_type == "LORA" and peft_config.get("use_dora"):
        name = "dora"
    config = {k: v for k, v in peft_config.items() if k not in ("peft_version", "base_model_name_or_path")}
    rank = peft_config.get("r")
    targets = peft_config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    elif isinstance(targets, list | set | tuple):
        targets = sorted(str(t) for t in targets)
    else:
        targets = None
    method: dict[str, Any] = {
        "name": canonical_method(name) or name,
        "lora_r": rank if peft_type in RANK_METHODS and isinstance(rank, int) and rank >= 1 else None,
        "lora_alpha": _positive(peft_config.get("lora_alpha")),
        "lora_dropout": peft_config.get("lora_dropout") if isinstance(peft_config.get("lora_dropout"), int | float)
        else None,
        "target_modules": targets,
        "n_virtual_tokens": peft_config.get("num_virtual_tokens") or None,
        "trainable_params": trainable,
        "config": config,
    }
    return method


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _hparams(bench: str, spec: dict[str, Any], run_info: dict[str, Any], train_config: dict[str, Any],
             train_info: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    opt_kwargs = dict(train_config.get("optimizer_kwargs") or {})
    dtype = train_config.get("dtype")
    extra = {k: v for k, v in train_config.items() if k not in _TRAIN_CONFIG_MAPPED}
    extra.update(benchmark=bench, experiment_name=run_info.get("experiment_name"),
                 created_at=run_info.get("created_at"), peft_branch=run_info.get("peft_branch"))
    if spec["train_dataset"]:
        extra["train_dataset"] = spec["train_dataset"]
    rest = {k: v for k, v in opt_kwargs.items() if k not in ("lr", "weight_decay")}
    if rest:
        extra["optimizer_kwargs"] = rest
    for key in ("file_size", "num_total_params"):
        if train_info.get(key) is not None:
            extra[key] = train_info[key]
    if final.get("train samples") is not None:
        extra["train_samples_seen"] = final["train samples"]
    return {
        "learning_rate": opt_kwargs.get("lr"),
        "weight_decay": opt_kwargs.get("weight_decay"),
        "optimizer": train_config.get("optimizer_type"),
        "lr_scheduler": train_config.get("lr_scheduler"),
        "batch_size": train_config.get("batch_size"),
        "max_steps": train_config.get("max_steps"),
        "seed": train_config.get("seed"),
        "precision": _PRECISION.get(str(dtype), dtype),
        "max_seq_length": train_config.get("max_seq_length") or train_config.get("max_length"),
        "warmup_ratio": train_config.get("warmup_step_ratio"),
        "extra": extra,
    }


def _outcome(metric: str, train_info: dict[str, Any], run_info: dict[str, Any], entries: list[dict[str, Any]],
             final: dict[str, Any]) -> dict[str, Any]:
    status = str(train_info.get("status") or "")
    score = final.get(f"test {metric}")
    out: dict[str, Any] = {"status": "ok", "split": "test", "score": score}
    if status != "success":
        message = str(run_info.get("error_msg") or "") or f"status {status!r}"
        out.update(status="failed", error_kind=error_kind(message), error_message=message[:500])
    elif not _finite(score):
        raise _Skip(f"successful run without a finite 'test {metric}' in its final metrics entry: {score!r}")
    metrics = {metric: score} if _finite(score) else {}
    for source, target in (("forgetting", "forgetting"), ("drift", "drift"), ("train loss", "train_loss"),
                           ("train total tokens", "train_total_tokens")):
        if _finite(final.get(source)):  # NaN (e.g. drift of full fine-tuning) is dropped
            metrics[target] = final[source]
    memory = _first(train_info, "accelerator_memory_max", "acceelrator_memory_max", "cuda_memory_max")
    out.update(
        metrics=metrics,
        runtime_s=train_info.get("train_time"),
        peak_memory_gb=memory / GIB if isinstance(memory, int | float) else None,
        curve=_curve(metric, entries[:-1] if final.get(f"test {metric}") is not None else entries),
    )
    return out


def _curve(metric: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    points = []
    for e in entries:
        step = e.get("step")
        if not isinstance(step, int):
            continue
        if _finite(e.get(f"valid {metric}")):
            points.append({"step": step, "metric": metric, "value": e[f"valid {metric}"]})
        if _finite(e.get("train loss")):
            points.append({"step": step, "metric": "loss", "value": e["train loss"]})
    return points


def _finite(value: Any) -> bool:
    """A real number that is not NaN or infinite (the suite writes NaN where a metric is undefined)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def _hardware(meta: dict[str, Any]) -> dict[str, Any]:
    system = meta.get("system_info") or {}
    packages = meta.get("package_info") or {}
    software = {k.removesuffix("-version"): str(v) for k, v in packages.items()
                if k.endswith("-version") and v is not None}
    return {"accelerator": _first(system, "accelerator", "gpu"), "software": software}

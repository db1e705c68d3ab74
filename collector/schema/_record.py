"""The run record: one fine-tuning run, defined once.

The DuckDB DDL, the Arrow/Parquet schema, the JSON Schema and the API models are all derived from these classes
(see ``_derive.py``). Validation normalizes as it goes: metric names and scales (percent -> unit), method names,
model ids and dataset names all come out in their canonical form, so a record that validates is a record the
knowledge base can store as is.

Identity: ``run_id`` is derived from the record's *identity fields* (what was run and what came out), never from
provenance (who sent it, when, from which file) nor from enrichment (dataset meta-features and model features that
the knowledge base attaches later). The same run ingested twice, from two files or before and after its features
were computed, has one id.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.schema._limits import Int64, JsonMap, Name, NonNegInt, PosInt, Text
from collector.schema._vocab import (
    METHODS,
    SCALE_BOUNDS,
    MethodKind,
    MetricScale,
    canonical_dataset,
    canonical_method,
    canonical_metric,
    canonical_model_id,
    metric_info,
)

SCHEMA_VERSION = "1.0"

#: Marker in ``json_schema_extra``: the field is filled by the knowledge base, not part of the run's identity.
ENRICHMENT = {"enrichment": True}
#: Marker in ``json_schema_extra``: a free-form mapping stored as JSON text in tables.
JSON_COLUMN = {"json_column": True}


class FieldError(ValueError):
    """A record-level check that failed on one field (reported as the reject's ``field``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Part(BaseModel):
    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, str_strip_whitespace=True, use_enum_values=False, frozen=False
    )


class TaskType(StrEnum):
    text_classification = "text-classification"
    token_classification = "token-classification"
    question_answering = "question-answering"
    multiple_choice = "multiple-choice"
    text_regression = "text-regression"
    summarization = "summarization"
    translation = "translation"
    text_generation = "text-generation"
    fill_mask = "fill-mask"
    image_classification = "image-classification"
    audio_classification = "audio-classification"
    speech_recognition = "automatic-speech-recognition"
    other = "other"


class ArchType(StrEnum):
    encoder = "encoder"
    decoder = "decoder"
    encoder_decoder = "encoder-decoder"


class RunStatus(StrEnum):
    """``ok``: finished, with a score. ``failed``: ended by an error (``error_kind``). ``stopped``: ended early by
    the search that ran it (a pruned Optuna trial, a trial an ASHA/Hyperband scheduler stopped): no final score; what
    it reported before it was stopped is its ``curve``."""

    ok = "ok"
    failed = "failed"
    stopped = "stopped"


class ErrorKind(StrEnum):
    oom = "oom"
    diverged = "diverged"
    timeout = "timeout"
    error = "error"


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


class Task(_Part):
    """What is being solved and how success is measured."""

    type: TaskType = TaskType.text_classification
    primary_metric: Name = Field(min_length=1, description="Canonical metric name, e.g. accuracy, f1_macro, mae.")
    metric_scale: MetricScale | None = Field(
        None,
        description="Scale of the supplied metric values; percent is converted to unit on ingest. "
        "Defaults to the metric's known scale.",
    )
    higher_is_better: bool | None = Field(None, description="Defaults to the metric's known direction.")

    @field_validator("primary_metric")
    @classmethod
    def _canonical_metric(cls, v: str) -> str:
        return canonical_metric(v)

    @model_validator(mode="after")
    def _defaults_from_registry(self) -> Task:
        info = metric_info(self.primary_metric)
        if info is None and (self.metric_scale is None or self.higher_is_better is None):
            raise ValueError(
                f"unknown metric {self.primary_metric!r}: declare task.metric_scale and task.higher_is_better"
            )
        if self.metric_scale is None:
            self.metric_scale = info.scale if info else None
        if self.higher_is_better is None:
            self.higher_is_better = info.higher_is_better if info else None
        return self


class DatasetMeta(_Part):
    """Dataset meta-features computed from the raw texts and labels (see ``collector.features``)."""

    n_samples: NonNegInt | None = Field(None, description="Rows the features were computed on (the train split).")
    n_classes: PosInt | None = None
    class_entropy: Fraction | None = Field(None, description="Label entropy divided by log(n_classes).")
    min_class_share: Fraction | None = None
    max_class_share: Fraction | None = None
    imbalance_ratio: Annotated[float, Field(ge=1.0)] | None = Field(None, description="Largest / smallest class.")
    chars_mean: NonNegFloat | None = None
    chars_std: NonNegFloat | None = None
    chars_p10: NonNegFloat | None = None
    chars_p50: NonNegFloat | None = None
    chars_p90: NonNegFloat | None = None
    tokens_mean: NonNegFloat | None = None
    tokens_std: NonNegFloat | None = None
    tokens_p10: NonNegFloat | None = None
    tokens_p50: NonNegFloat | None = None
    tokens_p90: NonNegFloat | None = None
    vocab_size: NonNegInt | None = None
    type_token_ratio: Fraction | None = None
    non_ascii_share: Fraction | None = None
    language: Name | None = Field(None, description="ISO 639-1 guess, e.g. en.")
    domain: Name | None = Field(None, description="e.g. news, social, reviews, encyclopedic.")
    n_text_fields: PosInt | None = Field(None, description="1 = single text, 2 = text pair.")
    landmark_tfidf_lr: Fraction | None = Field(
        None, description="Cross-validated accuracy of TF-IDF + logistic regression on a subsample."
    )
    landmark_majority: Fraction | None = Field(None, description="Accuracy of always predicting the majority class.")


class Dataset(_Part):
    """The data the run was trained and evaluated on, and how much of it was used."""

    name: Name = Field(min_length=1, description="Canonical '<dataset>/<config>' name, e.g. glue/sst2.")
    fingerprint: Name | None = Field(None, description="Content hash of the data, when known.")
    n_train_used: NonNegInt | None = Field(None, description="Training examples this run actually used.")
    examples_per_class: PosInt | None = Field(None, description="Few-shot regime: labelled examples per class.")
    data_seed: Int64 | None = Field(None, description="Seed of the training subsample / few-shot split.")
    meta: DatasetMeta = Field(default_factory=DatasetMeta, json_schema_extra=ENRICHMENT)

    @field_validator("name")
    @classmethod
    def _canonical_name(cls, v: str) -> str:
        return canonical_dataset(v)


class Model(_Part):
    """The starting checkpoint and its features."""

    id: Name = Field(min_length=1, description="Hugging Face Hub id or another unique name.")
    revision: Name | None = None
    family: Name | None = Field(None, json_schema_extra=ENRICHMENT, description="e.g. bert, roberta, deberta-v2, t5.")
    arch_type: ArchType | None = Field(None, json_schema_extra=ENRICHMENT)
    n_params: NonNegInt | None = Field(None, json_schema_extra=ENRICHMENT)
    n_layers: PosInt | None = Field(None, json_schema_extra=ENRICHMENT)
    hidden_size: PosInt | None = Field(None, json_schema_extra=ENRICHMENT)
    n_heads: PosInt | None = Field(None, json_schema_extra=ENRICHMENT)
    vocab_size: PosInt | None = Field(None, json_schema_extra=ENRICHMENT)
    max_positions: PosInt | None = Field(None, json_schema_extra=ENRICHMENT)
    pretraining_objective: Name | None = Field(
        None, json_schema_extra=ENRICHMENT, description="mlm, clm, span-corruption, rtd, contrastive..."
    )
    pretraining_domain: Name | None = Field(None, json_schema_extra=ENRICHMENT)
    base_model: Name | None = Field(None, description="The checkpoint this one was itself derived from.")
    upstream_task: Name | None = Field(
        None, description="Task/dataset the checkpoint was already fine-tuned on (or, for intermediate-task "
        "transfer, the source task this run fine-tuned on first)."
    )

    @field_validator("id")
    @classmethod
    def _canonical_id(cls, v: str) -> str:
        return canonical_model_id(v)

    @field_validator("base_model")
    @classmethod
    def _canonical_base(cls, v: str | None) -> str | None:
        return canonical_model_id(v) if v else v


class Method(_Part):
    """The adaptation method and its own hyperparameters."""

    name: Name = Field(min_length=1, description="Canonical method name: full, lora, bitfit, adapter, ia3, ...")
    kind: MethodKind | None = Field(None, json_schema_extra=ENRICHMENT, description="Derived from the name.")
    lora_r: PosInt | None = None
    lora_alpha: Annotated[float, Field(gt=0)] | None = None
    lora_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    target_modules: list[Name] | None = None
    n_frozen_layers: NonNegInt | None = None
    adapter_reduction_factor: Annotated[float, Field(gt=0)] | None = None
    n_virtual_tokens: PosInt | None = None
    trainable_params: NonNegInt | None = None
    config: JsonMap = Field(
        default_factory=dict,
        json_schema_extra=JSON_COLUMN,
        description="Everything else that defines the method (adapter type, prompt template, label words...).",
    )

    @field_validator("name")
    @classmethod
    def _canonical_name(cls, v: str) -> str:
        canonical = canonical_method(v)
        if canonical is None:
            known = ", ".join(sorted(METHODS))
            raise ValueError(f"unknown method {v!r}; known methods: {known}")
        return canonical

    @model_validator(mode="after")
    def _kind(self) -> Method:
        self.kind = METHODS[self.name]
        return self


class Hyperparameters(_Part):
    """Training hyperparameters. ``batch_size`` is the effective batch (per device x devices x accumulation)."""

    learning_rate: Annotated[float, Field(gt=0.0)] | None = None
    batch_size: PosInt | None = None
    per_device_batch_size: PosInt | None = None
    gradient_accumulation_steps: PosInt | None = None
    epochs: Annotated[float, Field(gt=0.0)] | None = None
    max_steps: PosInt | None = None
    warmup_ratio: Fraction | None = None
    warmup_steps: NonNegInt | None = None
    weight_decay: NonNegFloat | None = None
    lr_scheduler: Name | None = None
    optimizer: Name | None = None
    max_seq_length: PosInt | None = None
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    seed: Int64 | None = None
    precision: Name | None = Field(None, description="fp32, fp16, bf16, int8, int4...")
    extra: JsonMap = Field(default_factory=dict, json_schema_extra=JSON_COLUMN)

    @field_validator("lr_scheduler", "optimizer", "precision")
    @classmethod
    def _lower(cls, v: str | None) -> str | None:
        return v.lower() if v else v


class CurvePoint(_Part):
    """One point of a learning curve: a metric's value at a step or epoch."""

    step: NonNegInt | None = None
    epoch: NonNegFloat | None = None
    metric: Name = Field(min_length=1)
    value: float


class Outcome(_Part):
    """What came out of the run."""

    status: RunStatus = RunStatus.ok
    error_kind: ErrorKind | None = None
    error_message: Text | None = None
    score: float | None = Field(None, description="Primary metric on the normalized scale (unit for percent).")
    score_std: NonNegFloat | None = Field(None, description="Standard deviation over repeats of the measurement.")
    n_repeats: PosInt | None = Field(None, description="Repeats averaged into score (e.g. probe subsamples).")
    split: Name | None = Field(None, description="Evaluation split the score is on: validation, test, dev...")
    metrics: dict[Name, float] = Field(default_factory=dict, description="Every reported metric, by name.")
    runtime_s: NonNegFloat | None = Field(None, description="Training wall-clock time in seconds.")
    gpu_hours: NonNegFloat | None = None
    peak_memory_gb: NonNegFloat | None = None
    energy_kwh: NonNegFloat | None = None
    curve: list[CurvePoint] = Field(default_factory=list)

    @field_validator("split")
    @classmethod
    def _lower(cls, v: str | None) -> str | None:
        return v.lower() if v else v


class Hardware(_Part):
    """Where the run ran."""

    accelerator: Name | None = Field(None, description="e.g. NVIDIA A100-SXM4-40GB; cpu for none.")
    accelerator_count: NonNegInt | None = None
    cpu: Name | None = None
    memory_gb: NonNegFloat | None = None
    software: dict[Name, Name] = Field(default_factory=dict, description="Framework versions, e.g. transformers.")


#: Namespace of the sources the HTTP service stamps on uploaded runs: ``upload:<key holder>``.
UPLOAD_NAMESPACE = "upload"
#: ``provenance.source``: an importer's or format's name (``opda``, ``taskweb``, ``jsonl``), optionally followed by
#: ``:<holder>`` (``upload:alice``, what the service stamps on the runs a key uploads).
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*(:[A-Za-z0-9][A-Za-z0-9_.@\-]*)?$"


def upload_source(holder: str) -> str:
    """The source of the runs uploaded with the key held by ``holder``: ``upload:<holder>``."""
    return f"{UPLOAD_NAMESPACE}:{holder}"


def source_matches(source: str, patterns: Iterable[str]) -> bool:
    """Whether ``source`` is one of ``patterns``: a pattern ending in ``*`` matches every source it begins
    (``upload*`` matches ``upload`` and every ``upload:<holder>``), any other pattern matches itself only."""
    return any(source.startswith(p[:-1]) if p.endswith("*") else source == p for p in patterns)


class Provenance(_Part):
    """Where the record came from. Never part of the run's identity."""

    source: Name = Field(
        "upload",
        pattern=SOURCE_PATTERN,
        description="Importer or format that produced the record (transfergraph, hf_trainer, jsonl...), or "
        "upload:<key holder> for runs uploaded over HTTP.",
    )
    uri: Text | None = Field(None, description="File path or URL read.")
    locator: Text | None = Field(None, description="Where inside it: line, row, archive member, run id.")
    uploader: Name | None = None
    license: Name | None = None
    ingested_at: datetime | None = Field(None, description="Set by the knowledge base when the record is stored.")


class RunRecord(_Part):
    """One fine-tuning run."""

    schema_version: Name = SCHEMA_VERSION
    run_id: Name | None = Field(None, description="Content-derived id; computed, and checked when supplied.")
    task: Task
    dataset: Dataset
    model: Model
    method: Method
    hparams: Hyperparameters = Field(default_factory=Hyperparameters)
    outcome: Outcome
    hardware: Hardware = Field(default_factory=Hardware)
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: str) -> str:
        major = v.split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema version {v} is not readable by this release (schema {SCHEMA_VERSION})")
        return SCHEMA_VERSION

    @model_validator(mode="after")
    def _normalize(self) -> RunRecord:
        self._normalize_scale()
        out = self.outcome
        if out.status is RunStatus.ok:
            if out.score is None:
                raise FieldError("outcome.score", "outcome.score is required when outcome.status is 'ok'")
            if out.error_kind is not None:
                raise FieldError("outcome.error_kind",
                                 "outcome.error_kind is only allowed when outcome.status is 'failed'")
        elif out.status is RunStatus.stopped:
            if out.score is not None or out.error_kind is not None:
                raise ValueError("a stopped run has no score and no error_kind: what it reported before it was "
                                 "stopped belongs in outcome.curve")
        elif out.error_kind is None:
            out.error_kind = ErrorKind.error
        hp = self.hparams
        if hp.batch_size is None and hp.per_device_batch_size is not None:
            hp.batch_size = hp.per_device_batch_size * (hp.gradient_accumulation_steps or 1)
        computed = self.compute_run_id()
        if self.run_id is not None and self.run_id != computed:
            raise ValueError(
                f"run_id {self.run_id!r} does not match the record's content (expected {computed!r}); "
                "omit run_id to let the knowledge base compute it"
            )
        self.run_id = computed
        return self

    def _normalize_scale(self) -> None:
        """Convert percent values to their metric's own scale and check every known metric lies within its scale."""
        scale = self.task.metric_scale
        percent = scale is MetricScale.percent
        divisor = 100.0 if percent else 1.0
        out = self.outcome

        def convert(name: str, value: float) -> float:
            info = metric_info(name)
            if info is not None and info.scale in (MetricScale.unit, MetricScale.signed_unit):
                return _rescale(value, divisor)
            return value

        if out.score is not None:
            info = metric_info(self.task.primary_metric)
            natural = info.scale if info and info.scale is not MetricScale.unbounded else MetricScale.unit
            lo, hi = SCALE_BOUNDS[natural] if percent else SCALE_BOUNDS[scale] if scale else (-math.inf, math.inf)
            lo, hi = lo * divisor, hi * divisor
            if not lo <= out.score <= hi:
                raise FieldError(
                    "outcome.score",
                    f"outcome.score {out.score} is outside the declared scale {scale} [{lo:g}, {hi:g}] of "
                    f"{self.task.primary_metric}; declare task.metric_scale (e.g. percent) if it is on another scale"
                )
            out.score = _rescale(out.score, divisor)
            if out.score_std is not None:
                out.score_std = _rescale(out.score_std, divisor)
            if percent:
                self.task.metric_scale = natural
        out.metrics = {k: convert(k, v) for k, v in out.metrics.items()}
        for p in out.curve:
            p.value = convert(p.metric, p.value)
        for k, v in out.metrics.items():
            info = metric_info(k)
            if info is not None and info.scale is not MetricScale.unbounded:
                lo, hi = SCALE_BOUNDS[info.scale]
                if not lo <= v <= hi:
                    raise FieldError(f"outcome.metrics.{k}",
                                     f"outcome.metrics[{k!r}] = {v} is outside its scale {info.scale} [{lo}, {hi}]")
        if percent:
            self.task.metric_scale = self.task.metric_scale if self.task.metric_scale is not MetricScale.percent \
                else MetricScale.unit

    def identity(self) -> dict[str, Any]:
        """The fields that define the run: everything but provenance, enrichment and the id itself.

        Defaults and nulls are left out, so adding an optional field to the schema never changes existing ids.
        """
        return self.model_dump(mode="json", exclude=_IDENTITY_EXCLUDE, exclude_none=True, exclude_defaults=True)

    def compute_run_id(self) -> str:
        """sha256 of the canonical JSON of :meth:`identity`, 32 hex characters."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _rescale(value: float, divisor: float) -> float:
    """``value / divisor`` rounded to 12 significant digits, so that 88.3 percent and 0.883 are the same float."""
    return value if divisor == 1.0 else float(f"{value / divisor:.12g}")


def _enrichment_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("enrichment"):
            paths.append((*prefix, name))
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(_enrichment_paths(ann, (*prefix, name)))
    return paths


ENRICHMENT_PATHS: list[tuple[str, ...]] = _enrichment_paths(RunRecord)


def _exclude_spec() -> dict[str, Any]:
    spec: dict[str, Any] = {"run_id": True, "schema_version": True, "provenance": True}
    for path in ENRICHMENT_PATHS:
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = True
    return spec


_IDENTITY_EXCLUDE = _exclude_spec()

"""MLflow: fine-tuning runs logged to an MLflow tracking store (file store, SQLite file, or tracking server).

Input: a local tracking directory (an ``mlruns/`` file store, or a folder holding one), a ``.db``/``.sqlite`` file
with MLflow's tables, or, through :meth:`MlflowRuns.read_uri`, any tracking URI (``sqlite:///…``, ``file://…``,
``http://…``). ``MlflowRuns(tracking_uri=…, experiments=[…])`` reads that URI / those experiments whatever path
it is given (what a ``--mlflow-uri``/``--experiment`` CLI option builds). Every active run of every active experiment
(or of the named experiments) is read with the real :class:`mlflow.tracking.MlflowClient`: ``search_experiments``
and ``search_runs`` with paging, ``get_metric_history`` for curves. Deleted runs and experiments are not read.

Convention (what the Hugging Face Trainer's ``MLflowCallback`` logs): every ``TrainingArguments`` field and the model
config's fields as params (values are strings; ``None`` is ``"None"``), and the Trainer's logs as metrics at
``global_step``: ``loss``/``learning_rate``/``grad_norm``/``epoch`` while training, ``eval_<metric>`` at each
evaluation, ``train_runtime``/``train_loss``/... at the end. Explicit ``metaml.*`` tags (or params of the same name)
override everything.

Mapping (first match wins):

* ``dataset.name``: tag ``metaml.dataset``; params ``dataset_name`` (+ ``dataset_config_name`` ->
  ``<name>/<config>``); param ``task_name`` (run_glue's ``sst2`` -> ``glue/sst2``); a single MLflow dataset input
  (``mlflow.log_input``) logged with context ``train``/``training``. ``dataset.data_seed``: param ``data_seed``.
* ``model.id``: tag ``metaml.model``; params ``model_name_or_path``, ``_name_or_path`` (model config),
  ``base_model_name_or_path`` (PEFT config). Enrichment from the model config params: ``model_type`` ->
  ``family``, ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``vocab_size``,
  ``max_position_embeddings``.
* ``method.name``: tag ``metaml.method``; param ``peft_type`` (``LORA``, ``PeftType.LORA``...); ``lora`` when
  LoRA rank and alpha params are present; else ``full``. For PEFT methods: ``r``/``lora_r``/``lora_rank`` ->
  ``lora_r``; ``lora_alpha``; ``lora_dropout``; ``target_modules`` (a list literal, JSON or comma-separated; sorted);
  ``num_virtual_tokens`` -> ``n_virtual_tokens``; ``trainable_params``/``num_trainable_params``; ``bias``,
  ``init_lora_weights``, ``use_rslora``, ``use_dora``, ``modules_to_save`` -> ``method.config``.
* ``task.type``: tag ``metaml.task_type``; else from the ``architectures`` param (``...ForSequenceClassification``
  -> text-classification, ``...ForTokenClassification``, ``...ForQuestionAnswering``, ``...ForMultipleChoice``,
  ``...ForCausalLM``/``...ForConditionalGeneration`` -> text-generation, ``...ForImageClassification``);
  default ``text-classification``.
* ``task.primary_metric``: tag ``metaml.primary_metric`` (a metric name such as ``f1_macro`` or a logged key such as
  ``eval_f1_macro``); else the first logged ``eval_<m>`` for m in accuracy, f1_macro, f1, matthews_correlation,
  pearson, spearmanr, exact_match, rouge1, then any other known ``eval_`` metric but the loss, then the same for
  ``test_<m>``. ``task.metric_scale``: tag ``metaml.metric_scale`` (``percent`` when the run logged 0-100);
  ``task.higher_is_better``: tag ``metaml.higher_is_better``.
* ``outcome.score``: the run's value of the primary metric (MLflow's latest value, i.e. at the largest step).
  ``outcome.split``: tag ``metaml.split``; else ``validation`` for an ``eval_`` key, ``test`` for a ``test_`` key.
* ``outcome.metrics``: every metric but ``system/*`` and the Trainer's bookkeeping (``epoch``, ``learning_rate``,
  ``grad_norm``), renamed ``eval_<m>`` -> ``<m>`` (except ``eval_loss``, kept
  so that the training ``loss`` keeps its name); others as logged.
* ``outcome.curve``: the history of every metric logged at two or more steps, except ``epoch``, ``learning_rate``,
  ``grad_norm``, ``total_flos``, ``*_runtime``, ``*_per_second`` and ``system/*``, renamed as above, with
  ``epoch`` taken from the ``epoch`` metric at the same step.
* ``outcome.runtime_s``: metric ``train_runtime``; else the run's end time - start time.
* ``outcome.peak_memory_gb``: the largest ``system/gpu_<i>_memory_usage_megabytes`` (MLflow system metrics, 10^6
  bytes) / 1000; ``hardware.accelerator_count``: the number of GPUs seen there. ``hardware.software``: param
  ``transformers_version`` -> ``{"transformers": ...}``.
* ``hparams``: ``learning_rate``; ``per_device_train_batch_size`` -> ``per_device_batch_size``;
  ``gradient_accumulation_steps``; ``train_batch_size``/``batch_size`` -> ``batch_size`` (effective; else
  per-device x accumulation); ``num_train_epochs`` -> ``epochs``; ``max_steps`` (when > 0); ``warmup_ratio``;
  ``warmup_steps``; ``weight_decay``; ``lr_scheduler_type`` -> ``lr_scheduler``; ``optim`` -> ``optimizer``;
  ``seed``; ``bf16``/``fp16`` -> ``precision`` (``fp32`` when both are false); ``max_seq_length`` (a script
  argument, not ``max_length``: every model config logs the generation default ``max_length=20``);
  ``label_smoothing_factor`` -> ``label_smoothing``; ``hidden_dropout_prob``/``dropout``/
  ``dropout_rate`` -> ``dropout``; ``adam_beta1``, ``adam_beta2``, ``adam_epsilon``, ``max_grad_norm``,
  ``neftune_noise_alpha`` -> ``hparams.extra``.
* ``provenance.license``: tag ``metaml.license``.

Other params (paths, logging and saving options, Hub settings) are dropped: they do not change what was trained,
and keeping them would give two identical runs different ids.

Status: ``FINISHED`` -> ``ok``; ``FAILED``/``KILLED`` -> ``failed`` with ``error_kind`` from tag ``metaml.error_kind``
(``oom``, ``diverged``, ``timeout``, ``error``; default ``error``) and ``error_message`` from tag
``metaml.error_message`` (default: the MLflow status); a failed run keeps its metrics and curves but has no score,
and its primary metric defaults to ``accuracy`` when nothing names one. Rejected (with the run id as locator):
``RUNNING``/``SCHEDULED`` runs (not finished), a ``FINISHED`` run with no metrics (``no metrics logged``), a run with
no usable primary metric, and a run without dataset or model (the reason names the tag and params to set).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected, sqlite_tables
from collector.schema._vocab import METRICS, canonical_dataset, canonical_metric

TAG = "metaml."
PAGE_SIZE = 1000
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
MLFLOW_TABLES = frozenset({"experiments", "runs", "metrics", "params", "tags", "alembic_version"})
EXPERIMENT_META_KEYS = ("experiment_id:", "artifact_location:", "lifecycle_stage:")

PRIMARY_PREFERENCE = ("accuracy", "f1_macro", "f1", "matthews_correlation", "pearson", "spearmanr", "exact_match",
                      "rouge1")
NOT_CURVES = frozenset({"epoch", "learning_rate", "grad_norm", "total_flos"})
NOT_METRICS = frozenset({"epoch", "learning_rate", "grad_norm"})
ERROR_KINDS = frozenset({"oom", "diverged", "timeout", "error"})
TASK_BY_ARCH = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForCausalLM", "text-generation"),
    ("ForConditionalGeneration", "text-generation"),
    ("ForImageClassification", "image-classification"),
)
EXTRA_HPARAMS = ("adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "neftune_noise_alpha")
METHOD_CONFIG_PARAMS = ("bias", "init_lora_weights", "use_rslora", "use_dora", "modules_to_save")
_GPU_MEMORY = re.compile(r"^system/gpu_(\d+)_memory_usage_megabytes$")
_NONE = {"", "none", "null", "nan"}


class RunProblem(ValueError):
    """A run that cannot become a record; carries the record field concerned."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class MlflowRuns(Format):
    """Reads the runs of an MLflow tracking store.

    Args:
        tracking_uri: read this tracking URI instead of the path given to :meth:`read`.
        experiments: read only these experiments (by name); default: every active experiment.
    """

    name: ClassVar[str] = "mlflow"
    priority: ClassVar[int] = 60
    uri_option: ClassVar[str | None] = "tracking_uri"
    description: ClassVar[str] = "MLflow tracking store: mlruns/ directory or MLflow SQLite .db (runs, params, metrics)"
    source: ClassVar[str] = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiments: list[str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiments = list(experiments) if experiments else None

    @classmethod
    def detect(cls, path: Path) -> bool:
        """An MLflow file store (a folder of experiment folders with MLflow's ``meta.yaml``, or a folder holding
        ``mlruns/``), or a SQLite file holding MLflow's tables."""
        if path.is_file():
            return is_mlflow_sqlite(path)
        return path.is_dir() and file_store_root(path) is not None

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one item per run of the store at ``path`` (or at the configured ``tracking_uri``).

        Raises:
            FormatError: ``path`` is not an MLflow store, the store cannot be opened, or a named experiment is
                missing (before anything is yielded).
        """
        uri = self.tracking_uri or tracking_uri_for(path)
        yield from self.read_uri(uri, self.experiments)

    def read_uri(self, tracking_uri: str, experiment_names: list[str] | None = None) -> Iterator[Item]:
        """Yield one item per run of the named experiments (default: all active ones) at ``tracking_uri``.

        Raises:
            FormatError: the store cannot be opened or a named experiment does not exist.
        """
        client = _client(tracking_uri)
        experiments = _experiments(client, tracking_uri, experiment_names)
        for experiment in experiments:
            for run in _runs(client, tracking_uri, experiment.experiment_id):
                loc = f"experiment {experiment.name!r} run {run.info.run_id}"
                try:
                    yield RawRecord(_record(client, run), loc, tracking_uri)
                except RunProblem as e:
                    yield Rejected(loc, str(e), field=e.field, uri=tracking_uri)

    def estimate(self, path: Path) -> int | None:
        return None


# -- detection and opening ---------------------------------------------------------------------------------------


def is_mlflow_sqlite(path: Path) -> bool:
    """A SQLite file (opened read-only) holding MLflow's tracking tables."""
    return path.suffix.lower() in SQLITE_SUFFIXES and (sqlite_tables(path) or set()) >= MLFLOW_TABLES


def _is_experiment_dir(path: Path) -> bool:
    meta = path / "meta.yaml"
    if not meta.is_file():
        return False
    try:
        text = meta.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return False
    return all(re.search(rf"^{re.escape(key)}", text, re.MULTILINE) for key in EXPERIMENT_META_KEYS)


def file_store_root(path: Path) -> Path | None:
    """The MLflow file store at ``path`` (or at ``path/mlruns``), or None."""
    for root in (path / "mlruns", path):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir())[:200]:
            if child.is_dir() and not child.name.startswith(".") and _is_experiment_dir(child):
                return root
    return None


def tracking_uri_for(path: Path) -> str:
    """The tracking URI of a local store: ``sqlite:///<abs path>`` or ``file:///<abs store root>``.

    Raises:
        FormatError: ``path`` is neither an MLflow SQLite file nor an MLflow file store (nothing is created).
    """
    text = str(path)
    if text.startswith(("sqlite:", "file:", "http:", "https:", "databricks")):
        return text
    if not path.exists():
        raise FormatError("no such file or directory", uri=text)
    if path.is_file():
        if not is_mlflow_sqlite(path):
            raise FormatError("not an MLflow tracking database (expected a SQLite file with MLflow's tables)",
                              uri=text)
        return f"sqlite:///{path.resolve()}"
    root = file_store_root(path)
    if root is None:
        raise FormatError("not an MLflow file store (no experiment folder with MLflow's meta.yaml here or in "
                          "mlruns/)", uri=text)
    return root.resolve().as_uri()


@contextlib.contextmanager
def _file_store_allowed() -> Iterator[None]:
    """MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set: set it while the store is opened."""
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


def _client(tracking_uri: str) -> Any:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not is_mlflow_sqlite(db):
            raise FormatError("not an MLflow tracking database (refusing to create MLflow tables in it)",
                              uri=tracking_uri)
    guard = _file_store_allowed() if tracking_uri.startswith("file:") else contextlib.nullcontext()
    try:
        with guard:
            return MlflowClient(tracking_uri=tracking_uri)
    except MlflowException as e:
        raise FormatError(f"cannot open the MLflow store: {_first_line(e)}", uri=tracking_uri) from e


def _experiments(client: Any, uri: str, names: list[str] | None) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        if names:
            found = [(n, client.get_experiment_by_name(n)) for n in names]
            missing = [n for n, e in found if e is None]
            if missing:
                available = sorted(e.name for e in _all_experiments(client))
                raise FormatError(f"no experiment named {', '.join(map(repr, missing))}; available: "
                                  f"{', '.join(map(repr, available)) or 'none'}", uri=uri)
            return [e for _, e in found]
        return _all_experiments(client)
    except MlflowException as e:
        raise FormatError(f"cannot list experiments: {_first_line(e)}", uri=uri) from e


def _all_experiments(client: Any) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda e: (e.creation_time or 0, e.experiment_id))


def _runs(client: Any, uri: str, experiment_id: str) -> Iterator[Any]:
    from mlflow.exceptions import MlflowException

    token = None
    while True:
        try:
            page = client.search_runs([experiment_id], max_results=PAGE_SIZE, page_token=token,
                                      order_by=["attributes.start_time ASC"])
        except MlflowException as e:
            raise FormatError(f"cannot search runs of experiment {experiment_id}: {_first_line(e)}", uri=uri) from e
        yield from page
        token = page.token
        if not token:
            return


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# -- one run -----------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """A run's params, tags and latest metrics, with the ``metaml.*`` overrides pulled out."""

    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    explicit: dict[str, str]

    def param(self, *names: str) -> str | None:
        for name in names:
            value = self.params.get(name)
            if value is not None and value.strip().lower() not in _NONE:
                return value.strip()
        return None


def _record(client: Any, run: Any) -> dict[str, Any]:
    status = run.info.status
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise RunProblem("outcome.status", f"run is {status}: not finished, nothing to import yet")
    params = dict(run.data.params)
    tags = dict(run.data.tags)
    explicit = {k[len(TAG):]: v.strip() for k, v in {**params, **tags}.items() if k.startswith(TAG) and v.strip()}
    data = _Run(params, tags, {k: v for k, v in run.data.metrics.items() if not k.startswith("system/")}, explicit)
    ok = status == "FINISHED"
    if ok and not data.metrics:
        raise RunProblem("outcome.metrics", "no metrics logged")
    dataset = _dataset(data, run)
    model_id = _model_id(data)
    primary_key, primary_metric = _primary(data, required=ok)
    task: dict[str, Any] = {"type": _task_type(data), "primary_metric": primary_metric}
    if "metric_scale" in explicit:
        task["metric_scale"] = explicit["metric_scale"]
    if "higher_is_better" in explicit:
        task["higher_is_better"] = explicit["higher_is_better"].lower() in ("1", "true", "yes")
    record: dict[str, Any] = {
        "task": task,
        "dataset": dataset,
        "model": {"id": model_id, **_model_features(data)},
        "method": _method(data),
        "hparams": _hparams(data),
        "outcome": _outcome(client, run, data, primary_key, ok),
    }
    hardware = _hardware(client, run, data, record["outcome"])
    if hardware:
        record["hardware"] = hardware
    # Always present: the pipeline fills source, uri and locator only into an existing provenance mapping.
    record["provenance"] = {"license": explicit["license"]} if "license" in explicit else {}
    return record


def _dataset(data: _Run, run: Any) -> dict[str, Any]:
    name = data.explicit.get("dataset")
    if not name:
        base = data.param("dataset_name")
        config = data.param("dataset_config_name")
        if base:
            name = f"{base}/{config}" if config else base
    if not name:
        name = data.param("task_name")
    if not name:
        name = _training_input(run)
    if not name:
        raise RunProblem("dataset.name", "no dataset: set tag metaml.dataset (e.g. glue/sst2) or log param "
                         "dataset_name (+ dataset_config_name)")
    out: dict[str, Any] = {"name": canonical_dataset(name)}
    seed = _int(data.param("data_seed"), "data_seed")
    if seed is not None:
        out["data_seed"] = seed
    return out


def _training_input(run: Any) -> str | None:
    inputs = getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []
    names = []
    for item in inputs:
        context = {t.key: t.value for t in (item.tags or [])}.get("mlflow.data.context", "")
        if context.lower() in ("train", "training"):
            names.append(item.dataset.name)
    return names[0] if len(set(names)) == 1 else None


def _model_id(data: _Run) -> str:
    model = data.explicit.get("model") or data.param("model_name_or_path", "_name_or_path",
                                                       "base_model_name_or_path")
    if not model:
        raise RunProblem("model.id", "no model: set tag metaml.model (a Hub id such as roberta-base) or log param "
                         "model_name_or_path")
    return model


def _primary(data: _Run, *, required: bool) -> tuple[str | None, str]:
    """(logged metric key of the primary metric or None, canonical primary metric name)."""
    named = data.explicit.get("primary_metric")
    if named:
        for key in (named, f"eval_{named}", f"test_{named}"):
            if key in data.metrics:
                return key, canonical_metric(named)
        if required:
            raise RunProblem("task.primary_metric", f"primary metric {named!r} (tag metaml.primary_metric) was not "
                             f"logged; logged: {', '.join(sorted(data.metrics)) or 'nothing'}")
        return None, canonical_metric(named)
    for prefix in ("eval_", "test_"):
        for name in PRIMARY_PREFERENCE:
            if f"{prefix}{name}" in data.metrics:
                return f"{prefix}{name}", canonical_metric(name)
        for key in sorted(data.metrics):
            rest = key[len(prefix):]
            if key.startswith(prefix) and canonical_metric(rest) in METRICS and canonical_metric(rest) != "loss":
                return key, canonical_metric(rest)
    if required:
        raise RunProblem("task.primary_metric", "no evaluation metric (eval_accuracy, eval_f1, ...) logged: set tag "
                         f"metaml.primary_metric to one of {', '.join(sorted(data.metrics))}")
    return None, "accuracy"


def _task_type(data: _Run) -> str:
    if "task_type" in data.explicit:
        return data.explicit["task_type"]
    arch = data.param("architectures") or ""
    for suffix, task in TASK_BY_ARCH:
        if suffix in arch:
            return task
    return "text-classification"


def _method(data: _Run) -> dict[str, Any]:
    name = data.explicit.get("method") or data.param("peft_type")
    rank = data.param("lora_r", "lora_rank", "r")
    if name:
        name = name.split(".")[-1].lower()
    elif rank is not None and data.param("lora_alpha") is not None:
        name = "lora"
    else:
        name = "full"
    method: dict[str, Any] = {"name": name}
    if name == "full":
        return method
    if rank is not None:
        method["lora_r"] = _int(rank, "lora_r")
    for key, target in (("lora_alpha", "lora_alpha"), ("lora_dropout", "lora_dropout")):
        value = _float(data.param(key), key)
        if value is not None:
            method[target] = value
    modules = data.param("target_modules")
    if modules:
        method["target_modules"] = _string_list(modules)
    tokens = _int(data.param("num_virtual_tokens"), "num_virtual_tokens")
    if tokens is not None:
        method["n_virtual_tokens"] = tokens
    trainable = _int(data.param("trainable_params", "num_trainable_params"), "trainable_params")
    if trainable is not None:
        method["trainable_params"] = trainable
    # Kept verbatim: PEFT's own values are lower-case words (bias "none"); Python's None is logged as "None".
    config = {k: v.strip() for k in METHOD_CONFIG_PARAMS if (v := data.params.get(k)) and v.strip() != "None"}
    if config:
        method["config"] = config
    return method


def _hparams(data: _Run) -> dict[str, Any]:
    hp: dict[str, Any] = {}
    floats = {"learning_rate": "learning_rate", "num_train_epochs": "epochs", "warmup_ratio": "warmup_ratio",
              "weight_decay": "weight_decay", "label_smoothing_factor": "label_smoothing"}
    ints = {"per_device_train_batch_size": "per_device_batch_size",
            "gradient_accumulation_steps": "gradient_accumulation_steps", "warmup_steps": "warmup_steps",
            "seed": "seed"}
    for key, target in floats.items():
        value = _float(data.param(key), key)
        if value is not None:
            hp[target] = value
    for key, target in ints.items():
        value = _int(data.param(key), key)
        if value is not None:
            hp[target] = value
    batch = _int(data.param("train_batch_size", "batch_size"), "batch_size")
    if batch is not None:
        hp["batch_size"] = batch
    steps = _int(data.param("max_steps"), "max_steps")
    if steps is not None and steps > 0:
        hp["max_steps"] = steps
    # Not ``max_length``: every model config logs the generation default max_length=20.
    length = _int(data.param("max_seq_length"), "max_seq_length")
    if length is not None:
        hp["max_seq_length"] = length
    dropout = _float(data.param("hidden_dropout_prob", "dropout", "dropout_rate"), "dropout")
    if dropout is not None:
        hp["dropout"] = dropout
    scheduler = data.param("lr_scheduler_type")
    if scheduler:
        hp["lr_scheduler"] = scheduler.split(".")[-1].lower()
    optimizer = data.param("optim")
    if optimizer:
        hp["optimizer"] = optimizer.split(".")[-1].lower()
    precision = _precision(data)
    if precision:
        hp["precision"] = precision
    extra = {k: _float(data.param(k), k) for k in EXTRA_HPARAMS}
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:
        hp["extra"] = extra
    return hp


def _precision(data: _Run) -> str | None:
    flags = {k: data.param(k) for k in ("bf16", "fp16")}
    if all(v is None for v in flags.values()):
        return None
    for name, value in flags.items():
        if value is not None and value.lower() == "true":
            return name
    return "fp32"


def _model_features(data: _Run) -> dict[str, Any]:
    out: dict[str, Any] = {}
    family = data.param("model_type")
    if family:
        out["family"] = family
    for key, target in (("num_hidden_layers", "n_layers"), ("hidden_size", "hidden_size"),
                        ("num_attention_heads", "n_heads"), ("vocab_size", "vocab_size"),
                        ("max_position_embeddings", "max_positions")):
        try:
            value = _int(data.param(key), key)
        except RunProblem:
            continue
        if value is not None and value > 0:
            out[target] = value
    return out


def _metric_name(key: str) -> str:
    """The record's name for a logged metric key: ``eval_<m>`` -> ``<m>`` except ``eval_loss``."""
    if key.startswith("eval_") and key != "eval_loss":
        return key[len("eval_"):]
    return key


def _is_curve_metric(key: str) -> bool:
    return not (key in NOT_CURVES or key.startswith("system/") or key.endswith(("_runtime", "_per_second")))


def _outcome(client: Any, run: Any, data: _Run, primary_key: str | None, ok: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "ok" if ok else "failed"}
    if not ok:
        kind = data.explicit.get("error_kind", "error").lower()
        out["error_kind"] = kind if kind in ERROR_KINDS else "error"
        out["error_message"] = data.explicit.get("error_message") or f"MLflow run status {run.info.status}"
    if ok and primary_key is not None:
        out["score"] = data.metrics[primary_key]
    split = data.explicit.get("split")
    if not split and primary_key:
        split = "validation" if primary_key.startswith("eval_") else "test" if primary_key.startswith("test_") else None
    if split:
        out["split"] = split
    out["metrics"] = {_metric_name(k): v for k, v in sorted(data.metrics.items()) if k not in NOT_METRICS}
    runtime = data.metrics.get("train_runtime")
    if runtime is None and run.info.end_time and run.info.start_time:
        runtime = (run.info.end_time - run.info.start_time) / 1000
    if runtime is not None and runtime >= 0:
        out["runtime_s"] = runtime
    curve = _curve(client, run.info.run_id, data.metrics)
    if curve:
        out["curve"] = curve
    return out


def _curve(client: Any, run_id: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    epochs: dict[int, float] = {}
    if "epoch" in metrics:
        epochs = {m.step: m.value for m in client.get_metric_history(run_id, "epoch")}
    points: list[dict[str, Any]] = []
    for key in sorted(metrics):
        if not _is_curve_metric(key):
            continue
        history = client.get_metric_history(run_id, key)
        if len(history) < 2:
            continue
        name = _metric_name(key)
        for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
            point: dict[str, Any] = {"step": m.step, "metric": name, "value": m.value}
            if m.step in epochs:
                point["epoch"] = epochs[m.step]
            points.append(point)
    return points


def _hardware(client: Any, run: Any, data: _Run, outcome: dict[str, Any]) -> dict[str, Any]:
    hardware: dict[str, Any] = {}
    version = data.param("transformers_version")
    if version:
        hardware["software"] = {"transformers": version}
    gpus = [k for k in run.data.metrics if _GPU_MEMORY.match(k)]
    if gpus:
        peak = max(m.value for k in gpus for m in client.get_metric_history(run.info.run_id, k))
        outcome["peak_memory_gb"] = peak / 1000
        hardware["accelerator_count"] = len(gpus)
    return hardware


# -- cells -------------------------------------------------------------------------------------------------------


def _float(value: str | None, key: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise RunProblem(f"params.{key}", f"param {key} = {value!r} is not a number") from None


def _int(value: str | None, key: str) -> int | None:
    number = _float(value, key)
    if number is None:
        return None
    if number != int(number):
        raise RunProblem(f"params.{key}", f"param {key} = {value!r} is not a whole number")
    return int(number)


def _string_list(value: str) -> list[str]:
    """A list param as MLflow stores it (``['q', 'v']``, ``{'q', 'v'}``, JSON, or ``q,v``)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(value)
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(parsed, (list, tuple, set)):
            return sorted(str(x) for x in parsed)
        if isinstance(parsed, str):
            return [parsed]
    return [part.strip() for part in value.split(",") if part.strip()]

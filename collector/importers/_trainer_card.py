"""Parser of the model card (README.md) that the Hugging Face ``Trainer`` writes with ``create_model_card()``.

The Trainer's card is a template filled from the run (``transformers.modelcard.TrainingSummary``); this module reads
back what the template put there and nothing else, into a :class:`TrainerCard`:

* the YAML front matter (``model-index``: task type, dataset name/type/config/split, metric names and values;
  ``datasets``, ``metrics``, ``license``, ``base_model``, ``tags``), parsed lazily (only when a caller asks for it)
  because it is the one costly part;
* the title ``# <model name>``;
* the base-model sentence ``This model is a fine-tuned version of [base](https://huggingface.co/base) on the X
  dataset.`` (``on an unknown dataset`` gives no dataset; ``was trained from scratch`` gives no base model);
* the final results ``It achieves the following results on the evaluation set:`` + ``- Name: value`` lines;
* the hyperparameter block ``The following hyperparameters were used during training:`` + ``- key: value`` lines;
* the ``### Training results`` markdown table (one row per evaluation: Training Loss, Epoch, Step, Validation Loss
  and the metrics; ``No log`` cells are training losses not logged yet);
* the ``### Framework versions`` list (``- Transformers 4.21.3``, ``- Pytorch 1.10.0+cu113``...).

Besides the raw parts, :class:`TrainerCard` maps them onto the run record's vocabulary: :meth:`TrainerCard.metrics`
(canonical metric names -> values), :meth:`TrainerCard.record_hparams` (the ``hparams`` part of a record, with an
``extra`` dict), :meth:`TrainerCard.curve` (learning-curve points from the results table),
:meth:`TrainerCard.software` (framework versions) and :meth:`TrainerCard.model_index_dataset`.

Optimizer lines: Trainer versions before ~4.38 write ``Adam with betas=(0.9,0.999) and epsilon=1e-08`` whatever
``args.optim`` was (the default, AdamW, included), so that string maps to ``adamw``; newer versions write
``Use OptimizerNames.ADAMW_TORCH with betas=...`` (or ``Use adamw_torch with ...``), mapped to ``adamw`` as well with
the implementation kept in ``extra["optim"]``. ``mixed_precision_training: Native AMP`` is written for ``--fp16``
only, so it maps to ``fp16``.

Pure functions over one string, no I/O; never raises on malformed content (unparseable parts are left empty).
API (shared with ``collector.importers.hf_cards``): ``parse_trainer_card(text) -> TrainerCard``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from collector.schema._vocab import canonical_metric

HPARAM_MARKER = "The following hyperparameters were used during training"
RESULTS_MARKER = "following results"

_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_TITLE = re.compile(r"^#[ \t]+(?P<title>[^\n]+?)[ \t]*$", re.M)
_BASE = re.compile(r"fine-tuned version of\s+(?P<rest>[^\n]*)", re.I)
_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]*)\)")
_ON_DATASET = re.compile(r"\bon (?:the )?(?P<name>.+?) dataset\b", re.I)
_SCRATCH = re.compile(r"was trained from scratch", re.I)
_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(?P<key>[^:\n]+?)[ \t]*:[ \t]*(?P<value>.*?)[ \t]*$")
_SECTION = re.compile(r"^#{1,6}[ \t]+(?P<name>[^\n]+?)[ \t]*$", re.M)
_FRAMEWORK = re.compile(r"^[ \t]*[-*][ \t]+(?P<name>[A-Za-z][\w.\-]*)(?:[ \t]+|==)(?P<version>\S+)", re.M)
_ADAM = re.compile(
    r"^(?:Use\s+(?:OptimizerNames\.)?(?P<optim>[\w.]+)\s+with\s+|Adam\s+with\s+)"
    r"betas=\((?P<b1>[\d.eE+-]+),\s*(?P<b2>[\d.eE+-]+)\)\s+and\s+epsilon=(?P<eps>[\d.eE+-]+)",
    re.I,
)

#: Card hyperparameter key -> record ``hparams`` field (values converted by :func:`_as_number`).
HPARAM_FIELDS: dict[str, str] = {
    "learning_rate": "learning_rate",
    "seed": "seed",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "num_epochs": "epochs",
    "training_steps": "max_steps",
    "lr_scheduler_type": "lr_scheduler",
    "lr_scheduler_warmup_ratio": "warmup_ratio",
    "lr_scheduler_warmup_steps": "warmup_steps",
    "label_smoothing_factor": "label_smoothing",
    "weight_decay": "weight_decay",
}
_INT_FIELDS = {"seed", "gradient_accumulation_steps", "max_steps", "warmup_steps", "batch_size",
               "per_device_batch_size"}

#: Results-table / results-list column names that are not metrics of the evaluated model.
_TABLE_AXES = {"epoch": "epoch", "step": "step"}
_TABLE_RENAMES = {"training loss": "train_loss", "validation loss": "loss", "train loss": "train_loss"}


@dataclass
class TrainerCard:
    """What one Trainer-generated card says. Every part is optional: absent parts are None or empty."""

    front_matter_text: str | None = None
    title: str | None = None
    base_model: str | None = None
    """As written: the link's text (the Trainer puts the ``model_name_or_path`` argument there), else the bare word."""
    trained_from_scratch: bool = False
    dataset_phrase: str | None = None
    """``X`` of ``on the X dataset``; None for ``an unknown dataset``."""
    results: dict[str, str] = field(default_factory=dict)
    """The final results list, names and values as written (``{"Loss": "1.3831", "Accuracy": "0.2954"}``)."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """The hyperparameter block, keys as written, values as int / float / str."""
    table_header: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)
    table_error: str | None = None
    framework_versions: dict[str, str] = field(default_factory=dict)
    """Lower-cased framework name -> version (``{"transformers": "4.21.3", "pytorch": "1.10.0+cu113"}``)."""

    @cached_property
    def front_matter(self) -> dict[str, Any]:
        """The YAML front matter as a mapping ({} when absent or not valid YAML); parsed on first use."""
        if not self.front_matter_text:
            return {}
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(self.front_matter_text, Loader=loader)  # a safe loader (C or Python)
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    def metrics(self) -> dict[str, float]:
        """The final results as ``{canonical metric: value}`` (``Loss`` -> ``loss``, ``Spearmanr`` -> ``spearman``);
        non-numeric values (``nan`` included) are left out."""
        out: dict[str, float] = {}
        for name, raw in self.results.items():
            value = _as_float(raw)
            if value is not None:
                out[metric_name(name)] = value
        return out

    def record_hparams(self) -> dict[str, Any]:
        """The hyperparameter block in the record's ``hparams`` shape; keys with no field of their own go to
        ``extra`` under their card name (``eval_batch_size``, ``distributed_type``, ``num_devices``...)."""
        hp: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in self.hyperparameters.items():
            if key in HPARAM_FIELDS:
                target = HPARAM_FIELDS[key]
                hp[target] = _coerce(target, value)
            elif key == "train_batch_size":
                hp["per_device_batch_size"] = _coerce("per_device_batch_size", value)
            elif key == "total_train_batch_size":
                hp["batch_size"] = _coerce("batch_size", value)
            elif key == "optimizer":
                _optimizer(str(value), hp, extra)
            elif key == "mixed_precision_training":
                hp["precision"] = "fp16"
                extra["mixed_precision_training"] = value
            else:
                extra[key] = value
        if "batch_size" not in hp and "per_device_batch_size" in hp:
            devices = self.hyperparameters.get("num_devices")
            accumulation = hp.get("gradient_accumulation_steps") or 1
            if isinstance(hp["per_device_batch_size"], int) and isinstance(accumulation, int):
                hp["batch_size"] = hp["per_device_batch_size"] * accumulation * (
                    devices if isinstance(devices, int) and devices > 0 else 1)
        hp = {k: v for k, v in hp.items() if v is not None}
        if extra:
            hp["extra"] = extra
        return hp

    def curve(self) -> list[dict[str, Any]]:
        """Learning-curve points ``{step, epoch, metric, value}`` from the ``Training results`` table (canonical
        metric names; ``Training Loss`` -> ``train_loss``, ``Validation Loss`` -> ``loss``; ``No log`` skipped)."""
        if not self.table_header or self.table_error:
            return []
        names = [h.strip().lower() for h in self.table_header]
        points: list[dict[str, Any]] = []
        for row in self.table_rows:
            cells = dict(zip(names, row, strict=False))
            step = _as_float(cells.get("step", ""))
            epoch = _as_float(cells.get("epoch", ""))
            for name, raw in cells.items():
                if name in _TABLE_AXES:
                    continue
                value = _as_float(raw)
                if value is None:
                    continue
                point: dict[str, Any] = {"metric": metric_name(name), "value": value}
                if step is not None and step >= 0:
                    point["step"] = int(step)
                if epoch is not None and epoch >= 0:
                    point["epoch"] = epoch
                points.append(point)
        return points

    def software(self) -> dict[str, str]:
        """Framework versions (the record's ``hardware.software``)."""
        return dict(self.framework_versions)

    def model_index_dataset(self) -> tuple[str | None, str | None, str | None]:
        """``(type, config, split)`` of the first ``model-index`` result's dataset (``("glue", "mrpc",
        "validation")``); the config is ``config`` or, in older cards, ``args`` when it is a plain name."""
        result = self._first_result()
        dataset = result.get("dataset") if isinstance(result.get("dataset"), dict) else {}
        dtype = _str_or_none(dataset.get("type")) or _str_or_none(dataset.get("name"))
        config = _str_or_none(dataset.get("config"))
        if config is None and isinstance(dataset.get("args"), str) and re.fullmatch(r"[\w.\-]+", dataset["args"]):
            config = dataset["args"]
        return dtype, config, _str_or_none(dataset.get("split"))

    def model_index_task_type(self) -> str | None:
        """The ``model-index`` result's task type (``text-classification``, ``multiple-choice``...)."""
        task = self._first_result().get("task")
        return _str_or_none(task.get("type")) if isinstance(task, dict) else None

    def model_index_metrics(self) -> list[str]:
        """Canonical names of the ``model-index`` result's metrics, in card order (the first is the one the run was
        summarized by)."""
        metrics = self._first_result().get("metrics")
        if not isinstance(metrics, list):
            return []
        names = [_str_or_none(m.get("type")) or _str_or_none(m.get("name")) for m in metrics if isinstance(m, dict)]
        return [metric_name(n) for n in names if n]

    def _first_result(self) -> dict[str, Any]:
        index = self.front_matter.get("model-index") or self.front_matter.get("model_index")
        if not isinstance(index, list) or not index or not isinstance(index[0], dict):
            return {}
        results = index[0].get("results")
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            return {}
        return results[0]


def parse_trainer_card(text: str) -> TrainerCard:
    """Cut a Trainer-generated model card into a :class:`TrainerCard` (see the module docstring)."""
    card = TrainerCard()
    body = text
    match = _FRONT_MATTER.match(text)
    if match:
        card.front_matter_text = match.group(1)
        body = text[match.end():]
    title = _TITLE.search(body)
    if title:
        card.title = title.group("title").strip()
    _parse_base_sentence(body, card)
    card.results = _list_after(body, RESULTS_MARKER)
    card.hyperparameters = {k: _as_value(v) for k, v in _list_after(body, HPARAM_MARKER).items()}
    _parse_table(_section(body, "training results"), card)
    card.framework_versions = {
        m.group("name").lower(): m.group("version").strip("`") for m in
        _FRAMEWORK.finditer(_section(body, "framework versions") or "")
    }
    return card


@lru_cache(maxsize=4096)
def metric_name(name: str) -> str:
    """A card's metric/column name in the record's vocabulary: lower-case, spaces to ``_``, ``eval_`` prefix off,
    aliases resolved (``Spearmanr`` -> ``spearman``, ``Validation Loss`` -> ``loss``, ``Gen Len`` -> ``gen_len``)."""
    key = name.strip().lower()
    if key in _TABLE_RENAMES:
        return _TABLE_RENAMES[key]
    key = re.sub(r"[\s\-]+", "_", key)
    for prefix in ("eval_", "validation_", "test_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return canonical_metric(key)


def _parse_base_sentence(body: str, card: TrainerCard) -> None:
    card.trained_from_scratch = _SCRATCH.search(body) is not None
    match = _BASE.search(body)
    rest = match.group("rest") if match else ""
    if not match and card.trained_from_scratch:
        rest = body[_SCRATCH.search(body).end():].split("\n", 1)[0]  # type: ignore[union-attr]
    elif match:
        link = _LINK.match(rest.lstrip())
        if link:
            card.base_model = link.group("text").strip() or link.group("url").strip() or None
            rest = rest.lstrip()[link.end():]
        else:
            word = rest.split()[0] if rest.split() else ""
            card.base_model = word.strip("`*'\".,;") or None
            rest = rest[rest.find(word) + len(word):] if word else rest
    sentence = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
    found = _ON_DATASET.search(sentence)
    if found:
        name = _LINK.sub(lambda m: m.group("text"), found.group("name")).strip().strip("`*'\" ")
        if name and not re.fullmatch(r"(?:an? )?(?:unknown|none)", name, re.I):
            card.dataset_phrase = name


def _list_after(body: str, marker: str) -> dict[str, str]:
    """The ``- key: value`` list that follows the line containing ``marker`` (blank lines before it allowed)."""
    at = body.find(marker)
    if at < 0:
        return {}
    lines = body[at:].split("\n")[1:]
    out: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if out:
                break
            continue
        item = _ITEM.match(line)
        if item is None:
            break
        out[item.group("key").strip()] = item.group("value").strip()
    return out


def _section(body: str, name: str) -> str | None:
    """The text under the first heading called ``name`` (case-insensitive), up to the next heading."""
    headings = list(_SECTION.finditer(body))
    for i, heading in enumerate(headings):
        if heading.group("name").strip().lower() == name:
            end = headings[i + 1].start() if i + 1 < len(headings) else len(body)
            return body[heading.end():end]
    return None


def _parse_table(section: str | None, card: TrainerCard) -> None:
    if not section:
        return
    lines = [ln.strip() for ln in section.split("\n") if ln.strip().startswith("|")]
    if not lines:
        return
    rows = [_cells(ln) for ln in lines]
    header, data = rows[0], rows[1:]
    if data and all(re.fullmatch(r":?-{2,}:?", c.replace(" ", "")) for c in data[0] if c):
        data = data[1:]
    for i, row in enumerate(data, start=1):
        if len(row) != len(header):
            card.table_error = f"Training results row {i} has {len(row)} cells, the header {len(header)}"
            return
    card.table_header, card.table_rows = header, data


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip() for c in inner.split("|")]


def _optimizer(text: str, hp: dict[str, Any], extra: dict[str, Any]) -> None:
    match = _ADAM.match(text.strip())
    if match is None:
        hp["optimizer"] = text.strip().split()[0].lower() if text.strip() else None
        if text.strip().lower() not in (hp["optimizer"] or ""):
            extra["optimizer_text"] = text.strip()
        return
    optim = match.group("optim")
    if optim is None or optim.lower().startswith("adamw"):
        hp["optimizer"] = "adamw"
    else:
        hp["optimizer"] = optim.lower()
    if optim is not None:
        extra["optim"] = optim.lower()
    for key, group in (("adam_beta1", "b1"), ("adam_beta2", "b2"), ("adam_epsilon", "eps")):
        value = _as_float(match.group(group))
        if value is not None:
            extra[key] = value


def _coerce(target: str, value: Any) -> Any:
    if target in ("lr_scheduler",):
        return str(value) if value is not None else None
    number = _as_float(value) if not isinstance(value, int | float) else float(value)
    if number is None:
        return None
    if target in _INT_FIELDS:
        return int(number) if number == int(number) else None
    return number


def _as_value(raw: str) -> Any:
    value = raw.strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    number = _as_float(value)
    return number if number is not None else value


def _as_float(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw) if math.isfinite(raw) else None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


__all__ = ["HPARAM_MARKER", "TrainerCard", "metric_name", "parse_trainer_card"]

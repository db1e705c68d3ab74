"""The one parser of Hugging Face model cards (README.md), in particular the card the ``Trainer`` writes with
``create_model_card()`` (a template filled from the run, ``transformers.modelcard.TrainingSummary``).

:func:`parse_card` cuts a card into its parts (:class:`CardParts`), as strings and plain Python values:

* the YAML front matter between the leading ``---`` lines (``model-index``, ``datasets``, ``tags``, ``license``,
  ``base_model``...), loaded on first use (the one costly part); a front matter that is not a YAML mapping is
  reported in :attr:`CardParts.front_matter_error`, never raised;
* the title ``# <model name>``;
* the base-model sentence ``This model is a fine-tuned version of [x](https://huggingface.co/x) on the y dataset.``
  (also without a link, ``finetuned``/``fine tuned``, with ``an unknown dataset`` / ``the None dataset``, and ``was
  trained from scratch``): the link's text and URL are both kept;
* the final results list ``It achieves the following results on the evaluation set:`` + ``- Name: value`` lines;
* the hyperparameter block ``The following hyperparameters were used during training:`` + ``- key: value`` lines
  (Keras cards write the optimizer as a Python dict literal, read with :func:`ast.literal_eval`);
* the ``### Training results`` markdown table (a row whose cell count differs from the header's is reported in
  :attr:`CardParts.table_error`);
* the ``### Framework versions`` list (``- Transformers 4.9.1`` or ``- transformers==4.38.2``).

:class:`TrainerCard` is the Trainer's card read as the Trainer wrote it, a view over the same parts: final metrics,
hyperparameters in the record's ``hparams`` shape (:func:`hparams_from_card`, which the Trainer callback applies to
the same block built from live ``TrainingArguments``), the learning curve of the results table, framework versions,
the model-index's dataset, task and metrics. :func:`metric_name` is the card's metric vocabulary (``Validation
Loss`` -> ``loss``, ``Spearmanr`` -> ``spearman``, ``Overall F1`` -> ``f1``; epoch, step, runtime -> None).

Optimizer lines of the Trainer: versions before ~4.38 write ``Adam with betas=(0.9,0.999) and epsilon=1e-08``
whatever ``args.optim`` was (the default, AdamW, included), so that string maps to ``adamw``; newer versions write
``Use OptimizerNames.ADAMW_TORCH with betas=...`` (or ``Use adamw_torch with ...``), mapped to ``adamw`` as well with
the implementation kept in ``extra["optim"]``. ``mixed_precision_training: Native AMP`` is written for ``--fp16``
only, so it maps to ``fp16``.

Pure functions over one string, no I/O; never raises on malformed content (unparseable parts are left empty).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from collector.importers.hf._names import HUB_ID, NON_METRICS, as_number, metric_name, parse_value

#: The sentence the Trainer (and the Keras callback) writes right above the hyperparameter list.
HPARAM_MARKER = "The following hyperparameters were used during training"

_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_TITLE = re.compile(r"^#[ \t]+(?P<title>[^\n]+?)[ \t]*$", re.M)
_BASE_SENTENCE = re.compile(r"(?:fine-tuned|finetuned|fine tuned) version of\s+(?P<rest>[^\n]*)", re.I)
_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]*)\)")
_BARE_BRACKETS = re.compile(r"\[([\w.\-]+/[\w.\-]+)\](?!\()")
_ON_DATASET = re.compile(r"\bon (?:the |an? )?(?P<name>.*?)\s+datasets?\b", re.I)
_NO_DATASET = re.compile(r"(?:an? )?(?:unknown|none)", re.I)
_FROM_SCRATCH = re.compile(r"was trained from scratch", re.I)
_RESULTS_HEAD = re.compile(r"following results(?P<where>[^:\n]*):[ \t]*\n", re.I)
_LIST_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(?P<key>[^:\n]+?)[ \t]*:[ \t]*(?P<value>.*?)[ \t]*$")
_TABLE_HEADING = re.compile(r"^#{1,6}\s*Training results\s*$", re.I | re.M)
_FRAMEWORK_HEADING = re.compile(r"^#{1,6}\s*Framework versions\s*$", re.I | re.M)
_FRAMEWORK_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(?P<name>[A-Za-z][\w.\-]*)(?:[ \t]+|==)(?P<version>\S+)")
_SEPARATOR_CELL = re.compile(r"^:?-{2,}:?$")


@dataclass
class ResultsTable:
    """The per-evaluation ``Training results`` table, as strings."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class ModelIndex:
    """The first result of the front matter's ``model-index``: its task, the datasets of every result, its metrics."""

    task: dict[str, Any] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CardParts:
    """What :func:`parse_card` found in one card. Every part is optional; absent parts are None or empty."""

    front_matter_text: str | None = None
    title: str | None = None
    base_link_text: str | None = None
    """The base-model link's text (the Trainer puts its ``model_name_or_path`` argument there)."""
    base_link_url: str | None = None
    base_word: str | None = None
    """The bare word after "version of" when the sentence has no link."""
    trained_from_scratch: bool = False
    dataset_phrase: str | None = None
    """What the base-model sentence says the run was trained on ("on the X dataset"), as written: ``glue``,
    ``None``, ``unknown``, ``GLUE MNLI``."""
    results_heading: str | None = None
    """Where the results list says its numbers are from (``on the evaluation set``), or None."""
    results: list[tuple[str, str]] = field(default_factory=list)
    has_hparam_block: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """The hyperparameter block, keys as written, values read by :func:`parse_value`."""
    table: ResultsTable | None = None
    table_error: str | None = None
    frameworks: dict[str, str] = field(default_factory=dict)
    """Lower-cased framework name -> version (``{"transformers": "4.21.3", "pytorch": "1.10.0+cu113"}``)."""

    @cached_property
    def _front(self) -> tuple[dict[str, Any], str | None]:
        if not self.front_matter_text:
            return {}, None
        import yaml

        try:
            data = yaml.load(self.front_matter_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            return {}, f"front matter is not valid YAML: {str(e).splitlines()[0]}"
        if data is None:
            return {}, None
        if not isinstance(data, dict):
            return {}, f"front matter is a {type(data).__name__}, not a mapping"
        return data, None

    @property
    def front_matter(self) -> dict[str, Any]:
        """The YAML front matter as a mapping ({} when absent or not a YAML mapping); loaded on first use."""
        return self._front[0]

    @property
    def front_matter_error(self) -> str | None:
        """Why the front matter could not be read as a mapping, or None."""
        return self._front[1]

    @property
    def base_model_text(self) -> str | None:
        """The base model as a Hub card names it: a link's URL when it points into the Hub, else the link's text
        (or URL), else the bare word after "version of"."""
        if self.base_link_url is not None or self.base_link_text is not None:
            url, text = self.base_link_url or "", self.base_link_text or ""
            return url if "huggingface.co/" in url else (text or url or None)
        return self.base_word

    @cached_property
    def model_index(self) -> ModelIndex:
        """The front matter's ``model-index`` (or ``model_index``) first result; empty when there is none."""
        index = self.front_matter.get("model-index", self.front_matter.get("model_index"))
        if not isinstance(index, list) or not index or not isinstance(index[0], dict):
            return ModelIndex()
        results = index[0].get("results")
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            return ModelIndex()
        first = results[0]
        metrics = first.get("metrics", first.get("metric"))
        if isinstance(metrics, dict):
            metrics = [metrics]
        return ModelIndex(
            task=first["task"] if isinstance(first.get("task"), dict) else {},
            datasets=[r["dataset"] for r in results if isinstance(r, dict) and isinstance(r.get("dataset"), dict)],
            metrics=[m for m in metrics or [] if isinstance(m, dict)] if isinstance(metrics, list) else [],
        )


def parse_card(text: str) -> CardParts:
    """Cut a model card into its parts (see the module docstring). Never raises on malformed content."""
    parts = CardParts()
    body = text
    match = _FRONT_MATTER.match(text)
    if match:
        parts.front_matter_text = match.group(1)
        body = text[match.end():]
    title = _TITLE.search(body)
    if title:
        parts.title = title.group("title").strip()
    _parse_base_sentence(body, parts)
    _parse_results(body, parts)
    _parse_hparams(body, parts)
    _parse_table(body, parts)
    parts.frameworks = _parse_frameworks(body)
    return parts


# ------------------------------------------------------------------------------------------------ the Trainer's card


class TrainerCard:
    """The card a Trainer wrote, read as the Trainer wrote it: a view over :class:`CardParts`."""

    def __init__(self, parts: CardParts) -> None:
        self.parts = parts

    @property
    def title(self) -> str | None:
        return self.parts.title

    @property
    def base_model(self) -> str | None:
        """As written: the link's text (the Trainer puts the ``model_name_or_path`` argument there), else its URL,
        else the bare word."""
        return self.parts.base_link_text or self.parts.base_link_url or self.parts.base_word

    @property
    def trained_from_scratch(self) -> bool:
        return self.parts.trained_from_scratch

    @property
    def dataset_phrase(self) -> str | None:
        """``X`` of ``on the X dataset``; None for ``an unknown dataset`` (the Trainer's words when it was given no
        dataset name) and ``the None dataset``."""
        phrase = self.parts.dataset_phrase
        return None if phrase is None or _NO_DATASET.fullmatch(phrase) else phrase

    @property
    def results(self) -> dict[str, str]:
        """The final results list, names and values as written (``{"Loss": "1.3831", "Accuracy": "0.2954"}``)."""
        return dict(self.parts.results)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.parts.hyperparameters

    @property
    def front_matter(self) -> dict[str, Any]:
        return self.parts.front_matter

    def metrics(self) -> dict[str, float]:
        """The final results as ``{canonical metric: value}``; bookkeeping entries and non-numeric values (``nan``
        included) are left out."""
        out: dict[str, float] = {}
        for name, raw in self.parts.results:
            key, value = metric_name(name), as_number(raw)
            if key is not None and value is not None:
                out[key] = value
        return out

    def record_hparams(self) -> dict[str, Any]:
        """The hyperparameter block in the record's ``hparams`` shape (:func:`hparams_from_card`)."""
        return hparams_from_card(self.parts.hyperparameters)

    def curve(self) -> list[dict[str, Any]]:
        """Learning-curve points ``{step, epoch, metric, value}`` from the ``Training results`` table (canonical
        metric names; ``Training Loss`` -> ``train_loss``, ``Validation Loss`` -> ``loss``; ``No log`` skipped)."""
        return table_curve(self.parts.table)

    def software(self) -> dict[str, str]:
        """Framework versions (the record's ``hardware.software``)."""
        return dict(self.parts.frameworks)

    def model_index_dataset(self) -> tuple[str | None, str | None, str | None]:
        """``(type, config, split)`` of the first ``model-index`` result's dataset (``("glue", "mrpc",
        "validation")``); the config is ``config`` or, in older cards, ``args`` when it is a plain name."""
        datasets = self.parts.model_index.datasets
        dataset = datasets[0] if datasets else {}
        dtype = _str_or_none(dataset.get("type")) or _str_or_none(dataset.get("name"))
        config = _str_or_none(dataset.get("config"))
        if config is None and isinstance(dataset.get("args"), str) and re.fullmatch(r"[\w.\-]+", dataset["args"]):
            config = dataset["args"]
        return dtype, config, _str_or_none(dataset.get("split"))

    def model_index_task_type(self) -> str | None:
        """The ``model-index`` result's task type (``text-classification``, ``multiple-choice``...)."""
        return _str_or_none(self.parts.model_index.task.get("type"))

    def model_index_metrics(self) -> list[str]:
        """Canonical names of the ``model-index`` result's metrics, in card order (the first is the one the run was
        summarized by)."""
        names = [_str_or_none(m.get("type")) or _str_or_none(m.get("name")) for m in self.parts.model_index.metrics]
        return [n for n in (metric_name(x) for x in names if x) if n]


def parse_trainer_card(text: str) -> TrainerCard:
    """Read a Trainer-generated card (:func:`parse_card`, viewed as a :class:`TrainerCard`)."""
    return TrainerCard(parse_card(text))


#: Trainer card hyperparameter key -> record ``hparams`` field.
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
    "train_batch_size": "per_device_batch_size",
    "total_train_batch_size": "batch_size",
}
_INT_FIELDS = {"seed", "gradient_accumulation_steps", "max_steps", "warmup_steps", "batch_size",
               "per_device_batch_size"}
_ADAM = re.compile(
    r"^(?:Use\s+(?:OptimizerNames\.)?(?P<optim>[\w.]+)\s+with\s+|Adam\s+with\s+)"
    r"betas=\((?P<b1>[\d.eE+-]+),\s*(?P<b2>[\d.eE+-]+)\)\s+and\s+epsilon=(?P<eps>[\d.eE+-]+)",
    re.I,
)


def hparams_from_card(block: Mapping[str, Any]) -> dict[str, Any]:
    """A Trainer card's hyperparameter block (keys as ``extract_hyperparameters_from_trainer`` writes them) in the
    record's ``hparams`` shape. Keys with no field of their own go to ``extra`` under their card name
    (``eval_batch_size``, ``distributed_type``, ``num_devices``...); the effective batch size is per-device x
    accumulation x devices when the card gives no total."""
    hp: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in block.items():
        if key in HPARAM_FIELDS:
            target = HPARAM_FIELDS[key]
            hp[target] = _coerce(target, value)
        elif key == "optimizer":
            _optimizer(str(value), hp, extra)
        elif key == "mixed_precision_training":
            hp["precision"] = "fp16"
            extra["mixed_precision_training"] = value
        else:
            extra[key] = value
    if "batch_size" not in hp and "per_device_batch_size" in hp:
        devices = block.get("num_devices")
        accumulation = hp.get("gradient_accumulation_steps") or 1
        if isinstance(hp["per_device_batch_size"], int) and isinstance(accumulation, int):
            hp["batch_size"] = hp["per_device_batch_size"] * accumulation * (
                devices if isinstance(devices, int) and devices > 0 else 1)
    hp = {k: v for k, v in hp.items() if v is not None}
    if extra:
        hp["extra"] = extra
    return hp


def _optimizer(text: str, hp: dict[str, Any], extra: dict[str, Any]) -> None:
    match = _ADAM.match(text.strip())
    if match is None:
        hp["optimizer"] = text.strip().split()[0].lower() if text.strip() else None
        if text.strip().lower() not in (hp["optimizer"] or ""):
            extra["optimizer_text"] = text.strip()
        return
    optim = match.group("optim")
    hp["optimizer"] = "adamw" if optim is None or optim.lower().startswith("adamw") else optim.lower()
    if optim is not None:
        extra["optim"] = optim.lower()
    for key, group in (("adam_beta1", "b1"), ("adam_beta2", "b2"), ("adam_epsilon", "eps")):
        value = as_number(match.group(group))
        if value is not None:
            extra[key] = value


def _coerce(target: str, value: Any) -> Any:
    if target == "lr_scheduler":
        return str(value) if value is not None else None
    number = as_number(value)
    if number is None:
        return None
    if target in _INT_FIELDS:
        return int(number) if number == int(number) else None
    return number


def table_curve(table: ResultsTable | None) -> list[dict[str, Any]]:
    """Learning-curve points of a ``Training results`` table: one per (row, metric column) with the row's ``Step``
    and ``Epoch``; ``No log`` and other non-numeric cells skipped."""
    if table is None:
        return []
    lower = [h.strip().lower() for h in table.header]
    step_col = lower.index("step") if "step" in lower else None
    epoch_col = lower.index("epoch") if "epoch" in lower else None
    columns = [(i, metric_name(h)) for i, h in enumerate(table.header)]
    points: list[dict[str, Any]] = []
    for row in table.rows:
        step = as_number(row[step_col]) if step_col is not None else None
        epoch = as_number(row[epoch_col]) if epoch_col is not None else None
        for i, name in columns:
            value = as_number(row[i])
            if name is None or value is None:
                continue
            point: dict[str, Any] = {"metric": name, "value": value}
            if step is not None and step >= 0:
                point["step"] = int(step)
            if epoch is not None and epoch >= 0:
                point["epoch"] = epoch
            points.append(point)
    return points


# ------------------------------------------------------------------------------------------------------ the parser


def _parse_base_sentence(body: str, parts: CardParts) -> None:
    scratch = _FROM_SCRATCH.search(body)
    parts.trained_from_scratch = scratch is not None
    match = _BASE_SENTENCE.search(body)
    if match is None:
        if scratch is not None:
            parts.dataset_phrase = _dataset_after(body[scratch.end():])
        return
    rest = _BARE_BRACKETS.sub(r"[\1](\1)", match.group("rest").lstrip())
    link = _LINK.match(rest) or _first_link_in_clause(rest)
    if link is not None:
        parts.base_link_text = link.group("text").strip() or None
        parts.base_link_url = link.group("url").strip() or None
        after = rest[link.end():]
    else:
        word = rest.split()[0] if rest.split() else ""
        parts.base_word = word.strip("`*'\".,;") or None
        after = rest[len(word):]
    parts.dataset_phrase = _dataset_after(after)


def _first_link_in_clause(rest: str) -> re.Match[str] | None:
    """A link before the end of the sentence's first clause ("of pretrained version [x](...)")."""
    clause = re.split(r"\.\s|\bon\b", rest, maxsplit=1)[0]
    return _LINK.search(clause)


def _dataset_after(text: str) -> str | None:
    """The dataset named by "on the X dataset" in the first sentence of ``text`` (the rest of the base-model
    sentence), links reduced to their text."""
    sentence = re.split(r"\.(?:\s|$)", text.split("\n")[0], maxsplit=1)[0]
    inverted = re.search(r"\bon the dataset\s+(?P<name>[^\s,;]+)", sentence, re.I)
    match = inverted or _ON_DATASET.search(sentence)
    if match is None:
        return None
    name = _LINK.sub(lambda m: m.group("text"), match.group("name")).strip().strip("`*_'\" ")
    return name or None


def _parse_results(body: str, parts: CardParts) -> None:
    match = _RESULTS_HEAD.search(body)
    if match is None:
        return
    parts.results_heading = match.group("where").strip() or None
    after = body[match.end():].lstrip("\n")
    if after.startswith("{"):
        literal = parse_value(after.split("\n", 1)[0])
        if isinstance(literal, dict):
            parts.results = [(str(k), str(v)) for k, v in literal.items()]
            return
    for line in _list_lines(body[match.end():]):
        item = _LIST_ITEM.match(line)
        if item:
            parts.results.append((item.group("key").strip(), item.group("value").strip()))


def _list_lines(text: str) -> list[str]:
    """The lines of the list starting at ``text`` (blank lines before it allowed, stops at the first other line)."""
    lines: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            if lines:
                break
            continue
        if not re.match(r"^[ \t]*[-*][ \t]", line):
            break
        lines.append(line)
    return lines


def _parse_hparams(body: str, parts: CardParts) -> None:
    at = body.find(HPARAM_MARKER)
    if at < 0:
        return
    parts.has_hparam_block = True
    after = body[at + len(HPARAM_MARKER):].split("\n", 1)
    for line in _list_lines(after[1] if len(after) > 1 else ""):
        item = _LIST_ITEM.match(line)
        if item:
            parts.hyperparameters[item.group("key").strip()] = parse_value(item.group("value"))


def _section(body: str, heading: re.Pattern[str]) -> str | None:
    """The text under the first heading matching ``heading``, up to the next heading."""
    match = heading.search(body)
    if match is None:
        return None
    rest = body[match.end():]
    nxt = re.search(r"^#{1,6}\s", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def _parse_table(body: str, parts: CardParts) -> None:
    section = _section(body, _TABLE_HEADING)
    if section is None:
        return
    lines = [ln.strip() for ln in section.split("\n") if ln.strip().startswith("|")]
    if not lines:
        return
    rows = [_cells(ln) for ln in lines]
    header, data = rows[0], rows[1:]
    if data and all(_SEPARATOR_CELL.match(c.replace(" ", "")) for c in data[0] if c):
        data = data[1:]
    for i, row in enumerate(data, start=1):
        if len(row) != len(header):
            parts.table_error = (
                f"Training results table row {i} has {len(row)} cells, its header has {len(header)} "
                f"({' | '.join(header)})"
            )
            return
    parts.table = ResultsTable(header=header, rows=data)


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip() for c in inner.split("|")]


def _parse_frameworks(body: str) -> dict[str, str]:
    section = _section(body, _FRAMEWORK_HEADING)
    if section is None:
        return {}
    out: dict[str, str] = {}
    for line in section.split("\n"):
        match = _FRAMEWORK_ITEM.match(line)
        if match:
            out[match.group("name").lower()] = match.group("version").strip("`")
    return out


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


__all__ = [
    "HPARAM_MARKER",
    "HUB_ID",
    "NON_METRICS",
    "CardParts",
    "ModelIndex",
    "ResultsTable",
    "TrainerCard",
    "as_number",
    "hparams_from_card",
    "metric_name",
    "parse_card",
    "parse_trainer_card",
    "parse_value",
    "table_curve",
]

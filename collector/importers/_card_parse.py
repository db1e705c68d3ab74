"""Text-level parser of Hugging Face model cards (README.md), in particular the Trainer's auto-generated card.

This module only cuts a card into its parts, as strings and plain Python values; it knows nothing about the run
record (see :mod:`collector.importers.hf_cards` for the mapping). Parts recognized:

* the YAML front matter between the leading ``---`` lines (``model-index`` / ``model_index``, ``datasets``, ``tags``,
  ``pipeline_tag``, ``license``, ``base_model``, ``library_name``...); a front matter that is not valid YAML is
  reported in :attr:`CardParts.front_matter_error`, never raised;
* the base-model sentence ``This model is a fine-tuned version of [x](https://huggingface.co/x) on the y dataset.``
  (also without a link, with ``an unknown dataset`` / ``the None dataset``, and ``was trained from scratch``);
* the final results list ``It achieves the following results on the evaluation set:`` followed by ``- Name: value``;
* the hyperparameter block ``The following hyperparameters were used during training:`` followed by
  ``- key: value`` (Keras cards write the optimizer as a Python dict literal, parsed with :func:`ast.literal_eval`);
* the ``### Training results`` markdown table (header, rows; a row whose cell count differs from the header's is
  reported in :attr:`CardParts.table_error`);
* the ``### Framework versions`` list (``- Transformers 4.9.1`` or ``- transformers==4.38.2``).

Every function is pure and cheap (regular expressions over one card), so a card is parsed in well under a
millisecond apart from the YAML front matter.

Coordination note: another importer (``hf_trainer``) parses the same auto-generated card in
``collector/importers/_trainer_card.py`` (``parse_trainer_card``). The two should be merged into one module; this one
also covers hand-edited Hub cards (links with odd URLs, Keras optimizer dicts, ``eval_*`` result names, test-set
results headings), which the Trainer-directory importer never meets.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

#: The sentence the Trainer (and Keras callback) writes right above the hyperparameter list.
HPARAM_MARKER = "The following hyperparameters were used during training"

_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)
_BASE_SENTENCE = re.compile(r"(?:fine-tuned|finetuned|fine tuned) version of\s+(?P<rest>[^\n]*)", re.I)
_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]*)\)")
_BARE_BRACKETS = re.compile(r"\[([\w.\-]+/[\w.\-]+)\](?!\()")
_ON_DATASET = re.compile(r"\bon (?:the |an? )?(?P<name>.*?)\s+datasets?\b", re.I)
_FROM_SCRATCH = re.compile(r"was trained from scratch", re.I)
_RESULTS_HEAD = re.compile(r"following results(?P<where>[^:\n]*):[ \t]*\n", re.I)
_LIST_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(?P<key>[^:\n]+?)[ \t]*:[ \t]*(?P<value>.*?)[ \t]*$")
_HEADING = re.compile(r"^#{1,6}\s")
_TABLE_HEADING = re.compile(r"^#{1,6}\s*Training results\s*$", re.I | re.M)
_FRAMEWORK_HEADING = re.compile(r"^#{1,6}\s*Framework versions\s*$", re.I | re.M)
_FRAMEWORK_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(?P<name>[A-Za-z][\w.\-]*)(?:[ \t]+|==)(?P<version>\S+)")
_SEPARATOR_CELL = re.compile(r"^:?-{2,}:?$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class ResultsTable:
    """The per-evaluation ``Training results`` table, as strings."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class CardParts:
    """What :func:`parse_card` found in one card. Every part is optional; absent parts are None or empty."""

    front_matter: dict[str, Any] = field(default_factory=dict)
    front_matter_error: str | None = None
    base_model_text: str | None = None
    """The base model as written: a link's URL (preferred) or text, or the bare word after "version of"."""
    trained_from_scratch: bool = False
    dataset_phrase: str | None = None
    """What follows "on the" in the base-model sentence, e.g. ``glue``, ``None``, ``unknown``, ``GLUE MNLI``."""
    results_heading: str | None = None
    """Where the results list says its numbers are from (``on the evaluation set``), or None."""
    results: list[tuple[str, str]] = field(default_factory=list)
    has_hparam_block: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    table: ResultsTable | None = None
    table_error: str | None = None
    frameworks: dict[str, str] = field(default_factory=dict)


def parse_card(text: str) -> CardParts:
    """Cut a model card into its parts (see the module docstring). Never raises on malformed content."""
    parts = CardParts()
    body = text
    match = _FRONT_MATTER.match(text)
    if match:
        body = text[match.end() :]
        parts.front_matter, parts.front_matter_error = _load_yaml(match.group(1))
    _parse_base_sentence(body, parts)
    _parse_results(body, parts)
    _parse_hparams(body, parts)
    _parse_table(body, parts)
    parts.frameworks = _parse_frameworks(body)
    return parts


def _load_yaml(block: str) -> tuple[dict[str, Any], str | None]:
    try:
        data = yaml.load(block, Loader=_LOADER)
    except yaml.YAMLError as e:
        return {}, f"front matter is not valid YAML: {str(e).splitlines()[0]}"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return {}, f"front matter is a {type(data).__name__}, not a mapping"
    return data, None


def _parse_base_sentence(body: str, parts: CardParts) -> None:
    scratch = _FROM_SCRATCH.search(body)
    parts.trained_from_scratch = scratch is not None
    match = _BASE_SENTENCE.search(body)
    if match is None:
        if scratch is not None:
            parts.dataset_phrase = _dataset_after(body[scratch.end() :])
        return
    rest = _BARE_BRACKETS.sub(r"[\1](\1)", match.group("rest").lstrip())
    link = _LINK.match(rest) or _first_link_in_clause(rest)
    if link is not None:
        url, text = link.group("url").strip(), link.group("text").strip()
        parts.base_model_text = url if "huggingface.co/" in url else (text or url or None)
        after = rest[link.end() :]
    else:
        word = rest.split()[0] if rest.split() else ""
        parts.base_model_text = word.strip("`*'\".,;") or None
        after = rest[len(word) :]
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
    after = body[match.end() :].lstrip("\n")
    if after.startswith("{"):
        literal = parse_value(after.split("\n", 1)[0])
        if isinstance(literal, dict):
            parts.results = [(str(k), str(v)) for k, v in literal.items()]
            return
    for line in _list_lines(body[match.end() :]):
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
    after = body[at + len(HPARAM_MARKER) :].split("\n", 1)
    for line in _list_lines(after[1] if len(after) > 1 else ""):
        item = _LIST_ITEM.match(line)
        if item:
            parts.hyperparameters[item.group("key").strip()] = parse_value(item.group("value"))


def parse_value(raw: str) -> Any:
    """A hyperparameter or metric value as written: int, float, None, bool, a Python literal (Keras optimizer
    dicts), or the stripped string."""
    value = re.sub(r"\s+#.*$", "", raw).strip()
    if value in ("None", "null", ""):
        return None
    if value in ("True", "true"):
        return True
    if value in ("False", "false"):
        return False
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    try:
        return float(value)
    except ValueError:
        pass
    if value[:1] in "{[(":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value


def _section(body: str, heading: re.Pattern[str]) -> str | None:
    """The text under the first heading matching ``heading``, up to the next heading."""
    match = heading.search(body)
    if match is None:
        return None
    rest = body[match.end() :]
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

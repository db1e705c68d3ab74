"""Hugging Face model cards: one card written by the Trainer -> one fine-tuning run.

``hf_cards`` (:class:`ModelCards`, source ``hf_cards``) reads ``<author>/<model>/README.md`` cards from a tar archive
(the shipped ``cards.tar.gz``, read in place) or from a plain directory (what :func:`collector.importers.hf.harvest.
harvest_hub` writes, with an optional ``config.json`` beside each card). ``hub_samples`` (:class:`HubSamples`, source
``hub_samples``) reads a JSON object of Hub API model entries (``modelId``, ``tags``, ``modelcard_text``): the same
mapping, with the Hub tags as hints (pipeline task, ``dataset:``, ``base_model:``, ``license:``).

A card is cut by :func:`collector.importers.hf.card.parse_card`; :func:`card_to_record` maps its parts: the base model
(the sentence's Hub link, else front matter ``base_model``, else a ``base_model:`` tag), the dataset and task
(:mod:`._card_task`), the final metrics on one declared scale, the hyperparameters and the method
(:mod:`._card_outcome`), the license, and the architecture of a harvested ``config.json``. A card that cannot yield
a usable run is one :class:`~collector.formats.Rejected` with its reason (no hyperparameter block, no base model, no
dataset, no task metric, a malformed results table or front matter, not UTF-8). Field mapping, precedence, scales and
counts: ``docs/sources/hf_cards.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, RecordProblem, Rejected
from collector.importers.hf._card_outcome import (
    card_hparams,
    card_method,
    card_primary,
    final_metrics,
    scaled_outcome,
)
from collector.importers.hf._card_task import (
    CardContext,
    axolotl_config,
    card_dataset,
    hub_task,
    record_task_type,
)
from collector.importers.hf.card import HUB_ID, CardParts, parse_card, table_curve

#: Folder that a harvest uses for model ids without an author (``_/gpt2/README.md`` is the card of ``gpt2``).
LEGACY_AUTHOR = "_"


def card_to_record(text: str, ctx: CardContext) -> dict[str, Any]:
    """Map one card to a record dict in the nested RunRecord shape.

    Raises:
        RecordProblem: the card cannot yield a usable run (the reason is precise enough to act on).
    """
    parts = parse_card(text)
    if parts.front_matter_error:
        raise RecordProblem(None, parts.front_matter_error)
    if not parts.has_hparam_block:
        raise RecordProblem("hparams", "no Trainer hyperparameter block")
    if parts.table_error:
        raise RecordProblem("outcome.curve", f"unparseable {parts.table_error}")
    fm = parts.front_matter
    axolotl = axolotl_config(text)
    base = _base_model(parts, fm, ctx, axolotl)
    dataset = card_dataset(parts, ctx, axolotl)
    final, split = final_metrics(parts)
    hf_task = hub_task(parts, ctx, final, dataset, base)
    task_type = record_task_type(hf_task, final)
    primary = card_primary(task_type, hf_task, final, parts.model_index)
    hparams, hardware = card_hparams(parts.hyperparameters, parts.frameworks, axolotl)
    hparams["extra"]["output_model"] = ctx.model_id
    if hf_task and hf_task != task_type:
        hparams["extra"]["hf_task"] = hf_task
    task, metrics, curve_points, score = scaled_outcome(primary, final, table_curve(parts.table))
    task["type"] = task_type
    record: dict[str, Any] = {
        "task": task,
        "dataset": {"name": dataset},
        "model": {"id": base},
        "method": card_method(parts, ctx, axolotl, text),
        "hparams": hparams,
        "outcome": {"status": "ok", "score": score, "split": split, "metrics": metrics, "curve": curve_points},
        "hardware": hardware,
        "provenance": {"license": _license(fm, ctx)},
    }
    if ctx.config:
        _apply_config(record, ctx.config, task_type)
    return record


def card_task(text: str, model_id: str, tags: Iterable[str] = ()) -> set[str]:
    """The task names of a card (its Hub task and the record's task type), by the same precedence as
    :func:`card_to_record`, for cards that cannot yield a record too (used to list an offline directory by task)."""
    parts = parse_card(text)
    ctx = CardContext(model_id, list(tags))
    final, _ = final_metrics(parts)
    base = (_hub_id(parts.base_model_text) if parts.base_model_text else None) or ""
    try:
        dataset = card_dataset(parts, ctx, {})
    except RecordProblem:
        dataset = ""
    hf_task = hub_task(parts, ctx, final, dataset, base)
    return {t for t in (hf_task, record_task_type(hf_task, final)) if t}


# --- base model ---------------------------------------------------------------------------------------------------


def _base_model(parts: CardParts, fm: dict[str, Any], ctx: CardContext, axolotl: dict[str, Any]) -> str:
    candidates: list[str] = []
    if parts.base_model_text:
        candidates.append(parts.base_model_text)
    fm_base = fm.get("base_model")
    if isinstance(fm_base, list) and fm_base:
        fm_base = fm_base[0]
    if isinstance(fm_base, str):
        candidates.append(fm_base)
    candidates += [t.split(":", 1)[1] for t in ctx.tags if t.startswith("base_model:") and t.count(":") == 1]
    candidates += [t.rsplit(":", 1)[1] for t in ctx.tags if t.startswith("base_model:") and t.count(":") == 2]
    if isinstance(axolotl.get("base_model"), str):
        candidates.append(axolotl["base_model"])
    if not candidates:
        if parts.trained_from_scratch:
            raise RecordProblem("model.id", "no base model: the card says the model was trained from scratch")
        raise RecordProblem("model.id",
                            "no base model: the card does not say which checkpoint it was fine-tuned from")
    raw = candidates[0]
    model = _hub_id(raw)
    if model is None:
        if re.fullmatch(r"\s*(?:https?://)?huggingface\.co/?\s*", raw):
            raise RecordProblem("model.id",
                                "no base model: the card's base-model link is empty (https://huggingface.co/)")
        raise RecordProblem("model.id", f"base model {raw!r} is a local path, not a Hub model id")
    return model


def _hub_id(raw: str) -> str | None:
    """The Hub model id in a link URL or name, or None for a local path / empty link."""
    text = raw.strip().strip("`*'\"")
    if "huggingface.co/" in text:
        text = text.split("huggingface.co/", 1)[1]
    text = re.split(r"[?#]", text)[0]
    text = re.sub(r"/(?:tree|blob|resolve)/.*$", "", text).strip("/")
    if not text or text.startswith((".", "~", "\\")) or raw.strip().startswith("/") or "\\" in text:
        return None
    if re.search(r"(?:^|/)checkpoint[-_]\d+$", text) or "content/" in text or "drive/" in text:
        return None
    if text.startswith("models/") and text.count("/") >= 2:
        text = text[len("models/") :]
    return text if HUB_ID.fullmatch(text) else None



def _license(fm: dict[str, Any], ctx: CardContext) -> str | None:
    lic = fm.get("license")
    if isinstance(lic, list) and lic:
        lic = lic[0]
    if isinstance(lic, str) and lic.strip():
        return lic.strip()
    tagged = [t.split(":", 1)[1] for t in ctx.tags if t.startswith("license:")]
    return tagged[0] if tagged else None


def _apply_config(record: dict[str, Any], config: dict[str, Any], task_type: str) -> None:
    """Architecture facts of the fine-tuned checkpoint (same architecture as its base) into model.*."""
    model = record["model"]
    pick = {
        "family": ("model_type",),
        "n_layers": ("num_hidden_layers", "n_layers", "n_layer", "num_layers"),
        "hidden_size": ("hidden_size", "d_model", "n_embd", "dim"),
        "n_heads": ("num_attention_heads", "n_head", "num_heads"),
        "vocab_size": ("vocab_size",),
        "max_positions": ("max_position_embeddings", "n_positions"),
    }
    for target, keys in pick.items():
        for key in keys:
            value = config.get(key)
            if target == "family" and isinstance(value, str) and value:
                model[target] = value
                break
            if target != "family" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                model[target] = value
                break
    labels = config.get("id2label")
    if task_type in ("text-classification", "image-classification") and isinstance(labels, dict) and labels:
        record["dataset"].setdefault("meta", {})["n_classes"] = len(labels)




# ----------------------------------------------------------------------------------------------------------------
# Formats


def _item(text: str, ctx: CardContext, locator: str, uri: str) -> Item:
    try:
        return RawRecord(data=card_to_record(text, ctx), locator=locator, uri=uri)
    except RecordProblem as e:
        return Rejected(locator=locator, reason=str(e), field=e.field, uri=uri)


def _model_id_of(member: str) -> str | None:
    """``author/model`` of an archive member or relative path ``[./]author/model/README.md``, else None."""
    parts = [p for p in PurePosixPath(member).parts if p not in (".", "")]
    if len(parts) == 3 and parts[2].lower() == "readme.md":
        return f"{parts[0]}/{parts[1]}"
    return None


def _decode(data: bytes, locator: str, uri: str) -> str | Rejected:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(locator=locator, reason=f"card is not UTF-8 text ({e.reason} at byte {e.start})", uri=uri)


class ModelCards(Format):
    """Model cards as ``<author>/<model>/README.md`` in a .tar.gz archive or a directory (one card -> one run)."""

    name: ClassVar[str] = "hf_cards"
    priority: ClassVar[int] = 40
    description: ClassVar[str] = "Hugging Face model cards (<author>/<model>/README.md, .tar.gz or directory)"
    source: ClassVar[str] = "hf_cards"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """An archive whose first members are ``author/model/README.md``, or a directory of such cards only."""
        if path.is_file():
            if not path.name.endswith((".tar.gz", ".tgz")):
                return False
            files = [name for name, kind in peek_members(path, 5) if kind == "file"]
            return bool(files) and _model_id_of(files[0]) is not None
        if path.is_dir():
            return _looks_like_card_dir(path)
        return False

    def read(self, path: Path) -> Iterator[Item]:
        if path.is_dir():
            yield from self._read_dir(path)
        else:
            yield from self._read_tar(path)

    def estimate(self, path: Path) -> int | None:
        if path.is_dir():
            return sum(1 for _ in path.glob("*/*/README.md"))
        return None

    def _read_tar(self, path: Path) -> Iterator[Item]:
        uri = str(path)
        if not path.exists():
            raise FormatError("no such file", uri=uri)
        seen = 0
        last = "the start"
        try:
            for name, data in archive_files(path):
                last = name
                model_id = _model_id_of(name)
                if model_id is None:
                    yield Rejected(locator=name, reason="not a card: expected <author>/<model>/README.md", uri=uri)
                    continue
                seen += 1
                text = _decode(data, model_id, uri)
                yield text if isinstance(text, Rejected) else _item(text, CardContext(model_id), model_id, uri)
        except ARCHIVE_ERRORS as e:
            raise FormatError(f"archive is truncated or corrupt after {seen} cards (last member {last}): {e}",
                              uri=uri) from e
        if seen == 0:
            raise FormatError("archive holds no <author>/<model>/README.md card", uri=uri)

    def _read_dir(self, path: Path) -> Iterator[Item]:
        cards = sorted(path.glob("*/*/README.md"))
        if not cards:
            raise FormatError("directory holds no <author>/<model>/README.md card", uri=str(path))
        for card in cards:
            author, name = card.parent.parent.name, card.parent.name
            model_id = name if author == LEGACY_AUTHOR else f"{author}/{name}"
            uri = str(card)
            text = _decode(card.read_bytes(), model_id, uri)
            if isinstance(text, Rejected):
                yield text
                continue
            config, problem = _read_config(card.parent / "config.json")
            if problem:
                yield Rejected(locator=model_id, reason=problem, field="model", uri=str(card.parent / "config.json"))
                continue
            yield _item(text, CardContext(model_id, config=config), model_id, uri)


def _read_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"config.json is not valid JSON: {e}"
    return (data, None) if isinstance(data, dict) else (None, "config.json is not a JSON object")


def _looks_like_card_dir(path: Path) -> bool:
    """Directories of ``author/model/`` folders that hold only README.md (+ config.json), a few checked."""
    allowed = {"readme.md", "config.json"}
    checked = 0
    try:
        for entry in sorted(path.iterdir())[:50]:
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                return False
            for model in sorted(entry.iterdir())[:3]:
                if not model.is_dir():
                    return False
                names = {p.name.lower() for p in model.iterdir()}
                if "readme.md" not in names or not names <= allowed:
                    return False
                checked += 1
            if checked >= 5:
                break
    except OSError:
        return False
    return checked > 0


class HubSamples(Format):
    """Hub API model entries with their card text (``modelId``, ``tags``, ``modelcard_text``): one entry -> one run."""

    name: ClassVar[str] = "hub_samples"
    priority: ClassVar[int] = 50
    description: ClassVar[str] = "Hub API model entries with card text (JSON: modelId, tags, modelcard_text)"
    source: ClassVar[str] = "hub_samples"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A .json file whose first entry has ``modelId`` and ``modelcard_text``."""
        if not path.is_file() or path.suffix.lower() != ".json":
            return False
        try:
            with open(path, "rb") as f:
                head = f.read(65536)
        except OSError:
            return False
        return b'"modelId"' in head and b'"modelcard_text"' in head

    def read(self, path: Path) -> Iterator[Item]:
        uri = str(path)
        entries = _load_entries(path)
        for key, entry in entries:
            locator = f"entry {key}"
            if not isinstance(entry, dict):
                yield Rejected(locator=locator, reason="entry is not a JSON object", uri=uri)
                continue
            model_id = entry.get("modelId") or entry.get("id")
            text = entry.get("modelcard_text", entry.get("cardData"))
            if not isinstance(model_id, str) or not model_id.strip():
                yield Rejected(locator=locator, reason="entry has no modelId", field="modelId", uri=uri)
                continue
            if not isinstance(text, str) or not text.strip():
                yield Rejected(locator=model_id, reason="entry has no card text (modelcard_text)",
                               field="modelcard_text", uri=uri)
                continue
            tags = [t for t in entry.get("tags") or [] if isinstance(t, str)]
            yield _item(text, CardContext(model_id.strip(), tags=tags), model_id.strip(), uri)

    def estimate(self, path: Path) -> int | None:
        return None


def _load_entries(path: Path) -> list[tuple[str, Any]]:
    if not path.exists():
        raise FormatError("no such file", uri=str(path))
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"not valid JSON (truncated?): {e}", uri=str(path)) from e
    if isinstance(data, dict):
        return [(str(k), v) for k, v in data.items()]
    if isinstance(data, list):
        return [(str(i), v) for i, v in enumerate(data)]
    raise FormatError("expected a JSON object or array of Hub model entries", uri=str(path))

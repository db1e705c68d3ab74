"""MTEB classification results: frozen text encoders probed with logistic regression (kNN for multilabel tasks).

Source: github.com/embeddings-benchmark/results @ f4cc6c8b (the MTEB leaderboard's result store, every result JSON
whose name contains "Classification", plus the models' ``model_meta.json``), license CC0-1.0
(``provenance.license``); ``task_metadata.csv.gz`` is parsed from the mteb package's task definitions (mteb @
a905523d).

Input: the ``mteb_classification`` folder, or ``results_json_raw.tar.xz`` with ``task_metadata.csv.gz`` beside it
(required: without it text tasks cannot be told from image, audio and video ones). The archive (22,474 result files,
852 ``model_meta.json``; ~18 MB xz, ~260 MB of JSON) is streamed once in ``r|xz`` mode and never extracted; the
files of one ``results/<model>/<revision>/`` folder are buffered until the folder ends, because its
``model_meta.json`` may come after its results (it does in 625 of 879 folders).

One record per (model, revision, task, ``hf_subset``, split) — an entry of ``scores.<split>[]`` in the current JSON
layout, or ``<split>.<subset>`` (``<split>`` alone for a single-subset task) in the layout of mteb < 1.2:

* task -> ``dataset.name`` ``mteb/<TaskName>`` + ``/<hf_subset>`` unless the subset is ``default`` (lower-cased by
  the schema's dataset canonicalization); ``dataset_revision`` -> ``dataset.fingerprint``; ``languages`` of the entry
  (or the subset name / the task's single ``eval_langs`` in the old layout) -> ``dataset.meta.language``, as ISO 639-1
  where one exists (:data:`ISO639_3_TO_1`; ``vie-Latn`` -> ``vi``), the ISO 639-3 code otherwise, several joined
  with ``,``.
* model: ``model_meta.json`` ``name`` (else the folder name, ``org__name`` -> ``org/name``) -> ``model.id``; the
  revision folder -> ``model.revision``, except the labels ``external`` (scores imported from the model's authors)
  and ``no_revision_available``, which leave the revision empty and go to ``hparams.extra.revision_label`` so those
  runs stay distinct. Features (enrichment): ``n_parameters`` -> ``n_params``, ``embed_dim`` -> ``hidden_size``
  (the width of the embedding the probe sees; it equals the encoder's hidden size for most models, not for those
  with a projection or Matryoshka truncation), ``max_tokens`` -> ``max_positions``, ``adapted_from`` ->
  ``base_model``. Not mapped (no Model field): ``release_date``, ``license``, ``open_weights``, ``framework``,
  ``memory_usage_mb``, ``similarity_fn_name``, ``use_instructions``, ``training_datasets``, ``reference``,
  ``languages``, ``modalities``, ``loader``.
* method ``linear_probe`` (the encoder is frozen), ``method.config``: ``{"probe": "logistic_regression",
  "max_iter": 100, "samples_per_label": n}`` for Classification tasks; ``{"probe": "knn", "n_neighbors": 5,
  "samples_per_label": n}`` for MultilabelClassification (mteb's multilabel evaluator is a kNN). ``n`` is the task's
  override from the metadata, else mteb's default 8 (older mteb versions may have used other values; the writing
  version is in ``hparams.extra.mteb_version``).
* ``main_score`` -> ``outcome.score`` with the task's main metric as ``task.primary_metric`` (``accuracy``, ``f1``,
  ``lrap`` — unknown to the registry, declared unit scale, higher is better); every other numeric entry value ->
  ``outcome.metrics`` (names canonicalized: ``ap`` -> ``average_precision``). ``scores_per_experiment`` ->
  ``outcome.n_repeats`` (their number) and ``outcome.score_std`` (population std of the main metric over them, as
  mteb's own ``*_stderr``); old-layout files carry ``<main>_stderr`` (also a population std) -> ``score_std``, and
  ``n_repeats`` stays empty. ``outcome.split`` = the split name (``test``, ``validation``, ``train``, ``test_2021``).
* ``evaluation_time`` is NOT training time (it covers embedding the texts and fitting/scoring the probes, for all
  subsets of the file, on contributors' unknown hardware): kept as ``outcome.metrics.evaluation_time_s``,
  ``outcome.runtime_s`` stays empty. ``kg_co2_emissions``, when reported, -> ``outcome.metrics.kg_co2_emissions``.

Out of scope, reported as rejects with a reason starting ``out of scope:`` (one per result file; the pipeline has no
separate skip count): tasks whose metadata type is not ``Classification``/``MultilabelClassification`` or whose
modalities are not text only (PairClassification, Image/Audio/Video classification, zero-shot image/video tasks).
Tasks absent from the metadata (6 names, e.g. ``ScalaNbClassification``) are kept as text classification when their
name does not mark them as pair/image/audio/video tasks. ``model_meta.json`` files of folders without results
(``experiments/<variant>/`` sub-folders, models with no classification results) describe no run and are not reported.

Rejected: a file that is not valid JSON or has no scores, an entry without a main score, a score that fails
validation. A truncated or corrupt archive raises :class:`FormatError` after the runs of the complete folders read
before the damage.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.schema._vocab import canonical_metric as _canonical_metric

LICENSE = "CC0-1.0"
ARCHIVE = "results_json_raw.tar.xz"
METADATA = "task_metadata.csv.gz"
META_FILE = "model_meta.json"
IN_SCOPE_TYPES = frozenset({"Classification", "MultilabelClassification"})
NON_TEXT_HINTS = ("PairClassification", "Image", "Video", "Audio", "Zeroshot", "ZeroShot")
REVISION_LABELS = frozenset({"external", "no_revision_available"})
DEFAULT_SAMPLES_PER_LABEL = 8
#: Top-level keys of an old-layout (mteb < 1.2) file that are not splits.
OLD_LAYOUT_KEYS = frozenset({"dataset_revision", "mteb_dataset_name", "mteb_version", "task_name", "evaluation_time",
                             "kg_co2_emissions", "description", "type", "mteb_main_score", "date",
                             "evaluation_phases", "scores"})
#: Entry keys that are not metrics.
NOT_METRICS = frozenset({"hf_subset", "languages", "main_score", "scores_per_experiment", "mteb_version",
                         "evaluation_time"})

#: ISO 639-3 (and the individual languages MTEB uses under a macrolanguage) -> ISO 639-1.
ISO639_3_TO_1: dict[str, str] = {
    "afr": "af", "aka": "ak", "als": "sq", "amh": "am", "ara": "ar", "arb": "ar", "acm": "ar", "acq": "ar",
    "aeb": "ar", "ajp": "ar", "apc": "ar", "arq": "ar", "ars": "ar", "ary": "ar", "arz": "ar", "asm": "as",
    "aze": "az", "azj": "az", "azb": "az", "bak": "ba", "bam": "bm", "bel": "be", "ben": "bn", "bod": "bo",
    "bos": "bs", "bre": "br", "bul": "bg", "cat": "ca", "ces": "cs", "chv": "cv", "ckb": "ku", "cmn": "zh",
    "cym": "cy", "dan": "da", "deu": "de", "dzo": "dz", "ell": "el", "eng": "en", "epo": "eo", "est": "et",
    "eus": "eu", "ewe": "ee", "fao": "fo", "fas": "fa", "pes": "fa", "prs": "fa", "fij": "fj", "fin": "fi",
    "fra": "fr", "gaz": "om", "orm": "om", "gla": "gd", "gle": "ga", "glg": "gl", "grn": "gn", "guj": "gu",
    "hat": "ht", "hau": "ha", "heb": "he", "hin": "hi", "hrv": "hr", "hun": "hu", "hye": "hy", "ibo": "ig",
    "ind": "id", "isl": "is", "ita": "it", "jav": "jv", "jpn": "ja", "kas": "ks", "kat": "ka", "kaz": "kk",
    "khk": "mn", "mon": "mn", "khm": "km", "kik": "ki", "kin": "rw", "kir": "ky", "kmr": "ku", "kur": "ku",
    "kon": "kg", "knc": "kr", "kor": "ko", "lao": "lo", "lav": "lv", "lvs": "lv", "lim": "li", "lin": "ln",
    "lit": "lt", "ltz": "lb", "lug": "lg", "mal": "ml", "mar": "mr", "mkd": "mk", "mlt": "mt", "mri": "mi",
    "msa": "ms", "zsm": "ms", "mya": "my", "nbl": "nr", "nep": "ne", "npi": "ne", "nld": "nl", "nno": "nn",
    "nob": "nb", "nor": "no", "nya": "ny", "oci": "oc", "ori": "or", "ory": "or", "pan": "pa", "pbt": "ps",
    "pus": "ps", "pol": "pl", "por": "pt", "quy": "qu", "que": "qu", "ron": "ro", "run": "rn", "rus": "ru",
    "sag": "sg", "san": "sa", "srd": "sc", "sin": "si", "slk": "sk", "slv": "sl", "smo": "sm", "sna": "sn",
    "snd": "sd", "som": "so", "sot": "st", "spa": "es", "sqi": "sq", "srp": "sr", "ssw": "ss", "sun": "su",
    "swa": "sw", "swh": "sw", "swe": "sv", "tam": "ta", "tat": "tt", "tel": "te", "tgk": "tg", "tgl": "tl",
    "tha": "th", "tir": "ti", "tsn": "tn", "tso": "ts", "tuk": "tk", "tur": "tr", "twi": "tw", "uig": "ug",
    "ukr": "uk", "urd": "ur", "uzb": "uz", "uzn": "uz", "ven": "ve", "vie": "vi", "wol": "wo", "xho": "xh",
    "ydd": "yi", "yid": "yi", "yor": "yo", "zho": "zh", "zul": "zu", "plt": "mg", "mlg": "mg",
}


canonical_metric = lru_cache(maxsize=1024)(_canonical_metric)


@dataclass(frozen=True)
class TaskInfo:
    """What the parsed mteb task metadata says about one task."""

    name: str
    type: str
    modalities: tuple[str, ...] | None
    category: str | None
    main_score: str | None
    samples_per_label: int | None
    eval_langs: tuple[str, ...]

    def out_of_scope(self) -> str | None:
        """Why the task is not a text classification task, or None."""
        if self.type not in IN_SCOPE_TYPES:
            return f"out of scope: {self.type} task"
        if self.modalities is not None and set(self.modalities) != {"text"}:
            return f"out of scope: {self.type} task on {'+'.join(self.modalities)} input"
        if self.modalities is None and self.category and not self.category.startswith("t2"):
            return f"out of scope: {self.type} task of category {self.category}"
        return None


@dataclass
class _Folder:
    """The files of one ``results/<model>/<revision>/`` folder."""

    model_dir: str
    revision: str
    meta: dict[str, Any] | None = None
    results: list[tuple[str, bytes]] = field(default_factory=list)  # (member name, raw JSON)


class MtebClassification(Format):
    """Reads the MTEB results archive: text classification tasks as frozen-encoder probe runs."""

    name: ClassVar[str] = "mteb"
    priority: ClassVar[int] = 110
    description: ClassVar[str] = "MTEB classification results: results_json_raw.tar.xz + task_metadata.csv.gz"
    source: ClassVar[str] = "mteb"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """The folder holding the archive and the task metadata, or the archive itself (by name, or by a first
        member ``results/<model>/<revision>/<Task>.json`` with the metadata beside it)."""
        if path.is_dir():
            return (path / ARCHIVE).is_file() and (path / METADATA).is_file()
        if not path.is_file() or not path.name.endswith((".tar.xz", ".txz")):
            return False
        if path.name == ARCHIVE:
            return True
        if not (path.parent / METADATA).is_file():
            return False
        return any(name.strip("/").split("/")[0] == "results" and name.endswith(".json")
                   for name, _ in peek_members(path, 11))

    def estimate(self, path: Path) -> int | None:
        try:
            return 92_500 if _inputs(path)[0].name == ARCHIVE else None
        except FormatError:
            return None

    def read(self, path: Path) -> Iterator[Item]:
        """Stream the archive once; yield each folder's runs when the folder ends.

        Raises:
            FormatError: archive or task metadata missing or unreadable; archive truncated or corrupt (after the
                runs of the folders read completely before it).
        """
        archive, metadata = _inputs(path)
        tasks = load_task_metadata(metadata)
        uri = str(archive)
        current: _Folder | None = None
        n_files = 0
        try:
            for name, raw in archive_files(archive):
                n_files += 1
                parts = name.strip("/").split("/")
                if len(parts) < 4 or parts[0] != "results" or not parts[-1].endswith(".json"):
                    yield Rejected(name, "unexpected file (not results/<model>/<revision>/<file>.json)", uri=uri)
                    continue
                if current is None or (current.model_dir, current.revision) != (parts[1], parts[2]):
                    if current is not None:
                        yield from _folder_items(current, tasks, uri)
                    current = _Folder(parts[1], parts[2])
                if len(parts) > 4:
                    if parts[-1] != META_FILE:
                        yield Rejected(name, "result file in a nested folder: its configuration is unknown", uri=uri)
                    continue
                if parts[3] == META_FILE:
                    current.meta = _parse_meta(raw)
                else:
                    current.results.append((name, raw))
        except ARCHIVE_ERRORS as e:
            raise FormatError(f"archive is truncated or corrupt after {n_files} files: {e}", uri=uri) from e
        if n_files == 0:
            raise FormatError("archive holds no files", uri=uri)
        if current is not None:
            yield from _folder_items(current, tasks, uri)


# -- inputs ------------------------------------------------------------------------------------------------------


def _inputs(path: Path) -> tuple[Path, Path]:
    if not path.exists():
        raise FormatError("no such file or directory", uri=str(path))
    archive = path / ARCHIVE if path.is_dir() else path
    if not archive.is_file():
        raise FormatError(f"missing required file {ARCHIVE}", uri=str(path))
    metadata = archive.parent / METADATA
    if not metadata.is_file():
        raise FormatError(f"missing required file {METADATA} beside the archive: it tells text classification "
                          "tasks from image/audio/video and pair classification ones", uri=str(archive.parent))
    return archive, metadata


def load_task_metadata(path: Path) -> dict[str, TaskInfo]:
    """The parsed mteb task metadata, by task name.

    Raises:
        FormatError: unreadable file or missing column.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in ("task_name", "type", "modalities", "main_score") if c not in header]
            if missing:
                raise FormatError(f"missing column(s) {', '.join(missing)}", uri=str(path))
            rows = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise FormatError(f"cannot read task metadata: {e}", uri=str(path)) from e
    return {row["task_name"]: _task_info(row) for row in rows if row.get("task_name")}


def _task_info(row: dict[str, str]) -> TaskInfo:
    spl = (row.get("samples_per_label_override") or "").strip()
    return TaskInfo(
        name=row["task_name"],
        type=(row.get("type") or "").strip(),
        modalities=_json_list(row.get("modalities")),
        category=(row.get("category") or "").strip() or None,
        main_score=(row.get("main_score") or "").strip() or None,
        samples_per_label=int(float(spl)) if spl else None,
        eval_langs=_json_list(row.get("eval_langs")) or (),
    )


def _json_list(text: str | None) -> tuple[str, ...] | None:
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return tuple(str(v) for v in value) if isinstance(value, list) else None


def _parse_meta(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


# -- one folder --------------------------------------------------------------------------------------------------


def _folder_items(folder: _Folder, tasks: dict[str, TaskInfo], uri: str) -> Iterator[Item]:
    model = _model(folder)
    for member, raw in folder.results:
        yield from _file_items(member, raw, model, folder.revision, tasks, uri)


def _model(folder: _Folder) -> dict[str, Any]:
    meta = folder.meta or {}
    name = meta.get("name") if isinstance(meta.get("name"), str) and meta.get("name") else None
    model: dict[str, Any] = {"id": name or folder.model_dir.replace("__", "/", 1)}
    if folder.revision not in REVISION_LABELS:
        model["revision"] = folder.revision
    for key, target in (("n_parameters", "n_params"), ("embed_dim", "hidden_size"), ("max_tokens", "max_positions")):
        value = meta.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 1:
            model[target] = int(value)
    adapted = meta.get("adapted_from")
    if isinstance(adapted, str) and adapted.strip():
        model["base_model"] = adapted.strip()
    return model


def _file_items(member: str, raw: bytes, model: dict[str, Any], revision: str, tasks: dict[str, TaskInfo],
                uri: str) -> Iterator[Item]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        yield Rejected(member, f"not valid JSON: {e}", uri=uri)
        return
    if not isinstance(data, dict):
        yield Rejected(member, "not a JSON object", uri=uri)
        return
    stem = member.rsplit("/", 1)[-1][: -len(".json")]
    task_name = str(data.get("task_name") or data.get("mteb_dataset_name") or stem)
    info = tasks.get(task_name)
    why = info.out_of_scope() if info is not None else _unknown_out_of_scope(task_name)
    if why is not None:
        yield Rejected(member, why, uri=uri)
        return
    entries = list(_entries(data))
    if not entries:
        yield Rejected(member, "no scores in the file", field="outcome.score", uri=uri)
        return
    ctx = _Context(member, task_name, info, model, revision, data, uri)
    for split, subset, entry, old_eval_time in entries:
        yield _entry_item(ctx, split, subset, entry, old_eval_time)


def _unknown_out_of_scope(task_name: str) -> str | None:
    hint = next((h for h in NON_TEXT_HINTS if h in task_name), None)
    return f"out of scope: task not in the metadata, its name marks a {hint} task" if hint else None


def _entries(data: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], float | None]]:
    """(split, hf_subset, metrics entry, split-level evaluation time of the old layout) of every result."""
    scores = data.get("scores")
    if isinstance(scores, dict):
        for split, entries in scores.items():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    yield split, str(entry.get("hf_subset") or "default"), entry, None
        return
    for split, value in data.items():
        if split in OLD_LAYOUT_KEYS or not isinstance(value, dict):
            continue
        eval_time = value.get("evaluation_time")
        eval_time = float(eval_time) if isinstance(eval_time, int | float) else None
        if "main_score" in value or "accuracy" in value:
            yield split, "default", value, eval_time
            continue
        for subset, entry in value.items():
            if isinstance(entry, dict):
                yield split, subset, entry, eval_time


@dataclass
class _Context:
    """What every entry of one result file shares."""

    member: str
    task_name: str
    info: TaskInfo | None
    model: dict[str, Any]
    revision: str
    data: dict[str, Any]
    uri: str


def _entry_item(ctx: _Context, split: str, subset: str, entry: dict[str, Any], old_eval_time: float | None) -> Item:
    loc = f"{ctx.member} {split}/{subset}"
    metric = _main_metric(ctx.info, entry)
    score = entry.get("main_score", entry.get(metric) if metric else None)
    if metric is None or not _is_number(score):
        return Rejected(loc, "no main score in the entry", field="outcome.score", uri=ctx.uri)
    task: dict[str, Any] = {"type": "text-classification", "primary_metric": metric}
    if metric == "lrap":
        task.update(metric_scale="unit", higher_is_better=True)
    outcome: dict[str, Any] = {"status": "ok", "score": float(score), "split": split,
                               "metrics": _metrics(entry, ctx.data, old_eval_time)}
    std, n = _spread(entry, metric)
    if std is not None:
        outcome["score_std"] = std
    if n:
        outcome["n_repeats"] = n
    dataset: dict[str, Any] = {"name": f"mteb/{ctx.task_name}" + ("" if subset == "default" else f"/{subset}")}
    if isinstance(ctx.data.get("dataset_revision"), str) and ctx.data["dataset_revision"]:
        dataset["fingerprint"] = ctx.data["dataset_revision"]
    language = _language(entry, subset, ctx.info)
    if language:
        dataset["meta"] = {"language": language}
    extra: dict[str, Any] = {}
    if ctx.data.get("mteb_version"):
        extra["mteb_version"] = str(ctx.data["mteb_version"])
    if ctx.revision in REVISION_LABELS:
        extra["revision_label"] = ctx.revision
    record = {
        "task": task,
        "dataset": dataset,
        "model": ctx.model,
        "method": {"name": "linear_probe", "config": _probe_config(ctx.info)},
        "hparams": {"extra": extra} if extra else {},
        "outcome": outcome,
        "provenance": {"license": LICENSE},
    }
    return RawRecord(record, loc, ctx.uri)


def _is_number(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _main_metric(info: TaskInfo | None, entry: dict[str, Any]) -> str | None:
    """The task's main metric (from the metadata, else the entry metric equal to ``main_score``)."""
    if info is not None and info.main_score:
        return canonical_metric(info.main_score)
    main = entry.get("main_score")
    for key in ("accuracy", "f1", "lrap", "ap"):
        if key in entry and (main is None or entry[key] == main):
            return canonical_metric(key)
    return None


def _metrics(entry: dict[str, Any], data: dict[str, Any], old_eval_time: float | None) -> dict[str, float]:
    metrics = {canonical_metric(k): float(v) for k, v in entry.items()
               if k not in NOT_METRICS and not k.endswith("_stderr") and _is_number(v)}
    eval_time = data.get("evaluation_time", old_eval_time)
    if _is_number(eval_time):
        metrics["evaluation_time_s"] = float(eval_time)
    if _is_number(data.get("kg_co2_emissions")):
        metrics["kg_co2_emissions"] = float(data["kg_co2_emissions"])
    return metrics


def _spread(entry: dict[str, Any], metric: str) -> tuple[float | None, int | None]:
    """(std of the main metric over the repeats, number of repeats recorded)."""
    experiments = entry.get("scores_per_experiment")
    if isinstance(experiments, list) and experiments:
        key = next((k for k in entry if canonical_metric(k) == metric and k != "main_score"), metric)
        values = [float(e[key]) for e in experiments if isinstance(e, dict) and _is_number(e.get(key))]
        if len(values) == len(experiments):
            mean = sum(values) / len(values)
            return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), len(values)
        return None, len(experiments)
    for key, value in entry.items():
        if key.endswith("_stderr") and canonical_metric(key[: -len("_stderr")]) == metric and _is_number(value):
            return float(value), None
    return None, None


def _probe_config(info: TaskInfo | None) -> dict[str, Any]:
    spl = info.samples_per_label if info is not None and info.samples_per_label else DEFAULT_SAMPLES_PER_LABEL
    if info is not None and info.type == "MultilabelClassification":
        return {"probe": "knn", "n_neighbors": 5, "samples_per_label": spl}
    return {"probe": "logistic_regression", "max_iter": 100, "samples_per_label": spl}


def _language(entry: dict[str, Any], subset: str, info: TaskInfo | None) -> str | None:
    """ISO 639-1 codes (ISO 639-3 where there is none) of the entry's languages, joined with ``,``."""
    langs = entry.get("languages")
    codes: list[str] = []
    if isinstance(langs, list) and langs:
        codes = [str(x) for x in langs]
    elif len(subset) in (2, 3) and subset.isalpha() and subset != "default":
        codes = [subset]
    elif info is not None and len(info.eval_langs) == 1:
        codes = list(info.eval_langs)
    out: list[str] = []
    for code in codes:
        base = code.split("-")[0].lower()
        iso = ISO639_3_TO_1.get(base, base)
        if iso and iso not in out:
            out.append(iso)
    return ",".join(sorted(out)) or None

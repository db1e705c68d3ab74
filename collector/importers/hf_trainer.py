"""Hugging Face ``Trainer`` output directories (and the TaskWeb archive of them) -> run records.

Input: a directory tree holding Trainer run directories, or a tar archive of one (``.tar.gz``/``.tgz``/``.tar``/
``.tar.xz``/``.tar.bz2``), read in place and in ONE streaming pass by :class:`TarStream` (a minimal ustar/GNU/pax
reader, ~10x faster than ``tarfile``'s stream mode on 92,000 small members; only the files named below are held in
memory): members are grouped by run directory as they stream by, and a run becomes a record as soon as the stream
leaves its directory (this needs each directory's members to be contiguous, as ``tar -c DIR`` writes them).

Run directory: a directory that directly holds ``trainer_state.json``, ``all_results.json``, ``train_results.json``,
``eval_results.json`` (or ``test_results.json`` / ``predict_results.json``), except ``checkpoint-<N>`` directories.
Files in its sub-directories belong to it (``checkpoint-<N>/trainer_state.json``, adapter-transformers' adapter
folders such as ``summarization/adapter_config.json``). Files read: the results JSONs, ``trainer_state.json``,
``config.json``, ``adapter_config.json``, ``head_config.json`` and ``README.md``; weights, tokenizer files and
``training_args.bin`` are not read.

Two layouts, told apart per run:

* **TaskWeb** (``<TARGET>/<SOURCE>/<RUN>`` with both task names in :data:`TASKWEB_TASKS` and ``RUN`` like
  ``t5b-lora-e10-lr1e3-b8-s20``; github.com/danieljkim0118/TaskWeb): ``provenance.source = "taskweb"``,
  ``provenance.license`` from the ``ORIGIN.txt`` beside the archive. Each run fine-tuned the base model on SOURCE,
  then on TARGET.
* **generic** (anything else): ``provenance.source = "hf_trainer"``.

Field mapping (source -> record):

* TaskWeb ``TARGET`` -> ``dataset.name`` (:data:`TASKWEB_TASKS`, e.g. ``socialiqa`` -> ``social_i_qa``,
  ``anli_r3`` -> ``anli/r3``), ``task.type``, ``task.primary_metric`` (accuracy; ``spearman`` for stsb, whose runs
  report Pearson/Spearman; ``f1`` for squad_v2) and ``outcome.split`` (``validation``; ``test`` for imdb, whose 25,000
  evaluation examples are its test split). ``SOURCE`` -> ``model.upstream_task`` AND ``hparams.extra.upstream_task``
  (``upstream_task`` is an enrichment field, outside the run id: without the copy, the same target run after two
  different source tasks could share an id).
* TaskWeb ``RUN`` name -> ``model.id`` (:data:`TASKWEB_MODELS`), ``method.name`` (none = ``full``, ``bitfit``,
  ``lora``, ``pfeiffer`` = ``adapter`` with ``method.config.adapter_architecture = "pfeiffer"``), ``hparams.epochs``,
  ``learning_rate`` (``lr5e5`` = 5e-5), ``batch_size``, ``seed``. Model ids: ORIGIN.txt says t5s/t5b/t5l = t5-small/
  base/large, but the files say T5 v1.1 LM-adapted: the cards name ``models/t5-v1.1-lm-base`` / ``-lm-large`` as the
  base model and every ``config.json`` of a t5s/t5l run is the v1.1 architecture (gated-GELU, d_ff 1024 / 2816), so
  t5s/t5b/t5l -> ``google/t5-{small,base,large}-lm-adapt``; gpt2m -> ``gpt2-medium``, roberta -> ``roberta-base``
  (its config.json names ``models/roberta-base``).
* generic: ``dataset.name`` from the card (``model-index`` dataset ``type``/``config``, else "on the X dataset",
  else front-matter ``datasets``); ``model.id`` from ``adapter_config.base_model_name_or_path`` (PEFT), the card's
  ``base_model`` / "fine-tuned version of [X]" or ``config.json`` ``_name_or_path`` (first Hub-like id; a local path
  gives its last component, the full path kept in ``hparams.extra.model_path``); ``task.type`` from the card's
  ``model-index`` or ``config.json`` ``architectures`` (``...ForSequenceClassification`` -> text-classification),
  else ``other``; primary metric = the card's first ``model-index`` metric, else the first of
  :data:`PRIMARY_PREFERENCE` reported. A run with no dataset name or no evaluation metric is REJECTED with the reason.
* ``eval_results.json`` (else ``all_results.json``'s ``eval_*`` keys; else ``test_results.json`` /
  ``predict_results.json`` with ``outcome.split = "test"``) -> ``outcome.metrics`` (``eval_`` stripped, canonical
  names: ``eval_spearmanr`` -> ``spearman``, ``eval_loss`` -> ``loss``, also ``gen_len``, ``combined_score``,
  ``average_metrics``) and ``outcome.score``; ``eval_samples`` -> ``hparams.extra.eval_samples``; runtimes and
  throughputs (``*_runtime``, ``*_per_second``) of evaluation are dropped.
* ``train_results.json`` (else ``all_results.json``) -> ``outcome.runtime_s`` (``train_runtime``),
  ``outcome.metrics.train_loss``, ``dataset.n_train_used`` (``train_samples``), ``hparams.extra.total_flos``.
* ``trainer_state.json`` -> ``outcome.curve`` (``log_history``: ``loss`` -> ``train_loss`` points, ``eval_*`` ->
  metric points, with step and epoch; the final summary entry is not a point), ``hparams.extra.total_steps``
  (``global_step``), ``hparams.extra.best_metric`` / ``best_model_checkpoint`` when set, ``epochs`` and
  ``per_device_batch_size`` when nothing better says. Without a top-level one, the last ``checkpoint-<N>``'s is read.
* ``README.md`` (Trainer card, :mod:`collector.importers._trainer_card`) -> ``hparams`` (learning rate, batch sizes,
  accumulation, epochs / training steps, scheduler, warmup, optimizer + betas/epsilon in ``extra``, fp16, seed),
  ``hardware.software`` (framework versions), ``outcome.curve`` from its "Training results" table when
  ``trainer_state.json`` gives no evaluation points, ``hparams.extra.upstream_checkpoint`` (TaskWeb: the SOURCE-stage
  checkpoint the card names as base). TaskWeb cards' dataset lines are ignored: the roberta multiple-choice script
  writes "SWAG" for piqa/quartz/hellaswag.
* ``config.json`` -> ``model.family`` hint (``model_type``), ``hardware.software.transformers``,
  ``hparams.extra.upstream_checkpoint`` (TaskWeb, ``_name_or_path``).
* ``adapter_config.json``: PEFT (``peft_type``) -> ``method.name`` (``use_dora`` -> dora), ``lora_r``, ``lora_alpha``,
  ``lora_dropout``, ``target_modules``, ``n_virtual_tokens``, the rest (non-empty) in ``method.config``;
  adapter-transformers (``config`` mapping) -> ``adapter_reduction_factor``, the architecture (``pfeiffer`` when only
  ``output_adapter``, ``houlsby`` when also ``mh_adapter``) and the defining options in ``method.config``, its
  ``version`` in ``hardware.software["adapter-transformers"]``. ``head_config.json`` with a head config -> ``method.
  config.head``; a null head (TaskWeb's T5 adapters use the LM head) adds nothing.

Metric scale (``task.metric_scale``): TaskWeb's T5 and GPT-2 runs report percent (eval_accuracy 38.08), roberta runs
and GPT-2's stsb runs fractions. Declared per run: a run is in percent when any of its accuracy-like or correlation
metrics has ``|value| > 1``; a run whose values are all within [-1, 1] takes the scale of its TaskWeb group (same
target, model and method: any percent evidence in the group makes it percent; it waits, buffered, until the group is
decided or the input ends; an undecided group is a fraction). This keeps collapsed T5 runs right: 21 T5 stsb runs
have no value beyond [-1, 1] (e.g. t5b-lora with ``eval_pearson`` 0.19, which is 0.19 %, not 0.19). Generic runs
use their own values only. Percent accuracy/F1 are declared ``percent`` and converted by the schema; percent
correlations (and ``combined_score`` / ``average_metrics``) are divided by 100 here, because the schema's percent
scale is [0, 100] and correlations can be negative (stsb t5b-lora: ``eval_pearson`` -4.13).

Conflicts: hyperparameters from the card win over those from the directory name, and those over
``trainer_state.json`` — but only when the card's own results agree with ``eval_results.json`` (|diff| <= 5e-4):
the card is written by ``Trainer.create_model_card`` from the run's live ``TrainingArguments``, so it is what the
optimizer used, whereas the directory name is what the launcher intended. 42 TaskWeb roberta cards (targets imdb,
qnli, qqp, snli, stsb after hellaswag; 2 imdb after squad_v2) say ``learning_rate: 1e-05`` in a ``...-lr3e5-...``
directory, and their results match eval_results.json to the 4th decimal: the card wins, and both values are kept as
``hparams.extra.card_learning_rate`` / ``dirname_learning_rate`` (same for batch size, epochs, seed). A card whose
results contradict ``eval_results.json`` (4 TaskWeb rotten_tomatoes roberta s42 runs) is stale (left by an earlier run
in the same directory): it is not used at all and ``hparams.extra.card_ignored`` says why.

Status: a run with a NaN/inf training or evaluation loss gets ``status = "failed"``, ``error_kind = "diverged"``
(TaskWeb: 3 roberta runs whose eval_loss is NaN while accuracy sits at chance, 3 stsb runs with NaN loss and
correlations); a run whose only non-finite value is its primary metric gets ``error_kind = "error"`` (5 stsb runs
whose correlation is NaN: constant predictions). A finite primary metric is kept as ``outcome.score`` even then;
non-finite values are left out of ``outcome.metrics`` and named in ``outcome.error_message``. Collapsed runs at
chance level (TaskWeb has some, e.g. stsb t5b-lora with correlation 0) stay ``ok``.

Rejected (never dropped silently): a run without evaluation results (reason names the files it has), a results JSON
that is not valid JSON, a primary metric missing from the results, an unknown TaskWeb model prefix or method token,
(generic) no dataset or no metric, files of a known name outside any run directory (e.g. ``checkpoint-*`` folders
whose run never wrote its final results), a member that arrives after its run directory was already read (archive
not grouped by directory). A truncated or corrupt archive: every run completed before the cut is yielded, the run
being read at the cut is rejected as incomplete (nothing tells whether its files were all read), runs waiting for
their scale group are flushed (an undecided group as fractions, as at the end of a whole archive), and a
``FormatError`` ends the input. Exact duplicates are yielded like any run (the pipeline counts them).
"""

from __future__ import annotations

import bz2
import json
import lzma
import math
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.importers._trainer_card import TrainerCard, metric_name, parse_trainer_card
from collector.schema._vocab import MetricScale, canonical_dataset, canonical_method, metric_info

#: Files whose presence makes a directory a run directory.
MARKER_FILES = frozenset({"trainer_state.json", "all_results.json", "train_results.json", "eval_results.json",
                          "test_results.json", "predict_results.json"})
#: Every file name read.
KNOWN_FILES = MARKER_FILES | {"config.json", "adapter_config.json", "head_config.json", "README.md"}
_CHECKPOINT = re.compile(r"checkpoint-\d+")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_DETECT_MEMBERS = 200
_CARD_TOLERANCE = 5e-4

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

#: Generic runs: the primary metric when the card names none (first one reported wins).
PRIMARY_PREFERENCE = ("accuracy", "f1", "f1_macro", "matthews_correlation", "spearman", "pearson", "exact_match",
                      "rougel", "rouge1", "bleu", "wer", "cer", "mae", "rmse", "mse", "loss")
#: Unknown-scale metrics that are means of unit-scale ones (converted with them when a run is in percent).
COMPOSITE_METRICS = frozenset({"combined_score", "average_metrics"})
#: ``eval_*`` keys that describe the evaluation run, not the model.
_EVAL_NON_METRICS = re.compile(r"(runtime|_per_second|^samples$|^epoch$|^mem_|_mem_|^step$|^jit_compilation_time$)")
_ARCH_TASKS = (("ForSequenceClassification", "text-classification"),
               ("ForTokenClassification", "token-classification"),
               ("ForQuestionAnswering", "question-answering"), ("ForMultipleChoice", "multiple-choice"),
               ("ForCausalLM", "text-generation"), ("ForImageClassification", "image-classification"),
               ("ForCTC", "automatic-speech-recognition"))
_TASK_TYPES = {"text-classification", "token-classification", "question-answering", "multiple-choice",
               "text-regression", "summarization", "translation", "text-generation", "image-classification",
               "automatic-speech-recognition", "other"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?")
_NAME_TOKENS = (
    ("learning_rate", re.compile(r"lr(?P<m>\d+(?:\.\d+)?)e-?(?P<e>\d+)|lr(?P<f>0?\.\d+)")),
    ("epochs", re.compile(r"(?:e|ep|epoch|epochs)(?P<n>\d+)")),
    ("batch_size", re.compile(r"(?:b|bs|batch)(?P<n>\d+)")),
    ("seed", re.compile(r"(?:s|seed)(?P<n>\d+)")),
)


@dataclass
class RunFiles:
    """The files of one run directory, as read: names relative to the run directory."""

    path: str
    files: dict[str, bytes]


@dataclass
class _Stray:
    """Files that belong to no complete run directory, and why."""

    path: str
    names: list[str]
    reason: str
    field: str | None = None
    kind: str = "dir"


@dataclass
class _Draft:
    """A run read and mapped, waiting for its metric scale to be decided."""

    data: dict[str, Any]
    locator: str
    metrics: dict[str, float]
    primary: str
    curve: list[dict[str, Any]]
    own_percent: bool
    group: tuple[str, ...] | None


@dataclass
class _Context:
    uri: str
    input_name: str
    license: str | None
    last_member: str | None = None


class TrainerOutput(Format):
    """Hugging Face Trainer output directories, or an archive of them (TaskWeb's runs.tar.gz)."""

    name: ClassVar[str] = "hf_trainer"
    description: ClassVar[str] = "Hugging Face Trainer output directories (trainer_state.json, *_results.json, " \
                                 "README card) or a tar archive of them, e.g. TaskWeb's runs.tar.gz"
    source: ClassVar[str] = "hf_trainer"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a run directory, a folder of run directories (no other data files at its top), or an archive
        whose first members include Trainer result files."""
        try:
            if path.is_dir():
                return _detect_dir(path, depth=4)
            if path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES):
                return _detect_archive(path)
        except (OSError, ArchiveDamaged, EOFError, zlib.error, lzma.LZMAError, ValueError):
            return False
        return False

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one record (or rejection) per run directory under ``path``.

        Raises:
            FormatError: ``path`` is neither a directory nor a readable archive, or the archive is truncated or
                corrupt (after yielding everything read before the damage).
        """
        if not path.exists():
            raise FormatError("no such file or directory", uri=str(path))
        ctx = _Context(uri=str(path), input_name=path.name if path.is_dir() else _strip_archive_suffix(path.name),
                       license=_origin_license(path))
        if path.is_dir():
            yield from self._read_entries(_dir_entries(path), ctx)
            return
        if not path.name.lower().endswith(_ARCHIVE_SUFFIXES) and not tarfile.is_tarfile(path):
            raise FormatError("expected a Trainer output directory or a tar archive of one", uri=str(path))
        yield from self._read_entries(_tar_entries(path, ctx), ctx)

    def _read_entries(self, entries: Iterable[tuple[str, str | None, bytes | None]], ctx: _Context) -> Iterator[Item]:
        grouper = _Grouper()
        scales = _ScaleResolver(ctx.uri)
        try:
            for dirpath, name, data in entries:
                for unit in grouper.feed(dirpath, name, data):
                    yield from self._handle(unit, ctx, scales)
        except (ArchiveDamaged, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
            for unit in grouper.abort():
                yield from self._handle(unit, ctx, scales)
            yield from scales.flush()
            where = f" after member {ctx.last_member!r}" if ctx.last_member else ""
            raise FormatError(
                f"archive is truncated or corrupt{where} ({type(e).__name__}: {e}); the runs read before the damage "
                "were kept, the run being read was rejected as incomplete, nothing after it could be read",
                uri=ctx.uri,
            ) from e
        for unit in grouper.finish():
            yield from self._handle(unit, ctx, scales)
        yield from scales.flush()

    def _handle(self, unit: RunFiles | _Stray, ctx: _Context, scales: _ScaleResolver) -> Iterator[Item]:
        if isinstance(unit, _Stray):
            files = ", ".join(unit.names) or "none"
            yield Rejected(locator=f"{unit.kind} {unit.path or ctx.input_name}",
                           reason=f"{unit.reason} (files: {files})", field=unit.field, uri=ctx.uri)
            return
        built = build_run(unit, ctx)
        if isinstance(built, Rejected):
            yield built
            return
        yield from scales.submit(built)


# --------------------------------------------------------------------------------------------------------- reading


def _strip_archive_suffix(name: str) -> str:
    for suffix in _ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _norm_member(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return "" if name == "." else name


def _tar_entries(path: Path, ctx: _Context) -> Iterator[tuple[str, str | None, bytes | None]]:
    """``(directory, file name or None, bytes or None)`` for every member, in archive order (one pass); the bytes
    only of files named in :data:`KNOWN_FILES`."""
    for name, kind, data in TarStream(path).members(want=lambda base: base in KNOWN_FILES):
        ctx.last_member = name
        norm = _norm_member(name)
        if kind == "dir":
            yield norm, None, None
            continue
        directory, _, base = norm.rpartition("/")
        yield directory, (base if data is not None else None), data


class ArchiveDamaged(Exception):
    """The archive ends early or a header is corrupt."""


class TarStream:
    """A minimal one-pass reader of (compressed) tar archives, about ten times faster than :mod:`tarfile`'s stream
    mode on archives of many small files. Understands ustar/GNU/pax headers (``prefix`` field, GNU ``L`` long names,
    pax ``path``/``size`` records) and gzip (also multi-member), bzip2, xz or no compression; verifies each header's
    checksum. Truncation or corruption raises :class:`ArchiveDamaged` after every complete member was yielded."""

    CHUNK = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buf = bytearray()
        self._pos = 0
        self._chunks: Iterator[bytes] | None = None

    def members(self, want: Any = lambda base: True) -> Iterator[tuple[str, str, bytes | None]]:
        """``(name, kind, data)`` per member; kind is ``file``, ``dir`` or ``other``; ``data`` is the content of the
        files for which ``want(basename)`` is true, else None (their content is skipped, never held)."""
        self._chunks = self._decompressed()
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            header = self._take(512, at_boundary=True)
            if header is None or not any(header):
                return
            _check_sum(header)
            name = _field(header[0:100])
            if header[257:262] == b"ustar" and header[345] != 0:
                name = f"{_field(header[345:500])}/{name}"
            size = _size(header[124:136])
            flag = header[156:157]
            if "size" in pax:
                size = int(pax["size"])
            if flag in (b"L", b"x", b"g", b"K"):
                body = self._take(size)
                self._skip(-size % 512)
                if flag == b"L":
                    long_name = body.rstrip(b"\0").decode("utf-8", errors="replace")
                elif flag == b"x":
                    pax = _pax_records(body)
                continue
            name = pax.get("path") or long_name or name
            long_name, pax = None, {}
            if flag in (b"0", b"\0", b"7"):
                base = name.rstrip("/").rpartition("/")[2]
                if want(base):
                    data = self._take(size)
                    self._skip(-size % 512)
                    yield name, "file", data
                else:
                    self._skip(size + (-size % 512))
                    yield name, "other", None
            else:
                self._skip(size + (-size % 512))
                yield name, ("dir" if flag == b"5" else "other"), None

    def _decompressed(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            if head[:2] == b"\x1f\x8b":
                factory: Any = lambda: zlib.decompressobj(47)  # noqa: E731 - gzip with header
            elif head[:3] == b"BZh":
                factory = bz2.BZ2Decompressor
            elif head == b"\xfd7zXZ\x00":
                factory = lzma.LZMADecompressor
            else:
                while chunk := f.read(self.CHUNK):
                    yield chunk
                return
            dec = factory()
            while raw := f.read(self.CHUNK):
                while raw:
                    out = dec.decompress(raw)
                    if out:
                        yield out
                    raw = dec.unused_data if dec.eof else b""
                    if raw:
                        dec = factory()  # next member of a multi-member stream
            if not dec.eof:
                raise ArchiveDamaged("the compressed stream ends early (truncated file)")

    def _fill(self, n: int) -> bool:
        """Make ``n`` bytes available; False at the end of the data."""
        if self._pos > self.CHUNK:
            del self._buf[: self._pos]
            self._pos = 0
        while len(self._buf) - self._pos < n:
            chunk = next(self._chunks, None)  # type: ignore[arg-type]
            if chunk is None:
                return False
            self._buf += chunk
        return True

    def _take(self, n: int, *, at_boundary: bool = False) -> bytes | None:
        if not self._fill(n):
            if at_boundary and len(self._buf) == self._pos:
                return None
            raise ArchiveDamaged("the archive ends inside a member (truncated file)")
        data = bytes(self._buf[self._pos: self._pos + n])
        self._pos += n
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            available = len(self._buf) - self._pos
            if available == 0 and not self._fill(1):
                raise ArchiveDamaged("the archive ends inside a member (truncated file)")
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            n -= step


def _field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _size(raw: bytes) -> int:
    if raw[0] & 0x80:  # GNU base-256
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError as e:
        raise ArchiveDamaged(f"corrupt tar header: size field {raw!r}") from e


def _check_sum(header: bytes) -> None:
    text = header[148:156].split(b"\0", 1)[0].strip()
    try:
        expected = int(text or b"0", 8)
    except ValueError as e:
        raise ArchiveDamaged("corrupt tar header: unreadable checksum") from e
    unsigned = sum(header[:148]) + 256 + sum(header[156:])
    if expected != unsigned:
        signed = unsigned - 2 * sum(b for b in header[:148] + header[156:] if b > 127)
        if expected != signed:
            raise ArchiveDamaged("corrupt tar header: checksum mismatch")


def _pax_records(body: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(body[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        key, _, value = body[space + 1: pos + length - 1].partition(b"=")
        records[key.decode("utf-8", errors="replace")] = value.decode("utf-8", errors="replace")
        pos += length
    return records


def _dir_entries(root: Path) -> Iterator[tuple[str, str | None, bytes | None]]:
    """The same for a directory tree, walked top-down in sorted order (each subtree contiguous)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel = "" if rel == "." else rel
        yield rel, None, None
        for name in sorted(filenames):
            if name in KNOWN_FILES:
                yield rel, name, Path(dirpath, name).read_bytes()


def _within(child: str, ancestor: str) -> bool:
    return ancestor == "" or child == ancestor or child.startswith(ancestor + "/")


def _depth(path: str) -> int:
    return path.count("/") + 1 if path else 0


def _is_run_dir(path: str, names: Iterable[str]) -> bool:
    return not _CHECKPOINT.fullmatch(path.rpartition("/")[2]) and any(n in MARKER_FILES for n in names)


class _Grouper:
    """Groups a stream of files into run directories, assuming each directory's subtree is contiguous in the
    stream (true of ``tar -c DIR`` and of a top-down walk). A directory is complete when the stream moves to a path
    outside it; a complete run directory claims the non-run sub-directories completed before it."""

    def __init__(self) -> None:
        self._open: dict[str, dict[str, bytes]] = {}
        self._closed: dict[str, dict[str, bytes]] = {}
        self._current: str | None = None
        self._done: set[str] = set()

    def feed(self, dirpath: str, name: str | None, data: bytes | None) -> list[RunFiles | _Stray]:
        out: list[RunFiles | _Stray] = []
        if dirpath != self._current:
            out.extend(self._close(lambda d: not _within(dirpath, d)))
            self._current = dirpath
        if name is None:
            return out
        if self._in_done(dirpath):
            out.append(_Stray(dirpath, [name], "archive member arrives after its run directory was already read: "
                                               "the archive is not grouped by directory (re-pack it with tar -c DIR)"))
            return out
        self._open.setdefault(dirpath, {})[name] = data or b""
        return out

    def finish(self) -> list[RunFiles | _Stray]:
        """Close everything; what no run directory claimed is stray."""
        out = self._close(lambda d: True)
        for path in sorted(self._closed):
            names = sorted(self._closed[path])
            if path == "" and names == ["README.md"]:
                continue  # documentation at the top of the input
            reason = ("checkpoint directory without the run's final results (eval_results.json / all_results.json / "
                      "trainer_state.json): the run did not finish or its results were not saved"
                      if _CHECKPOINT.fullmatch(path.rpartition("/")[2]) else
                      "no run directory here: Trainer files without trainer_state.json / *_results.json beside them")
            out.append(_Stray(path, names, reason))
        self._closed.clear()
        return out

    def abort(self) -> list[RunFiles | _Stray]:
        """The input broke off: the run directories still open (on the current path) are incomplete; each claims
        the files read under it. Then whatever is left is reported as by :meth:`finish`."""
        out: list[RunFiles | _Stray] = []
        roots = sorted((d for d in self._open if _is_run_dir(d, self._open[d])), key=_depth, reverse=True)
        if not roots and self._open:
            roots = [max(self._open, key=_depth)]
        for root in roots:
            pending = {**self._closed, **self._open}
            inside = [p for p in pending if _within(p, root)]
            names = sorted(f"{p[len(root):].lstrip('/')}/{n}".lstrip("/") for p in inside for n in pending[p])
            for p in inside:
                self._open.pop(p, None)
                self._closed.pop(p, None)
            out.append(_Stray(root, names, "incomplete run directory: the archive ends while it was being read, "
                                           "so some of its files may be missing", field="outcome", kind="run"))
        self._closed.update(self._open)
        self._open.clear()
        out.extend(self.finish())
        return out

    def _in_done(self, dirpath: str) -> bool:
        if not self._done:
            return False
        parts = dirpath.split("/") if dirpath else []
        return any("/".join(parts[:i]) in self._done for i in range(len(parts), -1, -1))

    def _close(self, should_close: Any) -> list[RunFiles | _Stray]:
        out: list[RunFiles | _Stray] = []
        for path in sorted((d for d in self._open if should_close(d)), key=_depth, reverse=True):
            files = self._open.pop(path)
            if not _is_run_dir(path, files):
                self._closed[path] = files
                continue
            bundle = dict(files)
            prefix = f"{path}/" if path else ""
            for sub in [d for d in self._closed if d.startswith(prefix) and d != path]:
                for name, data in self._closed.pop(sub).items():
                    bundle[f"{sub[len(prefix):]}/{name}"] = data
            self._done.add(path)
            out.append(RunFiles(path, bundle))
        return out


def _detect_dir(path: Path, depth: int) -> bool:
    names = {p.name for p in path.iterdir()}
    if names & MARKER_FILES and not _CHECKPOINT.fullmatch(path.name):
        return True
    if depth <= 0:
        return False
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if any(p.is_file() and p.name.lower() not in {"readme.md", "origin.txt", "license", "license.txt"}
           for p in children):
        return False
    return any(_detect_dir(p, depth - 1) for p in [c for c in children if c.is_dir()][:3])


def _detect_archive(path: Path) -> bool:
    for i, (name, kind, _) in enumerate(TarStream(path).members(want=lambda base: False)):
        if i >= _DETECT_MEMBERS:
            return False
        if kind != "dir" and name.rpartition("/")[2] in MARKER_FILES:
            return True
    return False


def _origin_license(path: Path) -> str | None:
    """The ``license:`` line of the ORIGIN.txt beside (or inside) ``path``."""
    for origin in (path / "ORIGIN.txt", path.parent / "ORIGIN.txt") if path.is_dir() else (
            path.parent / "ORIGIN.txt",):
        if origin.is_file():
            match = re.search(r"^license:\s*(.+?)\s*$", origin.read_text(encoding="utf-8", errors="replace"), re.M)
            return match.group(1) if match else None
    return None


# ------------------------------------------------------------------------------------------------------- scale


class _ScaleResolver:
    """Decides percent vs fraction per run, with TaskWeb group evidence for runs whose values cannot tell."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._percent_groups: set[tuple[str, ...]] = set()
        self._waiting: dict[tuple[str, ...], list[_Draft]] = {}

    def submit(self, draft: _Draft) -> list[RawRecord]:
        uri = self._uri
        if draft.group is None:
            return [_finalize(draft, draft.own_percent, uri)]
        if draft.own_percent:
            self._percent_groups.add(draft.group)
            held = self._waiting.pop(draft.group, [])
            return [_finalize(d, True, uri) for d in held] + [_finalize(draft, True, uri)]
        if draft.group in self._percent_groups:
            return [_finalize(draft, True, uri)]
        self._waiting.setdefault(draft.group, []).append(draft)
        return []

    def flush(self) -> Iterator[RawRecord]:
        """Runs of groups that never showed percent values: fractions."""
        waiting, self._waiting = self._waiting, {}
        for drafts in waiting.values():
            for draft in drafts:
                yield _finalize(draft, False, self._uri)


def _scaled_metric(name: str) -> bool:
    """Metrics whose values move with the reported scale (accuracy-like, correlations, their means)."""
    info = metric_info(name)
    return name in COMPOSITE_METRICS or (
        info is not None and info.scale in (MetricScale.unit, MetricScale.signed_unit))


def _divided_here(name: str, declared: bool) -> bool:
    """Whether the importer (rather than the schema) divides this metric by 100 in a percent run: all scaled metrics
    when the run cannot declare ``percent``; else only correlations and composites, which the schema leaves alone."""
    if not _scaled_metric(name):
        return False
    info = metric_info(name)
    return not declared or info is None or info.scale is MetricScale.signed_unit


def _finalize(draft: _Draft, percent: bool, uri: str) -> RawRecord:
    data = draft.data
    metrics = dict(draft.metrics)
    curve = [dict(p) for p in draft.curve]
    if percent:
        info = metric_info(draft.primary)
        declared = info is not None and info.scale is MetricScale.unit
        for name in metrics:
            if _divided_here(name, declared):
                metrics[name] /= 100.0
        for point in curve:
            if _divided_here(point["metric"], declared):
                point["value"] /= 100.0
        if declared:
            data["task"]["metric_scale"] = "percent"
    outcome = data["outcome"]
    outcome["metrics"] = metrics
    if curve:
        outcome["curve"] = curve
    if draft.primary in metrics:  # a failed run keeps the score it measured (e.g. NaN loss, finite accuracy)
        outcome["score"] = metrics[draft.primary]
    return RawRecord(data=data, locator=draft.locator, uri=uri)


# ------------------------------------------------------------------------------------------------ building a run


class _RunError(Exception):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass
class _Parsed:
    """The parsed files of one run directory."""

    eval: dict[str, Any] = field(default_factory=dict)
    eval_file: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None
    adapter_dir: str | None = None
    head: dict[str, Any] | None = None
    card: TrainerCard | None = None
    names: list[str] = field(default_factory=list)


def build_run(run: RunFiles, ctx: _Context) -> _Draft | Rejected:
    """Map one run directory to a record draft, or say why it cannot be one."""
    locator = f"run {run.path or ctx.input_name}"
    try:
        parsed = _parse_files(run)
        taskweb = _taskweb_parts(run.path)
        if taskweb is not None:
            return _build_taskweb(run, parsed, taskweb, locator, ctx)
        return _build_generic(run, parsed, locator, ctx)
    except _RunError as e:
        return Rejected(locator=locator, reason=e.reason, field=e.field, uri=ctx.uri)


def _load(run: RunFiles, name: str) -> dict[str, Any] | None:
    raw = run.files.get(name)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _RunError(f"{name} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise _RunError(f"{name} holds a {type(data).__name__}, expected a JSON object")
    return data


def _parse_files(run: RunFiles) -> _Parsed:
    p = _Parsed(names=sorted(run.files))
    all_results = _load(run, "all_results.json") or {}
    eval_results = _load(run, "eval_results.json")
    if eval_results is not None and _has_prefixed(eval_results, "eval_"):
        p.eval, p.eval_file = eval_results, "eval_results.json"
    elif _has_prefixed(all_results, "eval_"):
        p.eval, p.eval_file = {k: v for k, v in all_results.items() if k.startswith("eval_")}, "all_results.json"
    else:
        for name, prefix in (("test_results.json", "test_"), ("predict_results.json", "predict_")):
            test = _load(run, name)
            if test is not None and _has_prefixed(test, prefix):
                p.eval = {"eval_" + k[len(prefix):]: v for k, v in test.items() if k.startswith(prefix)}
                p.eval_file = name
                break
    p.train = _load(run, "train_results.json") or {k: v for k, v in all_results.items() if k.startswith("train_")}
    p.state = _load(run, "trainer_state.json") or _last_checkpoint_state(run)
    p.config = _load(run, "config.json")
    p.adapter, p.adapter_dir = _find_nested(run, "adapter_config.json")
    p.head, _ = _find_nested(run, "head_config.json")
    readme = run.files.get("README.md")
    if readme is not None:
        p.card = parse_trainer_card(readme.decode("utf-8", errors="replace"))
    if not p.eval:
        raise _RunError(
            "no evaluation results: neither eval_results.json nor all_results.json (nor test/predict_results.json) "
            f"holds an eval_* metric (files: {', '.join(p.names)})", field="outcome.score")
    return p


def _has_prefixed(data: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) and not _EVAL_NON_METRICS.search(k[len(prefix):]) for k in data)


def _last_checkpoint_state(run: RunFiles) -> dict[str, Any] | None:
    steps = sorted((int(m.group(1)), name) for name in run.files
                   if (m := re.fullmatch(r"checkpoint-(\d+)/trainer_state\.json", name)))
    return _load(run, steps[-1][1]) if steps else None


def _find_nested(run: RunFiles, base: str) -> tuple[dict[str, Any] | None, str | None]:
    if base in run.files:
        return _load(run, base), None
    nested = sorted(n for n in run.files if n.endswith("/" + base) and not _CHECKPOINT.match(n.split("/")[0]))
    if not nested:
        return None, None
    return _load(run, nested[0]), nested[0].rpartition("/")[0]


# ----------------------------------------------------------------------------------------------- shared pieces


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _eval_metrics(parsed: _Parsed) -> tuple[dict[str, float], list[str], dict[str, Any]]:
    """(finite metrics, names of non-finite ones, extras such as eval_samples)."""
    metrics: dict[str, float] = {}
    bad: list[str] = []
    extra: dict[str, Any] = {}
    for key, value in parsed.eval.items():
        if not key.startswith("eval_"):
            continue
        short = key[len("eval_"):]
        if short == "samples" and isinstance(value, int):
            extra["eval_samples"] = value
            continue
        if _EVAL_NON_METRICS.search(short):
            continue
        number = _number(value)
        if number is None:
            continue
        if math.isfinite(number):
            metrics[metric_name(short)] = number
        else:
            bad.append(metric_name(short))
    return metrics, bad, extra


def _train_part(parsed: _Parsed, metrics: dict[str, float], bad: list[str], outcome: dict[str, Any],
                dataset: dict[str, Any], extra: dict[str, Any]) -> None:
    train = parsed.train
    loss = _number(train.get("train_loss"))
    if loss is not None:
        if math.isfinite(loss):
            metrics["train_loss"] = loss
        else:
            bad.append("train_loss")
    runtime = _number(train.get("train_runtime"))
    if runtime is not None and math.isfinite(runtime) and runtime >= 0:
        outcome["runtime_s"] = runtime
    samples = train.get("train_samples")
    if isinstance(samples, int) and samples >= 0:
        dataset["n_train_used"] = samples
    flos = _number(train.get("total_flos"))
    if flos is None and parsed.state:
        flos = _number(parsed.state.get("total_flos"))
    if flos is not None and math.isfinite(flos):
        extra["total_flos"] = flos


def _state_curve(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Learning-curve points from ``trainer_state.json`` ``log_history`` (training loss and eval metrics)."""
    if not state or not isinstance(state.get("log_history"), list):
        return []
    points: list[dict[str, Any]] = []
    for entry in state["log_history"]:
        if not isinstance(entry, dict) or "train_runtime" in entry:
            continue
        base: dict[str, Any] = {}
        step, epoch = entry.get("step"), _number(entry.get("epoch"))
        if isinstance(step, int) and step >= 0:
            base["step"] = step
        if epoch is not None and math.isfinite(epoch) and epoch >= 0:
            base["epoch"] = epoch
        for key, value in entry.items():
            if key == "loss":
                name = "train_loss"
            elif key.startswith("eval_") and not _EVAL_NON_METRICS.search(key[5:]) and key != "eval_samples":
                name = metric_name(key[5:])
            else:
                continue
            number = _number(value)
            if number is not None and math.isfinite(number):
                points.append({**base, "metric": name, "value": number})
    return points


def _state_extra(state: dict[str, Any] | None, extra: dict[str, Any]) -> None:
    if not state:
        return
    if isinstance(state.get("global_step"), int):
        extra["total_steps"] = state["global_step"]
    best = _number(state.get("best_metric"))
    if best is not None and math.isfinite(best):
        extra["best_metric"] = best
    if state.get("best_model_checkpoint"):
        extra["best_model_checkpoint"] = str(state["best_model_checkpoint"])


def _state_hparams(state: dict[str, Any] | None) -> dict[str, Any]:
    if not state:
        return {}
    hp: dict[str, Any] = {}
    epochs = _number(state.get("num_train_epochs"))
    if epochs is not None and epochs > 0:
        hp["epochs"] = epochs
    if isinstance(state.get("train_batch_size"), int) and state["train_batch_size"] > 0:
        hp["per_device_batch_size"] = state["train_batch_size"]
    return hp


def _card_trusted(card: TrainerCard, metrics: dict[str, float], bad: list[str]) -> bool:
    """False when the card's final results contradict the evaluation results (a card left by another run)."""
    for name, value in card.metrics().items():
        if name in metrics and abs(metrics[name] - value) > _CARD_TOLERANCE * max(1.0, abs(value) / 100):
            return False
    return True


_CONFLICT_KEYS = ("learning_rate", "batch_size", "epochs", "seed")


def _merge_hparams(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge hyperparameter layers, later ones winning; a value the directory name and the card disagree on is
    kept in ``extra`` as ``card_<key>`` and ``dirname_<key>``."""
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    by_source = dict(layers)
    for _, layer in layers:
        for key, value in layer.items():
            if key == "extra":
                extra.update(value)
            elif value is not None:
                merged[key] = value
    name_hp, card_hp = by_source.get("dirname", {}), by_source.get("card", {})
    for key in _CONFLICT_KEYS:
        a, b = name_hp.get(key), card_hp.get(key)
        if a is not None and b is not None and not math.isclose(float(a), float(b), rel_tol=1e-9):
            extra[f"card_{key}"] = b
            extra[f"dirname_{key}"] = a
    if extra:
        merged["extra"] = extra
    return merged


def _name_hparams(name: str) -> dict[str, Any]:
    """Hyperparameters spelled in a run-directory name (``...-lr2e-5-bs16-e3-s42``), when nothing else says."""
    hp: dict[str, Any] = {}
    for token in re.split(r"[-_]", name.replace("e-", "e~")):
        token = token.replace("e~", "e-").lower()
        for key, pattern in _NAME_TOKENS:
            match = pattern.fullmatch(token)
            if match is None or key in hp:
                continue
            if key == "learning_rate":
                hp[key] = float(match.group("f") or f"{match.group('m')}e-{match.group('e')}")
            else:
                hp[key] = int(match.group("n"))
            break
    return {k: v for k, v in hp.items() if v}


def _adapter_method(parsed: _Parsed) -> dict[str, Any]:
    """``method`` fields from adapter_config.json (PEFT or adapter-transformers) and head_config.json."""
    cfg = parsed.adapter
    if not cfg:
        return {}
    if "peft_type" in cfg:
        return _peft_method(cfg)
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    method: dict[str, Any] = {}
    config: dict[str, Any] = {"library": "adapter-transformers"}
    arch = str(inner.get("architecture") or "").lower()
    if arch in ("", "bottleneck"):
        if inner.get("output_adapter") and inner.get("mh_adapter"):
            arch = "houlsby"
        elif inner.get("output_adapter"):
            arch = "pfeiffer"
        method["name"] = "adapter"
    elif arch == "lora":
        method["name"] = "lora"
        method["lora_r"] = inner.get("r")
        method["lora_alpha"] = inner.get("alpha")
        method["lora_dropout"] = inner.get("dropout")
    else:
        method["name"] = arch
    if arch:
        config["adapter_architecture"] = arch
    reduction = inner.get("reduction_factor")
    if isinstance(reduction, int | float) and not isinstance(reduction, bool):
        method["adapter_reduction_factor"] = float(reduction)
    elif reduction is not None:
        config["reduction_factor"] = reduction
    for key in ("non_linearity", "mh_adapter", "output_adapter", "residual_before_ln", "original_ln_before",
                "original_ln_after", "ln_before", "ln_after", "use_gating", "is_parallel", "scaling", "init_weights",
                "prefix_length", "bottleneck_size"):
        if inner.get(key) is not None:
            config[key] = inner[key]
    for key in ("leave_out", "inv_adapter", "phm_layer", "cross_adapter"):
        if inner.get(key):
            config[key] = inner[key]
    if cfg.get("name"):
        config["adapter_name"] = cfg["name"]
    head = parsed.head or {}
    if isinstance(head.get("config"), dict):
        config["head"] = head["config"]
    method["config"] = config
    return {k: v for k, v in method.items() if v is not None}


def _peft_method(cfg: dict[str, Any]) -> dict[str, Any]:
    peft_type = str(cfg.get("peft_type") or "").lower()
    name = "dora" if peft_type == "lora" and cfg.get("use_dora") else peft_type
    method: dict[str, Any] = {"name": canonical_method(name) or name}
    if isinstance(cfg.get("r"), int) and cfg["r"] > 0:
        method["lora_r"] = cfg["r"]
    for src, dst in (("lora_alpha", "lora_alpha"), ("lora_dropout", "lora_dropout")):
        if _number(cfg.get(src)) is not None:
            method[dst] = float(cfg[src])
    modules = cfg.get("target_modules")
    if isinstance(modules, str):
        method["target_modules"] = [modules]
    elif isinstance(modules, list) and modules:
        method["target_modules"] = sorted(str(m) for m in modules)
    if isinstance(cfg.get("num_virtual_tokens"), int) and cfg["num_virtual_tokens"] > 0:
        method["n_virtual_tokens"] = cfg["num_virtual_tokens"]
    skip = {"peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "num_virtual_tokens",
            "base_model_name_or_path", "inference_mode", "revision", "use_dora"}
    config = {k: v for k, v in cfg.items() if k not in skip and v not in (None, "", [], {}, False)}
    config["library"] = "peft"
    method["config"] = config
    return method


def _software(parsed: _Parsed, trusted_card: TrainerCard | None) -> dict[str, str]:
    software: dict[str, str] = {}
    if parsed.config and parsed.config.get("transformers_version"):
        software["transformers"] = str(parsed.config["transformers_version"])
    if parsed.adapter and "peft_type" not in parsed.adapter and parsed.adapter.get("version"):
        software["adapter-transformers"] = str(parsed.adapter["version"])
    if trusted_card is not None:
        software.update(trusted_card.software())
    return software


def _failure(metrics: dict[str, float], bad: list[str], primary: str, outcome: dict[str, Any]) -> None:
    """Mark the run failed when its primary metric or a loss is not finite: ``diverged`` when a loss is (NaN/inf
    training or evaluation loss), ``error`` when only the metric is (e.g. a correlation of constant predictions)."""
    if not bad or (primary in metrics and "train_loss" not in bad and "loss" not in bad):
        return
    outcome["status"] = "failed"
    diverged = "train_loss" in bad or "loss" in bad
    outcome["error_kind"] = "diverged" if diverged else "error"
    detail = "" if diverged else f" ({primary} undefined, e.g. constant predictions)"
    outcome["error_message"] = f"non-finite values reported for: {', '.join(sorted(set(bad)))}{detail}"


def _own_percent(metrics: dict[str, float]) -> bool:
    return any(abs(v) > 1.0 for k, v in metrics.items() if _scaled_metric(k))


# ---------------------------------------------------------------------------------------------------- TaskWeb


@dataclass
class _TaskWebName:
    target: str
    source: str
    model: str
    method: str | None
    epochs: int
    learning_rate: float
    batch: int
    seed: int


def _taskweb_parts(path: str) -> _TaskWebName | None:
    parts = path.split("/")
    if len(parts) < 3:
        return None
    target, source, run = parts[-3:]
    match = _TASKWEB_RUN.fullmatch(run)
    if match is None or target not in TASKWEB_TASKS or source not in TASKWEB_TASKS:
        return None
    return _TaskWebName(
        target=target, source=source, model=match.group("model"), method=match.group("method"),
        epochs=int(match.group("epochs")), learning_rate=float(f"{match.group('lr_m')}e-{match.group('lr_e')}"),
        batch=int(match.group("batch")), seed=int(match.group("seed")),
    )


def _build_taskweb(run: RunFiles, parsed: _Parsed, tw: _TaskWebName, locator: str, ctx: _Context) -> _Draft:
    if tw.model not in TASKWEB_MODELS:
        raise _RunError(f"unknown TaskWeb model prefix {tw.model!r} (known: {', '.join(TASKWEB_MODELS)})",
                        field="model.id")
    if tw.method not in TASKWEB_METHODS:
        raise _RunError(f"unknown TaskWeb method token {tw.method!r} (known: bitfit, lora, pfeiffer, none)",
                        field="method.name")
    dataset_name, task_type, primary, split = TASKWEB_TASKS[tw.target]
    model_id, family = TASKWEB_MODELS[tw.model]
    metrics, bad, extra = _eval_metrics(parsed)
    if primary not in metrics and primary not in bad:
        raise _RunError(f"{parsed.eval_file} has no {primary} (the primary metric of {tw.target}); it reports: "
                        f"{', '.join(sorted(metrics)) or 'nothing'}", field="outcome.score")
    outcome: dict[str, Any] = {"status": "ok", "split": split}
    dataset: dict[str, Any] = {"name": dataset_name}
    extra["upstream_task"] = TASKWEB_TASKS[tw.source][0]
    _train_part(parsed, metrics, bad, outcome, dataset, extra)
    _state_extra(parsed.state, extra)
    _failure(metrics, bad, primary, outcome)

    card = parsed.card
    trusted = card if card is not None and _card_trusted(card, metrics, bad) else None
    if card is not None and trusted is None:
        extra["card_ignored"] = "README.md results differ from eval_results.json (a card left by another run)"
    upstream = _upstream_checkpoint(parsed, trusted)
    if upstream:
        extra["upstream_checkpoint"] = upstream
    name_hp = {"learning_rate": tw.learning_rate, "batch_size": tw.batch, "epochs": float(tw.epochs),
               "seed": tw.seed}
    layers = [("state", _state_hparams(parsed.state)), ("dirname", name_hp), ("extra", {"extra": extra})]
    if trusted is not None:
        layers.append(("card", trusted.record_hparams()))
    hparams = _merge_hparams(layers)

    method_name, architecture = TASKWEB_METHODS[tw.method]
    method = _adapter_method(parsed) or {"name": method_name}
    method["name"] = method_name
    if architecture:
        method.setdefault("config", {})["adapter_architecture"] = architecture
    model: dict[str, Any] = {"id": model_id, "family": family, "upstream_task": TASKWEB_TASKS[tw.source][0]}
    data: dict[str, Any] = {
        "task": {"type": task_type, "primary_metric": primary},
        "dataset": dataset,
        "model": model,
        "method": method,
        "hparams": hparams,
        "outcome": outcome,
        "provenance": {"source": "taskweb", "license": ctx.license},
    }
    software = _software(parsed, trusted)
    if software:
        data["hardware"] = {"software": software}
    curve = _state_curve(parsed.state) or (trusted.curve() if trusted is not None else [])
    return _Draft(data=data, locator=locator, metrics=metrics, primary=primary, curve=curve,
                  own_percent=_own_percent(metrics), group=(tw.target, tw.model, method_name))


def _upstream_checkpoint(parsed: _Parsed, card: TrainerCard | None) -> str | None:
    """The SOURCE-stage checkpoint a TaskWeb run started from, when its card or config.json names it."""
    candidates = [card.base_model if card is not None else None,
                  parsed.config.get("_name_or_path") if parsed.config else None]
    for value in candidates:
        if isinstance(value, str) and "/outputs/" in value:
            return value
    return None


# ---------------------------------------------------------------------------------------------------- generic


def _build_generic(run: RunFiles, parsed: _Parsed, locator: str, ctx: _Context) -> _Draft:
    metrics, bad, extra = _eval_metrics(parsed)
    card = parsed.card
    trusted = card if card is not None and _card_trusted(card, metrics, bad) else None
    if card is not None and trusted is None:
        extra["card_ignored"] = f"README.md results differ from {parsed.eval_file} (a card left by another run)"
    dataset_name, split = _generic_dataset(trusted)
    if dataset_name is None:
        raise _RunError("no dataset name: the README.md card names none (the Trainer writes 'an unknown dataset' "
                        "unless given dataset_name) and the results JSONs never do"
                        + ("" if card is not None else "; this run has no README.md"), field="dataset.name")
    primary = _generic_primary(trusted, metrics, bad)
    if primary is None:
        raise _RunError(f"no evaluation metric in {parsed.eval_file}: it reports only "
                        f"{', '.join(sorted(k for k in parsed.eval)) or 'nothing'}", field="task.primary_metric")
    model_id, model_path = _generic_model(parsed, trusted)
    if model_id is None:
        raise _RunError("no base model: no config.json _name_or_path, no adapter_config base_model_name_or_path "
                        "and no 'fine-tuned version of' line in a README.md card", field="model.id")
    if model_path:
        extra["model_path"] = model_path
    outcome: dict[str, Any] = {"status": "ok", "split": split or ("test" if parsed.eval_file in (
        "test_results.json", "predict_results.json") else "validation")}
    dataset: dict[str, Any] = {"name": dataset_name}
    _train_part(parsed, metrics, bad, outcome, dataset, extra)
    _state_extra(parsed.state, extra)
    _failure(metrics, bad, primary, outcome)

    run_name = run.path.rpartition("/")[2] or ctx.input_name
    layers = [("state", _state_hparams(parsed.state)), ("dirname", _name_hparams(run_name)),
              ("extra", {"extra": extra})]
    if trusted is not None:
        layers.append(("card", trusted.record_hparams()))
    hparams = _merge_hparams(layers)
    method = _adapter_method(parsed) or {"name": _name_method(run_name)}
    model: dict[str, Any] = {"id": model_id}
    family = (parsed.config or {}).get("model_type") or (parsed.adapter or {}).get("model_type")
    if isinstance(family, str) and family:
        model["family"] = family
    task: dict[str, Any] = {"type": _generic_task_type(parsed, trusted), "primary_metric": primary}
    if metric_info(primary) is None:
        task["metric_scale"] = "unbounded"
        task["higher_is_better"] = True
    provenance: dict[str, Any] = {"license": (trusted.front_matter.get("license") if trusted else None)
                                  or ctx.license}
    data: dict[str, Any] = {"task": task, "dataset": dataset, "model": model, "method": method,
                            "hparams": hparams, "outcome": outcome, "provenance": provenance}
    if isinstance(provenance["license"], list):
        provenance["license"] = ", ".join(str(x) for x in provenance["license"])
    software = _software(parsed, trusted)
    if software:
        data["hardware"] = {"software": software}
    curve = _state_curve(parsed.state)
    if trusted is not None and not any(p["metric"] != "train_loss" for p in curve):
        curve = trusted.curve() or curve
    return _Draft(data=data, locator=locator, metrics=metrics, primary=primary, curve=curve,
                  own_percent=_own_percent(metrics), group=None)


def _generic_dataset(card: TrainerCard | None) -> tuple[str | None, str | None]:
    if card is None:
        return None, None
    dtype, config, split = card.model_index_dataset()
    if dtype:
        plain = ("default", "none", "plain_text", dtype.lower())
        name = f"{dtype}/{config}" if config and config.lower() not in plain else dtype
        return canonical_dataset(name), split
    if card.dataset_phrase:
        return canonical_dataset(card.dataset_phrase), None
    datasets = card.front_matter.get("datasets")
    if isinstance(datasets, list) and datasets and isinstance(datasets[0], str):
        return canonical_dataset(datasets[0]), None
    if isinstance(datasets, str) and datasets.strip():
        return canonical_dataset(datasets), None
    return None, None


def _generic_primary(card: TrainerCard | None, metrics: dict[str, float], bad: list[str]) -> str | None:
    reported = set(metrics) | set(bad)
    if card is not None:
        named = card.model_index_metrics()
        front = card.front_matter.get("metrics")
        if isinstance(front, list):
            named += [metric_name(str(m)) for m in front]
        for name in named:
            if name in reported:
                return name
    for name in PRIMARY_PREFERENCE:
        if name in reported:
            return name
    return None


def _generic_model(parsed: _Parsed, card: TrainerCard | None) -> tuple[str | None, str | None]:
    candidates: list[Any] = [(parsed.adapter or {}).get("base_model_name_or_path")]
    if card is not None:
        candidates += [card.front_matter.get("base_model"), card.base_model]
    candidates.append((parsed.config or {}).get("_name_or_path"))
    values = [c.strip() for c in candidates if isinstance(c, str) and c.strip()]
    for value in values:
        if _HUB_ID.fullmatch(value) and not value.startswith("."):
            return value, None
    if values:
        local = values[0].rstrip("/\\")
        return re.split(r"[/\\]", local)[-1] or local, values[0]
    return None, None


def _generic_task_type(parsed: _Parsed, card: TrainerCard | None) -> str:
    if card is not None:
        task_type = card.model_index_task_type()
        if task_type in _TASK_TYPES:
            return task_type
    architectures = (parsed.config or {}).get("architectures") or []
    for arch in architectures if isinstance(architectures, list) else []:
        for suffix, task_type in _ARCH_TASKS:
            if str(arch).endswith(suffix):
                return task_type
    return "other"


def _name_method(name: str) -> str:
    for token in re.split(r"[-_]", name.lower()):
        method = canonical_method(token)
        if method is not None and method != "full":
            return method
    return "full"


__all__ = ["COMPOSITE_METRICS", "TASKWEB_MODELS", "TASKWEB_TASKS", "RunFiles", "TrainerOutput", "build_run"]

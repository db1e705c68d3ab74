"""Importer of the SetFit paper's raw result files (``--format setfit``).

Source: ``huggingface/setfit`` (Apache-2.0), the result files of "Efficient Few-Shot Learning Without Prompts"
(Tunstall et al. 2022), shipped as ``results_raw.tar.gz`` (7,834 small files, read in place, streamed once) and
``tfew_train_curves.csv.gz`` (T-Few TensorBoard scalars decoded to CSV). Input: the folder holding both files, or
the archive itself (the curves file must then lie beside it). Details and measured counts:
``docs/sources/setfit.md``.

What is a run, what is a summary
--------------------------------
* ``results.json`` under ``raw/final_results_HEAD/{setfit,transformers,adapet,perfect,distillation}/`` and
  ``raw/final_results_history/``: ONE RUN each (one method x body model x dataset x N x split). 3,392 files.
* T-Few run folders ``.../train-N-S/seedK/`` (final 11B and 3B runs) and ``.../train-N-S-seedK/`` (development
  runs): ONE RUN each, read from ``config.json`` + ``dev_scores.json`` + ``elapsed_times.txt`` (+ the training-loss
  curve from the CSV). 851 folders.
* ``results.json`` directly under a T-Few ``train-N-S/`` folder (120) and every ``summary_table.csv`` (5) are
  AGGREGATES of the runs above (median / mean over seeds): they are reported as ``Rejected`` ("aggregate, not a
  run") so that nothing is counted twice and nothing is dropped silently.
* ``final_results_history/.../paraphrase-mpnet-base-v2/`` (300) holds the same runs as
  ``final_results_HEAD/setfit/paraphrase-mpnet-base-v2-epochs_20`` (all 300 scores are identical): they are yielded
  as the very same record, so the pipeline counts them as duplicates.

Field mapping (non-T-Few ``results.json``: ``{"measure", "score"}``)
-----------------------------------------------------------------------
* folder ``<method family>/<variant>/<dataset>/[<lang>/]train-<N>-<S>`` -> method, model, dataset, N, S (tables
  below); ``train-full`` -> ``dataset.examples_per_class`` None, ``hparams.extra.train_size = "full"``.
* ``N`` -> ``dataset.examples_per_class`` (2..64 labelled examples per class); ``S`` -> ``dataset.data_seed`` (index
  of the 10 few-shot splits, which the scripts also use as the sampling seed).
* ``measure`` -> ``task.primary_metric`` via ``canonical_metric`` (``acc`` -> accuracy, ``mean_absolute_error`` ->
  mae). Scores are written by the scripts as ``metric * 100``:
  accuracy -> ``task.metric_scale = "percent"`` (normalized to unit on ingest);
  matthews_correlation -> divided by 100 here and kept on its own ``signed_unit`` scale (it can be negative, so the
  schema's percent scale [0, 100] cannot hold it);
  mae (amazon_reviews_multi_*) -> kept as stored (hundredths of a star, e.g. 75.2), ``metric_scale = "unbounded"``,
  ``higher_is_better = False``.
* ``outcome.split = "test"``, ``outcome.metrics = {metric: score}``; no runtime or curves exist for these methods.
* setfit variants: ``<body>[-epochs_<R>][-batch_<B>][-with-augmentation][-linear-probe]``: ``epochs_R`` is SetFit's
  number of contrastive pair-generation iterations (the body is then trained 1 epoch) -> ``method.config
  .num_iterations``; ``batch_B`` -> ``hparams.batch_size``; ``-with-augmentation`` -> ``method.config
  .data_augmentation = True``; ``-linear-probe`` -> method ``linear_probe`` (frozen body + logistic regression).
  Bodies are the ``sentence-transformers/<body>`` checkpoints; multilingual runs add ``method.config.train_lang``
  (``en`` / ``each`` / ``all``).
* ``transformers/<model>`` -> method ``full`` (standard fine-tuning of ``<model>`` with a classification head).
* ``adapet/adapet/<model>[_<train_lang>__<prompt>_prompt]`` -> method ``adapet``, ``method.config.train_lang`` and
  ``prompt_lang`` (``lang`` = prompts in the target language, ``eng`` = English prompts).
* ``perfect/perfect/<dataset>`` -> method ``perfect`` on ``roberta-large`` (dataset folders ``cr``, ``sst-5``,
  ``amazon_cf`` are this method's own spellings).
* ``distillation/temp/<role>_<model>-CosineSimilarityLoss-logistic_regression-epochs_20-batch_16``:
  ``setfit_teacher`` -> method ``setfit`` on paraphrase-mpnet-base-v2 (16 examples per class, split 0);
  ``setfit_student`` -> method ``distillation`` on ``sentence-transformers/paraphrase-MiniLM-L3-v2`` trained with
  SetFit's cosine-similarity objective on the teacher's similarities; ``baseline_student`` -> method
  ``distillation`` on ``nreimers/MiniLM-L3-H384-uncased`` (the script's ``--baseline_student_model``; the folder is
  named after the SetFit student, a quirk of the script) trained on the teacher's probabilities. Students' ``N`` is
  the number of UNLABELLED examples drawn from the train split (not per class), added to the teacher's 16 labelled
  examples per class: ``dataset.examples_per_class`` None, ``dataset.n_train_used = N + 16 * n_classes``,
  ``method.config = {teacher, teacher_examples_per_class, unlabeled_examples, student_objective}``.

Field mapping (T-Few run folders; method ``ia3`` on ``bigscience/T0`` (11B) or ``bigscience/T0_3B``)
---------------------------------------------------------------------------------------------------
* ``config.json`` wins on conflicts with folder names: ``origin_model`` -> ``model.id``; ``dataset`` -> dataset
  (table below); ``num_shot`` -> ``examples_per_class``; ``train_split`` -> ``data_seed`` (= the folder's split
  index); ``seed`` -> ``hparams.seed``; ``lr``, ``batch_size`` x ``grad_accum_factor`` (effective batch),
  ``num_steps`` -> ``max_steps``, ``warmup_ratio``, ``weight_decay``, ``scheduler``, ``optimizer``,
  ``max_seq_len``, ``compute_precision`` -> hparams; the rest of the run-defining keys -> ``hparams.extra``.
  (IA)^3 is T-Few's ``model_modifier = "lora"`` with ``lora_rank = 0`` and ``lora_scaling_rank = 1``; those keys,
  ``trainable_param_names``, ``lora_modules`` / ``lora_layers`` (-> ``target_modules``), ``load_weight`` (the
  multitask-pretrained (IA)^3 vectors the run starts from), the losses (``mc_loss``, ``unlikely_loss``,
  ``length_norm``) and the prompt source (``prompts_dataset``, template indices) -> ``method.config``.
* ``dev_scores.json``: one JSON line per evaluation; in this setup the "dev" set IS the test split (the accuracies
  are multiples of 1/753 for SentEval-CR's 753 test examples, and the authors' ``results.json`` is the median of
  these values) -> ``outcome.split = "test"``, score = the last line's metric, ``outcome.metrics`` = that line
  (``score_gt`` / ``score_cand`` are T-Few's mean log-probabilities of gold / candidate answers).
* ``elapsed_times.txt``: ``'trainer.fit()' took X s`` -> ``outcome.runtime_s``; ``init`` / ``validate`` ->
  ``hparams.extra.init_s`` / ``validate_s``.
* ``tfew_train_curves.csv.gz``: rows are matched to run folders by the run key = ``run_path`` minus its group
  prefix (``dev`` / ``t011b_final`` / ``t03b_v1``, = the archive folders ``tfew_dev_runs__*``,
  ``tfew_t011b_final__*``, ``tfew_t03b_v1__*``) minus ``/log/version_<V>``; tag ``loss`` -> curve points
  ``{step, epoch, metric: "loss"}`` (``epoch`` = the ``epoch`` tag at the same step, Lightning's 0-based epoch
  index). ``lm_loss`` / ``mc_loss`` / ``unlikely_loss`` (the loss's parts) are not kept.
* Development runs evaluate every ``eval_epoch_interval`` (50) epochs: their ``dev_scores.json`` lines are an
  evaluation curve -> curve points ``{epoch, metric: accuracy}``; the score is the last line.
* Re-run folders (``log/version_0`` and ``version_1``): each execution appends a line to ``dev_scores.json`` and a
  block to ``elapsed_times.txt``; ``config.json`` is overwritten. The LAST execution is the run (as in the authors'
  aggregates: the medians in ``results.json`` equal the medians of the last lines in all 120 cases, of the first
  lines in only 103): score, fit time and curve of the last version. An earlier execution that produced a score is
  ``Rejected`` (its configuration was overwritten, so its hyperparameters are unknown); an earlier execution whose log
  stops before ``num_steps`` and that wrote no score is ``Rejected`` as interrupted.
* Rejected folders: ``num_steps = 0`` (a zero-shot evaluation, not a fine-tuning run); no ``dev_scores.json``
  (38: 32 T0-3B and 2 T0-11B folders that hold only ``config.json`` and ``exp_completed.txt`` in the archive, and 4
  whose only training log stops early at step 11..619 of 1000, i.e. unfinished when archived).
* ``hparams.yaml`` (always ``{}``), ``exp_completed.txt`` (a timestamp), ``*-inference_time.txt.txt`` and the
  ``*_pred_file`` / ``exp_dir`` paths are not kept.

Datasets (folder or config names -> canonical): see :data:`DATASETS`. Provenance license: Apache-2.0.
Scores at chance level (e.g. MCC near 0 on amazon_counterfactual_en with 2 examples per class) stay status "ok".
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, Rejected
from collector.schema._vocab import canonical_metric

ARCHIVE = "results_raw.tar.gz"
CURVES = "tfew_train_curves.csv.gz"
LICENSE = "Apache-2.0"
CURVE_COLUMNS = ("group", "run_path", "step", "tag", "value")

#: Dataset folder / config names of the source -> canonical knowledge-base names.
DATASETS: dict[str, str] = {
    "SentEval-CR": "cr",
    "cr": "cr",
    "sst5": "sst5",
    "sst-5": "sst5",
    "sst2": "glue/sst2",
    "emotion": "emotion",
    "ag_news": "ag_news",
    "enron_spam": "enron_spam",
    "amazon_counterfactual_en": "amazon_counterfactual_en",
    "amazon_cf": "amazon_counterfactual_en",
    "ade_corpus_v2_classification": "ade_corpus_v2_classification",
    "tweet_eval_stance_abortion": "tweet_eval/stance_abortion",
    **{f"amazon_reviews_multi_{lang}": f"amazon_reviews_multi/{lang}" for lang in ("de", "en", "es", "fr", "ja", "zh")},
}

#: Classes of the distillation datasets (the students' training set = N unlabelled + 16 labelled per class).
N_CLASSES: dict[str, int] = {"sst5": 5, "ag_news": 4, "emotion": 6}

#: T-Few curve groups -> the archive folder prefix holding the same run folders.
CURVE_GROUPS: dict[str, str] = {
    "dev": "raw/tfew_dev_runs__",
    "t011b_final": "raw/tfew_t011b_final__",
    "t03b_v1": "raw/tfew_t03b_v1__",
}

ST = "sentence-transformers/"
DISTIL_TEACHER = ST + "paraphrase-mpnet-base-v2"
BASELINE_STUDENT = "nreimers/MiniLM-L3-H384-uncased"
LANGS = ("en", "each", "all")

_SPLIT = re.compile(r"^train-(?:(?P<n>\d+)-(?P<s>\d+)|(?P<full>full))$")
_SETFIT_VARIANT = re.compile(
    r"^(?P<body>.+?)(?:-epochs_(?P<iters>\d+))?(?:-batch_(?P<bs>\d+))?(?P<aug>-with-augmentation)?"
    r"(?P<lp>-linear-probe)?$"
)
_ADAPET_VARIANT = re.compile(r"^(?P<model>[^_]+)(?:_(?P<train>en|each|all)__(?P<prompt>lang|eng)_prompt)?$")
_DISTIL_ROLE = re.compile(
    r"^(?P<role>setfit_teacher|setfit_student|baseline_student)_(?P<model>.+?)-(?P<loss>[A-Za-z]+Loss)-"
    r"(?P<head>[a-z_]+)-epochs_(?P<iters>\d+)-batch_(?P<bs>\d+)$"
)
_TFEW_FILE = re.compile(
    r"^(?P<folder>raw/tfew_[^/]+/.+?)/(?P<file>config\.json|dev_scores\.json|elapsed_times\.txt|exp_completed\.txt|"
    r"log/version_(?P<version>\d+)/hparams\.yaml|(?:fit|validate)-inference_time\.txt\.txt)$"
)
_TIMING = re.compile(r"'(?P<what>init|trainer\.fit\(\)|trainer\.validate\(\))' took (?P<s>[\d.]+)s")
_RUN_PATH = re.compile(r"^(?P<group>[^/]+)/(?P<rest>.+)/log/version_(?P<version>\d+)$")


class _Skip(Exception):
    """A results file that cannot become a record; the message is the reason."""


@dataclass
class _TfewFolder:
    """The files of one T-Few run folder, as found in the archive."""

    config: bytes | None = None
    dev_scores: bytes | None = None
    elapsed: bytes | None = None
    versions: set[int] = field(default_factory=set)


@dataclass
class _Curve:
    """Loss and epoch per step of one execution (one ``log/version_<V>``)."""

    loss: dict[int, float] = field(default_factory=dict)
    epoch: dict[int, float] = field(default_factory=dict)

    @property
    def last_step(self) -> int:
        return max(self.loss, default=-1)


class SetFitResults(Format):
    """The SetFit paper's result files: SetFit, baselines, T-Few (IA3) and distillation few-shot runs."""

    name: ClassVar[str] = "setfit"
    priority: ClassVar[int] = 90
    description: ClassVar[str] = "SetFit paper result files (results_raw.tar.gz + tfew_train_curves.csv.gz)"
    source: ClassVar[str] = "setfit"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """The source folder (both shipped files) or the archive itself (recognized by its top-level folders)."""
        if path.is_dir():
            return (path / ARCHIVE).is_file() and (path / CURVES).is_file() and _archive_is_setfit(path / ARCHIVE)
        return path.is_file() and path.name.endswith(".tar.gz") and _archive_is_setfit(path)

    def estimate(self, path: Path) -> int | None:
        """Roughly the number of items (results files + T-Few folders + their rejections)."""
        return 4_700

    def read(self, path: Path) -> Iterator[Item]:
        """Stream the archive once, then the curves file, then emit the T-Few runs.

        Raises:
            FormatError: a required file is missing, the archive is truncated or corrupt, the curves file lacks a
                column.
        """
        archive, curves = _locate(path)
        folders: dict[str, _TfewFolder] = {}
        yield from self._read_archive(archive, folders)
        curve_items: list[Item] = []
        by_run = _read_curves(curves, set(folders), curve_items)
        yield from curve_items
        for key in sorted(folders):
            yield from _tfew_items(key, folders[key], by_run.get(key, {}), str(archive))

    # -- archive -----------------------------------------------------------------------------------------------

    def _read_archive(self, archive: Path, folders: dict[str, _TfewFolder]) -> Iterator[Item]:
        uri = str(archive)
        last = "the start"
        history: list[Item] = []  # copies of HEAD runs: yielded last, so the stored locator is the HEAD file
        try:
            for name, data in archive_files(archive):
                last = name
                tfew = _TFEW_FILE.match(name)
                if tfew:
                    _collect_tfew(folders, tfew, data)
                elif name.endswith("/summary_table.csv"):
                    yield Rejected(name, "aggregate, not a run: summary table (means and stds over the splits of "
                                   "runs ingested one by one)", uri=uri)
                elif name.startswith("raw/final_results_history/") and name.endswith(".json"):
                    history.append(_results_item(name, data, uri))
                elif name.endswith("/results.json"):
                    yield _results_item(name, data, uri)
                else:
                    yield Rejected(name, "unrecognized file in the archive", uri=uri)
        except ARCHIVE_ERRORS as e:
            yield from history
            raise FormatError(f"truncated or corrupt archive after member {last}: {e}", uri=uri) from e
        yield from history


def _archive_is_setfit(archive: Path) -> bool:
    """Peek at the first members: the SetFit archive starts with ``raw/final_results_*`` or ``raw/tfew_*``."""
    return any(re.match(r"^raw/(final_results_|tfew_)", name) for name, _ in peek_members(archive, 9))


def _locate(path: Path) -> tuple[Path, Path]:
    if not path.exists():
        raise FormatError("no such file or directory", uri=str(path))
    archive = path / ARCHIVE if path.is_dir() else path
    curves = archive.parent / CURVES
    for required in (archive, curves):
        if not required.is_file():
            raise FormatError(f"missing required file {required.name} (the SetFit source ships {ARCHIVE} and "
                              f"{CURVES} side by side)", uri=str(required))
    return archive, curves


# -- non-T-Few results.json ------------------------------------------------------------------------------------


def _results_item(name: str, data: bytes, uri: str) -> Item:
    parts = name.split("/")
    if parts[1].startswith("tfew_"):
        return Rejected(name, "aggregate, not a run: median and IQR over the seed runs of this split (each seed "
                        "run is ingested from its own folder)", uri=uri)
    try:
        payload = json.loads(data)
        if not isinstance(payload, dict) or not isinstance(payload.get("score"), int | float):
            raise _Skip("results.json has no numeric 'score'")
        measure = payload.get("measure")
        if not isinstance(measure, str) or not measure:
            raise _Skip("results.json has no 'measure'")
        record = _record_from_path(parts[1:-1], measure, float(payload["score"]))
    except json.JSONDecodeError as e:
        return Rejected(name, f"malformed JSON: {e}", uri=uri)
    except _Skip as e:
        return Rejected(name, str(e), uri=uri)
    return RawRecord(record, locator=name, uri=uri)


def _record_from_path(parts: list[str], measure: str, score: float) -> dict[str, Any]:
    """Build the record of one ``results.json`` from its folders (without ``raw/`` and the file name)."""
    split = _SPLIT.match(parts[-1])
    if split is None:
        raise _Skip(f"unrecognized split folder {parts[-1]!r} (expected train-N-S or train-full)")
    lang = parts[-2] if parts[-2] in LANGS else None
    dataset = _dataset(parts[-3] if lang else parts[-2])
    head = parts[: -3 if lang else -2]
    top = head[0]
    if top.startswith("final_results_history") and head[2:] == ["paraphrase-mpnet-base-v2"]:
        head = ["final_results_HEAD", "setfit", "paraphrase-mpnet-base-v2-epochs_20"]  # the same runs (see above)
    elif not top.startswith("final_results_HEAD"):
        raise _Skip(f"unrecognized results folder {'/'.join(parts)!r}")
    family, rest = head[1], head[2:]
    n = int(split["n"]) if split["n"] else None
    rec = _base(measure, score, dataset, n, int(split["s"]) if split["s"] else None)
    if split["full"]:
        rec["hparams"]["extra"]["train_size"] = "full"
    builders = {"setfit": _setfit, "transformers": _transformers, "adapet": _adapet, "perfect": _perfect}
    if family == "distillation":
        _distillation(rec, rest, n)
    elif family in builders:
        builders[family](rec, rest, lang)
    else:
        raise _Skip(f"unknown method family folder {family!r}")
    return rec


def _base(measure: str, score: float, dataset: str, n: int | None, split_index: int | None) -> dict[str, Any]:
    metric, task, value = _metric(measure, score)
    return {
        "task": task,
        "dataset": {"name": dataset, "examples_per_class": n, "data_seed": split_index},
        "model": {},
        "method": {"config": {}},
        "hparams": {"extra": {}},
        "outcome": {"status": "ok", "score": value, "split": "test", "metrics": {metric: value}},
        "provenance": {"license": LICENSE},
    }


def _metric(measure: str, score: float) -> tuple[str, dict[str, Any], float]:
    """Canonical metric, task block and value on the declared scale for a score the scripts wrote x100."""
    metric = canonical_metric(measure)
    task: dict[str, Any] = {"type": "text-classification", "primary_metric": metric}
    if metric == "accuracy":
        task["metric_scale"] = "percent"
        return metric, task, score
    if metric == "matthews_correlation":
        task["metric_scale"] = "signed_unit"
        return metric, task, score / 100.0
    if metric == "mae":
        task.update(metric_scale="unbounded", higher_is_better=False)
        return metric, task, score
    raise _Skip(f"unexpected measure {measure!r}")


def _dataset(folder: str) -> str:
    if folder not in DATASETS:
        raise _Skip(f"unknown dataset folder {folder!r}; add it to collector.importers.setfit.DATASETS")
    return DATASETS[folder]


def _setfit(rec: dict[str, Any], rest: list[str], lang: str | None) -> None:
    if len(rest) != 1 or (m := _SETFIT_VARIANT.match(rest[0])) is None:
        raise _Skip(f"unrecognized setfit variant folder {'/'.join(rest)!r}")
    rec["model"]["id"] = ST + m["body"]
    method = rec["method"]
    method["name"] = "linear_probe" if m["lp"] else "setfit"
    method["config"]["head"] = "logistic_regression"
    if m["iters"]:
        method["config"]["num_iterations"] = int(m["iters"])
        rec["hparams"]["epochs"] = 1
    if m["aug"]:
        method["config"]["data_augmentation"] = True
    if m["bs"]:
        rec["hparams"]["batch_size"] = int(m["bs"])
    if lang:
        method["config"]["train_lang"] = lang
    rec["hparams"]["extra"]["variant"] = rest[0]


def _transformers(rec: dict[str, Any], rest: list[str], lang: str | None) -> None:
    if len(rest) != 1:
        raise _Skip(f"unrecognized transformers folder {'/'.join(rest)!r}")
    rec["model"]["id"] = rest[0]
    rec["method"]["name"] = "full"
    if lang:
        rec["method"]["config"]["train_lang"] = lang


def _adapet(rec: dict[str, Any], rest: list[str], lang: str | None) -> None:
    if len(rest) != 2 or rest[0] != "adapet" or (m := _ADAPET_VARIANT.match(rest[1])) is None:
        raise _Skip(f"unrecognized adapet folder {'/'.join(rest)!r}")
    rec["model"]["id"] = m["model"]
    rec["method"]["name"] = "adapet"
    if m["train"]:
        rec["method"]["config"].update(train_lang=m["train"], prompt_lang="target" if m["prompt"] == "lang" else "en")
    rec["hparams"]["extra"]["variant"] = rest[1]


def _perfect(rec: dict[str, Any], rest: list[str], lang: str | None) -> None:
    if rest != ["perfect"]:
        raise _Skip(f"unrecognized perfect folder {'/'.join(rest)!r}")
    rec["model"]["id"] = "roberta-large"
    rec["method"]["name"] = "perfect"


def _distillation(rec: dict[str, Any], rest: list[str], n: int | None) -> None:
    if len(rest) != 2 or rest[0] != "temp" or (m := _DISTIL_ROLE.match(rest[1])) is None:
        raise _Skip(f"unrecognized distillation folder {'/'.join(rest)!r}")
    method, hp, ds = rec["method"], rec["hparams"], rec["dataset"]
    hp["extra"]["variant"] = rest[1]
    if m["role"] == "setfit_teacher":
        rec["model"]["id"] = ST + m["model"]
        method["name"] = "setfit"
        method["config"].update(role="distillation_teacher", num_iterations=int(m["iters"]), head=m["head"],
                                loss=m["loss"])
        hp.update(batch_size=int(m["bs"]), epochs=1)
        return
    ds["examples_per_class"] = None
    n_classes = N_CLASSES.get(ds["name"])
    ds["n_train_used"] = n + 16 * n_classes if n is not None and n_classes else None
    method["name"] = "distillation"
    method["config"].update(teacher=DISTIL_TEACHER, teacher_method="setfit", teacher_examples_per_class=16,
                            unlabeled_examples=n)
    if m["role"] == "setfit_student":
        rec["model"]["id"] = ST + m["model"]
        method["config"].update(student_objective="setfit_cosine_similarity", num_iterations=int(m["iters"]),
                                head=m["head"], loss=m["loss"])
        hp.update(batch_size=int(m["bs"]), epochs=1)
    else:
        rec["model"]["id"] = BASELINE_STUDENT
        method["config"].update(student_objective="teacher_probabilities")


# -- T-Few ---------------------------------------------------------------------------------------------------


def _collect_tfew(folders: dict[str, _TfewFolder], match: re.Match[str], data: bytes) -> None:
    folder = folders.setdefault(match["folder"], _TfewFolder())
    kind = match["file"]
    if kind == "config.json":
        folder.config = data
    elif kind == "dev_scores.json":
        folder.dev_scores = data
    elif kind == "elapsed_times.txt":
        folder.elapsed = data
    elif match["version"] is not None:
        folder.versions.add(int(match["version"]))


def _read_curves(path: Path, folders: set[str], rejects: list[Item]) -> dict[str, dict[int, _Curve]]:
    """Loss and epoch per step, by run folder key and version; unmatched run paths and bad rows go to ``rejects``."""
    uri = str(path)
    out: dict[str, dict[int, _Curve]] = defaultdict(dict)
    unmatched: dict[str, int] = defaultdict(int)
    keys: dict[str, tuple[str, int] | None] = {}
    prefixes = {g: {f.split("/", 2)[2]: f for f in folders if f.startswith(p)} for g, p in CURVE_GROUPS.items()}
    line = 1
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            header = _split(fh.readline())
            missing = [c for c in CURVE_COLUMNS if c not in header]
            if missing:
                raise FormatError(f"curves file lacks column(s) {', '.join(missing)}", uri=uri, locator="line 1")
            group_i, path_i, step_i, tag_i, value_i = (header.index(c) for c in CURVE_COLUMNS)
            for line, text in enumerate(fh, start=2):
                row = _split(text)
                if len(row) != len(header):
                    rejects.append(Rejected(f"line {line}", f"curve row has {len(row)} fields, header has "
                                            f"{len(header)}", uri=uri))
                    continue
                tag = row[tag_i]
                if tag != "loss" and tag != "epoch":
                    continue
                run_path = row[path_i]
                if run_path not in keys:
                    keys[run_path] = _curve_key(row[group_i], run_path, prefixes)
                key = keys[run_path]
                if key is None:
                    unmatched[run_path] += 1
                    continue
                try:
                    step, value = int(row[step_i]), float(row[value_i])
                except ValueError:
                    rejects.append(Rejected(f"line {line}", f"curve row with non-numeric step/value {row!r}",
                                            uri=uri))
                    continue
                curve = out[key[0]].setdefault(key[1], _Curve())
                (curve.loss if tag == "loss" else curve.epoch)[step] = value
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
        raise FormatError(f"truncated or corrupt curves file near line {line}: {e}", uri=uri) from e
    for run_path, n in sorted(unmatched.items()):
        rejects.append(Rejected(f"run_path {run_path}", f"curve of no run folder in {ARCHIVE} ({n} rows)", uri=uri))
    return out


def _split(text: str) -> list[str]:
    """One CSV line's fields (the csv module only for the rare quoted line: this file has 1.1M rows)."""
    text = text.rstrip("\r\n")
    if '"' in text:
        return next(csv.reader([text]), [])
    return text.split(",") if text else []


def _curve_key(group: str, run_path: str, prefixes: dict[str, dict[str, str]]) -> tuple[str, int] | None:
    """The archive run folder and version of a curve's ``run_path`` (``<group>/<rest>/log/version_<V>``)."""
    m = _RUN_PATH.match(run_path)
    if m is None or m["group"] != group or group not in CURVE_GROUPS:
        return None
    folder = prefixes[group].get(m["rest"])
    return (folder, int(m["version"])) if folder else None


def _tfew_items(key: str, folder: _TfewFolder, curves: dict[int, _Curve], uri: str) -> Iterator[Item]:
    locator = f"{key}/config.json"
    if folder.config is None:
        yield Rejected(key, "T-Few run folder without config.json", uri=uri)
        return
    try:
        cfg = json.loads(folder.config)
        lines = _score_lines(folder.dev_scores)
    except (json.JSONDecodeError, _Skip) as e:
        yield Rejected(locator, f"malformed T-Few file: {e}", uri=uri)
        return
    steps = int(cfg.get("num_steps") or 0)
    if steps <= 0:
        yield Rejected(locator, "zero-shot evaluation (num_steps = 0), not a fine-tuning run", uri=uri)
        return
    versions = sorted(set(curves) | folder.versions)
    complete = [v for v in versions if v not in curves or curves[v].last_step >= steps - 1]
    if not lines:
        yield Rejected(locator, _no_score_reason(curves, versions, steps), uri=uri)
        return
    periodic = _is_periodic(cfg, curves, versions, lines)
    fits = _timings(folder.elapsed, "trainer.fit()")
    n_exec = 1 if periodic else len(lines)
    final_version = complete[-1] if complete else (versions[-1] if versions else None)
    for v in versions:
        if v not in complete and v != final_version:
            yield Rejected(f"{key}/log/version_{v}", f"interrupted execution: its training log stops at step "
                           f"{curves[v].last_step} of {steps} and it wrote no score (the folder's completed "
                           "execution is ingested)", uri=uri)
    for i, line in enumerate(lines[: n_exec - 1]):
        yield Rejected(f"{key}/dev_scores.json line {i + 1}", f"earlier execution of a re-run folder (score "
                       f"{json.dumps(line, sort_keys=True)}): config.json was overwritten by the re-run, so its "
                       "hyperparameters are unknown; the last execution is ingested", uri=uri)
    try:
        record = _tfew_record(cfg, lines, periodic, fits, folder.elapsed, curves.get(final_version))
    except _Skip as e:
        yield Rejected(locator, str(e), uri=uri)
        return
    yield RawRecord(record, locator=locator, uri=uri)


def _score_lines(data: bytes | None) -> list[dict[str, float]]:
    if data is None:
        return []
    lines = []
    for n, text in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if text.strip():
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise _Skip(f"dev_scores.json line {n} is not JSON ({e})") from e
            if not isinstance(value, dict):
                raise _Skip(f"dev_scores.json line {n} is not an object")
            lines.append(value)
    return lines


def _no_score_reason(curves: dict[int, _Curve], versions: list[int], steps: int) -> str:
    if curves:
        last = max(c.last_step for c in curves.values())
        return (f"incomplete run: no dev_scores.json and its training log stops at step {last} of {steps} "
                "(unfinished when archived)")
    return "no dev_scores.json and no training log in the archive: the run's score was not recorded"


def _is_periodic(cfg: dict[str, Any], curves: dict[int, _Curve], versions: list[int],
                 lines: list[dict[str, Any]]) -> bool:
    """True when the dev_scores lines are evaluations during one training run (every eval_epoch_interval epochs)."""
    interval = cfg.get("eval_epoch_interval")
    epochs = _final_epochs(curves)
    if isinstance(interval, int | float) and interval > 0 and epochs is not None:
        return interval < epochs
    return len(lines) > 1 and len(versions) <= 1


def _final_epochs(curves: dict[int, _Curve]) -> float | None:
    ends = [max(c.epoch.values()) + 1 for c in curves.values() if c.epoch]
    return max(ends) if ends else None


def _timings(elapsed: bytes | None, what: str) -> list[float]:
    if elapsed is None:
        return []
    text = elapsed.decode("utf-8", errors="replace")
    return [float(m["s"]) for m in _TIMING.finditer(text) if m["what"] == what]


def _tfew_record(cfg: dict[str, Any], lines: list[dict[str, Any]], periodic: bool, fits: list[float],
                 elapsed: bytes | None, curve: _Curve | None) -> dict[str, Any]:
    final = lines[-1]
    metric = next((k for k in final if k in ("accuracy", "matthews_correlation")), None)
    if metric is None or not isinstance(final[metric], int | float):
        raise _Skip(f"dev_scores.json has no accuracy / matthews_correlation: {final!r}")
    dataset = _dataset(str(cfg.get("dataset")))
    bs, accum = int(cfg["batch_size"]), int(cfg.get("grad_accum_factor") or 1)
    points = _loss_points(curve) + (_eval_points(lines, metric, cfg, curve) if periodic else [])
    inits, validates = _timings(elapsed, "init"), _timings(elapsed, "trainer.validate()")
    extra = {k: cfg[k] for k in ("eval_batch_size", "grad_clip_norm", "scale_parameter", "few_shot_random_seed",
                                 "eval_epoch_interval", "split_option_at_inference", "exp_name") if k in cfg}
    if inits:
        extra["init_s"] = inits[-1]
    if validates:
        extra["validate_s"] = validates[-1]
    return {
        "task": {"type": "text-classification", "primary_metric": metric},
        "dataset": {"name": dataset, "examples_per_class": cfg.get("num_shot"), "data_seed": cfg.get("train_split")},
        "model": {"id": cfg["origin_model"]},
        "method": {
            "name": "ia3",
            "target_modules": [x for x in str(cfg.get("lora_layers", "")).split("|") if x] or None,
            "config": _ia3_config(cfg),
        },
        "hparams": {
            "learning_rate": cfg.get("lr"), "batch_size": bs * accum, "per_device_batch_size": bs,
            "gradient_accumulation_steps": accum, "max_steps": int(cfg["num_steps"]),
            "warmup_ratio": cfg.get("warmup_ratio"), "weight_decay": cfg.get("weight_decay"),
            "lr_scheduler": cfg.get("scheduler"), "optimizer": cfg.get("optimizer"),
            "max_seq_length": cfg.get("max_seq_len"), "seed": cfg.get("seed"),
            "precision": cfg.get("compute_precision"), "extra": extra,
        },
        "outcome": {
            "status": "ok", "score": float(final[metric]), "split": "test",
            "metrics": {k: float(v) for k, v in final.items() if isinstance(v, int | float)},
            "runtime_s": fits[-1] if fits else None, "curve": points,
        },
        "provenance": {"license": LICENSE},
    }


def _ia3_config(cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("model_modifier", "lora_rank", "lora_scaling_rank", "lora_init_scale", "lora_modules", "lora_layers",
            "trainable_param_names", "load_weight", "mc_loss", "unlikely_loss", "length_norm", "prompts_dataset",
            "prompts_subset", "train_template_idx", "eval_template_idx", "model")
    out = {k: cfg[k] for k in keys if k in cfg}
    out["implementation"] = "t-few"
    return out


def _loss_points(curve: _Curve | None) -> list[dict[str, Any]]:
    if curve is None:
        return []
    return [
        {"step": s, "epoch": curve.epoch.get(s), "metric": "loss", "value": v} for s, v in sorted(curve.loss.items())
    ]


def _eval_points(lines: list[dict[str, Any]], metric: str, cfg: dict[str, Any],
                 curve: _Curve | None) -> list[dict[str, Any]]:
    """Evaluations every ``eval_epoch_interval`` epochs; a line beyond them is the final validation."""
    interval = float(cfg.get("eval_epoch_interval") or 0)
    total = _final_epochs({0: curve}) if curve is not None else None
    points = []
    for i, line in enumerate(lines):
        epoch = interval * (i + 1) if interval else None
        if total is not None and epoch is not None and epoch > total:
            epoch = total
        if isinstance(line.get(metric), int | float):
            points.append({"epoch": epoch, "metric": metric, "value": float(line[metric])})
    return points

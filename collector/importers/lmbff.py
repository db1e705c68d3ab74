"""LM-BFF automatic prompt search: prompt-based fine-tuning runs of roberta-large, one per candidate prompt.

Source: github.com/princeton-nlp/LM-BFF @ c282f521 (``auto_template/`` and ``auto_label_mapping/``), the search
logs of "Making Pre-trained Language Models Better Few-shot Learners" (Gao, Fisch, Chen, ACL 2021). License MIT
(``provenance.license``).

Input: ``auto_search_raw.tar.gz`` (read in place, streamed once) or the folder holding it. The archive is recognized
by its members ``auto_template/<task>/16-<seed>.*`` / ``auto_label_mapping/<task>/16-<seed>.*``.

What the three files of a search hold (``tools/sort_template.py`` / ``sort_mapping.py`` write them):

* ``<K>-<seed>.txt`` — the generated candidates, in generation order (their line index is the run's
  ``template_id``/``mapping_id``). Not runs.
* ``<K>-<seed>.sort.txt`` — the candidates that were fine-tuned, sorted by dev score. Same lines as the score file
  without the scores: not read.
* ``<K>-<seed>.score.txt`` — ``"%.5f <candidate>"`` per line: **one run per line**. Only these are records.

Mapping (one record per line of a ``.score.txt``):

* task folder -> ``dataset.name`` (:data:`TASKS`: ``SST-2`` -> ``glue/sst2``, ``sst-5`` -> ``sst5``, ``mr`` ->
  ``rotten_tomatoes`` (MR is Pang & Lee's movie-review polarity set, the Hub's ``rotten_tomatoes``), ``cr`` ->
  ``cr``, ``mpqa``, ``subj``, ``trec``, ``CoLA`` -> ``glue/cola``, ``MNLI`` -> ``glue/mnli``, ``SNLI`` ->
  ``snli``, ``QNLI``/``RTE``/``MRPC``/``QQP``/``STS-B`` -> ``glue/...``); ``STS-B`` is ``text-regression``, the
  others ``text-classification``.
* ``<K>-<seed>`` -> ``dataset.examples_per_class`` = K (16), ``dataset.data_seed`` = seed, and ``hparams.seed`` = seed
  (``run_experiment.sh`` passes the same ``$SEED`` to the split and to training); ``dataset.n_train_used`` = K x the
  number of classes (not for STS-B).
* method ``prompt_finetuning``, ``method.config`` = ``{"search": "template" | "label_words", "template": ...,
  "label_words": {...}}``: the searched part is the candidate; the fixed part is the task's manual prompt from
  ``run_experiment.sh`` (:data:`MANUAL_PROMPTS`). Templates are kept in LM-BFF's own syntax
  (``*cls**sent_0*_It_was*mask*.*sep+*``); label mappings are parsed (JSON, or Python literals such as the
  ``{0: "Abstract", ...}`` of TREC) into ``{label: word}`` with string keys.
* model ``roberta-large``; hparams from the README's search commands and ``run_experiment.sh``: batch 8 (2 per device
  x 4 accumulation steps), lr 1e-5, ``max_steps`` 1000, ``max_seq_length`` 128, and in ``hparams.extra``
  ``eval_steps`` 100 and the checkpoint selection (LM-BFF's trainer keeps the checkpoint with the best dev score
  over those evaluations, so the score is a maximum over 10 evaluations on the same small dev set).
* score -> ``outcome.score``, ``outcome.split`` ``dev`` (16 examples per class, sampled like the training split).
  Metric per task as in ``tools/sort_template.py``: CoLA ``matthews_correlation``, MRPC and QQP ``f1``, STS-B
  ``pearson``, the others ``accuracy``. The file does not name the metric where the script offers a choice (MRPC/QQP
  f1 or acc, STS-B pearson or spearman): for MRPC and QQP the values settle it (none is a multiple of 1/32, which
  every accuracy on the 32-example dev set is; all are possible F1 values), for STS-B Pearson is assumed (the
  paper's STS-B metric); both are recorded in ``hparams.extra.dev_metric_note``.

Kept and dropped: candidates listed in a ``.txt`` but absent from its ``.score.txt`` (10-12 of the 100 MNLI template
candidates per seed, 1 STS-B label mapping) have no result: each is one reject ("no score"). A candidate listed twice
(``mpqa`` templates) was fine-tuned twice with the same seed and got the same score: both lines are passed on and the
second counts as a duplicate by content. A malformed score line is rejected with its line number. A truncated or
corrupt archive raises :class:`FormatError` after the runs of the files read completely before the damage.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._archive import ARCHIVE_ERRORS, archive_files, peek_members
from collector.formats._base import Format, Item, RawRecord, Rejected

LICENSE = "MIT"
ARCHIVE = "auto_search_raw.tar.gz"
MODEL = "roberta-large"
SEARCHES = {"auto_template": "template", "auto_label_mapping": "label_words"}
MEMBER_RE = re.compile(
    r"^(?:.*/)?(?P<search>auto_template|auto_label_mapping)/(?P<task>[^/]+)/"
    r"(?P<k>\d+)-(?P<seed>\d+)\.(?P<kind>txt|sort\.txt|score\.txt)$"
)
SCORE_LINE_RE = re.compile(r"^(?P<score>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?) (?P<candidate>\S.*)$")


@dataclass(frozen=True)
class TaskInfo:
    """How one LM-BFF task maps to the record."""

    dataset: str
    metric: str
    n_classes: int | None
    note: str | None = None


_F1_NOTE = ("the file does not name the metric (f1 or accuracy); f1 inferred: no score is a multiple of 1/32 as every "
            "accuracy on the 32-example dev set is")
_STSB_NOTE = "the file does not name the metric (pearson or spearman); pearson assumed, the paper's STS-B metric"

#: LM-BFF task folder -> dataset, dev metric, number of classes.
TASKS: dict[str, TaskInfo] = {
    "SST-2": TaskInfo("glue/sst2", "accuracy", 2),
    "sst-5": TaskInfo("sst5", "accuracy", 5),
    "mr": TaskInfo("rotten_tomatoes", "accuracy", 2),
    "cr": TaskInfo("cr", "accuracy", 2),
    "mpqa": TaskInfo("mpqa", "accuracy", 2),
    "subj": TaskInfo("subj", "accuracy", 2),
    "trec": TaskInfo("trec", "accuracy", 6),
    "CoLA": TaskInfo("glue/cola", "matthews_correlation", 2),
    "MNLI": TaskInfo("glue/mnli", "accuracy", 3),
    "SNLI": TaskInfo("snli", "accuracy", 3),
    "QNLI": TaskInfo("glue/qnli", "accuracy", 2),
    "RTE": TaskInfo("glue/rte", "accuracy", 2),
    "MRPC": TaskInfo("glue/mrpc", "f1", 2, _F1_NOTE),
    "QQP": TaskInfo("glue/qqp", "f1", 2, _F1_NOTE),
    "STS-B": TaskInfo("glue/stsb", "pearson", None, _STSB_NOTE),
}

_PAIR = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"
_PARA = "*cls**sent_0**mask*,*+sentl_1**sep+*"
_IT_WAS = "*cls**sent_0*_It_was*mask*.*sep+*"
_THIS_IS = "*cls**sent_0*_This_is*mask*.*sep+*"
_YES_NO = {"0": "No", "1": "Yes"}
_NLI3 = {"contradiction": "No", "entailment": "Yes", "neutral": "Maybe"}
_NLI2 = {"not_entailment": "No", "entailment": "Yes"}
_POLARITY = {"0": "terrible", "1": "great"}

#: The manual template and label words of each task (``run_experiment.sh``): the part a search keeps fixed.
MANUAL_PROMPTS: dict[str, tuple[str, dict[str, str]]] = {
    "CoLA": (_THIS_IS, {"0": "incorrect", "1": "correct"}),
    "SST-2": (_IT_WAS, _POLARITY),
    "MRPC": (_PARA, _YES_NO),
    "QQP": (_PARA, _YES_NO),
    "STS-B": (_PARA, _YES_NO),
    "MNLI": (_PAIR, _NLI3),
    "SNLI": (_PAIR, _NLI3),
    "QNLI": (_PAIR, _NLI2),
    "RTE": (_PAIR, _NLI2),
    "mr": (_IT_WAS, _POLARITY),
    "sst-5": (_IT_WAS, {"0": "terrible", "1": "bad", "2": "okay", "3": "good", "4": "great"}),
    "subj": (_THIS_IS, {"0": "subjective", "1": "objective"}),
    "trec": ("*cls**mask*:*+sent_0**sep+*",
             {"0": "Description", "1": "Entity", "2": "Expression", "3": "Human", "4": "Location", "5": "Number"}),
    "cr": (_IT_WAS, _POLARITY),
    "mpqa": (_IT_WAS, _POLARITY),
}

HPARAMS: dict[str, Any] = {
    "learning_rate": 1e-5,
    "batch_size": 8,
    "per_device_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "max_steps": 1000,
    "max_seq_length": 128,
}
HPARAMS_EXTRA: dict[str, Any] = {
    "eval_steps": 100,
    "checkpoint_selection": "best dev score over the evaluations every eval_steps",
}


@dataclass
class _Search:
    """The files of one (search, task, K, seed) read from the archive."""

    search: str
    task: str
    k: int
    seed: int
    candidates: dict[str, list[str]] = field(default_factory=dict)  # kind -> lines
    members: dict[str, str] = field(default_factory=dict)  # kind -> member name


class LmBff(Format):
    """Reads LM-BFF's ``auto_template``/``auto_label_mapping`` search results from their archive."""

    name: ClassVar[str] = "lmbff"
    priority: ClassVar[int] = 100
    description: ClassVar[str] = "LM-BFF prompt search runs: auto_search_raw.tar.gz (auto_template, auto_label_mapping)"
    source: ClassVar[str] = "lmbff"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """The folder holding ``auto_search_raw.tar.gz``, or a ``.tar.gz`` whose first member is a search folder."""
        if path.is_dir():
            return (path / ARCHIVE).is_file()
        if not path.is_file() or not path.name.endswith((".tar.gz", ".tgz")):
            return False
        return any(MEMBER_RE.match(name) or name.strip("/").split("/")[-1] in SEARCHES
                   for name, _ in peek_members(path, 6))

    def estimate(self, path: Path) -> int | None:
        try:
            return 14_945 if _archive(path).name == ARCHIVE else None
        except FormatError:
            return None

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one record per score line, search by search, plus one reject per unscored candidate.

        Raises:
            FormatError: no archive, not a gzip tar, or truncated/corrupt (after the complete files before it).
        """
        archive = _archive(path)
        uri = str(archive)
        searches: dict[tuple[str, str, int, int], _Search] = {}  # the archive is small: all of it is buffered
        n_members = 0
        try:
            for name, data in archive_files(archive):
                n_members += 1
                m = MEMBER_RE.match(name)
                if m is None:
                    yield Rejected(name, "unexpected file in the archive (not <search>/<task>/<K>-<seed>."
                                   "{txt,sort.txt,score.txt})", uri=uri)
                    continue
                key = (m["search"], m["task"], int(m["k"]), int(m["seed"]))
                s = searches.setdefault(key, _Search(SEARCHES[m["search"]], m["task"], key[2], key[3]))
                s.candidates[m["kind"]] = data.decode("utf-8").splitlines()
                s.members[m["kind"]] = name
        except (*ARCHIVE_ERRORS, UnicodeDecodeError) as e:
            yield from _flush(searches, uri, check_missing=False)
            raise FormatError(f"archive is truncated or corrupt after {n_members} files: {e}", uri=uri) from e
        if n_members == 0:
            raise FormatError("archive holds no files", uri=uri)
        yield from _flush(searches, uri)


def _archive(path: Path) -> Path:
    if not path.exists():
        raise FormatError("no such file or directory", uri=str(path))
    if path.is_dir():
        if not (path / ARCHIVE).is_file():
            raise FormatError(f"missing required file {ARCHIVE}", uri=str(path))
        return path / ARCHIVE
    return path


def _flush(searches: dict[tuple[str, str, int, int], _Search], uri: str, *, check_missing: bool = True
           ) -> Iterator[Item]:
    """Yield the items of every buffered search and forget them."""
    for s in sorted(searches.values(), key=lambda s: (s.search, s.task, s.seed)):
        yield from _search_items(s, uri, check_missing)
    searches.clear()


def _search_items(s: _Search, uri: str, check_missing: bool) -> Iterator[Item]:
    scores = s.candidates.get("score.txt")
    if scores is None:
        if check_missing and "txt" in s.candidates:
            yield Rejected(s.members["txt"], f"no {s.k}-{s.seed}.score.txt beside it: none of its "
                           f"{len(s.candidates['txt'])} candidates has a result", uri=uri)
        return
    member = s.members["score.txt"]
    info = TASKS.get(s.task)
    if info is None:
        yield Rejected(member, f"unknown LM-BFF task {s.task!r}; known: {', '.join(TASKS)}", field="dataset.name",
                       uri=uri)
        return
    scored: set[str] = set()
    for lineno, line in enumerate(scores, start=1):
        loc = f"{member} line {lineno}"
        if not line.strip():
            continue
        m = SCORE_LINE_RE.match(line.strip())
        if m is None:
            yield Rejected(loc, f"malformed score line {line[:80]!r}: expected '<score> <candidate>'",
                           field="outcome.score", uri=uri)
            continue
        candidate = m["candidate"].strip()
        scored.add(candidate)
        yield RawRecord(_record(s, info, float(m["score"]), candidate), loc, uri)
    if check_missing:
        for lineno, line in enumerate(s.candidates.get("txt", []), start=1):
            if line.strip() and line.strip() not in scored:
                yield Rejected(f"{s.members['txt']} line {lineno}",
                               "no score: this candidate is missing from the search's .score.txt (its run never "
                               "finished or was not logged)", field="outcome.score", uri=uri)


def parse_label_words(text: str) -> dict[str, str] | str:
    """A label mapping candidate as ``{label: word}`` with string keys; the raw text when it does not parse."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    return text


def _record(s: _Search, info: TaskInfo, score: float, candidate: str) -> dict[str, Any]:
    manual_template, manual_words = MANUAL_PROMPTS.get(s.task, (None, None))
    if s.search == "template":
        config: dict[str, Any] = {"search": "template", "template": candidate, "label_words": manual_words}
    else:
        config = {"search": "label_words", "template": manual_template, "label_words": parse_label_words(candidate)}
    dataset: dict[str, Any] = {"name": info.dataset, "examples_per_class": s.k, "data_seed": s.seed}
    if info.n_classes:
        dataset["n_train_used"] = s.k * info.n_classes
    extra = dict(HPARAMS_EXTRA)
    if info.note:
        extra["dev_metric_note"] = info.note
    return {
        "task": {"type": "text-regression" if info.n_classes is None else "text-classification",
                 "primary_metric": info.metric},
        "dataset": dataset,
        "model": {"id": MODEL, "family": "roberta", "arch_type": "encoder"},
        "method": {"name": "prompt_finetuning", "config": {k: v for k, v in config.items() if v is not None}},
        "hparams": {**HPARAMS, "seed": s.seed, "extra": extra},
        "outcome": {"status": "ok", "score": score, "split": "dev", "metrics": {info.metric: score}},
        "provenance": {"license": LICENSE},
    }

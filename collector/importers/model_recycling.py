"""IBM Model-recycling: Hub checkpoints re-used as base models, linear-probed on MNLI and fully fine-tuned on 36 tasks.

Source: github.com/IBM/model-recycling @ 1c1d4228 (``results/``), the data of "Where to start? Analyzing the
potential value of intermediate models" (Choshen et al., arXiv:2211.00107). License Apache-2.0
(``provenance.license``).

Input: the ``ibm_model_recycling`` folder, its ``results/`` folder, or one of the two kinds of result file alone
(``models_tested.csv``, ``models_results_<base>_pretrain.csv``). A folder is recognized by ``models_tested.csv``.

``models_tested.csv`` (comma separated, one row per candidate checkpoint, scores are fractions: ``metric_scale`` unit)
    * ``model_name`` -> ``model.id``; ``base_model`` -> ``model.base_model`` (left empty for the vanilla base model's
      own row); ``model_type`` -> ``model.family`` (t5 -> ``arch_type`` encoder-decoder, the others encoder);
      ``size`` -> ``model.n_params``; ``layers`` -> ``model.n_layers``; ``model.upstream_task`` is a best-effort
      reading of well-known dataset names in the checkpoint name (:data:`UPSTREAM_NAMES`: ``...-squad2`` ->
      ``squad_v2``, ``...-mnli`` -> ``glue/mnli``; several are joined with ``+``), empty when the name names none.
      All of these are enrichment fields (not part of a run's identity). ``tokenizer`` -> ``hparams.extra.tokenizer``
      when it differs from the model (the run used another checkpoint's tokenizer). Dropped: ``classification``,
      ``from_flax``, ``from_tf`` (how the weights were loaded) and ``last_modified`` (the checkpoint's Hub date: the
      record has no field for it).
    * ``mnli_lp`` -> one run: method ``linear_probe`` (classification head only) on ``glue/mnli``, accuracy. The
      probe's recipe and evaluation split are not published (``hparams`` empty, ``outcome.split`` empty). A value of
      exactly 0.0 (242 rows) is the source's marker of a probe that did not run (its own site code carries the note
      "if lp score is 0.0 remove from results"; 7 checkpoints appear twice, once with 0.0 and once with a real
      score): status ``failed``, ``error_kind`` error, no score.
    * each of the 36 dataset columns -> one run: method ``full`` on the dataset named by :data:`DATASETS`, with the
      fixed recipe of the site's faq (:data:`RECIPE`: 10 epochs, lr 5e-5 linear, batch 256, AdamW, weight decay 0.01,
      seed 0; early stopping and the raw schedule string in ``hparams.extra``), evaluated on the ``test`` split.
      Metric accuracy, except ``stsb`` (task ``text-regression``, Spearman). An empty cell is a dataset the candidate
      was not fine-tuned on (only the top-ranked candidates were): no run, nothing to report.
``models_results_<base>_pretrain.csv`` (TAB separated; fractions)
    20 fine-tuning runs (``stage`` 0-19, each in its own ``dir``) of the vanilla base model per dataset: the seed
    variance of the baseline. Same method and recipe, but the seeds are not published: ``hparams.seed`` is left empty
    and ``stage`` goes to ``hparams.extra.repeat`` (the runs differ in content and never collapse). ``accuracy`` or,
    for ``stsb``, ``spearmanr`` -> score; ``loss`` (evaluation loss) -> ``outcome.metrics.loss``. ``dir`` is kept in
    the locator only. An ``stsb`` row whose ``spearmanr`` is empty but whose loss is there (6 T5 runs) is a run
    whose predictions were constant (Spearman undefined): status ``failed``, ``error_kind`` diverged, the loss kept.
    Any other row without a score is rejected.
``<base>_table.csv`` — intentionally NOT read. These are the website's ranking tables: the rows of
    ``models_tested.csv`` again in percent (same runs, identical values), sorted, with an ``avg`` column and, as the
    first row, the *mean* of the 20 baseline runs per dataset (an aggregate, not a run). Reading them would only add
    duplicates and one derived row per base model.

Column misalignment in ``models_tested.csv`` (the main caveat; rejected, not repaired). In about 270 of the 1,291
fine-tuned rows the 36 scores are not attached to their own columns: values are shifted or repeated along the row
(``sst_5bins`` 0.94 — SST-5 accuracy never exceeds 0.6 —, ``tweet_ev_emoji`` 0.85, ``wnli`` 0.90, ``esnli`` equal to
``anli``, often the same few values repeating at the end of the row). The website tables carry the same values, so
there is nothing to repair them from. A row is judged misaligned when at least two of its scores exceed the
dataset's ceiling (:data:`CEILINGS`: the best score any well-formed row or any baseline run reaches on that dataset,
plus 0.03), or one does and the row's scores correlate poorly with the dataset difficulty profile of its base model
(Spearman rank correlation with the per-dataset medians of the rows sharing its ``base_model`` below
:data:`MIN_PROFILE_RHO`). Every fine-tuning score of such a row is rejected with that reason; its ``mnli_lp`` (a
separate measurement) is kept. Genuinely weak checkpoints (low everywhere, even collapsed to chance or to 0.0, like
``kmh511/charlie-base``) stay ``ok``: they exceed no ceiling, and the learner decides what a poor run means.
Pass ``ModelRecycling(reject_misaligned=False)`` to keep those rows as they are.

Duplicates: the 7 duplicated model names (all ``google/t5-v1_1-base`` derivatives) have identical fine-tuning
scores in both rows, so their 36 runs are yielded twice and counted as duplicates by content; their ``mnli_lp``
differs (0.0 and a real score), which gives one failed and one ok probe run.

Rejected: misaligned rows (above), non-numeric cells, a row with more or fewer fields than the header (whole row),
an empty ``mnli_lp``, unknown dataset names in a pretrain file, pretrain rows without a score (other than the
collapsed ``stsb`` runs above). A missing pretrain file for a base model present in ``models_tested.csv`` is one
reject naming the file. Missing ``models_tested.csv`` or a missing column raise :class:`FormatError`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected

LICENSE = "Apache-2.0"
TESTED = "models_tested.csv"
PRETRAIN_RE = re.compile(r"^models_results_(?P<stem>.+)_pretrain\.csv$")

#: The source's dataset columns -> canonical Hub names.
DATASETS: dict[str, str] = {
    "cola": "glue/cola",
    "mrpc": "glue/mrpc",
    "qqp": "glue/qqp",
    "stsb": "glue/stsb",
    "boolq": "super_glue/boolq",
    "cb": "super_glue/cb",
    "copa": "super_glue/copa",
    "multirc": "super_glue/multirc",
    "wic": "super_glue/wic",
    "wsc": "super_glue/wsc",
    "ag_news": "ag_news",
    "isear": "isear",
    "yahoo_answers": "yahoo_answers_topics",
    "dbpedia": "dbpedia_14",
    "20_newsgroup": "20_newsgroups",
    "trec_fine": "trec/fine",
    "trec_coarse": "trec",
    "poem_sentiment": "poem_sentiment",
    "imdb": "imdb",
    "rotten_tomatoes": "rotten_tomatoes",
    "sst_5bins": "sst5",
    "sst2": "glue/sst2",
    "amazon_reviews_multi": "amazon_reviews_multi/en",
    "financial_phrasebank": "financial_phrasebank",
    "tweet_ev_emoji": "tweet_eval/emoji",
    "tweet_ev_emotion": "tweet_eval/emotion",
    "tweet_ev_hate": "tweet_eval/hate",
    "tweet_ev_irony": "tweet_eval/irony",
    "tweet_ev_offensive": "tweet_eval/offensive",
    "tweet_ev_sentiment": "tweet_eval/sentiment",
    "mnli": "glue/mnli",
    "qnli": "glue/qnli",
    "rte": "glue/rte",
    "wnli": "glue/wnli",
    "esnli": "esnli",
    "anli": "anli",
}

#: Datasets scored by Spearman correlation (regression); all others by accuracy.
REGRESSION = frozenset({"stsb"})

#: Highest plausible score per dataset: max(best well-formed candidate row, best of the 120 baseline runs) + 0.03,
#: measured on this release. A score above it cannot belong to the column it sits in.
CEILINGS: dict[str, float] = {
    "cola": 0.91, "mrpc": 0.94, "qqp": 0.95, "stsb": 0.95, "boolq": 0.89, "cb": 0.96, "copa": 0.78,
    "multirc": 0.68, "wic": 0.78, "wsc": 0.81, "ag_news": 0.94, "isear": 0.77, "yahoo_answers": 0.77,
    "dbpedia": 0.83, "20_newsgroup": 0.91, "trec_fine": 0.97, "trec_coarse": 1.0, "poem_sentiment": 0.95,
    "imdb": 0.99, "rotten_tomatoes": 0.95, "sst_5bins": 0.62, "sst2": 1.0, "amazon_reviews_multi": 0.71,
    "financial_phrasebank": 0.92, "tweet_ev_emoji": 0.51, "tweet_ev_emotion": 0.89, "tweet_ev_hate": 0.64,
    "tweet_ev_irony": 0.87, "tweet_ev_offensive": 0.9, "tweet_ev_sentiment": 0.76, "mnli": 0.93, "qnli": 0.97,
    "rte": 0.91, "wnli": 0.82, "esnli": 0.95, "anli": 0.64,
}
#: Below this rank correlation with its base model's dataset profile, one ceiling breach marks a row misaligned.
MIN_PROFILE_RHO = 0.9
#: Fewest scores in a row for the profile correlation to be computed.
MIN_PROFILE_VALUES = 10

META_COLUMNS = ("model_name", "base_model", "size", "tokenizer", "model_type", "layers", "mnli_lp")
PRETRAIN_COLUMNS = ("dataset name", "accuracy", "loss", "spearmanr", "stage", "dir")

#: Pretrain file stems (the site's ``regularize_model_name`` + ``escape_files_name``) of the published base models.
PRETRAIN_STEMS: dict[str, str] = {
    "bert_base_cased": "bert-base-cased",
    "bert_base_uncased": "bert-base-uncased",
    "roberta_base": "roberta-base",
    "t5_base": "t5-base",
    "google_t5_v1_1_base": "google/t5-v1_1-base",
    "microsoft_deberta_v3_base": "microsoft/deberta-v3-base",
}

#: The fixed fine-tuning recipe of the site's faq (``hparams`` of every ``full`` run; the baseline runs omit the seed).
RECIPE: dict[str, Any] = {
    "learning_rate": 5e-5,
    "batch_size": 256,
    "epochs": 10,
    "lr_scheduler": "linear",
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "seed": 0,
    "extra": {
        "early_stopping": {"min_delta": 0.001, "patience_examples": 20 * 50 * 256, "eval_every_examples": 50 * 256},
        "learning_rate_spec": "5e-5,linear,0.0006",
        "l2_reg": 0.0,
        "train_size": "full",
    },
}

#: Dataset names recognized in checkpoint names (lower-cased, ``_``/``.``/space read as ``-``) -> upstream task.
UPSTREAM_NAMES: dict[str, str] = {
    "squad2": "squad_v2", "squadv2": "squad_v2", "squad-v2": "squad_v2", "squad2.0": "squad_v2",
    "squad": "squad", "mnli": "glue/mnli", "multinli": "glue/mnli", "snli": "snli", "anli": "anli",
    "qnli": "glue/qnli", "rte": "glue/rte", "mrpc": "glue/mrpc", "qqp": "glue/qqp", "stsb": "glue/stsb",
    "sts-b": "glue/stsb", "sst2": "glue/sst2", "sst-2": "glue/sst2", "cola": "glue/cola", "wnli": "glue/wnli",
    "boolq": "super_glue/boolq", "imdb": "imdb", "xsum": "xsum", "cnndm": "cnn_dailymail",
    "cnn-dailymail": "cnn_dailymail", "samsum": "samsum", "dialogsum": "dialogsum", "eli5": "eli5",
    "wikitext2": "wikitext", "wikitext": "wikitext", "conll2003": "conll2003", "emotion": "emotion",
    "ag-news": "ag_news", "agnews": "ag_news", "trec": "trec", "msmarco": "ms_marco", "ms-marco": "ms_marco",
    "fever": "fever", "paws": "paws", "scitail": "scitail", "hotpotqa": "hotpot_qa", "triviaqa": "trivia_qa",
    "quora": "quora", "yelp": "yelp_review_full", "tweet-eval": "tweet_eval", "go-emotions": "go_emotions",
    "financial-phrasebank": "financial_phrasebank", "banking77": "banking77", "race": "race", "swag": "swag",
}
_UPSTREAM_RE = re.compile(
    r"(?<![a-z0-9])(" + "|".join(re.escape(k) for k in sorted(UPSTREAM_NAMES, key=len, reverse=True)) + r")(?![a-z0-9])"
)


@dataclass
class _Row:
    """One data row of ``models_tested.csv``."""

    line: int
    cells: dict[str, str]
    scores: dict[str, float] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # column -> raw value that is not a number
    malformed: str | None = None  # why the row as a whole cannot be read


class ModelRecycling(Format):
    """Reads the Model-recycling ``results/`` CSVs (candidates' linear probe and fine-tuning, baseline repeats)."""

    name: ClassVar[str] = "model_recycling"
    priority: ClassVar[int] = 80
    description: ClassVar[str] = "IBM Model-recycling results: folder with models_tested.csv (+ pretrain repeats)"
    source: ClassVar[str] = "model_recycling"

    def __init__(self, reject_misaligned: bool = True) -> None:
        self.reject_misaligned = reject_misaligned

    @classmethod
    def detect(cls, path: Path) -> bool:
        """The source folder, its ``results/`` folder, ``models_tested.csv`` or a baseline repeats file."""
        if path.is_dir():
            return _results_dir(path) is not None
        return path.is_file() and (path.name == TESTED or PRETRAIN_RE.match(path.name) is not None)

    def estimate(self, path: Path) -> int | None:
        try:
            tested, pretrain = _inputs(path)
        except FormatError:
            return None
        total = 0
        if tested is not None:
            with open(tested, encoding="utf-8") as f:
                for row in csv.reader(f):
                    total += sum(1 for cell in row[10:] if cell.strip())
        for p in pretrain:
            with open(p, "rb") as f:
                total += max(f.read().count(b"\n") - 1, 0)
        return total

    def read(self, path: Path) -> Iterator[Item]:
        """Yield the linear-probe and fine-tuning runs of ``models_tested.csv``, then the baseline repeats.

        Raises:
            FormatError: no ``models_tested.csv`` in a folder, an unreadable file, or a required column missing
                (all checked before anything is yielded).
        """
        tested, pretrain = _inputs(path)
        rows = _read_tested(tested) if tested is not None else []
        pretrain_tables = [(p, _read_pretrain(p)) for p in pretrain]
        if tested is not None:
            yield from self._tested_items(tested, rows)
            yield from _missing_pretrain(tested, rows, pretrain)
        features = {r.cells["model_name"].strip(): _model(r.cells) for r in rows if not r.malformed}
        for p, table in pretrain_tables:
            yield from _pretrain_items(p, table, features)

    def _tested_items(self, tested: Path, rows: list[_Row]) -> Iterator[Item]:
        uri = str(tested)
        profiles = _profiles(rows)
        for row in rows:
            name = row.cells.get("model_name", "").strip()
            loc = f"{TESTED} line {row.line} ({name})"
            if row.malformed:
                yield Rejected(loc, f"{row.malformed}; none of its runs can be attributed", uri=uri)
                continue
            if not name:
                yield Rejected(loc, "empty model_name", field="model.id", uri=uri)
                continue
            model = _model(row.cells)
            extra = _tokenizer_extra(row.cells)
            yield from _probe_item(row, model, extra, loc, uri)
            reason = self._misaligned(row, profiles) if self.reject_misaligned else None
            for col in DATASETS:
                if col in row.bad:
                    yield Rejected(f"{loc} column {col}", f"score {row.bad[col]!r} is not a number",
                                   field="outcome.score", uri=uri)
                elif col in row.scores:
                    if reason is not None:
                        yield Rejected(f"{loc} column {col}", reason, field="outcome.score", uri=uri)
                    else:
                        yield RawRecord(_finetune_record(model, col, row.scores[col], extra), f"{loc} column {col}",
                                        uri)

    def _misaligned(self, row: _Row, profiles: dict[str, dict[str, float]]) -> str | None:
        """Why ``row``'s fine-tuning scores cannot be trusted to sit in their own columns, or None."""
        scores = {c: v for c, v in row.scores.items() if c in DATASETS}
        breaches = sorted(c for c, v in scores.items() if v > CEILINGS[c])
        if not breaches:
            return None
        rho = _rank_correlation(scores, profiles.get(row.cells.get("base_model", "").strip(), {}))
        if len(breaches) < 2 and (rho is None or rho >= MIN_PROFILE_RHO):
            return None
        rho_text = f", rank correlation {rho:.2f} with its base model's dataset profile" if rho is not None else ""
        return (f"misaligned row: {len(breaches)} fine-tuning scores above their dataset ceiling{rho_text}; the "
                "scores do not fit their dataset columns (published as is upstream), no run is kept")


# -- layout ------------------------------------------------------------------------------------------------------


def _results_dir(path: Path) -> Path | None:
    for candidate in (path, path / "results"):
        if (candidate / TESTED).is_file():
            return candidate
    return None


def _inputs(path: Path) -> tuple[Path | None, list[Path]]:
    """(``models_tested.csv`` or None, baseline repeat files) to read for ``path``."""
    if not path.exists():
        raise FormatError("no such file or directory", uri=str(path))
    if path.is_file():
        if path.name == TESTED:
            return path, []
        if PRETRAIN_RE.match(path.name):
            return None, [path]
        raise FormatError(f"expected {TESTED} or models_results_<base>_pretrain.csv", uri=str(path))
    results = _results_dir(path)
    if results is None:
        raise FormatError(f"missing required file {TESTED} (looked here and in results/)", uri=str(path))
    pretrain = sorted(p for p in results.iterdir() if p.is_file() and PRETRAIN_RE.match(p.name))
    return results / TESTED, pretrain


def _base_of_stem(stem: str, known: dict[str, str] | None = None) -> str | None:
    return (known or {}).get(stem) or PRETRAIN_STEMS.get(stem)


def _stem_of_base(base: str) -> str:
    """The site's file-name spelling of a base model (``google/t5-v1_1-base`` -> ``google_t5_v1_1_base``)."""
    return base.replace("-", "_").replace("/", "_")


# -- models_tested.csv -------------------------------------------------------------------------------------------


def _read_tested(path: Path) -> list[_Row]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot read: {e}", uri=str(path)) from e
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise FormatError("file is empty", uri=str(path))
    header = [h.strip() for h in header]
    missing = [c for c in (*META_COLUMNS, *DATASETS) if c not in header]
    if missing:
        raise FormatError(f"missing column(s) {', '.join(missing)}", uri=str(path))
    rows: list[_Row] = []
    for i, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        cells = dict(zip(header, values, strict=False))
        row = _Row(line=i, cells=cells)
        if len(values) != len(header):
            row.malformed = f"malformed row: {len(values)} fields, the header has {len(header)}"
            rows.append(row)
            continue
        for col in ("mnli_lp", *DATASETS):
            raw = (cells.get(col) or "").strip()
            if not raw:
                continue
            value = _number(raw)
            if value is None:
                row.bad[col] = raw
            else:
                row.scores[col] = value
        rows.append(row)
    return rows


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _profiles(rows: list[_Row]) -> dict[str, dict[str, float]]:
    """Per base model, the median score of each dataset over the rows that have one (the difficulty profile)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        base = row.cells.get("base_model", "").strip()
        for col, v in row.scores.items():
            if col in DATASETS:
                values[base][col].append(v)
    return {base: {col: _median(vs) for col, vs in cols.items()} for base, cols in values.items()}


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _rank_correlation(scores: dict[str, float], profile: dict[str, float]) -> float | None:
    """Spearman correlation between a row's scores and its base model's profile (None when too few values)."""
    cols = [c for c in scores if c in profile]
    if len(cols) < MIN_PROFILE_VALUES:
        return None
    a, b = _ranks([scores[c] for c in cols]), _ranks([profile[c] for c in cols])
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    var = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return cov / var if var else None


def _model(cells: dict[str, str]) -> dict[str, Any]:
    name = cells["model_name"].strip()
    base = cells["base_model"].strip()
    model: dict[str, Any] = {"id": name}
    if base and base != name:
        model["base_model"] = base
        upstream = upstream_task(name)
        if upstream:
            model["upstream_task"] = upstream
    family = cells["model_type"].strip()
    if family:
        model["family"] = family
        model["arch_type"] = "encoder-decoder" if family == "t5" else "encoder"
    for col, key in (("size", "n_params"), ("layers", "n_layers")):
        value = _number(cells[col].strip()) if cells[col].strip() else None
        if value is not None and value >= 1:
            model[key] = int(value)
    return model


def upstream_task(model_id: str) -> str | None:
    """Well-known datasets named in a checkpoint's name, joined with ``+`` (best effort), or None."""
    name = model_id.split("/")[-1].lower()
    name = re.sub(r"[\s_]+", "-", name)
    found: list[str] = []
    for m in _UPSTREAM_RE.finditer(name):
        task = UPSTREAM_NAMES[m.group(1)]
        if task not in found:
            found.append(task)
    return "+".join(found) or None


def _tokenizer_extra(cells: dict[str, str]) -> dict[str, Any]:
    tok = cells["tokenizer"].strip()
    return {"tokenizer": tok} if tok and tok != cells["model_name"].strip() else {}


def _probe_item(row: _Row, model: dict[str, Any], extra: dict[str, Any], loc: str, uri: str) -> Iterator[Item]:
    loc = f"{loc} column mnli_lp"
    if "mnli_lp" in row.bad:
        yield Rejected(loc, f"score {row.bad['mnli_lp']!r} is not a number", field="outcome.score", uri=uri)
        return
    if "mnli_lp" not in row.scores:
        yield Rejected(loc, "mnli_lp is empty: every candidate is linear-probed on MNLI", field="outcome.score",
                       uri=uri)
        return
    score = row.scores["mnli_lp"]
    outcome: dict[str, Any]
    if score == 0.0:
        outcome = {"status": "failed", "error_kind": "error",
                   "error_message": "mnli_lp is 0.0, the source's marker of a linear probe that did not run"}
    else:
        outcome = {"status": "ok", "score": score, "metrics": {"accuracy": score}}
    data = {
        "task": {"type": "text-classification", "primary_metric": "accuracy"},
        "dataset": {"name": "glue/mnli"},
        "model": model,
        "method": {"name": "linear_probe", "config": {"trained": "classification head only"}},
        "hparams": {"extra": dict(extra)} if extra else {},
        "outcome": outcome,
        "provenance": {"license": LICENSE},
    }
    yield RawRecord(data, loc, uri)


def _task(col: str) -> dict[str, Any]:
    if col in REGRESSION:
        return {"type": "text-regression", "primary_metric": "spearman"}
    return {"type": "text-classification", "primary_metric": "accuracy"}


def _finetune_record(model: dict[str, Any], col: str, score: float, extra: dict[str, Any],
                     *, repeat: int | None = None, loss: float | None = None) -> dict[str, Any]:
    task = _task(col)
    hparams = {k: v for k, v in RECIPE.items() if k != "extra"}
    hparams["extra"] = {**RECIPE["extra"], **extra}
    if repeat is not None:
        hparams.pop("seed")
        hparams["extra"]["repeat"] = repeat
    metrics = {task["primary_metric"]: score}
    if loss is not None:
        metrics["loss"] = loss
    return {
        "task": task,
        "dataset": {"name": DATASETS[col]},
        "model": model,
        "method": {"name": "full"},
        "hparams": hparams,
        "outcome": {"status": "ok", "score": score, "split": "test", "metrics": metrics},
        "provenance": {"license": LICENSE},
    }


def _missing_pretrain(tested: Path, rows: list[_Row], pretrain: list[Path]) -> Iterator[Item]:
    """One reject per base model of ``models_tested.csv`` whose baseline repeats file is absent."""
    present = {PRETRAIN_RE.match(p.name).group("stem") for p in pretrain}  # type: ignore[union-attr]
    bases = sorted({r.cells.get("base_model", "").strip() for r in rows} - {""})
    for base in bases:
        stem = _stem_of_base(base)
        if stem not in present:
            name = f"models_results_{stem}_pretrain.csv"
            yield Rejected(name, f"missing file {name}: the 20 baseline runs per dataset of {base} are not there",
                           uri=str(tested.parent / name))


# -- models_results_<base>_pretrain.csv --------------------------------------------------------------------------


def _read_pretrain(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot read: {e}", uri=str(path)) from e
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    header = next(reader, None)
    if not header:
        raise FormatError("file is empty", uri=str(path))
    header = [h.strip() for h in header]
    missing = [c for c in PRETRAIN_COLUMNS if c not in header]
    if missing:
        raise FormatError(f"missing column(s) {', '.join(missing)} (expected a TAB-separated file)", uri=str(path))
    stem = PRETRAIN_RE.match(path.name).group("stem")  # type: ignore[union-attr]
    if _base_of_stem(stem) is None:
        raise FormatError(f"unknown base model {stem!r}: known {', '.join(sorted(PRETRAIN_STEMS))}", uri=str(path))
    return [(i, dict(zip(header, values, strict=False))) for i, values in enumerate(reader, start=2)
            if any(v.strip() for v in values)]


def _pretrain_items(path: Path, table: list[tuple[int, dict[str, str]]],
                    features: dict[str, dict[str, Any]]) -> Iterator[Item]:
    """The baseline repeats of one file; model features come from the base model's own row when there is one."""
    uri = str(path)
    base = _base_of_stem(PRETRAIN_RE.match(path.name).group("stem"))  # type: ignore[union-attr]
    model = features.get(base) or {"id": base, "family": _family(base),
                                   "arch_type": "encoder-decoder" if "t5" in base else "encoder"}
    for line, cells in table:
        col = (cells.get("dataset name") or "").strip()
        stage = (cells.get("stage") or "").strip()
        run_dir = (cells.get("dir") or "").strip().rstrip("/").split("/")[-1]
        loc = f"{path.name} line {line} ({col}, stage {stage}, {run_dir})"
        if col not in DATASETS:
            yield Rejected(loc, f"unknown dataset {col!r}", field="dataset.name", uri=uri)
            continue
        score_col = "spearmanr" if col in REGRESSION else "accuracy"
        raw = (cells.get(score_col) or "").strip()
        score = _number(raw) if raw else None
        repeat = _number(stage) if stage else None
        if repeat is None or repeat != int(repeat):
            yield Rejected(loc, f"stage {stage!r} is not a run index", field="hparams.extra.repeat", uri=uri)
            continue
        loss_raw = (cells.get("loss") or "").strip()
        loss = _number(loss_raw) if loss_raw else None
        if score is None and not raw and col in REGRESSION and loss is not None:
            yield RawRecord(_collapsed_record(model, col, int(repeat), loss), loc, uri)
            continue
        if score is None:
            why = f"{score_col} is empty" if not raw else f"{score_col} {raw!r} is not a number"
            yield Rejected(loc, f"no score: {why}", field="outcome.score", uri=uri)
            continue
        yield RawRecord(_finetune_record(model, col, score, {}, repeat=int(repeat), loss=loss), loc, uri)


def _collapsed_record(model: dict[str, Any], col: str, repeat: int, loss: float) -> dict[str, Any]:
    """A baseline regression run whose Spearman correlation is empty (undefined: constant predictions)."""
    data = _finetune_record(model, col, 0.0, {}, repeat=repeat, loss=loss)
    data["outcome"] = {
        "status": "failed",
        "error_kind": "diverged",
        "error_message": "spearmanr is empty: the correlation is undefined, the model predicted a constant",
        "split": "test",
        "metrics": {"loss": loss},
    }
    return data


def _family(base: str) -> str:
    name = base.split("/")[-1]
    if name.startswith("deberta-v3"):
        return "deberta-v2"
    return name.split("-")[0]

"""The public raw text datasets kept beside the project (``../shared/data/text``) and how to read each.

Every folder there has its own layout (see its ``ORIGIN.txt``). :data:`PUBLIC_TEXT_DATASETS` records, per folder,
the canonical dataset name, which split the folder lets us read (the train split when present; otherwise the split
that exists, e.g. MNLI ``validation_matched``), the files, format and columns, the row count ORIGIN.txt states, and
whether those rows are the whole split or a sample of it.

Labels are returned as stored in the files (ints or label names), except DBpedia's private 1..14 ids, which are mapped
to the official class names with the folder's ``label_mapping.tsv``. Tweets are stripped of surrounding whitespace,
as Hugging Face ``tweet_eval`` does.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from collector.features._text_io import TextDataset, TextDatasetError
from collector.schema._vocab import canonical_dataset

if TYPE_CHECKING:
    import pandas as pd

    from collector.schema._record import DatasetMeta

#: How a folder's files are laid out: ``table`` (CSV/TSV, with or without header), ``jsonl``, ``parquet``,
#: ``lines`` (one text per line + one label per line in ``label_file``), ``delimited`` (``text<sep>label`` or
#: ``label<sep>text`` per line), ``trec`` (``COARSE:fine question`` per line).
READERS = ("table", "jsonl", "parquet", "lines", "delimited", "trec")


@dataclass(frozen=True)
class PublicTextSource:
    """How to read one folder of ``../shared/data/text``.

    Attributes:
        folder: folder name under the root.
        name: canonical dataset name (``<dataset>/<config>``, see :func:`collector.schema.canonical_dataset`).
        split: the split the files hold (``train`` when the folder has it).
        reader: one of :data:`READERS`.
        files: files read, relative to the folder, concatenated in order.
        text: text column (name, or position for files without header).
        label: label column (name or position); for ``delimited``, unused.
        text_pair: second text column of a sentence-pair dataset.
        header: the table has a header row (``table``, ``delimited``).
        sep: field separator (``table``, ``delimited``).
        label_file: label file of the ``lines`` reader.
        label_first: ``delimited``: the label comes before the separator.
        label_mapping: TSV file (header row) whose first column is the stored label id and second the class name;
            labels are replaced by the names.
        n_rows: rows the files hold, as ORIGIN.txt states.
        full_split: False when the rows are only a sample of the split.
        official_train_size: size of the official train split (the ``n_samples`` a fine-tuning run saw).
        domain: text domain (news, reviews, social, encyclopedic...), passed to the meta-features.
        note: caveats from ORIGIN.txt.
    """

    folder: str
    name: str
    split: str
    reader: str
    files: tuple[str, ...]
    n_rows: int
    text: str | int = "text"
    label: str | int = "label"
    text_pair: str | int | None = None
    header: bool = True
    sep: str = ","
    label_file: str | None = None
    label_first: bool = False
    label_mapping: str | None = None
    full_split: bool = True
    official_train_size: int | None = None
    domain: str | None = None
    note: str = ""


def _tweet_eval(task: str, n_rows: int) -> PublicTextSource:
    return PublicTextSource(
        folder=f"tweet_eval_{task}",
        name=f"tweet_eval/{task}",
        split="train",
        reader="lines",
        files=("train_text.txt",),
        label_file="train_labels.txt",
        n_rows=n_rows,
        official_train_size=n_rows,
        domain="social",
    )


_SOURCES: tuple[PublicTextSource, ...] = (
    PublicTextSource(
        folder="ag_news",
        name="ag_news",
        split="train",
        reader="table",
        files=("train_subset_10k_from_alps_dev.tsv",),
        header=False,
        sep="\t",
        text=0,
        label=1,
        n_rows=10001,
        full_split=False,
        official_train_size=120000,
        domain="news",
        note="10,001-row sample of the official train (ALPS dev split); description only, no title.",
    ),
    PublicTextSource(
        folder="anli",
        name="anli",
        split="test",
        reader="jsonl",
        files=("test_r1_r2_r3.jsonl",),
        text="premise",
        text_pair="hypothesis",
        n_rows=3200,
        official_train_size=16946 + 45460 + 100459,
        domain="encyclopedic",
        note="Test splits of rounds 1-3 only; train and dev are missing.",
    ),
    PublicTextSource(
        folder="banking77",
        name="banking77",
        split="train",
        reader="table",
        files=("train.csv",),
        label="category",
        n_rows=10003,
        official_train_size=10003,
        domain="customer_service",
    ),
    PublicTextSource(
        folder="dbpedia_14_subset",
        name="dbpedia_14",
        split="sample",
        reader="table",
        files=("val.csv", "test.csv"),
        header=False,
        text=1,
        label=0,
        label_mapping="label_mapping.tsv",
        n_rows=10000,
        full_split=False,
        official_train_size=560000,
        domain="encyclopedic",
        note="Random 10,000-row sample (DHIM val + test) of pooled train+test; no title; labels mapped to class names.",
    ),
    PublicTextSource(
        folder="emotion",
        name="emotion",
        split="train",
        reader="delimited",
        files=("train.txt",),
        sep=";",
        n_rows=16000,
        official_train_size=16000,
        domain="social",
    ),
    PublicTextSource(
        folder="glue_cola",
        name="glue/cola",
        split="train",
        reader="table",
        files=("train.tsv",),
        header=False,
        sep="\t",
        text=3,
        label=1,
        n_rows=8551,
        official_train_size=8551,
        domain="linguistics",
    ),
    PublicTextSource(
        folder="glue_mnli",
        name="glue/mnli",
        split="validation_matched",
        reader="jsonl",
        files=("dev_matched.jsonl",),
        text="premise",
        text_pair="hypothesis",
        n_rows=9815,
        official_train_size=392702,
        domain="mixed",
        note="dev_matched only; train and dev_mismatched are missing.",
    ),
    PublicTextSource(
        folder="glue_qnli",
        name="glue/qnli",
        split="validation",
        reader="table",
        files=("dev.tsv",),
        sep="\t",
        text="question",
        text_pair="sentence",
        n_rows=5463,
        official_train_size=104743,
        domain="encyclopedic",
        note="dev only; train is missing.",
    ),
    PublicTextSource(
        folder="glue_rte",
        name="glue/rte",
        split="train",
        reader="table",
        files=("train.tsv",),
        sep="\t",
        text="sentence1",
        text_pair="sentence2",
        n_rows=2490,
        official_train_size=2490,
        domain="news",
    ),
    PublicTextSource(
        folder="glue_sst2",
        name="glue/sst2",
        split="train",
        reader="table",
        files=("train.tsv",),
        sep="\t",
        text="sentence",
        n_rows=67349,
        official_train_size=67349,
        domain="reviews",
    ),
    PublicTextSource(
        folder="imdb",
        name="imdb",
        split="train",
        reader="table",
        files=("train.csv",),
        n_rows=25000,
        official_train_size=25000,
        domain="reviews",
    ),
    PublicTextSource(
        folder="rotten_tomatoes",
        name="rotten_tomatoes",
        split="train",
        reader="table",
        files=("train.csv",),
        n_rows=8530,
        official_train_size=8530,
        domain="reviews",
    ),
    PublicTextSource(
        folder="sms_spam",
        name="sms_spam",
        split="train",
        reader="delimited",
        files=("SMSSpamCollection",),
        sep="\t",
        header=False,
        label_first=True,
        n_rows=5574,
        official_train_size=5574,
        domain="sms",
        note="Single split (as on the Hub).",
    ),
    PublicTextSource(
        folder="superglue_cb",
        name="super_glue/cb",
        split="train",
        reader="jsonl",
        files=("train.jsonl",),
        text="premise",
        text_pair="hypothesis",
        n_rows=250,
        official_train_size=250,
        domain="mixed",
    ),
    PublicTextSource(
        folder="superglue_wsc",
        name="super_glue/wsc",
        split="train",
        reader="jsonl",
        files=("train.jsonl",),
        n_rows=554,
        official_train_size=554,
        domain="fiction",
        note="Only the sentence is read; the pronoun/antecedent spans (target) are left out.",
    ),
    PublicTextSource(
        folder="trec",
        name="trec",
        split="train",
        reader="trec",
        files=("TREC.train",),
        n_rows=5452,
        official_train_size=5452,
        domain="questions",
        note="Coarse labels (6 classes); the one non-UTF-8 byte is read as a space, as Hugging Face trec does.",
    ),
    _tweet_eval("emoji", 45000),
    _tweet_eval("emotion", 3257),
    _tweet_eval("hate", 9000),
    _tweet_eval("irony", 2862),
    _tweet_eval("offensive", 11916),
    PublicTextSource(
        folder="tweet_eval_sentiment",
        name="tweet_eval/sentiment",
        split="train",
        reader="parquet",
        files=("train_hf.parquet",),
        n_rows=45615,
        official_train_size=45615,
        domain="social",
        note="The Hugging Face train parquet (cardiffnlp's train_text.txt was rebuilt from it).",
    ),
)

#: Folder name -> how to read it.
PUBLIC_TEXT_DATASETS: dict[str, PublicTextSource] = {s.folder: s for s in _SOURCES}


def public_text_source(name: str) -> PublicTextSource:
    """Find a public dataset by folder name or by (any alias of) its canonical name.

    Args:
        name: e.g. ``glue_sst2``, ``glue/sst2``, ``sst2`` or ``SST-2``.

    Returns:
        Its table entry.

    Raises:
        TextDatasetError: no public dataset has that name.
    """
    if name in PUBLIC_TEXT_DATASETS:
        return PUBLIC_TEXT_DATASETS[name]
    canonical = canonical_dataset(name)
    for source in PUBLIC_TEXT_DATASETS.values():
        if source.name == canonical:
            return source
    known = ", ".join(sorted(PUBLIC_TEXT_DATASETS))
    raise TextDatasetError(f"unknown public text dataset {name!r}; known folders: {known}")


def load_public_text(root: Path, name: str) -> TextDataset:
    """Read the split recorded in :data:`PUBLIC_TEXT_DATASETS` of one public dataset.

    Args:
        root: the ``data/text`` folder (``../shared/data/text`` in a checkout).
        name: folder name or canonical name (see :func:`public_text_source`).

    Returns:
        The dataset, named by its canonical name, with ``split`` set to the split the files hold.

    Raises:
        TextDatasetError: unknown name, missing folder or file, or a file that does not have the recorded layout.
    """
    source = public_text_source(name)
    folder = Path(root) / source.folder
    if not folder.is_dir():
        raise TextDatasetError(f"no folder {source.folder!r} under the public text root", uri=str(root))
    for file in (*source.files, *(f for f in (source.label_file, source.label_mapping) if f)):
        if not (folder / file).is_file():
            raise TextDatasetError("missing file", uri=str(folder / file))
    reader = _READERS[source.reader]
    texts, pairs, labels = reader(folder, source)
    if len(labels) != len(texts):
        raise TextDatasetError(f"{len(texts)} texts but {len(labels)} labels", uri=str(folder))
    return TextDataset(
        name=source.name,
        split=source.split,
        texts=texts,
        labels=labels,
        text_pairs=pairs,
        source=str(folder / source.files[0]),
    )


def describe_public_texts(
    root: Path,
    *,
    names: list[str] | None = None,
    landmark_sample: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, DatasetMeta]:
    """Compute the meta-features of every public text dataset (or of ``names``).

    Args:
        root: the ``data/text`` folder.
        names: folder or canonical names; all of :data:`PUBLIC_TEXT_DATASETS` when ``None``.
        landmark_sample: passed to :func:`~collector.features._dataset.compute_meta_features`.
        seed: passed to :func:`~collector.features._dataset.compute_meta_features`.
        progress: show a tqdm progress bar on stderr.

    Returns:
        Canonical dataset name -> meta-features (computed on the rows the folder holds; see
        :attr:`PublicTextSource.full_split` and :attr:`PublicTextSource.official_train_size`).

    Raises:
        TextDatasetError: as :func:`load_public_text`.
    """
    from tqdm import tqdm

    from collector.features._dataset import compute_meta_features

    sources = [public_text_source(n) for n in names] if names is not None else list(PUBLIC_TEXT_DATASETS.values())
    out: dict[str, DatasetMeta] = {}
    bar = tqdm(sources, desc="dataset meta-features", unit="dataset", file=sys.stderr,
               disable=None if progress else True)  # a bar on a terminal only
    for source in bar:
        bar.set_postfix_str(source.name)
        ds = load_public_text(root, source.folder)
        out[source.name] = compute_meta_features(
            ds.texts,
            ds.labels,
            text_pairs=ds.text_pairs,
            landmark_sample=landmark_sample,
            seed=seed,
            domain=source.domain,
        )
    return out


# ---------------------------------------------------------------------------------------------------------- readers

Rows = tuple[list[str], list[str] | None, list[object]]


def _read_lines(path: Path, *, errors: str = "strict") -> list[str]:
    """Lines of a UTF-8 file split on ``\\n`` only (tweets may hold other Unicode line breaks), without the last
    empty one."""
    try:
        text = path.read_bytes().decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise TextDatasetError(f"not UTF-8: {e}", uri=str(path)) from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _column(frame: pd.DataFrame, key: str | int, path: Path) -> pd.Series:
    if isinstance(key, int):
        if key >= frame.shape[1]:
            raise TextDatasetError(f"expected at least {key + 1} columns, found {frame.shape[1]}", uri=str(path))
        return frame.iloc[:, key]
    if key not in frame.columns:
        raise TextDatasetError(f"no column {key!r}; columns: {', '.join(map(str, frame.columns))}", uri=str(path))
    return frame[key]


def _texts(series: pd.Series) -> list[str]:
    return ["" if v is None or v != v else str(v) for v in series.tolist()]


def _labels(series: pd.Series) -> list[object]:
    return [None if v is None or v != v else v for v in series.tolist()]


def _frame_rows(frames: list[tuple[pd.DataFrame, Path]], source: PublicTextSource) -> Rows:
    texts: list[str] = []
    labels: list[object] = []
    pairs: list[str] | None = [] if source.text_pair is not None else None
    for frame, path in frames:
        texts += _texts(_column(frame, source.text, path))
        labels += _labels(_column(frame, source.label, path))
        if pairs is not None and source.text_pair is not None:
            pairs += _texts(_column(frame, source.text_pair, path))
    return texts, pairs, labels


def _read_table(folder: Path, source: PublicTextSource) -> Rows:
    import pandas as pd

    quoting = csv.QUOTE_NONE if source.sep == "\t" else csv.QUOTE_MINIMAL
    frames = []
    for name in source.files:
        path = folder / name
        frame = pd.read_csv(
            path,
            sep=source.sep,
            header=0 if source.header else None,
            quoting=quoting,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
        )
        frames.append((frame, path))
    texts, pairs, labels = _frame_rows(frames, source)
    if source.label_mapping:
        labels = _map_labels(folder / source.label_mapping, labels)
    return texts, pairs, labels


def _map_labels(path: Path, labels: list[object]) -> list[object]:
    """Replace stored label ids by class names from a TSV (header row; id, name, ...), e.g. DBpedia's DHIM ids."""
    mapping: dict[str, str] = {}
    for line in _read_lines(path)[1:]:
        key, name, *_ = line.split("\t")
        mapping[key.strip()] = name.strip()
    try:
        return [mapping[str(v).strip()] for v in labels]
    except KeyError as e:
        raise TextDatasetError(f"label {e} is not in the mapping", uri=str(path)) from e


def _read_jsonl(folder: Path, source: PublicTextSource) -> Rows:
    import pandas as pd

    frames = [(pd.read_json(folder / name, lines=True, dtype=False), folder / name) for name in source.files]
    return _frame_rows(frames, source)


def _read_parquet(folder: Path, source: PublicTextSource) -> Rows:
    import pandas as pd

    frames = [(pd.read_parquet(folder / name), folder / name) for name in source.files]
    return _frame_rows(frames, source)


def _read_text_and_label_lines(folder: Path, source: PublicTextSource) -> Rows:
    assert source.label_file is not None
    texts = [t.strip() for name in source.files for t in _read_lines(folder / name)]
    raw = _read_lines(folder / source.label_file)
    try:
        labels: list[object] = [int(v) for v in raw]
    except ValueError:
        labels = [v.strip() for v in raw]
    return texts, None, labels


def _read_delimited(folder: Path, source: PublicTextSource) -> Rows:
    texts: list[str] = []
    labels: list[object] = []
    for name in source.files:
        path = folder / name
        lines = _read_lines(path)[1 if source.header else 0 :]
        for number, line in enumerate(lines, 2 if source.header else 1):
            if source.label_first:
                label, sep, text = line.partition(source.sep)
            else:
                text, sep, label = line.rpartition(source.sep)
            if not sep:
                raise TextDatasetError(f"no {source.sep!r} separator", uri=str(path), locator=f"line {number}")
            texts.append(text)
            labels.append(label)
    return texts, None, labels


def _read_trec(folder: Path, source: PublicTextSource) -> Rows:
    texts: list[str] = []
    labels: list[object] = []
    for name in source.files:
        path = folder / name
        for number, line in enumerate(_read_lines(path, errors="replace"), 1):
            tag, _, question = line.replace("\ufffd", " ").strip().partition(" ")
            coarse, colon, _fine = tag.partition(":")
            if not colon or not question:
                raise TextDatasetError("expected 'COARSE:fine question'", uri=str(path), locator=f"line {number}")
            texts.append(question)
            labels.append(coarse)
    return texts, None, labels


_READERS = {
    "table": _read_table,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "lines": _read_text_and_label_lines,
    "delimited": _read_delimited,
    "trec": _read_trec,
}

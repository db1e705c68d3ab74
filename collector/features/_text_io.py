"""Read a labelled text dataset from a file or a Hugging Face ``save_to_disk`` folder.

Supported inputs:

- CSV (``.csv``) and TSV (``.tsv``, ``.tab``) files with a header row. TSV is read without quote processing (GLUE
  convention: quotes are part of the text).
- JSON lines (``.jsonl``, ``.ndjson``, or ``.json`` holding one object per line or a list of objects).
- Parquet (``.parquet``, ``.pq``) and Arrow IPC files (``.arrow``, stream or file format).
- A folder written by ``datasets.Dataset.save_to_disk`` (``state.json`` + ``dataset_info.json`` + ``data-*.arrow``
  Arrow IPC *stream* files) or ``DatasetDict.save_to_disk`` (``dataset_dict.json`` + one such folder per split). The
  files are read with pyarrow; the ``datasets`` library is not needed.
- A plain folder holding ``<split>.<ext>`` (e.g. ``train.csv``) in one of the formats above.

Columns are found by name when not given (see :data:`TEXT_COLUMNS`, :data:`PAIR_COLUMNS`, :data:`LABEL_COLUMNS`);
in a ``save_to_disk`` folder a ``ClassLabel`` column is also taken as the label.

Heavy libraries (pandas, pyarrow) are imported when a file is read, not when this module is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.errors import FormatError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: Sentence-pair column names, tried in order before single-text columns.
PAIR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("question", "passage"),
    ("text1", "text2"),
    ("#1 string", "#2 string"),  # GLUE's MRPC TSV: Quality, #1 ID, #2 ID, #1 String, #2 String
    ("string1", "string2"),
    ("text_a", "text_b"),
    ("sentence_a", "sentence_b"),
)
#: Single-text column names, tried in order.
TEXT_COLUMNS: tuple[str, ...] = (
    "text",
    "sentence",
    "content",
    "review",
    "document",
    "tweet",
    "comment",
    "utterance",
    "question",
    "query",
    "body",
    "description",
    "title",
)
#: Label column names, tried in order.
LABEL_COLUMNS: tuple[str, ...] = (
    "label",
    "labels",
    "target",
    "gold_label",
    "class",
    "category",
    "intent",
    "sentiment",
    "coarse_label",
    "label_text",
    "quality",  # GLUE's MRPC TSV
    "y",
)

_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
#: File stems that name a split rather than a dataset: the dataset is then named after the folder.
_SPLIT_STEMS = {"train", "dev", "val", "valid", "validation", "test", "data"}
_ALL_SUFFIXES = (*_CSV_SUFFIXES, *_JSON_SUFFIXES, *_PARQUET_SUFFIXES, *_ARROW_SUFFIXES)


class TextDatasetError(FormatError):
    """A text dataset could not be read: missing file, unknown format, empty, or no text / label column.

    Subclass of :class:`collector.errors.FormatError` (and so of ``CollectorError``); the message names the file and,
    for a missing column, the columns that were seen.
    """


@dataclass
class TextDataset:
    """One split of a labelled text dataset, as read from disk.

    Attributes:
        name: dataset name: the folder name, or the file stem (the folder name when the stem is a split name such as
            ``train``), unless the caller knows better.
        split: the split read (train, validation, test...).
        texts: the first (or only) text of each row.
        labels: one label per row, as stored (ints, strings, bools or floats).
        text_pairs: the second text of each row for sentence-pair datasets, else ``None``.
        source: the file or folder read.
    """

    name: str
    split: str
    texts: list[str]
    labels: list[Any]
    text_pairs: list[str] | None = None
    source: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_text_fields(self) -> int:
        """1 for single texts, 2 for text pairs."""
        return 1 if self.text_pairs is None else 2


def load_text_dataset(
    path: str | Path,
    *,
    split: str = "train",
    text_column: str | None = None,
    label_column: str | None = None,
    text_pair_column: str | None = None,
) -> TextDataset:
    """Read one split of a labelled text dataset.

    Args:
        path: a CSV/TSV/JSONL/Parquet/Arrow file, a ``save_to_disk`` folder (Dataset or DatasetDict), or a folder
            holding ``<split>.<ext>``.
        split: the split to read from a DatasetDict or split folder; recorded as is for a single file. A single
            save_to_disk Dataset (not in a DatasetDict) reports the split its ``state.json`` records, if any.
        text_column: the text column; found by name when ``None``. When given without ``text_pair_column`` the
            dataset is read as single texts.
        label_column: the label column; found by name (or ``ClassLabel`` type) when ``None``.
        text_pair_column: the second text column of a sentence-pair dataset.

    Returns:
        The rows, with missing texts as empty strings.

    Raises:
        TextDatasetError: the path does not exist, its format is unknown, it holds no rows, a named column is
            missing, or no text / label column could be found (the message lists the columns seen).
    """
    path = Path(path)
    if not path.exists():
        raise TextDatasetError("no such file or folder", uri=str(path))
    class_labels: set[str] = set()
    if path.is_dir():
        table, source, split, class_labels = _read_folder(path, split)
        name = path.name
    else:
        table = _read_file(path)
        source = path
        name = path.parent.resolve().name if path.stem.lower() in _SPLIT_STEMS else path.stem
    if table.num_rows == 0:
        raise TextDatasetError("the dataset is empty (no rows)", uri=str(source))
    columns = list(table.column_names)
    text_col, pair_col = _find_text_columns(columns, text_column, text_pair_column, source)
    label_col = _find_label_column(columns, label_column, class_labels, {text_col, pair_col}, source)
    texts = _text_values(table.column(text_col))
    pairs = _text_values(table.column(pair_col)) if pair_col else None
    labels = table.column(label_col).to_pylist()
    return TextDataset(name=name, split=split, texts=texts, labels=labels, text_pairs=pairs, source=str(source))


# ------------------------------------------------------------------------------------------------------------ files


def _read_file(path: Path) -> pa.Table:
    """Read one file into an Arrow table, by its suffix."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise TextDatasetError("the file is empty", uri=str(path))
    try:
        if suffix in _CSV_SUFFIXES:
            return pa.Table.from_pandas(_read_csv(path, _CSV_SUFFIXES[suffix]), preserve_index=False)
        if suffix in _JSON_SUFFIXES:
            return pa.Table.from_pandas(_read_json(path), preserve_index=False)
        if suffix in _PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in _ARROW_SUFFIXES:
            return _read_arrow([path])
    except TextDatasetError:
        raise
    except (ValueError, OSError, pa.ArrowException, UnicodeDecodeError) as e:
        raise TextDatasetError(f"could not read the file: {e}", uri=str(path)) from e
    known = ", ".join(_ALL_SUFFIXES)
    raise TextDatasetError(
        f"unknown file format {suffix or '(no suffix)'!r}; expected one of {known}, or a save_to_disk folder",
        uri=str(path),
    )


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    import csv

    import pandas as pd

    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        return pd.read_csv(path, sep=sep, quoting=quoting, encoding="utf-8", keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as e:
        raise TextDatasetError("the file is empty", uri=str(path)) from e
    except UnicodeDecodeError:
        return pd.read_csv(path, sep=sep, quoting=quoting, encoding="latin-1", keep_default_na=False, na_values=[""])


def _read_json(path: Path) -> pd.DataFrame:
    import pandas as pd

    with path.open(encoding="utf-8") as f:
        head = f.read(1024).lstrip()
    if not head:
        raise TextDatasetError("the file is empty", uri=str(path))
    if head.startswith("["):
        return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TextDatasetError(f"invalid JSON: {e.msg}", uri=str(path), locator=f"line {number}") from e
    return pd.DataFrame(rows)


def _read_arrow(files: list[Path]) -> pa.Table:
    """Arrow IPC files, stream format (what ``datasets`` writes) or file format, concatenated."""
    import pyarrow as pa

    tables = []
    for file in files:
        with pa.memory_map(str(file)) as source:
            try:
                tables.append(pa.ipc.open_stream(source).read_all())
            except pa.ArrowInvalid:
                source.seek(0)
                tables.append(pa.ipc.open_file(source).read_all())
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default")


# ---------------------------------------------------------------------------------------------------------- folders


def _read_folder(path: Path, split: str) -> tuple[pa.Table, Path, str, set[str]]:
    """Read a save_to_disk folder (Dataset or DatasetDict) or a folder of ``<split>.<ext>`` files.

    Returns:
        The table, the folder or file actually read, the split name, and the ClassLabel columns.
    """
    in_dict = (path / "dataset_dict.json").is_file()
    if in_dict:
        splits = _dict_splits(path)
        if split not in splits:
            raise TextDatasetError(f"no split {split!r}; the DatasetDict has {', '.join(splits)}", uri=str(path))
        path = path / split
    if (path / "state.json").is_file() or any(path.glob("data-*.arrow")):
        table, class_labels, saved_split = _read_saved_dataset(path)
        # In a DatasetDict the folder names the split (a split made with select() keeps its parent's _split).
        return table, path, split if in_dict else saved_split or split, class_labels
    candidates = [path / f"{split}{suffix}" for suffix in _ALL_SUFFIXES]
    found = [c for c in candidates if c.is_file()]
    if found:
        return _read_file(found[0]), found[0], split, set()
    splits = sorted({p.stem for p in path.iterdir() if p.suffix.lower() in _ALL_SUFFIXES})
    hint = f"; files there: {', '.join(splits)}" if splits else ""
    raise TextDatasetError(
        f"not a save_to_disk folder (no state.json or data-*.arrow) and no {split}.<csv|tsv|jsonl|parquet> file{hint}",
        uri=str(path),
    )


def _dict_splits(path: Path) -> list[str]:
    try:
        info = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TextDatasetError(f"unreadable dataset_dict.json: {e}", uri=str(path)) from e
    splits = info.get("splits") if isinstance(info, dict) else None
    if not splits:
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
    return [str(s) for s in splits]


def _read_saved_dataset(path: Path) -> tuple[pa.Table, set[str], str | None]:
    """Read the Arrow stream files of one ``Dataset.save_to_disk`` folder, in ``state.json`` order.

    Returns:
        The table, its ClassLabel columns, and the split recorded in ``state.json`` (``None`` when absent).
    """
    state: dict[str, Any] = {}
    if (path / "state.json").is_file():
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TextDatasetError(f"unreadable state.json: {e}", uri=str(path)) from e
    listed = [entry["filename"] for entry in state.get("_data_files", []) if "filename" in entry]
    files = [path / name for name in listed] if listed else sorted(path.glob("data-*.arrow"))
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        what = ", ".join(missing) if missing else "data-*.arrow"
        raise TextDatasetError(f"save_to_disk folder without its data files ({what})", uri=str(path))
    import pyarrow as pa

    try:
        table = _read_arrow(files)
    except (OSError, pa.ArrowException) as e:
        raise TextDatasetError(f"could not read the Arrow data: {e}", uri=str(path)) from e
    saved_split = state.get("_split")
    class_labels = _class_label_columns(path) or _class_label_columns_from_schema(table)
    return table, class_labels, str(saved_split) if saved_split else None


def _class_label_columns(path: Path) -> set[str]:
    """Columns whose feature type in ``dataset_info.json`` is ``ClassLabel``."""
    try:
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return set()
    return _class_labels_in(info.get("features") if isinstance(info, dict) else None)


def _class_label_columns_from_schema(table: pa.Table) -> set[str]:
    """ClassLabel columns from the ``huggingface`` schema metadata ``datasets`` puts in its Arrow files."""
    raw = (table.schema.metadata or {}).get(b"huggingface")
    try:
        info = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return set()
    return _class_labels_in(info.get("info", {}).get("features") if isinstance(info, dict) else None)


def _class_labels_in(features: Any) -> set[str]:
    if not isinstance(features, dict):
        return set()
    return {name for name, feat in features.items() if isinstance(feat, dict) and feat.get("_type") == "ClassLabel"}


# ---------------------------------------------------------------------------------------------------------- columns


def _find_text_columns(
    columns: list[str], text_column: str | None, pair_column: str | None, source: Path
) -> tuple[str, str | None]:
    by_lower = {c.lower(): c for c in reversed(columns)}
    for given in (text_column, pair_column):
        if given is not None and given not in columns:
            raise TextDatasetError(f"no column {given!r}; columns: {', '.join(columns)}", uri=str(source))
    if text_column is not None:
        return text_column, pair_column
    if pair_column is not None:
        raise TextDatasetError("--text-pair-column needs --text-column as well", uri=str(source))
    for first, second in PAIR_COLUMNS:
        if first in by_lower and second in by_lower:
            return by_lower[first], by_lower[second]
    for name in TEXT_COLUMNS:
        if name in by_lower:
            return by_lower[name], None
    raise TextDatasetError(
        f"no text column found (looked for {', '.join(TEXT_COLUMNS[:4])}, ... or a pair such as sentence1/sentence2); "
        f"columns: {', '.join(columns)}; name it with --text-column (and --text-pair-column for a second text; "
        "text_column= / text_pair_column= in Python)",
        uri=str(source),
    )


def _find_label_column(
    columns: list[str], label_column: str | None, class_labels: set[str], taken: set[str | None], source: Path
) -> str:
    if label_column is not None:
        if label_column not in columns:
            raise TextDatasetError(f"no column {label_column!r}; columns: {', '.join(columns)}", uri=str(source))
        return label_column
    by_lower = {c.lower(): c for c in reversed(columns)}
    for name in LABEL_COLUMNS:
        if name in by_lower and by_lower[name] not in taken:
            return by_lower[name]
    typed = [c for c in columns if c in class_labels and c not in taken]
    if len(typed) == 1:
        return typed[0]
    raise TextDatasetError(
        f"no label column found (looked for {', '.join(LABEL_COLUMNS[:6])}, ...); columns: {', '.join(columns)}; "
        "name it with --label-column (label_column= in Python)",
        uri=str(source),
    )


def _text_values(column: pa.ChunkedArray) -> list[str]:
    """A text column as Python strings; nulls become empty strings, other types are converted with ``str``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.fill_null(column, "").to_pylist()
    return ["" if v is None else str(v) for v in column.to_pylist()]

"""The knowledge base's own formats: records in their own shape, for import and export.

* **jsonl** — one record per line in the nested shape of :class:`~collector.schema.RunRecord` (the JSON Schema is
  ``metaml kb schema --format json``). ``.ndjson`` and ``.gz`` are accepted. A line longer than the record size
  limit (:class:`~collector.schema.RecordLimits`) is rejected without being read into memory.
* **json** — one record, or an array of records, in the same shape, read item by item (an item too long or nested
  too deep is rejected without being parsed).
* **csv** — one row per record, one column per flat column of the runs table (``metaml kb schema --format columns``);
  list, map and curve columns hold JSON text. Unknown columns are refused; ``dataset_name``, ``model_id``,
  ``method_name`` and ``task_primary_metric`` are required.
* **parquet** — a file or a directory of files (hive-partitioned directories included) in the Arrow schema of the runs
  table; what ``metaml kb export`` writes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from collector.errors import FormatError
from collector.formats._base import Format, Item, RawRecord, Rejected, buffered
from collector.formats._stream import JsonArraySplitter, LineSplitter, parse_piece, too_deep
from collector.schema import DEFAULT_LIMITS, RecordLimits, arrow_schema, columns, from_row

#: Bytes read from a file at a time.
READ_CHUNK = 1 << 20
REQUIRED_CSV_COLUMNS = ("task_primary_metric", "dataset_name", "model_id", "method_name")


def _suffixes(path: Path) -> list[str]:
    return [s.lower() for s in path.suffixes if s.lower() != ".gz"]


def _chunks(path: Path) -> Iterator[bytes]:
    with buffered(path) as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


class JsonLines(Format):
    name: ClassVar[str] = "jsonl"
    priority: ClassVar[int] = 900
    description: ClassVar[str] = "records in their own nested shape, one JSON object per line (.jsonl, .ndjson, .gz)"
    source: ClassVar[str] = "jsonl"

    def __init__(self, limits: RecordLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_file() and bool(_suffixes(path)) and _suffixes(path)[-1] in (".jsonl", ".ndjson")

    def estimate(self, path: Path) -> int | None:
        if path.suffix == ".gz":
            return None
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))

    def read(self, path: Path) -> Iterator[Item]:
        uri = str(path)
        lines = LineSplitter(max_line_bytes=self.limits.max_record_bytes)
        for chunk in _chunks(path):
            for piece in lines.feed(chunk):
                yield parse_piece(piece, uri, max_depth=self.limits.max_depth)
        for piece in lines.close():
            yield parse_piece(piece, uri, max_depth=self.limits.max_depth)


class JsonDocument(Format):
    name: ClassVar[str] = "json"
    priority: ClassVar[int] = 910
    description: ClassVar[str] = "one record or an array of records in their own nested shape (.json)"
    source: ClassVar[str] = "json"

    def __init__(self, limits: RecordLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_file() and bool(_suffixes(path)) and _suffixes(path)[-1] == ".json"

    def _splitter(self) -> JsonArraySplitter:
        return JsonArraySplitter(max_item_bytes=self.limits.max_record_bytes, max_depth=self.limits.max_depth,
                                 single_locator="record")

    def read(self, path: Path) -> Iterator[Item]:
        """The document is read twice: once to check it is a whole JSON array (a truncated or malformed one is
        refused before any record is yielded), then to yield its items one by one."""
        uri = str(path)
        try:
            check = self._splitter()
            for chunk in _chunks(path):
                for _ in check.feed(chunk):
                    pass
            check.close()
        except FormatError as e:
            raise FormatError(f"not a readable JSON document (truncated or malformed): {e}", uri=uri) from None
        items = self._splitter()
        for chunk in _chunks(path):
            for piece in items.feed(chunk):
                yield parse_piece(piece, uri, max_depth=self.limits.max_depth)


class CanonicalCsv(Format):
    name: ClassVar[str] = "csv"
    priority: ClassVar[int] = 920
    description: ClassVar[str] = "one record per row, flat column names of the runs table (.csv, .gz)"
    source: ClassVar[str] = "csv"

    @classmethod
    def detect(cls, path: Path) -> bool:
        if not (path.is_file() and _suffixes(path) and _suffixes(path)[-1] == ".csv"):
            return False
        try:
            with buffered(path) as f:
                header = next(csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline="")), [])
        except (FormatError, UnicodeDecodeError, csv.Error):
            return False
        return set(REQUIRED_CSV_COLUMNS) <= set(header)

    def read(self, path: Path) -> Iterator[Item]:
        uri = str(path)
        by_name = {c.name: c for c in columns()}
        with buffered(path) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            reader = csv.reader(text)
            try:
                header = next(reader)
            except StopIteration:
                raise FormatError("file is empty", uri=uri) from None
            except (csv.Error, UnicodeDecodeError) as e:
                raise FormatError(f"cannot read the CSV header: {e}", uri=uri) from e
            header = [h.strip() for h in header]
            unknown = [h for h in header if h not in by_name]
            missing = [h for h in REQUIRED_CSV_COLUMNS if h not in header]
            if unknown or missing:
                parts = []
                if unknown:
                    parts.append(f"unknown column(s) {', '.join(unknown[:10])}")
                if missing:
                    parts.append(f"missing required column(s) {', '.join(missing)}")
                raise FormatError("wrong CSV header: " + "; ".join(parts)
                                  + " (the columns are listed by `metaml kb schema --format columns`)",
                                  uri=uri, locator="line 1")
            complex_cols = {c.name for c in columns() if c.json or isinstance(c.arrow, (pa.ListType, pa.MapType))}
            rowno = 1
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except (csv.Error, UnicodeDecodeError) as e:
                    rowno += 1
                    yield Rejected(f"line {reader.line_num}", f"unreadable CSV row: {e}", uri=uri)
                    continue
                rowno += 1
                loc = f"row {rowno - 1} (line {reader.line_num})"
                if len(cells) != len(header):
                    yield Rejected(loc, f"expected {len(header)} fields, got {len(cells)}", uri=uri)
                    continue
                flat: dict[str, Any] = {}
                bad = None
                for name, cell in zip(header, cells, strict=True):
                    if cell == "":
                        continue
                    if name in complex_cols and not by_name[name].json:
                        try:
                            flat[name] = json.loads(cell)
                        except json.JSONDecodeError as e:
                            bad = Rejected(loc, f"invalid JSON in column: {e}", field=name, uri=uri)
                            break
                        except RecursionError:
                            bad = Rejected(loc, too_deep(DEFAULT_LIMITS.max_depth), field=name, uri=uri)
                            break
                    else:
                        flat[name] = cell
                if bad is not None:
                    yield bad
                    continue
                try:
                    raw = RawRecord(from_row(flat), loc, uri)
                except json.JSONDecodeError as e:
                    yield Rejected(loc, f"invalid JSON in a JSON column: {e}", uri=uri)
                except RecursionError:
                    yield Rejected(loc, f"a JSON column is {too_deep(DEFAULT_LIMITS.max_depth)}", uri=uri)
                else:
                    yield raw


class CanonicalParquet(Format):
    name: ClassVar[str] = "parquet"
    priority: ClassVar[int] = 930
    description: ClassVar[str] = "runs-table Parquet: a file or a (hive-partitioned) directory, as `kb export` writes"
    source: ClassVar[str] = "parquet"

    @classmethod
    def detect(cls, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".parquet"
        return path.is_dir() and any(path.rglob("*.parquet"))

    def estimate(self, path: Path) -> int | None:
        import pyarrow.dataset as pds

        try:
            return self._dataset(path, pds).count_rows()
        except (pa.ArrowException, OSError):
            return None

    @staticmethod
    def _dataset(path: Path, pds: Any) -> Any:
        return pds.dataset(str(path), format="parquet", partitioning="hive" if path.is_dir() else None)

    def read(self, path: Path) -> Iterator[Item]:
        import pyarrow.dataset as pds

        uri = str(path)
        if not path.exists():
            raise FormatError("no such file or directory", uri=uri)
        try:
            dataset = self._dataset(path, pds)
        except (pa.ArrowException, OSError) as e:
            raise FormatError(f"not a readable Parquet file or dataset: {e}", uri=uri) from e
        target = arrow_schema()
        unknown = [n for n in dataset.schema.names if n not in target.names]
        if unknown:
            raise FormatError(f"unknown column(s) {', '.join(unknown[:10])} (not the runs-table schema)", uri=uri)
        for fragment in dataset.get_fragments():
            keys = pds.get_partition_keys(fragment.partition_expression)
            try:
                table = fragment.to_table()
            except (pa.ArrowException, OSError) as e:
                raise FormatError(f"unreadable Parquet file: {e}", uri=fragment.path) from e
            for name, value in keys.items():
                table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
            fields = [target.field(n) for n in table.schema.names]
            try:
                table = table.cast(pa.schema(fields))
            except (pa.ArrowException, ValueError) as e:
                raise FormatError(f"column types do not match the runs-table schema: {e}", uri=fragment.path) from e
            i = 0
            for batch in table.to_batches(max_chunksize=1000):
                for row in batch.to_pylist():
                    loc = f"row {i}"
                    i += 1
                    try:
                        raw = RawRecord(from_row(row), loc, fragment.path)
                    except json.JSONDecodeError as e:
                        yield Rejected(loc, f"invalid JSON in a JSON column: {e}", uri=fragment.path)
                    except RecursionError:
                        yield Rejected(loc, f"a JSON column is {too_deep(DEFAULT_LIMITS.max_depth)}", uri=fragment.path)
                    else:
                        yield raw


def write_jsonl(batches: Iterator[pa.RecordBatch], dest: Path) -> int:
    """Write runs-table batches as canonical JSON lines (nested record shape); returns the number of records."""
    import gzip

    n = 0
    opener = gzip.open if dest.suffix == ".gz" else open
    with opener(dest, "wt", encoding="utf-8") as f:
        for batch in batches:
            for row in batch.to_pylist():
                f.write(json.dumps(from_row(row), ensure_ascii=False, default=_json_default))
                f.write("\n")
                n += 1
    return n


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")

"""Ingestion: read, validate, normalize, deduplicate, store, and account for every record.

Every item a format yields ends up in exactly one of three counts: ingested, duplicate (its content id is already
in the knowledge base or earlier in the same input), or rejected (with its place and reason). Duplicates are decided
once, by :meth:`KnowledgeBase.append`, which each chunk goes through whole. Records are written in
chunks, each chunk one transaction: a process killed mid-ingest leaves every committed chunk in place and nothing of
the chunk in flight, and running the same ingest again stores exactly what is missing.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from collector.errors import CollectorError, FormatError
from collector.formats import (
    URI_OPTIONS,
    PlannedInput,
    RawRecord,
    Rejected,
    format_options,
    get_format,
    plan_inputs,
    uri_format,
)
from collector.progress import PROGRESS_INTERVAL_S, every
from collector.schema import DEFAULT_LIMITS, FieldError, RecordLimits, RowBuffer, RunRecord
from collector.store import KnowledgeBase

DEFAULT_CHUNK_SIZE = 20_000


@dataclass
class Reject:
    """A record that was not stored, where it was, and why."""

    uri: str | None
    locator: str
    field: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestReport:
    """The account of one input: what was read, stored, found duplicate, and rejected."""

    uri: str
    format: str | None
    ingested: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False
    seconds: float = 0.0
    inserted_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def read(self) -> int:
        return self.ingested + self.duplicates + self.rejected

    def top_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        """The most common rejection reasons, with counts (field-qualified, numbers folded)."""
        return top_reasons([self], n)

    def to_dict(self, *, with_rejects: bool = True) -> dict[str, Any]:
        out = {
            "uri": self.uri,
            "format": self.format,
            "read": self.read,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "top_reasons": [{"reason": k, "count": v} for k, v in self.top_reasons()],
            "error": self.error,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }
        if with_rejects:
            out["rejects"] = [r.to_dict() for r in self.rejects]
        return out


def top_reasons(reports: Iterable[IngestReport], n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` most common rejection reasons over every report, with counts (field-qualified, numbers and quoted
    values folded, so that one cause counts once however many values it met)."""
    return Counter(_reason_key(r) for rep in reports for r in rep.rejects).most_common(n)


def rejects_path(home: Path, now: datetime | None = None) -> Path:
    """Where an ingest's rejects report goes by default: ``<home>/rejects/<UTC time>.jsonl``."""
    return home / "rejects" / f"{now or datetime.now(UTC):%Y%m%dT%H%M%S}.jsonl"


def write_rejects(reports: Iterable[IngestReport], dest: Path) -> int:
    """Write every reject of ``reports`` to ``dest`` as JSONL, one ``{uri, locator, field, reason}`` object a line
    (parent folders created, an existing file replaced). Returns the number written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(dest, "w", encoding="utf-8") as f:
        for rep in reports:
            for r in rep.rejects:
                f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
                n += 1
    return n


def _reason_key(r: Reject) -> str:
    import re

    reason = re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", r.reason.split(" [type=")[0])
    reason = re.sub(r"'[^']*'", "'…'", reason)
    return f"{r.field}: {reason}" if r.field else reason


def validate(raw: RawRecord, *, source: str, uploader: str | None = None, now: datetime | None = None,
             limits: RecordLimits = DEFAULT_LIMITS) -> RunRecord | Reject:
    """Validate and normalize one raw record, filling provenance it does not carry itself.

    Args:
        raw: the record as read.
        source: ``provenance.source`` when the record names none.
        uploader: ``provenance.uploader`` when the record names none.
        now: ``provenance.ingested_at`` when the record names none (default: now).
        limits: sizes and depth the record is held to (see :class:`~collector.schema.RecordLimits`).

    Returns:
        The valid record, or why it is not one (the first offending field and every reason, at most five).
    """
    data = dict(raw.data)
    prov = data.get("provenance")
    prov = dict(prov) if isinstance(prov, dict) else {} if prov is None else prov
    if isinstance(prov, dict):
        prov.setdefault("source", source)
        if raw.uri is not None:
            prov.setdefault("uri", raw.uri)
        prov.setdefault("locator", raw.locator)
        if uploader is not None:
            prov.setdefault("uploader", uploader)
        prov.setdefault("ingested_at", now or datetime.now(UTC))
        data["provenance"] = prov
    try:
        return RunRecord.model_validate(data, context={"limits": limits})
    except (RecursionError, OverflowError) as e:  # defence in depth: parsers and field types bound both
        return Reject(raw.uri, raw.locator, None, f"not a storable record: {type(e).__name__}")
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = errors[0]
        field_path = ".".join(str(p) for p in first["loc"]) or None
        cause = first.get("ctx", {}).get("error")
        if field_path is None and isinstance(cause, FieldError):  # a record-level check names its field
            field_path = cause.field
        reason = "; ".join(
            (f"{'.'.join(str(p) for p in err['loc'])}: " if err["loc"] and i else "") + err["msg"]
            for i, err in enumerate(errors[:5])
        )
        if len(errors) > 5:
            reason += f"; and {len(errors) - 5} more"
        return Reject(raw.uri, raw.locator, field_path, reason)


def ingest_items(
    kb: KnowledgeBase,
    items: Iterable[RawRecord | Rejected],
    *,
    source: str,
    uri: str,
    fmt: str | None = None,
    uploader: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_item: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Validate ``items`` and store the valid ones in chunks of ``chunk_size`` (one transaction each).

    Args:
        kb: where to store.
        items: raw records and rejections, as a format yields them.
        source: ``provenance.source`` for records that do not name one.
        uri: what to call the input in the report.
        fmt: the format's name, for the report.
        uploader: ``provenance.uploader`` for records that do not name one.
        chunk_size: records per transaction.
        on_item: called once per item, before it is counted, with the report so far (progress).

    Returns:
        The report. A :class:`FormatError` raised while reading is recorded in ``report.error`` after storing what
        was read before it.
    """
    report = IngestReport(uri=uri, format=fmt)
    started = time.perf_counter()
    now = datetime.now(UTC)
    rows = RowBuffer()

    def flush() -> None:
        if not len(rows):
            return
        result = kb.append(rows.to_arrow())
        report.ingested += len(result.inserted)
        report.duplicates += len(result.duplicates)
        report.inserted_ids.extend(result.inserted)
        rows.clear()

    try:
        for item in items:
            if on_item is not None:
                on_item(report)
            if isinstance(item, Rejected):
                report.rejects.append(Reject(item.uri or uri, item.locator, item.field, item.reason))
                continue
            outcome = validate(item, source=source, uploader=uploader, now=now)
            if isinstance(outcome, Reject):
                outcome.uri = outcome.uri or uri
                report.rejects.append(outcome)
                continue
            rows.append(outcome)
            if len(rows) >= chunk_size:
                flush()
    except FormatError as e:
        report.error = str(e)
    except RecursionError:  # an importer parsing nesting deeper than the interpreter allows: stop reading that input
        report.error = f"{uri}: nested too deeply to read further; the records before that point were read"
    flush()
    report.seconds = time.perf_counter() - started
    return report


def ingest_path(
    kb: KnowledgeBase,
    path: str | Path,
    fmt: str | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    uploader: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
    progress_interval: float = PROGRESS_INTERVAL_S,
) -> list[IngestReport]:
    """Ingest a file, directory or archive, detecting formats where ``fmt`` is not given.

    Args:
        kb: where to store.
        path: a file, directory or archive; or a storage URI: an MLflow tracking URI (``sqlite:///mlflow.db``,
            ``http://host:5000``) or an Optuna RDB URL (``sqlite:///optuna.db`` holding Optuna's tables, or any URL
            with ``fmt="optuna"``).
        fmt: read ``path`` in this format instead of detecting one.
        options: keyword arguments for the format (e.g. ``{"experiments": ["exp-1"]}`` for ``mlflow``); when
            formats are detected, each gets those its constructor takes (e.g. ``mapping`` for the tuner formats).
        uploader: ``provenance.uploader`` for records that do not name one.
        chunk_size: records per transaction.
        progress: show progress per input on stderr: a bar on a terminal; otherwise plain lines (see
            :class:`LineProgress`), one when each input starts and ends and one every ``progress_interval`` seconds.
        progress_interval: seconds between plain progress lines.

    Returns:
        One report per input found under ``path`` (documentation files appear as skipped reports).

    Raises:
        FormatError: ``path`` does not exist or holds a file in no known format (nothing is stored then).
    """
    options = dict(options or {})
    if isinstance(path, str) and "://" in path:
        fmt = uri_format(path, fmt)
        plan = [PlannedInput(Path(path), fmt)]
        options[URI_OPTIONS[fmt]] = path
    else:
        plan = plan_inputs(Path(path), fmt)
    return [_ingest_one(kb, p, format_options(p.fmt, options, named=fmt is not None) if p.fmt else {},
                        uploader=uploader, chunk_size=chunk_size, progress=progress,
                        progress_interval=progress_interval) for p in plan]


def _ingest_one(kb: KnowledgeBase, planned: PlannedInput, options: Mapping[str, Any], *, uploader: str | None,
                chunk_size: int, progress: bool, progress_interval: float) -> IngestReport:
    uri = next((str(options[o]) for o in URI_OPTIONS.values() if options.get(o)), str(planned.path))
    if planned.fmt is None:
        return IngestReport(uri=uri, format=None, skipped=True)
    try:
        reader = get_format(planned.fmt, **options)
        items: Iterator[RawRecord | Rejected] = reader.read(planned.path)
        if progress and not sys.stderr.isatty():
            with LineProgress(f"{planned.fmt}: {planned.path.name}", interval=progress_interval) as lines:
                return ingest_items(kb, items, source=reader.source, uri=uri, fmt=planned.fmt, uploader=uploader,
                                    chunk_size=chunk_size, on_item=lines.update)
        if progress:
            return _with_progress(kb, reader, planned, items, uploader, chunk_size, uri)
        return ingest_items(kb, items, source=reader.source, uri=uri, fmt=planned.fmt,
                            uploader=uploader, chunk_size=chunk_size)
    except CollectorError as e:
        return IngestReport(uri=uri, format=planned.fmt, error=str(e))


def _with_progress(kb: KnowledgeBase, reader: Any, planned: PlannedInput, items: Iterator[RawRecord | Rejected],
                   uploader: str | None, chunk_size: int, uri: str) -> IngestReport:
    from tqdm import tqdm

    total = reader.estimate(planned.path) if "://" not in uri else None
    with tqdm(total=total, unit="rec", desc=f"{planned.fmt}: {planned.path.name}", leave=False,
              mininterval=0.5, disable=None) as bar:
        return ingest_items(kb, items, source=reader.source, uri=uri, fmt=planned.fmt,
                            uploader=uploader, chunk_size=chunk_size, on_item=lambda _: bar.update())


class LineProgress:
    """Ingest progress as plain lines, for output that is not a terminal (a log file, a CI job).

    Prints one line when the input starts, one every ``interval`` seconds while it is read (from a background
    thread, so a slow chunk commit or a slow reader still shows the process is alive), and one when it ends:
    ``ingest <label>: read N, stored N, duplicates N, rejected N, N rec/s, Ns``. "read" counts every item the
    format yielded; "stored" counts records committed so far (chunks commit every ``chunk_size`` records).

    Use as a context manager and pass :meth:`update` as ``on_item`` to :func:`ingest_items`.
    """

    def __init__(self, label: str, *, interval: float = PROGRESS_INTERVAL_S, stream: TextIO | None = None) -> None:
        self.label = label
        self.interval = interval
        self.stream = stream
        self.seen = 0
        self.report: IngestReport | None = None
        self._started = time.perf_counter()
        self._ticking = ExitStack()

    def __enter__(self) -> LineProgress:
        self._write(f"ingest {self.label}: started")
        self._started = time.perf_counter()
        self._ticking.enter_context(every(self.interval, lambda: self._write(self.line()), name="ingest-progress"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticking.close()
        self._write(self.line(done=True))

    def update(self, report: IngestReport) -> None:
        """Count one item read (called by :func:`ingest_items` per item)."""
        self.report = report
        self.seen += 1

    def line(self, *, done: bool = False) -> str:
        """The progress line for the counts so far."""
        r = self.report
        stored, dupes, rejected = (r.ingested, r.duplicates, r.rejected) if r is not None else (0, 0, 0)
        seconds = time.perf_counter() - self._started
        rate = self.seen / seconds if seconds > 0 else 0.0
        return (f"ingest {self.label}: {'done, ' if done else ''}read {self.seen:,}, stored {stored:,}, "
                f"duplicates {dupes:,}, rejected {rejected:,}, {rate:,.0f} rec/s, {seconds:.0f}s")

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        print(text, file=stream, flush=True)

"""What every input format implements.

A format turns a file, directory or archive into a stream of items: :class:`RawRecord` (a dict in the run record's
nested shape, not yet validated, with the place it came from) or :class:`Rejected` (something found in the input
that cannot become a record, with its place and reason). Whole-input problems (empty, binary, unreadable, wrong
header) raise :class:`~collector.errors.FormatError` before anything is yielded where they can be seen up front.
Formats never validate records and never touch the knowledge base: the ingestion pipeline does both, the same way for
every format.
"""

from __future__ import annotations

import gzip
import io
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from collector.errors import FormatError

SNIFF_BYTES = 8192


@dataclass
class RawRecord:
    """A record as read, in the nested record shape, before validation."""

    data: dict[str, Any]
    locator: str
    uri: str | None = None


@dataclass
class Rejected:
    """Something in the input that cannot become a record."""

    locator: str
    reason: str
    field: str | None = None
    uri: str | None = None


Item = RawRecord | Rejected


class RecordProblem(ValueError):
    """Raised inside a format for one record that cannot be read; the format turns it into :class:`Rejected` with
    the record's place. Carries the record field concerned, when there is one."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class Format(ABC):
    """An input format of ``metaml ingest``.

    Subclasses set ``name`` (the ``--format`` value), ``description`` (one line for ``--help``) and ``source``
    (the ``provenance.source`` given to records that do not name one), implement :meth:`read`, and implement
    :meth:`detect` when the format can be recognized without being named. A format is registered under its name in
    the ``metaml.formats`` entry-point group (see :mod:`collector.formats`), by this project and by any installed
    package alike.

    ``priority`` places the format in auto-detection order (lower first, ties by name): this project's importers
    take 10-150, the canonical formats (which recognize any JSON / CSV / Parquet file) 900-930, and a format that
    sets nothing gets 500, after every built-in importer and before the canonical formats. ``uri_option`` names the
    constructor option that receives a storage URI (``tracking_uri`` for MLflow), for formats that read one.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    source: ClassVar[str]
    priority: ClassVar[int] = 500
    uri_option: ClassVar[str | None] = None

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True when ``path`` is unambiguously in this format."""
        return False

    @classmethod
    def skips(cls, path: Path) -> str | None:
        """Why ``path``, a file that comes with this format's data, holds no runs (e.g. a table of aggregates),
        or None. Such files are skipped and listed when a folder is walked, never read or rejected."""
        return None

    @abstractmethod
    def read(self, path: Path) -> Iterator[Item]:
        """Yield the items of ``path``.

        Raises:
            FormatError: the input as a whole cannot be read.
        """

    def estimate(self, path: Path) -> int | None:
        """Roughly how many items :meth:`read` will yield (for progress bars), or None."""
        return None


def sqlite_tables(path: Path) -> set[str] | None:
    """The table names of a SQLite file, read without writing to it; None when ``path`` is not a SQLite file."""
    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return None
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except (OSError, sqlite3.Error):
        return None


def open_text(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, transparently un-gzipping ``.gz``; refuse missing, empty and binary files.

    Raises:
        FormatError: the file does not exist, is empty, or is not text.
    """
    if not path.exists():
        raise FormatError("no such file", uri=str(path))
    if path.is_dir():
        raise FormatError("is a directory, expected a file", uri=str(path))
    raw: IO[bytes] = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    try:
        head = raw.read(SNIFF_BYTES)
    except (OSError, EOFError) as e:
        raw.close()
        raise FormatError(f"cannot read: {e}", uri=str(path)) from e
    if not head.strip():
        raw.close()
        raise FormatError("file is empty", uri=str(path))
    if b"\x00" in head or not _is_utf8_prefix(head):
        raw.close()
        raise FormatError("binary file: expected UTF-8 text", uri=str(path))
    return _Prefixed(head, raw)


def _is_utf8_prefix(data: bytes) -> bool:
    for cut in range(4):  # the sniffed block may end inside a multi-byte character
        try:
            data[: len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


class _Prefixed(io.RawIOBase):
    """A binary stream that replays the sniffed head before the rest of the file."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def buffered(path: Path) -> io.BufferedReader:
    """:func:`open_text` wrapped in a buffer, so ``readline(limit)`` is cheap."""
    return io.BufferedReader(open_text(path), buffer_size=1 << 20)

"""Where a knowledge base lives: the one parser of ``--kb`` / ``METAML_KB`` values, and the registry of backends.

Spellings (see ``docs/lakehouse.md``):

* ``PATH`` or ``duckdb:PATH`` — one DuckDB file (the embedded default, ``metaml-data/kb.duckdb``).
* ``ducklake:postgres:KEY=VALUE ... data=DIR`` — a DuckLake lakehouse: its catalog in the PostgreSQL database that
  the libpq ``KEY=VALUE`` pairs name (``dbname``, ``host``, ``port``, ``user``, ``password``, ``options``...; values
  with spaces in single quotes), its data as Parquet files under the directory ``data=`` (local or a mounted
  share; object-store URLs are refused for now: no extension for them is shipped). ``inline=N`` (default
  :data:`DEFAULT_INLINE_ROWS`) keeps inserts of at most N rows inside the catalog until they are flushed to Parquet
  in bulk, so small uploads make no small files.

Example: ``ducklake:postgres:dbname=metaml host=db.internal user=metaml data=/srv/metaml/lake/``. Prefer a
``~/.pgpass`` file or ``PGPASSWORD`` to a password in the location: locations are shown (redacted) in messages.

:func:`open_kb` imports a backend only when a location names it, like MLflow's store registry.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.errors import StoreError

if TYPE_CHECKING:
    from collector.store._base import KnowledgeBase

#: scheme -> (module, class) of the backend, imported on first use.
BACKENDS: dict[str, tuple[str, str]] = {
    "duckdb": ("collector.store._duckdb", "DuckDBFile"),
    "ducklake": ("collector.store._ducklake", "DuckLake"),
}
#: Rows an insert may hold and still be kept in the lakehouse catalog instead of a new Parquet file.
DEFAULT_INLINE_ROWS = 100
#: Where companions of a knowledge base that is not a local file live (keys, rejects reports, model artifacts).
DEFAULT_HOME = Path("metaml-data")
#: The keys of a ducklake location that are ours, not libpq's.
_LAKE_KEYS = ("data", "inline")
_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:\\.|[^\\'])*'|[^\s']+)")


@dataclass(frozen=True)
class KbLocation:
    """A parsed knowledge-base location.

    Attributes:
        scheme: ``duckdb`` or ``ducklake``.
        text: the location as given (what :func:`open_kb` takes back).
        path: the DuckDB file (``duckdb``).
        conninfo: the libpq connection string of the catalog (``ducklake``).
        data_path: the directory or URL of the Parquet files (``ducklake``).
        inline_rows: the data inlining row limit (``ducklake``).
    """

    scheme: str
    text: str
    path: Path | None = None
    conninfo: str | None = None
    data_path: str | None = None
    inline_rows: int = DEFAULT_INLINE_ROWS
    _pairs: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def home(self) -> Path:
        """The local directory of the knowledge base's companions: the file's directory, else ``metaml-data``."""
        return self.path.parent if self.path is not None else DEFAULT_HOME

    def conninfo_with_options(self, extra: str) -> str:
        """The catalog's connection string with ``extra`` added to libpq's ``options`` (server settings)."""
        pairs = dict(self._pairs)
        given = _unquote(pairs.get("options", ""))
        value = f"{given} {extra}".strip().replace("\\", "\\\\").replace("'", "\\'")
        pairs["options"] = f"'{value}'"
        return " ".join(f"{k}={v}" for k, v in pairs.items())

    @property
    def redacted(self) -> str:
        """The location with any password replaced by ``***`` (for messages and logs)."""
        if self.scheme != "ducklake":
            return self.text
        pairs = [f"{k}={'***' if k == 'password' else v}" for k, v in self._pairs]
        return f"ducklake:postgres:{' '.join(pairs)} data={self.data_path}"


def parse_kb_location(location: str | Path) -> KbLocation:
    """Parse ``location`` (see the module docstring).

    Raises:
        StoreError: a ``ducklake:`` location that is malformed, has no ``data=``, or names another catalog than
            PostgreSQL.
    """
    text = str(location)
    if not text.startswith(("ducklake:", "duckdb:")):
        return KbLocation("duckdb", text, path=Path(location))
    if text.startswith("duckdb:"):
        return KbLocation("duckdb", text, path=Path(text.removeprefix("duckdb:")))
    rest = text.removeprefix("ducklake:")
    if not rest.startswith("postgres:"):
        raise StoreError(f"unsupported lakehouse catalog in {text!r}: expected ducklake:postgres:KEY=VALUE ... "
                         "data=DIR")
    body = rest.removeprefix("postgres:")
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body.rstrip()):
        m = _PAIR.match(body, pos)
        if m is None:
            raise StoreError(f"cannot read {body[pos:].strip()!r} in the lakehouse location: expected KEY=VALUE "
                             "pairs separated by spaces (quote values with spaces: password='a b')")
        pairs.append((m.group(1), m.group(2)))
        pos = m.end()
    ours = {k: _unquote(v) for k, v in pairs if k in _LAKE_KEYS}
    libpq = tuple((k, v) for k, v in pairs if k not in _LAKE_KEYS)
    if not ours.get("data"):
        raise StoreError("a lakehouse location needs data=DIR (where its Parquet files go), e.g. "
                         "ducklake:postgres:dbname=metaml host=localhost data=/srv/metaml/lake/")
    if not libpq:
        raise StoreError("a lakehouse location needs the catalog's connection, e.g. dbname=metaml host=localhost")
    try:
        inline = int(ours.get("inline", DEFAULT_INLINE_ROWS))
        if inline < 0:
            raise ValueError
    except ValueError:
        raise StoreError(f"inline= takes a number of rows >= 0, got {ours['inline']!r}") from None
    data = ours["data"]
    if "://" in data:
        raise StoreError(f"data={data}: object-store data paths are not supported yet; use a directory (a mounted "
                         "share works)")
    data = str(Path(data).expanduser().absolute()) + "/"
    return KbLocation("ducklake", text, conninfo=" ".join(f"{k}={v}" for k, v in libpq), data_path=data,
                      inline_rows=inline, _pairs=libpq)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def backend_class(location: str | Path) -> type[KnowledgeBase]:
    """The store class that serves ``location`` (its module imported now)."""
    module, name = BACKENDS[parse_kb_location(location).scheme]
    return getattr(importlib.import_module(module), name)


def open_kb(location: str | Path | KnowledgeBase, **options: Any) -> KnowledgeBase:
    """The knowledge base at ``location`` (a path or URI; a store object is returned as it is).

    Args:
        location: see the module docstring.
        options: passed to the backend (``lock_timeout``).

    Raises:
        StoreError: the location cannot be parsed, or its backend's packages are missing.
    """
    from collector.store._base import KnowledgeBase

    if isinstance(location, KnowledgeBase):
        return location
    return backend_class(location)(location, **options)

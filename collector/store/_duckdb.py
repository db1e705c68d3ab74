"""The embedded backend: the knowledge base in one DuckDB file.

DuckDB lets one process write a file, and no other process open it meanwhile, so every operation opens its own
connection under the lock of ``_lock.py`` (shared for reads, exclusive for writes) and closes it before returning:
writers from several processes queue instead of failing. A process killed mid-write leaves the file as it was before
that transaction (DuckDB replays its write-ahead log on the next open). The SQL sandbox is an in-memory DuckDB that
attaches the file read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from collector.errors import KnowledgeBaseNotFound, StoreError
from collector.store._base import KnowledgeBase, _quote, sandbox_settings
from collector.store._lock import kb_lock

#: Files whose tables this process has already created or migrated (checked once per file, not once per write).
_SCHEMA_READY: set[tuple[str, int]] = set()


class DuckDBFile(KnowledgeBase):
    """A knowledge base stored in one DuckDB file.

    Args:
        location: the DuckDB file (a path, or ``duckdb:PATH``). Created with its tables on the first write.
        lock_timeout: seconds an operation waits for another process's lock before :class:`StoreBusy`.
    """

    def __init__(self, location: str | Path, *, lock_timeout: float = 300.0) -> None:
        super().__init__(location, lock_timeout=lock_timeout)
        assert self.where.path is not None
        self.path: Path = self.where.path

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        if not write and not self.path.exists():
            raise KnowledgeBaseNotFound(
                f"no knowledge base at {self.path}; create one with `metaml ingest PATH --kb {self.path}`"
            )
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with kb_lock(self.path, exclusive=write, timeout=self.lock_timeout):
            new = write and not self.path.exists()
            try:
                con = duckdb.connect(str(self.path), read_only=not write)
            except duckdb.Error as e:
                raise StoreError(f"cannot open knowledge base {self.path}: {e}") from e
            if new:  # readable by its owner only, before anything is written to it
                self.path.chmod(0o600)
            try:
                con.execute("SET TimeZone = 'UTC'")
                if write:
                    key = (str(self.path.resolve()), self.path.stat().st_ino)
                    if key not in _SCHEMA_READY:
                        self._ensure_schema(con)
                        _SCHEMA_READY.add(key)
                yield con
            finally:
                con.close()

    @contextmanager
    def _sandbox(self, memory_limit_mb: int) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.path.exists():
            raise KnowledgeBaseNotFound(f"no knowledge base at {self.path}")
        with kb_lock(self.path, exclusive=False, timeout=self.lock_timeout):
            con = duckdb.connect(":memory:")
            try:
                con.execute(f"ATTACH '{_quote(str(self.path))}' AS kb (READ_ONLY)")
                con.execute("USE kb")
                for setting in sandbox_settings(memory_limit_mb):
                    con.execute(setting)
                yield con
            finally:
                con.close()

    def exists(self) -> bool:
        return self.path.exists()

    def version(self) -> str | None:
        """Modification time, size and inode of the file and of its write-ahead log (None when there is no file)."""
        parts = []
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                st = p.stat()
                parts.append(f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}")
            except OSError:
                parts.append("-")
        return None if parts[0] == "-" else "/".join(parts)

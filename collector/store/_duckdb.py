"""The embedded backend: the knowledge base in one DuckDB file.

DuckDB lets one process write a file, and no other process open it meanwhile, so every operation runs under the lock
of ``_lock.py`` (shared for reads, exclusive for writes): writers from several processes queue instead of failing. A
process killed mid-write leaves the file as it was before that transaction (DuckDB replays its write-ahead log on the
next open).

* **Per operation** (the default: the command line, notebooks, libraries): each operation opens its own connection
  under the lock and closes it before returning.
* **Kept open** (:meth:`DuckDBFile.keep_open`, what a server's group writer asks for): the process keeps one
  read-write DuckDB instance of the file, and the exclusive lock, between writes, so a commit costs a write-ahead-log
  append instead of an open, a checkpoint and a close. Its reads run on cursors of that instance (DuckDB's own
  snapshot isolation: a read never waits for a write of this process, nor a write for a read). It gives the file
  back, closing the instance (which checkpoints), as soon as another process waits for the lock (after the write in
  flight, and it lets that process take its turn before writing again), and after ``idle_s`` without a write.
* **Analysts' SQL** (:meth:`KnowledgeBase.sql`) never runs on the file: the lock is held only to copy the file (and
  its write-ahead log) into a private snapshot, which an in-memory DuckDB attaches read-only; a long query therefore
  never holds up writers. A snapshot is reused while the knowledge base's version token is unchanged, and removed
  when the last query on it ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb

from collector.errors import KnowledgeBaseNotFound, StoreError
from collector.store._base import KnowledgeBase, _quote, sandbox_settings
from collector.store._lock import FileLock, kb_lock

#: Files whose tables this process has already created or migrated (checked once per file, not once per write).
_SCHEMA_READY: set[tuple[str, int]] = set()
#: Seconds a process that gave the file way waits for the waiting process to take it before writing again.
_YIELD_GRACE_S = 2.0
#: How often a kept-open file is checked for idleness.
_KEEPER_TICK_S = 0.1


@dataclass
class _Snapshot:
    """A private copy of the file for analysts' queries."""

    version: str | None
    directory: Path
    users: int = 0

    @property
    def path(self) -> Path:
        return self.directory / "kb.duckdb"


class _Engine:
    """This process's state for one DuckDB file: the kept-open instance (if any) and the SQL snapshots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cond = threading.Condition()
        self.writer = threading.Lock()  # one write at a time in this process (held while a write runs)
        self.con: duckdb.DuckDBPyConnection | None = None
        self.lock: FileLock | None = None
        self.pins = 0  # reads running on cursors of ``con``
        self.closing = False
        self.idle_s: float | None = None  # kept open between writes when set
        self.last_write = 0.0
        self.yielded_at: float | None = None
        self.keeper: threading.Thread | None = None
        self.snapshots: list[_Snapshot] = []
        self.snapshot_guard = threading.Lock()

    # -- the kept-open instance (call with ``writer`` held) --------------------------------------------------------

    def open(self, kb: DuckDBFile) -> duckdb.DuckDBPyConnection:
        """The read-write instance, opened (under the exclusive lock) if it is not."""
        if self.con is not None:
            return self.con
        if self.yielded_at is not None:  # let the process we gave way to take the lock first
            lock = FileLock(self.path, exclusive=True)
            while lock.others_waiting() and time.monotonic() - self.yielded_at < _YIELD_GRACE_S:
                time.sleep(0.002)
            self.yielded_at = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path, exclusive=True).acquire(kb.lock_timeout)
        try:
            con = kb._open_file(write=True)
            con.execute("SET GLOBAL TimeZone = 'UTC'")
        except BaseException:
            lock.release()
            raise
        with self.cond:
            self.con, self.lock = con, lock
        if self.idle_s is not None and (self.keeper is None or not self.keeper.is_alive()):
            self.keeper = threading.Thread(target=self._keep, name="metaml-kb-keeper", daemon=True)
            self.keeper.start()
        return con

    def close(self) -> None:
        """Close the instance once no read runs on it, and release the lock."""
        with self.cond:
            if self.con is None:
                return
            self.closing = True
            while self.pins:
                self.cond.wait()
            con, lock = self.con, self.lock
            self.con = self.lock = None
            self.closing = False
            self.cond.notify_all()
        try:
            con.close()
        finally:
            if lock is not None:
                lock.release()

    def after_write(self) -> None:
        """After a write: give the file way if another process waits for it (or if it is not kept open)."""
        self.last_write = time.monotonic()
        if self.idle_s is None:
            self.close()
        elif self.lock is not None and self.lock.others_waiting():
            self.close()
            self.yielded_at = time.monotonic()

    def _keep(self) -> None:
        """Close the instance after ``idle_s`` without a write, or when another process waits and no write comes."""
        while True:
            time.sleep(_KEEPER_TICK_S)
            if self.con is None:
                return
            idle = self.idle_s is None or time.monotonic() - self.last_write >= self.idle_s
            if not idle and not (self.lock is not None and self.lock.others_waiting()):
                continue
            with self.writer:
                if self.con is not None:
                    self.close()
                    if not idle:
                        self.yielded_at = time.monotonic()
            return

    @contextmanager
    def pinned(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A cursor of the kept-open instance for a read, or None when it is not open."""
        with self.cond:
            con = self.con if self.con is not None and not self.closing else None
            if con is not None:
                self.pins += 1
        if con is None:
            yield None
            return
        cur = con.cursor()
        try:
            yield cur
        finally:
            cur.close()
            with self.cond:
                self.pins -= 1
                self.cond.notify_all()

    # -- snapshots for analysts' SQL -------------------------------------------------------------------------------

    def snapshot(self, kb: DuckDBFile) -> _Snapshot:
        """A snapshot of the current version (shared with other queries while the version holds), in use until
        :meth:`release` is called."""
        version = kb.version()
        with self.snapshot_guard:
            latest = self.snapshots[-1] if self.snapshots else None
            if latest is not None and latest.version == version and version is not None:
                latest.users += 1
                return latest
        directory = Path(tempfile.mkdtemp(prefix="metaml-sql-"))
        try:
            version = self._copy(kb, directory)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        snap = _Snapshot(version, directory, users=1)
        with self.snapshot_guard:
            self.snapshots.append(snap)
            self._prune()
        return snap

    def _copy(self, kb: DuckDBFile, directory: Path) -> str | None:
        """Copy the file and its write-ahead log while no write of any process runs; the version copied."""
        with self.writer:
            if self.con is not None:  # this process holds the file: no write runs while ``writer`` is held
                return _copy_files(self.path, directory, kb)
        with kb_lock(self.path, exclusive=False, timeout=kb.lock_timeout):
            return _copy_files(self.path, directory, kb)

    def release(self, snap: _Snapshot) -> None:
        with self.snapshot_guard:
            snap.users -= 1
            self._prune()

    def _prune(self) -> None:
        """Remove the snapshots no query uses, but the latest (call with ``snapshot_guard`` held)."""
        keep = []
        for i, snap in enumerate(self.snapshots):
            if snap.users > 0 or i == len(self.snapshots) - 1:
                keep.append(snap)
            else:
                shutil.rmtree(snap.directory, ignore_errors=True)
        self.snapshots = keep

    def drop_snapshots(self) -> None:
        with self.snapshot_guard:
            for snap in self.snapshots:
                if snap.users == 0:
                    shutil.rmtree(snap.directory, ignore_errors=True)
            self.snapshots = [s for s in self.snapshots if s.users > 0]


def _copy_files(path: Path, directory: Path, kb: DuckDBFile) -> str | None:
    if not path.exists():
        raise KnowledgeBaseNotFound(f"no knowledge base at {path}")
    version = kb.version()
    target = directory / "kb.duckdb"
    shutil.copyfile(path, target)
    target.chmod(0o600)
    wal = path.with_name(path.name + ".wal")
    with suppress(FileNotFoundError):
        shutil.copyfile(wal, directory / "kb.duckdb.wal")
    return version


_ENGINES: dict[tuple[int, str], _Engine] = {}
_ENGINES_GUARD = threading.Lock()


def _engine_for(path: Path) -> _Engine:
    key = (os.getpid(), str(path.resolve()))
    with _ENGINES_GUARD:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _Engine(path)
        return engine


@atexit.register
def _close_all() -> None:
    """Close kept-open files and remove snapshots when the process exits normally."""
    for (pid, _), engine in list(_ENGINES.items()):
        if pid == os.getpid():
            with suppress(Exception):
                engine.close()
            engine.drop_snapshots()


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

    @property
    def _engine(self) -> _Engine:
        return _engine_for(self.path)

    def keep_open(self, idle_s: float = 1.0) -> None:
        """Keep the file open in this process between writes (see the module docstring), until ``idle_s`` seconds
        pass without a write or another process waits for it."""
        self._engine.idle_s = idle_s

    def close(self) -> None:
        """Close the kept-open file (any later write opens it again) and remove unused SQL snapshots."""
        engine = self._engine
        engine.idle_s = None
        with engine.writer:
            engine.close()
        engine.drop_snapshots()

    def _open_file(self, *, write: bool) -> duckdb.DuckDBPyConnection:
        """A new connection to the file (call with the lock held); tables created or migrated when ``write``."""
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
        except BaseException:
            con.close()
            raise
        return con

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        engine = self._engine
        if write:
            with engine.writer:
                con = engine.open(self)
                cur = con.cursor()
                try:
                    yield cur
                finally:
                    cur.close()
                    engine.after_write()
            return
        with engine.pinned() as cur:
            if cur is not None:
                yield cur
                return
        if not self.path.exists():
            raise KnowledgeBaseNotFound(
                f"no knowledge base at {self.path}; create one with `metaml ingest PATH --kb {self.path}`"
            )
        with kb_lock(self.path, exclusive=False, timeout=self.lock_timeout):
            con = self._open_file(write=False)
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def _sandbox(self, memory_limit_mb: int) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.path.exists():
            raise KnowledgeBaseNotFound(f"no knowledge base at {self.path}")
        engine = self._engine
        snap = engine.snapshot(self)
        try:
            con = duckdb.connect(":memory:")
            try:
                con.execute(f"ATTACH '{_quote(str(snap.path))}' AS kb (READ_ONLY)")
                con.execute("USE kb")
                for setting in sandbox_settings(memory_limit_mb):
                    con.execute(setting)
                yield con
            finally:
                con.close()
        finally:
            engine.release(snap)

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

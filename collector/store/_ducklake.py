"""The lakehouse backend: the knowledge base as a DuckLake whose catalog is a PostgreSQL database and whose data are
Parquet files under a directory.

* **Many writer processes, no file lock.** Each process keeps one DuckDB instance with the lakehouse attached and
  writes through it. Writers take turns through a PostgreSQL advisory lock on the catalog database, held by one
  session per process from just before a write transaction starts until it has committed: waiting writers queue in
  PostgreSQL (first come, first served; released by the server when a process dies, even by SIGKILL), and each write
  starts from the latest snapshot. Correctness does not rest on that lock: every append that inserts runs also
  rewrites one row of ``kb_meta`` (``appended_at``), so two appends that ran at the same time anyway (a writer that
  does not take the lock) conflict in DuckLake, and the later one is rolled back and run again against the new
  snapshot, where the runs the other stored are duplicates. Identity therefore holds across processes although
  DuckLake has no primary keys.
* **Durability.** A transaction is visible once its snapshot row is committed in PostgreSQL; its Parquet files are
  written before. A process killed mid-write leaves at most unreferenced files (removed by :meth:`DuckLake.compact`).
* **No small files.** Inserts of at most ``inline`` rows (default 100) are kept inside the catalog (DuckLake data
  inlining); after a process has inlined :data:`FLUSH_ROWS` runs it writes them out as one Parquet file.
  :meth:`DuckLake.compact` also merges adjacent small files and removes files no snapshot needs.
* **Version token.** The id of the latest snapshot.
* **SQL sandbox.** A separate in-memory DuckDB attaches the lakehouse read-only, over a PostgreSQL session whose
  transactions are read-only, may read only the data directory, and refuses queries that call the postgres
  extension's functions (they reach any server), DuckLake's maintenance functions or SQL-from-strings functions, or
  name the catalog database itself.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb

from collector.errors import KnowledgeBaseNotFound, StoreBusy, StoreError, StoreUnavailable
from collector.store._base import KnowledgeBase, _first_line, _quote, sandbox_settings
from collector.store._extensions import NO_AUTOLOAD, load_extensions

log = logging.getLogger("metaml.store")

#: Runs a process inlines into the catalog before it writes them out as one Parquet file.
FLUSH_ROWS = 5_000
#: Tables whose inlined rows are written out to Parquet (``kb_meta``, rewritten by every append, stays inlined: in a
#: Parquet file each rewrite would add a delete file).
DATA_TABLES = ("runs", "datasets", "models")
#: The lakehouse's name inside each DuckDB instance.
ALIAS = "kb"
#: The advisory lock (``pg_advisory_lock`` key) writers of one catalog database take turns through.
WRITE_LOCK_KEY = 0x6D65_7461_6D6C  # "metaml"
#: Idle sandbox connections kept per lakehouse and process (loading the extensions takes about 0.3 s).
SANDBOX_POOL = 4
_EXTENSIONS = ("postgres_scanner", "ducklake")


class _Engine:
    """One process's DuckDB instance with one lakehouse attached as :data:`ALIAS`."""

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.guard = threading.Lock()
        self.writer = threading.Lock()
        self.session: Any = None  # the psycopg connection that holds the advisory lock while this process writes
        self.schema_ready = False
        self.has_runs = False
        self.inlined = 0
        self.sandboxes: dict[int, list[duckdb.DuckDBPyConnection]] = {}  # by memory limit (MB)


_ENGINES: dict[tuple[int, str, str], _Engine] = {}
_ENGINES_GUARD = threading.Lock()


def _has_runs(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the attached lakehouse has its runs table (it is created by the first write)."""
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'runs'",
                            [ALIAS]).fetchone()[0])


class DuckLake(KnowledgeBase):
    """A knowledge base stored as a DuckLake: catalog in PostgreSQL, data as Parquet files.

    Args:
        location: ``ducklake:postgres:KEY=VALUE ... data=DIR [inline=N]`` (see :mod:`collector.store._uri`).
        lock_timeout: seconds a write keeps retrying after conflicts with concurrent writers before
            :class:`StoreBusy`.
    """

    primary_keys = False

    def __init__(self, location: str | Path, *, lock_timeout: float = 300.0) -> None:
        super().__init__(location, lock_timeout=lock_timeout)
        assert self.where.conninfo is not None and self.where.data_path is not None
        self.conninfo = self.where.conninfo
        self.data_path = self.where.data_path
        key = (os.getpid(), self.conninfo, self.data_path)
        with _ENGINES_GUARD:
            self._engine = _ENGINES.setdefault(key, _Engine())

    # -- connections -----------------------------------------------------------------------------------------------

    def _attach_sql(self, *, read_only: bool, create: bool = False) -> str:
        conninfo = self.conninfo
        options = [] if read_only else [f"DATA_PATH '{_quote(self.data_path)}'",
                                        f"DATA_INLINING_ROW_LIMIT {self.where.inline_rows}"]
        if read_only:
            conninfo = self.where.conninfo_with_options("-c default_transaction_read_only=on")
            options.append("READ_ONLY")
        elif not create:
            options.append("CREATE_IF_NOT_EXISTS false")
        return f"ATTACH '{_quote('ducklake:postgres:' + conninfo)}' AS {ALIAS} ({', '.join(options)})"

    def _root(self, *, create: bool) -> duckdb.DuckDBPyConnection:
        """The process's connection with the lakehouse attached (created now when ``create``)."""
        engine = self._engine
        with engine.guard:
            if engine.con is not None:
                return engine.con

            def setup(con: duckdb.DuckDBPyConnection) -> None:
                con.execute("SET GLOBAL TimeZone = 'UTC'")
                if not create:
                    con.execute(self._attach_sql(read_only=False))
                    return
                with self._lock_session() as session:  # creating the catalog: one process at a time
                    self._acquire(session)
                    con.execute(self._attach_sql(read_only=False, create=True))

            con = self._instance(setup)
            engine.con = con
            return con

    def _open_error(self, e: duckdb.Error) -> StoreError:
        text = _first_line(e)
        if "does not exist" in text and ("creating a new DuckLake" in text or "explicitly disabled" in text):
            return KnowledgeBaseNotFound(f"no knowledge base at {self}; create one with "
                                         f"`metaml ingest PATH --kb \"{self}\"`")
        if "unable to connect" in str(e).lower():
            return StoreUnavailable(f"the catalog database of {self} cannot be reached: {_first_line(e)}")
        return StoreError(f"cannot open knowledge base {self}: {text}")

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        engine = self._engine
        root = self._root(create=write)
        if write and not engine.schema_ready:
            with engine.writer:
                if not engine.schema_ready:
                    self._write_schema()
                    engine.schema_ready = engine.has_runs = True
        if not write and not engine.has_runs:
            self._check_runs(root)
        cur = root.cursor()
        try:
            cur.execute(f"USE {ALIAS}")
            if write:
                # For these two optimizers DuckLake reads a table's statistics from the catalog again for every
                # column scanned (56 catalog round trips to read the 27-column datasets table, 1 without them). A
                # write's joins are two tables at most, and the build side of each is still chosen by size.
                cur.execute("SET disabled_optimizers = 'statistics_propagation,join_order'")
                with engine.writer, self._turn():
                    yield cur
            else:
                yield cur
        except duckdb.IOException as e:
            raise StoreError(f"knowledge base {self} failed: {_first_line(e)}") from e
        finally:
            cur.close()

    def _new_session(self) -> Any:
        """A new PostgreSQL session (psycopg, autocommit) on the catalog database.

        Raises:
            StoreUnavailable: the catalog database cannot be reached.
        """
        import psycopg

        try:
            return psycopg.connect(self.conninfo, autocommit=True, application_name="metaml-writer")
        except psycopg.Error as e:
            raise StoreUnavailable(f"the catalog database of {self} cannot be reached: {e}") from e

    @contextmanager
    def _lock_session(self) -> Iterator[Any]:
        """A new session, closed (releasing its advisory locks) after the block."""
        session = self._new_session()
        try:
            yield session
        finally:
            with suppress(Exception):
                session.close()

    def _acquire(self, session: Any) -> None:
        """Take :data:`WRITE_LOCK_KEY` in ``session``, waiting at most ``lock_timeout`` seconds.

        Raises:
            StoreBusy: it was not granted in time.
            StoreUnavailable: the session failed.
        """
        import psycopg

        try:
            session.execute(f"SET lock_timeout = {max(1, int(self.lock_timeout * 1000))}")
            session.execute("SELECT pg_advisory_lock(%s)", [WRITE_LOCK_KEY])
        except psycopg.errors.LockNotAvailable as e:
            raise StoreBusy(f"knowledge base {self} is being written by other processes (waited "
                            f"{self.lock_timeout:.0f}s); retry later") from e
        except psycopg.Error as e:
            raise StoreUnavailable(f"the catalog database of {self} failed: {e}") from e

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the catalog database's write lock (:data:`WRITE_LOCK_KEY`) for the block, in this process's writer
        session (kept open between writes); call with ``writer`` held.

        Raises:
            StoreBusy: the lock was not granted within ``lock_timeout`` seconds.
            StoreUnavailable: the catalog database cannot be reached.
        """
        import psycopg

        engine = self._engine
        if engine.session is None or engine.session.closed:
            engine.session = self._new_session()
        session = engine.session
        try:
            self._acquire(session)
        except StoreUnavailable:
            with suppress(Exception):
                session.close()
            engine.session = None
            raise
        try:
            yield
        finally:
            try:
                session.execute("SELECT pg_advisory_unlock(%s)", [WRITE_LOCK_KEY])
            except psycopg.Error:  # the session is gone, and the lock with it
                with suppress(Exception):
                    session.close()
                engine.session = None

    def _check_runs(self, root: duckdb.DuckDBPyConnection) -> None:
        cur = root.cursor()
        try:
            found = _has_runs(cur)
        except duckdb.Error as e:
            raise StoreError(f"cannot read knowledge base {self}: {_first_line(e)}") from e
        finally:
            cur.close()
        if not found:
            raise KnowledgeBaseNotFound(f"no knowledge base at {self}; create one with "
                                        f"`metaml ingest PATH --kb \"{self}\"`")
        self._engine.has_runs = True

    def _write_schema(self) -> None:
        """Create or migrate the tables in one transaction (run again when another process did so meanwhile)."""
        cur = self._root(create=True).cursor()
        try:
            cur.execute(f"USE {ALIAS}")

            def attempt() -> None:
                try:
                    cur.execute("BEGIN TRANSACTION")
                    self._ensure_schema(cur)
                    cur.execute("COMMIT")
                except duckdb.Error:
                    with suppress(duckdb.Error):
                        cur.execute("ROLLBACK")
                    raise

            self._retrying(attempt)
        except duckdb.Error as e:
            raise StoreError(f"cannot create the tables of {self}: {_first_line(e)}") from e
        finally:
            cur.close()

    def _conflicted(self, error: duckdb.Error) -> bool:
        text = str(error).lower()
        return isinstance(error, duckdb.TransactionException) and ("conflict" in text or "retry" in text)

    def _guard_append(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("UPDATE kb_meta SET value = CAST(now() AS VARCHAR) WHERE key = 'appended_at'")

    def _after_append(self, inserted: int) -> None:
        engine = self._engine
        if not 0 < inserted <= self.where.inline_rows:
            return
        engine.inlined += inserted
        if engine.inlined >= FLUSH_ROWS:
            engine.inlined = 0
            try:
                self._flush()
            except StoreError as e:  # the runs stay inlined and readable; the next flush takes them
                log.warning("inlined runs of %s not flushed to Parquet: %s", self, e)

    def _flush(self) -> None:
        """Write the runs inlined in the catalog out as Parquet (one file), in one transaction."""
        def attempt() -> None:
            with self._connect(write=True) as con:
                con.execute(f"CALL ducklake_flush_inlined_data('{ALIAS}', table_name => 'runs')")

        self._retrying(attempt)

    @contextmanager
    def _sandbox(self, memory_limit_mb: int) -> Iterator[duckdb.DuckDBPyConnection]:
        engine = self._engine
        with engine.guard:
            pool = engine.sandboxes.setdefault(int(memory_limit_mb), [])
            con = pool.pop() if pool else None
        if con is None:
            con = self._new_sandbox(memory_limit_mb)
        healthy = True
        try:
            yield con
        except (duckdb.FatalException, duckdb.InternalException):
            healthy = False
            raise
        finally:
            with engine.guard:
                if healthy and len(pool) < SANDBOX_POOL:
                    pool.append(con)
                    con = None
            if con is not None:
                con.close()

    def _new_sandbox(self, memory_limit_mb: int) -> duckdb.DuckDBPyConnection:
        def setup(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(self._attach_sql(read_only=True))
            con.execute(f"USE {ALIAS}")
            con.execute(f"SET allowed_directories = ['{_quote(self.data_path)}']")
            for setting in sandbox_settings(memory_limit_mb):
                con.execute(setting)
            if not _has_runs(con):
                raise KnowledgeBaseNotFound(f"no knowledge base at {self}")

        return self._instance(setup)

    def _instance(self, setup: Callable[[duckdb.DuckDBPyConnection], None]) -> duckdb.DuckDBPyConnection:
        """A new in-memory DuckDB with the extensions loaded and ``setup`` run (closed again if that fails)."""
        con = duckdb.connect(":memory:", config=dict(NO_AUTOLOAD))
        try:
            load_extensions(con, *_EXTENSIONS)
            setup(con)
        except duckdb.Error as e:
            con.close()
            raise self._open_error(e) from e
        except BaseException:
            con.close()
            raise
        return con

    def close(self) -> None:
        engine = self._engine
        with engine.guard:
            con, engine.con = engine.con, None
            sandboxes = [c for pool in engine.sandboxes.values() for c in pool]
            engine.sandboxes = {}
            session, engine.session = engine.session, None
            engine.has_runs = engine.schema_ready = False
        for c in [*sandboxes, *([con] if con is not None else [])]:
            with suppress(duckdb.Error):
                c.close()
        if session is not None:
            with suppress(Exception):
                session.close()

    # -- the interface's backend parts -----------------------------------------------------------------------------

    def exists(self) -> bool:
        try:
            with self._connect(write=False):
                return True
        except KnowledgeBaseNotFound:
            return False

    def version(self) -> str | None:
        """``snapshot:<id>`` of the latest DuckLake snapshot (None when the lakehouse does not exist)."""
        try:
            with self._connect(write=False) as con:
                return f"snapshot:{con.execute(f'SELECT id FROM ducklake_current_snapshot({ALIAS!r})').fetchone()[0]}"
        except KnowledgeBaseNotFound:
            return None

    def compact(self) -> dict[str, int]:
        """Flush inlined rows of :data:`DATA_TABLES` to Parquet, rewrite their files that have deleted rows (updates
        leave some), merge adjacent small files, forget snapshots older than a day and delete the files no remaining
        snapshot reads (and files of killed writers). Afterwards the current snapshot of those tables is exactly its
        data files, which readers that go through the catalog's tables alone (Spark, Trino) rely on.

        Returns:
            ``data_files`` before and after (files the current snapshot reads).
        """
        before = self.data_files()

        def attempt() -> None:
            with self._connect(write=True) as con:
                for table in DATA_TABLES:
                    con.execute(f"CALL ducklake_flush_inlined_data('{ALIAS}', table_name => '{table}')")
                    con.execute(f"CALL ducklake_rewrite_data_files('{ALIAS}', '{table}', delete_threshold => 0)")
                con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')")

        self._retrying(attempt)
        with self._connect(write=True) as con:
            con.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now() - INTERVAL 1 DAY)")
            con.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)")
            con.execute(f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => now() - INTERVAL 1 HOUR)")
        return {"data_files_before": before, "data_files_after": self.data_files()}

    def data_files(self) -> int:
        """Parquet data files the current snapshot reads, over every table."""
        with self._connect(write=False) as con:
            tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                                                [ALIAS]).fetchall()]
            return sum(int(con.execute(f"SELECT count(*) FROM ducklake_list_files('{ALIAS}', ?)", [t]).fetchone()[0])
                       for t in tables)

"""API keys: created, listed and revoked by an operator; verified on every request.

A key reads ``mk_<key id>_<secret>``: the id (12 hex characters) is public and names the key in listings and logs,
the secret is 32 random bytes (URL-safe base64). Only the sha256 of the whole key is stored, in a small SQLite file
beside the knowledge base; the secret is shown once, when the key is created. Verification looks the key up by its
id and compares hashes in constant time. A process remembers the keys it verified only while the key file stays as
it was (checked on every request: its inode, size, modification time and SQLite's change counter), so revocation
takes effect on the next request.

Scopes: ``read`` (runs, stats, describe), ``write`` (upload runs, store dataset features), ``analyst`` (SQL) and
``admin``, which implies every other scope.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.errors import KeyStoreError

SCOPES: tuple[str, ...] = ("read", "write", "analyst", "admin")
PREFIX = "mk"
_KEY_RE = re.compile(r"^mk_([0-9a-f]{12})_([A-Za-z0-9_\-]{20,128})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
_DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  scopes TEXT NOT NULL,
  key_hash TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
)
"""
#: Compared against when the key id is unknown, so that unknown ids take as long as wrong secrets.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
#: Keys this process verified, by (key file, hash of the key): the key file's state then, and the key.
_VERIFIED: dict[tuple[str, str], tuple[tuple[int, ...], ApiKey]] = {}
#: Most keys remembered (all are forgotten when it is reached: a server sees a handful).
_MAX_VERIFIED = 1024


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """True when the key holds ``scope`` (``admin`` holds them all)."""
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict[str, object]:
        return {"key_id": self.key_id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at, "revoked_at": self.revoked_at, "active": self.active}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@contextmanager
def _connect(path: Path, *, write: bool) -> Iterator[sqlite3.Connection]:
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        try:
            con = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as e:
            raise KeyStoreError(f"cannot open the API key file {path}: {e}") from e
        if new:
            path.chmod(0o600)
    else:
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0, isolation_level=None)
        except sqlite3.Error as e:
            raise KeyStoreError(f"cannot open the API key file {path}: {e}") from e
    with closing(con):
        try:
            if write:
                con.execute(_DDL)
            yield con
        except sqlite3.Error as e:
            raise KeyStoreError(f"API key file {path}: {e}") from e


def _row_to_key(row: tuple) -> ApiKey:
    key_id, name, scopes, created_at, revoked_at = row
    return ApiKey(key_id, name, tuple(s for s in scopes.split(",") if s), created_at, revoked_at)


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Deduplicated, ordered scopes.

    Raises:
        KeyStoreError: an unknown scope, or none at all.
    """
    wanted = {s.strip().lower() for s in scopes if s.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise KeyStoreError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not wanted:
        raise KeyStoreError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return tuple(s for s in SCOPES if s in wanted)


def create_key(path: Path, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """Create a key.

    Args:
        path: the SQLite key file (created if missing, readable by its owner only).
        name: who holds the key; recorded as ``provenance.uploader`` of the runs it uploads. Unique among active
            keys; letters, digits and ``_.@-``.
        scopes: any of :data:`SCOPES`.

    Returns:
        The stored key and its secret (the whole ``mk_...`` string), which is not stored and cannot be shown again.

    Raises:
        KeyStoreError: a bad name or scope, an active key of that name, or an unwritable file.
    """
    if not _NAME_RE.match(name or ""):
        raise KeyStoreError(f"bad key name {name!r}: 1-64 letters, digits and _.@- starting with a letter or digit")
    wanted = normalize_scopes(scopes)
    key_id = secrets.token_hex(6)
    token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with _connect(path, write=True) as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            taken = con.execute("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", [name]).fetchone()
            if taken:
                raise KeyStoreError(f"an active key named {name!r} exists; revoke it first or choose another name")
            con.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                        [key_id, name, ",".join(wanted), _hash(token), created])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return ApiKey(key_id, name, wanted, created), token


def list_keys(path: Path, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key in ``path`` (none when the file does not exist), oldest first."""
    if not path.exists():
        return []
    with _connect(path, write=False) as con:
        if not _has_table(con):
            return []
        query = "SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            query += " WHERE revoked_at IS NULL"
        return [_row_to_key(r) for r in con.execute(query + " ORDER BY created_at, key_id").fetchall()]


def revoke_key(path: Path, key_id: str) -> ApiKey:
    """Revoke a key by its id (idempotent: revoking a revoked key keeps its first revocation time).

    Raises:
        KeyStoreError: no key has that id.
    """
    key_id = key_id.strip()
    if key_id.startswith(f"{PREFIX}_"):
        key_id = key_id.split("_")[1]
    if not path.exists():
        raise KeyStoreError(f"no key {key_id!r}: the key file {path} does not exist")
    with _connect(path, write=True) as con:
        con.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                    [datetime.now(UTC).isoformat(timespec="seconds"), key_id])
        row = con.execute("SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys WHERE key_id = ?",
                          [key_id]).fetchone()
    if row is None:
        raise KeyStoreError(f"no key {key_id!r}")
    return _row_to_key(row)


def _file_state(path: Path) -> tuple[int, ...] | None:
    """What changes whenever the key file is written: its inode, size and modification time, and the change counter
    SQLite increments in the file's header at every committed write (header bytes 24-27); None without a file."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            header = f.read(28)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, int.from_bytes(header[24:28], "big")


def _remembered(path: Path, token: str, state: tuple[int, ...] | None) -> ApiKey | None:
    """The key this process verified for ``token``, while the key file is still in ``state``."""
    hit = _VERIFIED.get((str(path), _hash(token)))
    return hit[1] if hit is not None and state is not None and hit[0] == state else None


def cached_key(path: Path, token: str) -> ApiKey | None:
    """The key ``token`` is when this process has verified it and the key file has not changed since (no query:
    cheap enough for an event loop), else None (:func:`verify_key` then decides)."""
    return _remembered(path, token, _file_state(path))


def verify_key(path: Path, token: str) -> ApiKey | None:
    """The active key ``token`` is, or None (malformed, unknown, wrong secret, revoked, or no key file); a key this
    process verified is answered without a query while the key file is unchanged."""
    match = _KEY_RE.match(token or "")
    state = _file_state(path)  # before the query: a write after it makes the remembered key stale
    if match is None or state is None:
        return None
    remembered = _remembered(path, token, state)
    if remembered is not None:
        return remembered
    with _connect(path, write=False) as con:
        if not _has_table(con):
            return None
        row = con.execute("SELECT key_id, name, scopes, created_at, revoked_at, key_hash FROM api_keys "
                          "WHERE key_id = ?", [match.group(1)]).fetchone()
    stored = row[5] if row else _DUMMY_HASH
    if not hmac.compare_digest(stored, _hash(token)) or row is None:
        return None
    key = _row_to_key(row[:5])
    if not key.active:
        return None
    if len(_VERIFIED) >= _MAX_VERIFIED:
        _VERIFIED.clear()
    _VERIFIED[(str(path), row[5])] = (state, key)
    return key


def _has_table(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'").fetchone() is not None

"""DuckDB extensions the lakehouse needs, loaded by file path from their PyPI packages (never downloaded at run time).

``duckdb-extension-ducklake`` and ``duckdb-extension-postgres`` ship the extension binaries for exactly one DuckDB
version (the one ``pyproject.toml`` pins, under ``extensions/v<version>/``). DuckDB derives an extension's entry
point from its file name, and the postgres package ships ``postgres.duckdb_extension`` for the extension named
``postgres_scanner``; that file is therefore loaded through a link named ``postgres_scanner.duckdb_extension`` in
this user's cache directory (``$XDG_CACHE_HOME/metaml``, else ``~/.cache/metaml``; made once, replaced atomically),
or in a fresh private temporary directory when the cache cannot be written.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import duckdb

from collector.errors import StoreError

#: extension name -> (PyPI package, Python module, file name inside ``extensions/v<version>/``).
EXTENSIONS: dict[str, tuple[str, str, str]] = {
    "postgres_scanner": ("duckdb-extension-postgres", "duckdb_extension_postgres", "postgres.duckdb_extension"),
    "ducklake": ("duckdb-extension-ducklake", "duckdb_extension_ducklake", "ducklake.duckdb_extension"),
}
#: Settings of every connection that loads extensions: nothing is installed or loaded behind our back.
NO_AUTOLOAD = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def extension_path(name: str) -> Path:
    """The file DuckDB loads for extension ``name`` (a key of :data:`EXTENSIONS`).

    Raises:
        StoreError: the package is not installed, or ships no binary for the running DuckDB version.
    """
    package, module, filename = EXTENSIONS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise StoreError(f"the lakehouse needs the {package} package: pip install 'metaml[lakehouse]'") from e
    version = duckdb.__version__
    shipped = Path(mod.__file__).resolve().parent / "extensions" / f"v{version}" / filename
    if not shipped.is_file():
        found = sorted(p.name for p in (Path(mod.__file__).parent / "extensions").glob("v*"))
        raise StoreError(f"{package} ships no extension for DuckDB {version} (it has {', '.join(found) or 'none'}); "
                         f"install the {package} version equal to duckdb's")
    if shipped.name == f"{name}.duckdb_extension":
        return shipped
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metaml" / "duckdb-extensions"
    try:
        return _link(cache / f"v{version}" / f"{name}.duckdb_extension", shipped)
    except OSError:
        return _link(Path(tempfile.mkdtemp(prefix="metaml-ext-")) / f"{name}.duckdb_extension", shipped)


def _link(link: Path, target: Path) -> Path:
    """``link`` pointing at ``target`` (created or replaced atomically when it points elsewhere)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
    return link


def load_extensions(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """LOAD each extension of ``names`` into ``con`` by file path.

    Raises:
        StoreError: a package is missing, or DuckDB refused the file.
    """
    for name in names:
        path = extension_path(name)
        try:
            con.execute(f"LOAD '{str(path).replace(chr(39), chr(39) * 2)}'")
        except duckdb.Error as e:
            raise StoreError(f"cannot load the DuckDB extension {name} from {path}: {e}") from e

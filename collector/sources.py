"""The public sources of the knowledge base: where each file comes from, its checksum, and how to get it again.

``collector/data/sources.toml`` (the manifest, shipped in the package) lists, per source, the upstream repository and
pinned commit, the license, the format that reads it, and every shipped file with its size and sha256. Each file says
how it can be fetched:

* ``raw`` — the shipped file is an upstream file, byte for byte: it is downloaded from
  ``https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<upstream>`` and its sha256 checked.
* ``github-archive`` — the shipped file is an archive the packager assembled from many upstream files of one commit:
  the repository's archive at the pinned commit is downloaded once, the files matching ``include`` are packed again
  under their shipped names (``strip_prefix`` removed), and the result is checked by ``content_sha256`` — a digest of
  the member names and contents, since the new archive's bytes (timestamps, compression) differ from the shipped one.
* ``manual`` — the shipped file was assembled or derived by the packager in a way that cannot be replayed from one
  commit (files from several historical commits, decoded event files, derived splits, a hand-picked subset): the
  entry's ``instructions`` say how it was made; :func:`fetch` fetches everything else and then raises
  :class:`ManualFetchRequired` listing them (files marked ``required = false``, such as the packager's
  ``ORIGIN.txt``, are skipped silently).

With a local copy (``local_root``, e.g. ``../shared/data``), :func:`fetch` copies instead of downloading and checks
every checksum; :func:`verify` checks a local copy in place.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import tomllib
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from collector.data import resource_path
from collector.errors import CollectorError

DEFAULT_MANIFEST = resource_path("sources.toml")
#: Environment variable naming the local copy of the public data (``metadatasets/``, ``text/``).
PUBLIC_DATA_ENV = "METAML_PUBLIC_DATA"
FETCH_KINDS = ("raw", "github-archive", "manual")
CHUNK = 1 << 20
TIMEOUT_S = 60.0

#: Opens a URL for reading bytes (replaced in tests; the default is ``urllib.request.urlopen``).
Opener = Callable[[str], IO[bytes]]


class SourceError(CollectorError):
    """The manifest is malformed, or a source could not be fetched."""


class ChecksumError(SourceError):
    """A file's content does not match the checksum the manifest pins."""


class ManualFetchRequired(SourceError):
    """Some files of a source cannot be downloaded automatically; the message says how to make them."""


@dataclass(frozen=True)
class SourceFile:
    """One shipped file of a source."""

    path: str
    sha256: str
    bytes: int
    fetch: str
    upstream: str | None = None
    repository: str | None = None
    commit: str | None = None
    format: str | None = None
    required: bool = True
    content_sha256: str | None = None
    members: int | None = None
    include: tuple[str, ...] = ()
    strip_prefix: str = ""
    instructions: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Source:
    """A public source: one folder of the shared data and where it comes from."""

    name: str
    local_dir: str
    repository: str
    commit: str
    license: str
    format: str | None = None
    description: str = ""
    files: tuple[SourceFile, ...] = field(default_factory=tuple)

    def repo_of(self, f: SourceFile) -> tuple[str, str]:
        """(repository URL, commit) of a file: its own when it names them, else the source's."""
        return f.repository or self.repository, f.commit or self.commit

    def url_of(self, f: SourceFile) -> str | None:
        """Where ``f`` is downloaded from (``raw`` and ``github-archive`` files), or None for ``manual`` ones."""
        repo, commit = self.repo_of(f)
        slug = _github_slug(repo)
        if f.fetch == "raw" and f.upstream:
            return f"https://raw.githubusercontent.com/{slug}/{commit}/{f.upstream}"
        if f.fetch == "github-archive":
            return f"https://codeload.github.com/{slug}/tar.gz/{commit}"
        return None


@dataclass(frozen=True)
class Problem:
    """A file of the manifest that is missing or differs from its checksum."""

    source: str
    path: str
    kind: str  # "missing" | "size" | "sha256"
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}"


# -- manifest ----------------------------------------------------------------------------------------------------


def public_data_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where the local copy of the public data is looked for: ``$METAML_PUBLIC_DATA``, else ``../shared/data`` beside
    the working directory (not checked to exist).

    Args:
        environ: the environment to read (``os.environ`` when ``None``).
    """
    env = os.environ if environ is None else environ
    if env.get(PUBLIC_DATA_ENV):
        return Path(env[PUBLIC_DATA_ENV])
    return Path.cwd().parent / "shared" / "data"


def load_manifest(path: str | Path = DEFAULT_MANIFEST) -> list[Source]:
    """The sources listed in a manifest.

    Raises:
        SourceError: the file is missing, not TOML, or an entry lacks a field or names an unknown fetch kind.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: no such manifest") from None
    except tomllib.TOMLDecodeError as e:
        raise SourceError(f"{path}: not valid TOML: {e}") from e
    sources = [_source(entry, path) for entry in doc.get("source", [])]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise SourceError(f"{path}: duplicate source names")
    return sources


def _source(entry: dict[str, Any], where: Path) -> Source:
    try:
        files = tuple(_file(f, entry["name"], where) for f in entry.get("files", []))
        return Source(name=entry["name"], local_dir=entry["local_dir"], repository=entry["repository"],
                      commit=entry["commit"], license=entry["license"], format=entry.get("format"),
                      description=entry.get("description", ""), files=files)
    except KeyError as e:
        raise SourceError(f"{where}: source {entry.get('name', '?')!r} lacks field {e.args[0]!r}") from None


def _file(entry: dict[str, Any], source: str, where: Path) -> SourceFile:
    try:
        f = SourceFile(path=entry["path"], sha256=entry["sha256"], bytes=int(entry["bytes"]), fetch=entry["fetch"],
                       upstream=entry.get("upstream"), repository=entry.get("repository"),
                       commit=entry.get("commit"), format=entry.get("format"),
                       required=bool(entry.get("required", True)), content_sha256=entry.get("content_sha256"),
                       members=entry.get("members"), include=tuple(entry.get("include", ())),
                       strip_prefix=entry.get("strip_prefix", ""), instructions=entry.get("instructions"),
                       note=entry.get("note"))
    except KeyError as e:
        raise SourceError(f"{where}: a file of source {source!r} lacks field {e.args[0]!r}") from None
    if f.fetch not in FETCH_KINDS:
        raise SourceError(f"{where}: {source}/{f.path}: unknown fetch kind {f.fetch!r} ({', '.join(FETCH_KINDS)})")
    if f.fetch == "raw" and not f.upstream:
        raise SourceError(f"{where}: {source}/{f.path}: a raw file needs its upstream path")
    if f.fetch == "github-archive" and not (f.include and f.content_sha256):
        raise SourceError(f"{where}: {source}/{f.path}: a github-archive file needs include and content_sha256")
    if f.fetch == "manual" and not f.instructions:
        raise SourceError(f"{where}: {source}/{f.path}: a manual file needs instructions")
    return f


def _github_slug(repository: str) -> str:
    slug = repository.removeprefix("https://").removeprefix("http://").removeprefix("github.com/")
    return slug.strip("/")


# -- checksums ---------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def archive_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, content) of every regular file of a tar archive (``.tar``, ``.tar.gz``, ``.tar.xz``), names without a
    leading ``./``."""
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            yield member.name.removeprefix("./"), handle.read()


def content_digest(members: Iterable[tuple[str, bytes]]) -> tuple[str, int]:
    """(digest, count) of archive members: sha256 over sorted ``"<sha256(content)>  <name>\\n"`` lines, so two
    archives with the same files have the same digest whatever their timestamps, order or compression."""
    lines = sorted(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members)
    return hashlib.sha256("".join(lines).encode()).hexdigest(), len(lines)


# -- verify ------------------------------------------------------------------------------------------------------


def verify(local_root: str | Path, manifest: str | Path | list[Source] = DEFAULT_MANIFEST,
           sources: Iterable[str] | None = None) -> list[Problem]:
    """Check that every file of the manifest is under ``local_root`` with its size and sha256.

    Args:
        local_root: the folder holding ``metadatasets/`` and ``text/`` (e.g. ``../shared/data``).
        manifest: a manifest path or already loaded sources.
        sources: check only these source names.

    Returns:
        One :class:`Problem` per missing or differing file; empty when everything matches. Files marked
        ``required = false`` (the packager's notes) are checked only when present.
    """
    root = Path(local_root)
    loaded = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    wanted = set(sources) if sources is not None else None
    problems: list[Problem] = []
    for source in loaded:
        if wanted is not None and source.name not in wanted:
            continue
        for f in source.files:
            problem = _check(root / source.local_dir / f.path, source, f)
            if problem is not None:
                problems.append(problem)
    return problems


def _check(path: Path, source: Source, f: SourceFile) -> Problem | None:
    if not path.is_file():
        if not f.required:  # packager's documentation: never downloaded, so only checked when present
            return None
        return Problem(source.name, f.path, "missing", f"missing (expected at {path})")
    if _matches(path, f):
        return None
    size = path.stat().st_size
    if size != f.bytes:
        return Problem(source.name, f.path, "size", f"size {size:,} bytes, the manifest pins {f.bytes:,} "
                       "(truncated, corrupted or changed copy)")
    return Problem(source.name, f.path, "sha256", f"sha256 {sha256_file(path)} differs from the pinned {f.sha256} "
                   "(corrupted or changed copy)")


def _matches(path: Path, f: SourceFile) -> bool:
    """The file is the pinned one: same size and sha256, or (an archive rebuilt by :func:`fetch`) same members."""
    if path.stat().st_size == f.bytes and sha256_file(path) == f.sha256:
        return True
    if f.content_sha256 is None:
        return False
    try:
        return content_digest(archive_members(path))[0] == f.content_sha256
    except (tarfile.TarError, OSError, EOFError):
        return False


# -- fetch -------------------------------------------------------------------------------------------------------


def get_source(name: str, manifest: str | Path = DEFAULT_MANIFEST) -> Source:
    """The source called ``name``.

    Raises:
        SourceError: no such source.
    """
    sources = load_manifest(manifest)
    for source in sources:
        if source.name == name:
            return source
    raise SourceError(f"no source {name!r}; known: {', '.join(s.name for s in sources)}")


def fetch(source: Source, dest: str | Path, *, local_root: str | Path | None = None,
          opener: Opener | None = None) -> list[Path]:
    """Put the files of ``source`` under ``dest/<local_dir>/``, checked against the manifest.

    Args:
        source: what to fetch (see :func:`load_manifest`, :func:`get_source`).
        dest: the destination root (the same layout as ``../shared/data``).
        local_root: copy from this local root instead of downloading (every file is verified).
        opener: opens a URL for reading (default ``urllib.request.urlopen`` with a timeout).

    Returns:
        The files now in place (files already there with the right checksum are kept, not fetched again).

    Raises:
        ChecksumError: a copied or downloaded file does not match its checksum (the bad copy is removed).
        ManualFetchRequired: downloading, and some required files can only be made by hand (the others are
            fetched first); the message carries each file's instructions.
        SourceError: a local file is missing or a download failed.
    """
    target = Path(dest) / source.local_dir
    done: list[Path] = []
    manual: list[SourceFile] = []
    archive_cache: dict[str, Path] = {}
    try:
        for f in source.files:
            out = target / f.path
            if out.is_file() and _matches(out, f):
                done.append(out)
                continue
            if local_root is not None:
                _copy_verified(Path(local_root) / source.local_dir / f.path, out, source, f)
            elif f.fetch == "raw":
                _download_verified(source.url_of(f) or "", out, source, f, opener)
            elif f.fetch == "github-archive":
                _rebuild_archive(source, f, out, opener, archive_cache)
            else:
                if f.required:
                    manual.append(f)
                continue
            done.append(out)
    finally:
        for tmp in archive_cache.values():
            tmp.unlink(missing_ok=True)
    if manual:
        steps = "\n".join(f"  - {f.path}: {f.instructions}" for f in manual)
        raise ManualFetchRequired(f"{source.name}: {len(manual)} file(s) cannot be downloaded automatically; "
                                  f"make them by hand, or fetch with local_root= from a copy of the shared data:\n"
                                  f"{steps}")
    return done


def _copy_verified(src: Path, out: Path, source: Source, f: SourceFile) -> None:
    if not src.is_file():
        raise SourceError(f"{source.name}: {f.path}: not in the local copy (expected at {src})")
    with open(src, "rb") as stream:
        _write_verified(stream, out, source, f, origin=str(src))


def _download_verified(url: str, out: Path, source: Source, f: SourceFile, opener: Opener | None) -> None:
    try:
        with _open(url, opener) as stream:
            _write_verified(stream, out, source, f, origin=url)
    except OSError as e:
        raise SourceError(f"{source.name}: {f.path}: download of {url} failed: {e}") from e


def _open(url: str, opener: Opener | None) -> IO[bytes]:
    if opener is not None:
        return opener(url)
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)


def _write_verified(stream: IO[bytes], out: Path, source: Source, f: SourceFile, *, origin: str) -> None:
    """Stream into ``out`` (via a temporary file beside it), hashing; keep it only when the sha256 matches."""
    out.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                h.update(chunk)
                tmp_file.write(chunk)
        if h.hexdigest() != f.sha256:
            raise ChecksumError(f"{source.name}: {f.path}: sha256 of {origin} is {h.hexdigest()}, the manifest pins "
                                f"{f.sha256}: corrupted or changed file, not kept")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _rebuild_archive(source: Source, f: SourceFile, out: Path, opener: Opener | None,
                     cache: dict[str, Path]) -> None:
    """Download the repository archive at the pinned commit (once per source), pack the included files again under
    their shipped names, and check the member digest."""
    url = source.url_of(f) or ""
    if url not in cache:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".repo-archive.", suffix=".tar.gz", dir=out.parent)
        os.close(fd)
        cache[url] = Path(name)
        try:
            with _open(url, opener) as stream, open(name, "wb") as tmp:
                shutil.copyfileobj(stream, tmp, CHUNK)
        except OSError as e:
            raise SourceError(f"{source.name}: {f.path}: download of {url} failed: {e}") from e
    members = list(_select(cache[url], f))
    digest, count = content_digest(members)
    if digest != f.content_sha256:
        raise ChecksumError(f"{source.name}: {f.path}: the {count} files selected from {url} have content digest "
                            f"{digest}, the manifest pins {f.content_sha256} ({f.members} files): the selection "
                            "or the upstream files differ; nothing written")
    _write_tar(members, out)


def _select(repo_archive: Path, f: SourceFile) -> Iterator[tuple[str, bytes]]:
    """Members of a GitHub repository archive (``<repo>-<commit>/<path>``) matching ``f.include``, renamed."""
    with tarfile.open(repo_archive, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            path = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if not any(glob_match(path, pattern) for pattern in f.include):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                yield path.removeprefix(f.strip_prefix), handle.read()


def glob_match(path: str, pattern: str) -> bool:
    """``fnmatch`` per path segment: ``*`` never crosses a ``/`` and the segment counts must agree."""
    parts, pats = PurePosixPath(path).parts, PurePosixPath(pattern).parts
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats, strict=True))


def _write_tar(members: list[tuple[str, bytes]], out: Path) -> None:
    """A deterministic tar (sorted names, zero timestamps and owners), compressed after ``out``'s suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:xz" if out.name.endswith(".xz") else "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        kwargs: dict[str, Any] = {"preset": 6} if mode == "w:xz" else {}
        with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT, **kwargs) as tar:
            for member_name, data in sorted(members):
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "DEFAULT_MANIFEST",
    "PUBLIC_DATA_ENV",
    "ChecksumError",
    "ManualFetchRequired",
    "Problem",
    "Source",
    "SourceError",
    "SourceFile",
    "archive_members",
    "content_digest",
    "fetch",
    "get_source",
    "glob_match",
    "load_manifest",
    "public_data_root",
    "sha256_file",
    "verify",
]

"""Trainer output as a stream of files grouped into run directories: the files of a directory tree or of a tar
archive (read in one pass), and the grouping of that stream into :class:`RunFiles`, one per run directory, plus
:class:`Stray` reports for files that belong to none."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from collector.formats._archive import TarStream

#: Files whose presence makes a directory a run directory.
MARKER_FILES = frozenset({"trainer_state.json", "all_results.json", "train_results.json", "eval_results.json",
                          "test_results.json", "predict_results.json"})
#: Every file name read.
KNOWN_FILES = MARKER_FILES | {"config.json", "adapter_config.json", "head_config.json", "README.md"}
CHECKPOINT = re.compile(r"checkpoint-\d+")
#: ``(directory, file name or None, bytes or None)``: a directory seen, or a file in it.
Entry = tuple[str, str | None, bytes | None]


@dataclass
class RunFiles:
    """The files of one run directory, as read: names relative to the run directory."""

    path: str
    files: dict[str, bytes]


@dataclass
class Stray:
    """Files that belong to no complete run directory, and why."""

    path: str
    names: list[str]
    reason: str
    field: str | None = None
    kind: str = "dir"


def _norm_member(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return "" if name == "." else name


def tar_entries(path: Path, on_member: Callable[[str], None]) -> Iterator[Entry]:
    """The entries of every member of a tar archive, in archive order (one pass); the bytes only of files named in
    :data:`KNOWN_FILES`. ``on_member`` is told each member's name (to say where a damaged archive broke off)."""
    for name, kind, data in TarStream(path).members(want=lambda base: base in KNOWN_FILES):
        on_member(name)
        norm = _norm_member(name)
        if kind == "dir":
            yield norm, None, None
            continue
        directory, _, base = norm.rpartition("/")
        yield directory, (base if data is not None else None), data


def dir_entries(root: Path) -> Iterator[Entry]:
    """The entries of a directory tree, walked top-down in sorted order (each subtree contiguous)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel = "" if rel == "." else rel
        yield rel, None, None
        for name in sorted(filenames):
            if name in KNOWN_FILES:
                yield rel, name, Path(dirpath, name).read_bytes()


def _within(child: str, ancestor: str) -> bool:
    return ancestor == "" or child == ancestor or child.startswith(ancestor + "/")


def _depth(path: str) -> int:
    return path.count("/") + 1 if path else 0


def _is_run_dir(path: str, names: Iterable[str]) -> bool:
    return not CHECKPOINT.fullmatch(path.rpartition("/")[2]) and any(n in MARKER_FILES for n in names)


class Grouper:
    """Groups a stream of files into run directories, assuming each directory's subtree is contiguous in the
    stream (true of ``tar -c DIR`` and of a top-down walk). A directory is complete when the stream moves to a path
    outside it; a complete run directory claims the non-run sub-directories completed before it."""

    def __init__(self) -> None:
        self._open: dict[str, dict[str, bytes]] = {}
        self._closed: dict[str, dict[str, bytes]] = {}
        self._current: str | None = None
        self._done: set[str] = set()

    def feed(self, dirpath: str, name: str | None, data: bytes | None) -> list[RunFiles | Stray]:
        out: list[RunFiles | Stray] = []
        if dirpath != self._current:
            out.extend(self._close(lambda d: not _within(dirpath, d)))
            self._current = dirpath
        if name is None:
            return out
        if self._in_done(dirpath):
            out.append(Stray(dirpath, [name], "archive member arrives after its run directory was already read: "
                                               "the archive is not grouped by directory (re-pack it with tar -c DIR)"))
            return out
        self._open.setdefault(dirpath, {})[name] = data or b""
        return out

    def finish(self) -> list[RunFiles | Stray]:
        """Close everything; what no run directory claimed is stray."""
        out = self._close(lambda d: True)
        for path in sorted(self._closed):
            names = sorted(self._closed[path])
            if path == "" and names == ["README.md"]:
                continue  # documentation at the top of the input
            reason = ("checkpoint directory without the run's final results (eval_results.json / all_results.json / "
                      "trainer_state.json): the run did not finish or its results were not saved"
                      if CHECKPOINT.fullmatch(path.rpartition("/")[2]) else
                      "no run directory here: Trainer files without trainer_state.json / *_results.json beside them")
            out.append(Stray(path, names, reason))
        self._closed.clear()
        return out

    def abort(self) -> list[RunFiles | Stray]:
        """The input broke off: the run directories still open (on the current path) are incomplete; each claims
        the files read under it. Then whatever is left is reported as by :meth:`finish`."""
        out: list[RunFiles | Stray] = []
        roots = sorted((d for d in self._open if _is_run_dir(d, self._open[d])), key=_depth, reverse=True)
        if not roots and self._open:
            roots = [max(self._open, key=_depth)]
        for root in roots:
            pending = {**self._closed, **self._open}
            inside = [p for p in pending if _within(p, root)]
            names = sorted(f"{p[len(root):].lstrip('/')}/{n}".lstrip("/") for p in inside for n in pending[p])
            for p in inside:
                self._open.pop(p, None)
                self._closed.pop(p, None)
            out.append(Stray(root, names, "incomplete run directory: the archive ends while it was being read, "
                                           "so some of its files may be missing", field="outcome", kind="run"))
        self._closed.update(self._open)
        self._open.clear()
        out.extend(self.finish())
        return out

    def _in_done(self, dirpath: str) -> bool:
        if not self._done:
            return False
        parts = dirpath.split("/") if dirpath else []
        return any("/".join(parts[:i]) in self._done for i in range(len(parts), -1, -1))

    def _close(self, should_close: Callable[[str], bool]) -> list[RunFiles | Stray]:
        out: list[RunFiles | Stray] = []
        for path in sorted((d for d in self._open if should_close(d)), key=_depth, reverse=True):
            files = self._open.pop(path)
            if not _is_run_dir(path, files):
                self._closed[path] = files
                continue
            bundle = dict(files)
            prefix = f"{path}/" if path else ""
            for sub in [d for d in self._closed if d.startswith(prefix) and d != path]:
                for name, data in self._closed.pop(sub).items():
                    bundle[f"{sub[len(prefix):]}/{name}"] = data
            self._done.add(path)
            out.append(RunFiles(path, bundle))
        return out


__all__ = ["CHECKPOINT", "KNOWN_FILES", "MARKER_FILES", "Entry", "Grouper", "RunFiles", "Stray", "dir_entries",
           "tar_entries"]

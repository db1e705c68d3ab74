"""Compiled decision trees: a meta-model's LightGBM boosters as native code for serving.

LightGBM walks its trees through a generic interpreter; `lleaves <https://github.com/siboehm/lleaves>`_ turns one
booster's text dump into LLVM machine code with the same answers (to rounding: differences of 1e-15 on the served
models). On 1,000 candidate rows the 300-tree ranking view took 2 ms compiled against 9.5 ms in LightGBM, and a single
row 0.013 ms against 0.07 ms (one thread, this project's 2-core machine).

Rules:

* **Optional.** ``lleaves`` is an extra (``pip install metaml[compiled]``); without it, or when compiling fails,
  everything runs on LightGBM as before (:func:`available` says which).
* **Compiled once, cached by content.** Compiling takes seconds to minutes per booster (about 40 s for 300 trees of
  63 leaves), so each booster's library is kept in a cache directory under a name derived from the booster's text,
  the compiler's versions and the host CPU: any process, version or replica that serves the same trees reuses it.
  Libraries are written to a temporary name and renamed, so concurrent compilers never expose a half-written file;
  a digest written beside each is checked before it is loaded (LLVM aborts the process on a damaged object file).
* **In a child process.** :func:`compile_model` runs the compiler in a separate Python process per booster (the
  compiler's tree walk holds the GIL for its whole run; a server keeps answering meanwhile).
* **Checked before use.** :func:`compiled_model` returns a copy of the meta-model whose estimators predict through
  the libraries, after comparing every compiled booster with LightGBM on probe rows; a library that disagrees is
  refused (:class:`CompileError`). The original model is never changed, and the copy is never saved: artifacts hold
  LightGBM's own models only.
"""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from metaml._artifact import _sha256, _write_atomic
from metaml.errors import MetamlError

#: How far a compiled booster's answer may stray from LightGBM's on the probe rows.
TOLERANCE = 1e-9
#: Rows of the agreement check (drawn around the trees' split thresholds, with missing values).
PROBE_ROWS = 256


class CompileError(MetamlError):
    """A booster could not be compiled, or its library disagrees with LightGBM."""


def available() -> bool:
    """Whether the tree compiler (``lleaves`` and its ``llvmlite``) can be imported."""
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


#: Each booster a meta-model predicts with: (name, the model's estimator holding it, that estimator's attribute).
PLACES: tuple[tuple[str, str, str], ...] = (
    ("ranker", "outcome_", "ranker_"), ("level", "outcome_", "level_"), ("difficulty", "outcome_", "difficulty_"),
    ("cost", "cost_", "model_"), ("failure", "failure_", "model_"))


@dataclass(frozen=True)
class Booster:
    """One booster of a meta-model: where it lives (``model.<owner>.<attribute>``) and its text dump."""

    name: str
    owner: str
    attribute: str
    estimator: Any
    text: str

    @cached_property
    def key(self) -> str:
        """The cache name of its library: the booster's text, the compiler's versions, the host CPU."""
        import lleaves
        import llvmlite
        import llvmlite.binding as llvm

        h = hashlib.sha256(self.text.encode())
        h.update(f"|{lleaves.__version__ if hasattr(lleaves, '__version__') else ''}|{llvmlite.__version__}|"
                 f"{llvm.get_host_cpu_name()}|{llvm.get_process_triple()}".encode())
        return h.hexdigest()[:32]


def boosters(model: Any) -> list[Booster]:
    """The LightGBM boosters a fitted :class:`~metaml._estimators.MetaModel` predicts with (ranking view, points,
    interval widths, cost, failure)."""
    out = []
    for name, owner, attribute in PLACES:
        est = getattr(getattr(model, owner, None), attribute, None)
        if est is not None and not isinstance(est, CompiledEstimator):
            out.append(Booster(name, owner, attribute, est, est.booster_.model_to_string()))
    return out


def _paths(cache: Path, booster: Booster) -> tuple[Path, Path]:
    key = booster.key
    return cache / f"{booster.name}-{key}.txt", cache / f"{booster.name}-{key}.so"


def compile_model(model: Any, cache: Path, *, progress: Callable[[str], None] | None = None,
                  timeout_s: float = 1800.0) -> dict[str, Path]:
    """Compile every booster of ``model`` whose library is not in ``cache`` yet; booster name -> library path.

    Raises:
        CompileError: the compiler is not installed, or failed on a booster.
    """
    if not available():
        raise CompileError("the tree compiler is not installed: pip install 'metaml[compiled]' (lleaves)")
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for booster in boosters(model):
        text_path, lib = _paths(cache, booster)
        if not lib.exists():
            if progress is not None:
                progress(f"compiling the {booster.name} trees ({booster.text.count('Tree=')} trees)")
            if not text_path.exists():
                _write_atomic(text_path, lambda p, text=booster.text: p.write_text(text))
            try:
                done = subprocess.run([sys.executable, "-m", "metaml._compiled", str(text_path), str(lib)],
                                      capture_output=True, text=True, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired as e:
                raise CompileError(f"compiling the {booster.name} trees took over {timeout_s:.0f}s") from e
            if done.returncode != 0 or not lib.exists():
                raise CompileError(f"compiling the {booster.name} trees failed: "
                                   f"{(done.stderr or done.stdout).strip()[-2000:]}")
        out[booster.name] = lib
    return out


class CompiledEstimator:
    """A fitted LightGBM scikit-learn estimator whose ``predict`` (and ``predict_proba`` for a binary classifier)
    runs its compiled trees; every other attribute is the estimator's own."""

    def __init__(self, estimator: Any, compiled: Any) -> None:
        self._estimator = estimator
        self._compiled = compiled

    def predict(self, X: Any) -> np.ndarray:
        return self._compiled.predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=1)

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.predict(X)
        return np.column_stack([1.0 - p, p])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._estimator, name)


def _load(text_path: Path, lib: Path) -> Any:
    """The compiled booster of a library whose bytes match the digest written beside it when it was compiled (LLVM
    aborts the whole process on a damaged object file, so nothing unchecked is handed to it).

    Raises:
        CompileError: the library is missing, does not match its digest, or cannot be loaded.
    """
    import lleaves

    if not lib.exists():
        raise CompileError(f"no compiled library {lib.name} in {lib.parent}")
    recorded = lib.with_suffix(".sha256")
    if not recorded.exists() or recorded.read_text().strip() != _sha256(lib):
        raise CompileError(f"{lib} does not match the digest recorded when it was compiled (damaged or replaced): "
                           "delete it to compile it again")
    try:
        compiled = lleaves.Model(model_file=str(text_path))
        compiled.compile(cache=str(lib))  # an existing library is loaded, not compiled again
    except Exception as e:  # a library LLVM cannot load
        raise CompileError(f"{lib} cannot be loaded: {e}") from e
    return compiled


def _probe(estimator: Any, rng: np.random.Generator) -> np.ndarray:
    """Rows that reach many leaves: each feature drawn around its split thresholds, 10% missing."""
    dump = estimator.booster_.dump_model()
    n = estimator.booster_.num_feature()
    thresholds: list[list[float]] = [[] for _ in range(n)]

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            t = node["threshold"]
            values = [float(x) for x in str(t).split("||")] if isinstance(t, str) else [float(t)]
            thresholds[node["split_feature"]].extend(values)
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"][:50]:
        walk(tree["tree_structure"])
    X = np.empty((PROBE_ROWS, n))
    for j, ts in enumerate(thresholds):
        X[:, j] = rng.choice(np.asarray(ts), PROBE_ROWS) + rng.normal(0, 1e-3, PROBE_ROWS) if ts else rng.normal(
            0, 1, PROBE_ROWS)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def compiled_model(model: Any, cache: Path) -> Any:
    """A copy of ``model`` predicting through the compiled libraries in ``cache`` (:func:`compile_model` first).

    Raises:
        CompileError: a library is missing, cannot be loaded, or disagrees with LightGBM on the probe rows.
    """
    out = copy.copy(model)
    owners = {owner: copy.copy(getattr(model, owner)) for owner in {p[1] for p in PLACES}
              if getattr(model, owner, None) is not None}
    rng = np.random.default_rng(0)
    for booster in boosters(model):
        wrapped = CompiledEstimator(booster.estimator, _load(*_paths(cache, booster)))
        X = _probe(booster.estimator, rng)
        if booster.name == "failure":
            ours, theirs = wrapped.predict_proba(X)[:, 1], booster.estimator.predict_proba(X)[:, 1]
        else:
            ours, theirs = wrapped.predict(X), booster.estimator.booster_.predict(X)
        diff = float(np.max(np.abs(ours - theirs)))
        if not diff <= TOLERANCE:
            raise CompileError(f"the {booster.name} trees' library disagrees with LightGBM by {diff:.3g}")
        setattr(owners[booster.owner], booster.attribute, wrapped)
    for owner, copied in owners.items():
        setattr(out, owner, copied)
    return out


def _compile_one(text_path: Path, lib: Path) -> None:
    """Compile one booster dump into ``lib`` (through a temporary name in the same directory), and write its digest
    beside it first."""
    import lleaves

    def build(tmp: Path) -> None:
        lleaves.Model(model_file=str(text_path)).compile(cache=str(tmp))
        _write_atomic(lib.with_suffix(".sha256"), lambda p: p.write_text(_sha256(tmp)))

    _write_atomic(lib, build)


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m metaml._compiled BOOSTER.txt LIBRARY.so", file=sys.stderr)
        return 2
    _compile_one(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

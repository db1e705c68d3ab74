"""The loaded meta-model: one holder per server process, swapped atomically on promotion.

Rules:

* **Loading.** At startup (a :data:`service.api.main.STATE_LOADERS` entry) the holder gets the model the settings
  name: a local artifact directory (``model_path``) when set, else the version the registry's ``production`` alias
  points at (``tracking_uri``). No model is not an error: the holder stays empty and the prediction endpoints answer
  503 ``model_unavailable`` until a version is promoted.
* **Hot swap.** :meth:`ModelHolder.swap` replaces one reference. A request reads :meth:`ModelHolder.require` once and
  keeps that object to the end, so requests in flight finish on the model they started with while new ones get the
  new model; the new model is loaded (and checked) completely before the swap.
* **Compiled trees.** Once a model is served, :func:`compile_later` compiles its boosters in a child process and
  swaps in the compiled copy (same answers, checked) when it is ready; the cached libraries make a restart instant.
* **Serving path.** :meth:`MetaModel.predict_arrays` itself: the featurizer's one column recipe (numpy, from the raw
  columns to the matrix) and each booster once on the matrix, so what is served is what was evaluated.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from metaml._estimators import MetaModel
from service.api.errors import ModelUnavailable
from service.settings import Settings

log = logging.getLogger("metaml.service")
#: Cores this process may use.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

#: What the prediction endpoints say while no model is loaded.
NO_MODEL_MESSAGE = ("no meta-model promoted: run `metaml train` then `metaml models promote N` (or `metaml "
                    "quickstart`), then restart the server or promote a version with POST /v1/models/{version}/promote")
#: Predictions besides the points and their interval.
OPTIONAL_OUTPUTS: tuple[str, ...] = ("rank_score", "runtime_s", "p_fail")


# -- the holder -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A meta-model ready to serve, and where it came from.

    Attributes:
        model: the fitted meta-model.
        metadata: the artifact's metadata.
        source: ``registry`` or ``path``.
        version: the registered version (None for a local artifact).
        run_id: the MLflow run that logged it (None for a local artifact).
        loaded_at: when this process loaded it (UTC, ISO 8601).
        curve: the artifact's curve estimator (:mod:`metaml._curves`), or None when it holds none.
        compiled: whether ``model`` predicts through compiled trees (:mod:`metaml._compiled`).
    """

    model: MetaModel
    metadata: dict[str, Any]
    source: str
    version: int | None = None
    run_id: str | None = None
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    curve: Any = None
    compiled: bool = False

    def describe(self) -> dict[str, Any]:
        """What the API says about the served model."""
        return {"version": self.version, "run_id": self.run_id, "source": self.source, "loaded_at": self.loaded_at,
                "created_at": self.metadata.get("created_at"), "n_train_runs": self.metadata.get("n_train_runs"),
                "kb_snapshot": self.metadata.get("kb_snapshot"),
                "interval_level": 1.0 - float(self.model.outcome_.alpha), "compiled_trees": self.compiled}


class ModelHolder:
    """The process's served meta-model (or none); see the module docstring for the swap rule."""

    def __init__(self, loaded: LoadedModel | None = None) -> None:
        self._current = loaded
        #: Held while a promotion loads and swaps, so that two promotions in one process do not interleave.
        self.promoting = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def require(self) -> LoadedModel:
        """The served model.

        Raises:
            ModelUnavailable: none is loaded.
        """
        loaded = self._current
        if loaded is None:
            raise ModelUnavailable(NO_MODEL_MESSAGE)
        return loaded

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve ``loaded`` from now on (one reference assignment); returns the model it replaces."""
        previous, self._current = self._current, loaded
        return previous


def tracking_uri(settings: Settings) -> str:
    """The registry the service reads: the settings' ``tracking_uri``, else metaml's default."""
    from metaml._tracking import DEFAULT_TRACKING_URI

    return settings.tracking_uri or DEFAULT_TRACKING_URI


def load_registered(settings: Settings, *, version: int | None = None) -> LoadedModel | None:
    """Load ``version``, or the version the ``production`` alias points at (None when no version carries it; no
    MLflow import when the registry does not exist).

    Raises:
        TrackingError: the registry cannot be read, or has no such version.
        ArtifactError: the version's artifact is unreadable or incompatible.
    """
    from metaml._tracking import PRODUCTION_ALIAS, list_versions, load_version_and_curve

    uri = tracking_uri(settings)
    if version is None:
        versions = list_versions(tracking_uri=uri)
        if not any(PRODUCTION_ALIAS in v.aliases for v in versions):
            return None
    started = time.perf_counter()
    model, meta, curve = load_version_and_curve(tracking_uri=uri, version=version)
    registry = meta.get("registry", {})
    loaded = LoadedModel(model=model, metadata=meta, source="registry", version=registry.get("version"),
                         run_id=registry.get("run_id"), curve=curve)
    log.info("loaded meta-model version %s in %.1fs", loaded.version, time.perf_counter() - started)
    return loaded


def load_local(path: Path, settings: Settings) -> LoadedModel:
    """Load the artifact directory ``path``.

    Raises:
        ArtifactError: missing, unreadable or incompatible.
    """
    from metaml._artifact import load_curve_model, load_model

    model, meta = load_model(path)
    return LoadedModel(model=model, metadata=meta, source="path", curve=load_curve_model(path, meta))


def load_predictor(app: FastAPI, settings: Settings) -> None:
    """State loader: put a :class:`ModelHolder` in ``app.state.extensions["predictor"]``, holding the configured
    model when one can be loaded (a model that cannot be loaded is logged; the holder then starts empty)."""
    from metaml.errors import MetamlError

    holder = ModelHolder()
    app.state.extensions["predictor"] = holder
    try:
        loaded = load_local(settings.model_path, settings) if settings.model_path else load_registered(settings)
    except MetamlError as e:
        log.warning("no meta-model loaded: %s", e)
        return
    if loaded is None:
        log.info("no meta-model is promoted yet; the prediction endpoints answer 503 until one is")
        return
    holder.swap(loaded)
    compile_later(holder, loaded, settings)


def compile_later(holder: ModelHolder, loaded: LoadedModel, settings: Settings) -> threading.Thread | None:
    """Compile ``loaded``'s trees in the background (:mod:`metaml._compiled`) and serve the compiled copy once it is
    checked, unless another model has been swapped in meanwhile. Nothing happens when ``compile_trees`` is off or
    the compiler is not installed; a failure is logged and LightGBM keeps answering."""
    from metaml._compiled import CompileError, available, compile_model, compiled_model

    if not settings.compile_trees or loaded.compiled or not available():
        return None
    cache = settings.compiled_dir

    def work() -> None:
        started = time.perf_counter()
        try:
            compile_model(loaded.model, cache, progress=log.info)
            model = compiled_model(loaded.model, cache)
        except (CompileError, OSError, subprocess.SubprocessError) as e:
            log.warning("serving LightGBM's trees, not compiled ones: %s", e)
            return
        with holder.promoting:
            if holder.current is loaded:
                holder.swap(replace(loaded, model=model, compiled=True))
                log.info("serving compiled trees (ready in %.1fs)", time.perf_counter() - started)

    thread = threading.Thread(target=work, name="metaml-compile-trees", daemon=True)
    thread.start()
    return thread


async def get_holder(request: Request) -> ModelHolder:
    """The app's model holder (an empty one when the state loader did not run, e.g. an app built without lifespan)."""
    extensions = request.app.state.extensions
    holder = extensions.get("predictor")
    if holder is None:
        holder = extensions.setdefault("predictor", ModelHolder())
    return holder


Holder = Annotated[ModelHolder, Depends(get_holder)]

"""Syne Tune: the trials of a Syne Tune tuning experiment (its tuner folder), one record per trial that ran.

Input: a tuner folder (``~/syne-tune/<tuner name>/``, what ``syne_tune.Tuner.run`` writes), or a folder of them.
Read without Syne Tune and never unpickled (``tuner.dill`` is left alone):

* ``metadata.json``: the metric (``metric`` / ``metric_names[0]``) and its mode (``metric_mode``), the scheduler's
  ``time_attr`` and ``max_t`` (multi-fidelity schedulers: ASHA, Hyperband, MOBSTER...);
* ``results.csv.zip`` (or ``results.csv``), one row per report: the reported metrics, ``trial_id``,
  ``config_<param>``, ``st_worker_time`` (seconds since the trial started), ``st_worker_iter``, ``st_decision``
  (the scheduler's answer to that report: ``CONTINUE``, ``STOP``, ``PAUSE``);
* ``<trial id>/config.json`` (the trial's configuration, preferred to the ``config_`` columns), ``std.err`` (a
  failed trial's traceback) and ``end`` (written when the trial's process ended), for the local backend.

Per trial: configuration -> the record through the mapping (:mod:`collector.importers._trials`, shared with
``optuna`` and ``ray_tune``; ``--mapping FILE``); the last report's value of the metric -> ``outcome.score`` (the
mapping's ``metric``, else the experiment's), its other numbers -> ``outcome.metrics``; every report ->
``outcome.curve`` (``step`` = the ``time_attr`` value when it is a whole number, else the report's index from 1;
``epoch`` = the reported ``epoch``); the last ``st_worker_time`` -> ``outcome.runtime_s``.

Status: a Python traceback in ``std.err`` -> ``failed`` (its exception line is the message, its text gives the
kind). Otherwise the budget decides: a full trial reaches ``max_t`` of ``time_attr`` (or the mapping's ``budget``).
A trial the scheduler stopped or paused (last decision ``STOP`` / ``PAUSE``) below it is ``stopped``; one that
reached it is ``ok``. A trial whose last decision was ``CONTINUE`` is ``ok`` when its process ended (``end``) or it
reached the budget, and ``stopped`` when the tuning ended while it ran. A stopped trial has no score; its reports are
its partial curve.

Rejected, with ``<tuner>/<trial id>`` as locator: a trial that reported nothing (stopped before its first report),
a bad ``config.json``, every trial when the results table is unreadable (truncated; the file is named), a finished
trial that never reported the metric, a trial without dataset or model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Item, RawRecord, Rejected
from collector.importers._failures import exception_line
from collector.importers._trials import (
    TrialFormat,
    TrialProblem,
    TrialResult,
    budget_reached,
    finite_number,
    numeric_items,
    stopped_early,
    trial_record,
)

METADATA = "metadata.json"
RESULTS = ("results.csv.zip", "results.csv")
TRACEBACK = "Traceback (most recent call last)"
STOPPING = {"STOP", "PAUSE"}


class SyneTuneExperiment(TrialFormat):
    """Reads a Syne Tune tuner folder (or a folder of them).

    Args:
        mapping: what the trials' parameters mean (:class:`~collector.importers._trials.TrialFormat`).
    """

    name: ClassVar[str] = "syne_tune"
    priority: ClassVar[int] = 150
    description: ClassVar[str] = ("Syne Tune tuner folder: metadata.json, results.csv.zip, <trial id>/config.json "
                                  "and std.err")
    source: ClassVar[str] = "syne_tune"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder with Syne Tune's ``metadata.json`` (it holds ``st_tuner_creation_timestamp``), or with a
        results table and trial folders holding ``config.json``."""
        if not path.is_dir():
            return False
        meta = path / METADATA
        if meta.is_file():
            try:
                head = meta.read_bytes()[:1 << 16]
            except OSError:
                return False
            return b"st_tuner_creation_timestamp" in head
        return any((path / r).is_file() for r in RESULTS) and any((d / "config.json").is_file()
                                                                  for d in path.iterdir() if d.is_dir())

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one item per trial of the tuner folder at ``path``.

        Raises:
            FormatError: ``path`` is not a tuner folder, or holds neither results nor trial folders.
        """
        if not path.is_dir():
            raise FormatError("not a Syne Tune tuner folder", uri=str(path))
        meta = _metadata(path)
        table, problem = _results(path)
        folders = {d.name: d for d in sorted(path.iterdir()) if d.is_dir() and d.name.isdigit()}
        ids = sorted(set(folders) | set(table), key=int)
        if not ids:
            raise FormatError("no trial here (no results table and no trial folder)", uri=str(path))
        for trial_id in ids:
            loc = f"{path.name}/{trial_id}"
            uri = str(folders.get(trial_id, path))
            if problem is not None:
                yield Rejected(loc, problem, uri=str(path))
                continue
            try:
                yield RawRecord(self._record(_Trial(trial_id, folders.get(trial_id), table.get(trial_id, [])),
                                             meta), loc, uri)
            except TrialProblem as e:
                yield Rejected(loc, str(e), field=e.field, uri=uri)

    def _record(self, trial: _Trial, meta: _Metadata) -> dict[str, Any]:
        params = trial.config()
        parts = self.mapping.configuration(params)
        error = trial.error()
        rows = trial.rows
        if error is None and not rows:
            raise TrialProblem("outcome.curve", "reported nothing: it was stopped before its first report")
        attr = self.mapping.budget.attr if self.mapping.budget else meta.time_attr
        full = self.mapping.full_budget(parts, params, meta.max_t)
        reached = budget_reached(rows, attr)
        if error is not None:
            result = TrialResult("failed", error=error)
        else:
            decision = rows[-1].get("st_decision")
            if decision in STOPPING:
                stopped = stopped_early(reached, full) if full is not None else True
            else:
                ended = trial.folder is None or (trial.folder / "end").is_file()
                stopped = not ended and not (reached is not None and full is not None and reached >= full)
            result = TrialResult("stopped" if stopped else "ok")
            if not stopped:
                result.values = {k: v for k, v in numeric_items(rows[-1]) if k != attr}
        result.curve = [(_step(r, attr, i), finite_number(r.get("epoch")), key, value)
                        for i, r in enumerate(rows, start=1) for key, value in numeric_items(r)
                        if key != attr]
        if rows:
            result.runtime_s = finite_number(rows[-1].get("st_worker_time"))
        metric = self.mapping.metric or meta.metric
        return trial_record(parts, result, metric, higher_is_better=meta.higher_is_better)


# -- files ---------------------------------------------------------------------------------------------------------


@dataclass
class _Metadata:
    metric: str | None = None
    higher_is_better: bool | None = None
    time_attr: str | None = None
    max_t: float | None = None


@dataclass
class _Trial:
    trial_id: str
    folder: Path | None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        """The trial's configuration: ``<id>/config.json``, else the ``config_`` columns of its first report."""
        file = self.folder / "config.json" if self.folder else None
        if file is not None and file.is_file():
            try:
                value = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise TrialProblem(None, f"{self.trial_id}/config.json: invalid JSON (truncated or malformed): "
                                         f"{e}") from None
            if not isinstance(value, dict):
                raise TrialProblem(None, f"{self.trial_id}/config.json: expected a JSON object")
            return value
        if self.rows:
            return {k[len("config_"):]: v for k, v in self.rows[0].items() if k.startswith("config_")}
        raise TrialProblem(None, "no configuration: neither config.json nor config_ columns")

    def error(self) -> str | None:
        """The exception of a failed trial (a traceback in ``std.err``), or None."""
        file = self.folder / "std.err" if self.folder else None
        if file is None or not file.is_file():
            return None
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        if TRACEBACK not in text:
            return None
        return exception_line(text[text.rindex(TRACEBACK):]) or "Syne Tune trial failed"


def _metadata(path: Path) -> _Metadata:
    file = path / METADATA
    if not file.is_file():
        return _Metadata()
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"unreadable tuner metadata: {e}", uri=str(file)) from None
    if not isinstance(meta, dict):
        raise FormatError("tuner metadata is not a JSON object", uri=str(file))
    names = meta.get("metric_names") or []
    metric = meta.get("metric") if isinstance(meta.get("metric"), str) else (names[0] if names else None)
    mode = meta.get("metric_mode")
    mode = mode[0] if isinstance(mode, list) and mode else mode
    kwargs = meta.get("scheduler_kwargs") if isinstance(meta.get("scheduler_kwargs"), dict) else {}
    time_attr = kwargs.get("time_attr") if isinstance(kwargs.get("time_attr"), str) else None
    return _Metadata(metric, {"max": True, "min": False}.get(mode) if isinstance(mode, str) else None, time_attr,
                     finite_number(kwargs.get("max_t")) or finite_number(kwargs.get("max_resource_attr_value")))


def _results(path: Path) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Reports by trial id, in order; or the reason the results table cannot be read."""
    file = next((path / r for r in RESULTS if (path / r).is_file()), None)
    if file is None:
        return {}, None
    import pandas as pd

    try:
        frame = pd.read_csv(file)
    except Exception as e:  # pandas raises many types (zipfile.BadZipFile, EOFError, ParserError...) for a bad file
        return {}, f"{file.name}: the results table is unreadable (truncated or malformed): {type(e).__name__}: {e}"
    if "trial_id" not in frame.columns:
        return {}, f"{file.name}: no trial_id column: not a Syne Tune results table"
    out: dict[str, list[dict[str, Any]]] = {}
    for row in frame.to_dict(orient="records"):
        trial_id = row.get("trial_id")
        if finite_number(trial_id) is None:
            continue
        out.setdefault(str(int(trial_id)), []).append({k: _plain(v) for k, v in row.items()})
    return out, None


def _plain(value: Any) -> Any:
    """A pandas cell as a Python value (NaN -> None, numpy scalars -> Python numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _step(row: Mapping[str, Any], attr: str | None, index: int) -> int:
    value = finite_number(row.get(attr)) if attr else None
    return int(value) if value is not None and value == int(value) and value >= 0 else index

"""Ray Tune: the trials of a Ray Tune experiment directory, one record per finished trial.

Input: an experiment directory (``<storage_path>/<name>/``, what ``tune.Tuner(..., run_config=RunConfig(name=...,
storage_path=...))`` writes), or a folder of them (``~/ray_results``: each experiment is found and read on its own).
Only JSON and CSV files are read (never the pickles beside them), and Ray itself is not needed to read them.

* ``experiment_state-*.json`` (the latest, when there are several): each trial's status (``TERMINATED``,
  ``ERROR``, ``PAUSED``, ``RUNNING``, ``PENDING``), its folder, its error file, and the experiment's metric
  (``TuneConfig(metric=...)``). Without it (an experiment copied without its state), every folder holding a
  ``params.json`` is a trial, failed when it holds an ``error.txt``, else finished.
* ``<trial folder>/params.json``: the trial's configuration -> the record through the mapping
  (:mod:`collector.importers._trials`, shared with ``optuna`` and ``syne_tune``; ``--mapping FILE``), nested
  parameters flattened with ``/``.
* ``<trial folder>/result.json`` (one JSON object per ``tune.report``; ``progress.csv`` when it is missing):
  the last result's value of the metric -> ``outcome.score`` (the mapping's ``metric``, else the experiment's);
  its other numbers -> ``outcome.metrics`` (Tune's bookkeeping left out: ``training_iteration``, ``time_*``,
  ``timestamp``, ``pid``...; ``eval_accuracy`` -> ``accuracy``); every result -> ``outcome.curve`` points
  (``step`` = ``training_iteration``, ``epoch`` = the reported ``epoch`` when there is one); ``time_total_s`` ->
  ``outcome.runtime_s``.
* ``<trial folder>/error.txt`` -> the error of a failed trial: its last line (the exception) is the message, and
  its kind is read from the whole text (``oom``, ``timeout``, ``error``).

Status: ``ERROR`` -> ``failed``. ``PAUSED`` -> ``stopped``. ``TERMINATED`` -> ``ok``, unless a scheduler stopped
it early (ASHA, HyperBand, median stopping): Ray marks both alike, so a trial counts as stopped when its last value of
the budget attribute is below a full trial's -- the mapping's ``budget`` (``{attr: epoch, max: 4}``, or ``max``
naming the parameter that holds the trial's own), by default ``training_iteration`` against the most any trial of
the experiment reached. A stopped trial has no score; its results are its partial curve.

Rejected, with ``<experiment>/<trial folder>`` as locator: ``RUNNING``/``PENDING`` trials (not finished), a trial
the metaml skip check ended before it ran (``metaml_action = "skip"``), a bad or truncated ``params.json`` or
``result.json`` (the file and line are named), a finished trial that never reported the metric, a trial without
dataset or model.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
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

STATE_GLOB = "experiment_state-*.json"
DEFAULT_BUDGET = "training_iteration"
MAX_FILE_BYTES = 1 << 28
FINISHED = {"TERMINATED": "ok", "ERROR": "failed", "PAUSED": "stopped"}


class RayTuneExperiment(TrialFormat):
    """Reads a Ray Tune experiment directory (or a folder of them).

    Args:
        mapping: what the trials' parameters mean (:class:`~collector.importers._trials.TrialFormat`).
    """

    name: ClassVar[str] = "ray_tune"
    priority: ClassVar[int] = 140
    description: ClassVar[str] = ("Ray Tune experiment directory: experiment_state-*.json, <trial>/params.json, "
                                  "result.json / progress.csv, error.txt")
    source: ClassVar[str] = "ray_tune"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """An experiment directory: it holds ``experiment_state-*.json``, or trial folders with ``params.json``
        and ``result.json`` / ``progress.csv``."""
        return path.is_dir() and (any(path.glob(STATE_GLOB)) or bool(_trial_dirs(path, limit=1)))

    def estimate(self, path: Path) -> int | None:
        return len(_trial_dirs(path)) if path.is_dir() else None

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one item per trial of the experiment at ``path``.

        Raises:
            FormatError: ``path`` is not an experiment directory, or its experiment state is unreadable.
        """
        if not path.is_dir():
            raise FormatError("not a Ray Tune experiment directory", uri=str(path))
        state = _experiment_state(path)
        trials = state.trials if state else [_Trial(d.name, d.name, None) for d in _trial_dirs(path)]
        if not trials:
            raise FormatError("no trial here (no experiment_state-*.json and no folder with params.json)",
                              uri=str(path))
        metric = self.mapping.metric or (state.metric if state else None)
        loaded = [_load_trial(path, t) for t in trials]
        reached = [x.reached(self._budget_attr()) for x in loaded if isinstance(x, _Loaded)]
        experiment_full = max((r for r in reached if r is not None), default=None)
        for trial, item in zip(trials, loaded, strict=True):
            loc = f"{path.name}/{trial.dirname}"
            uri = str(path / trial.dirname)
            if isinstance(item, Rejected):
                yield item
                continue
            try:
                yield RawRecord(self._record(item, metric, experiment_full), loc, uri)
            except TrialProblem as e:
                yield Rejected(loc, str(e), field=e.field, uri=uri)

    def _budget_attr(self) -> str:
        return self.mapping.budget.attr if self.mapping.budget else DEFAULT_BUDGET

    def _record(self, trial: _Loaded, metric: str | None, experiment_full: float | None) -> dict[str, Any]:
        status = trial.trial.status
        if status is not None and status not in FINISHED:
            raise TrialProblem("outcome.status", f"trial is {status}: not finished, nothing to import yet")
        last = trial.results[-1] if trial.results else {}
        if last.get("metaml_action") == "skip":
            raise TrialProblem("outcome.status", "ended by the metaml skip check before it ran: it never trained")
        parts = self.mapping.configuration(trial.params)
        failed = status == "ERROR" or (status is None and trial.error is not None)
        if failed:
            result = TrialResult("failed", error=trial.error or "Ray Tune trial status ERROR")
        else:
            full = self.mapping.full_budget(parts, trial.params, experiment_full)
            stopped = status == "PAUSED" or stopped_early(trial.reached(self._budget_attr()), full)
            result = TrialResult("stopped" if stopped else "ok")
            if not stopped:
                result.values = dict(numeric_items(last))
        result.curve = [(_int(r.get("training_iteration")), finite_number(r.get("epoch")), key, value)
                        for r in trial.results for key, value in numeric_items(r)]
        result.runtime_s = finite_number(last.get("time_total_s"))
        return trial_record(parts, result, metric)


# -- files ---------------------------------------------------------------------------------------------------------


@dataclass
class _Trial:
    """A trial as the experiment state (or the folder alone) describes it."""

    trial_id: str
    dirname: str
    status: str | None
    error_file: str | None = None


@dataclass
class _State:
    trials: list[_Trial]
    metric: str | None


@dataclass
class _Loaded:
    trial: _Trial
    params: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def reached(self, attr: str) -> float | None:
        return budget_reached(self.results, attr)


def _trial_dirs(path: Path, limit: int | None = None) -> list[Path]:
    out = []
    try:
        children = sorted(path.iterdir())
    except OSError:
        return []
    for child in children:
        if child.is_dir() and (child / "params.json").is_file() and \
                ((child / "result.json").is_file() or (child / "progress.csv").is_file()):
            out.append(child)
            if limit is not None and len(out) >= limit:
                break
    return out


def _experiment_state(path: Path) -> _State | None:
    files = sorted(path.glob(STATE_GLOB))
    if not files:
        return None
    file = files[-1]  # names end in the session's start time: the latest sorts last
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
        trials = []
        for pair in state["trial_data"]:
            info = json.loads(pair[0])
            runtime = json.loads(pair[1]) if len(pair) > 1 else {}
            trials.append(_Trial(str(info["trial_id"]), str(info.get("relative_logdir") or info["trial_id"]),
                                 str(info.get("status")), runtime.get("error_filename")))
        metric = state.get("runner_data", {}).get("_metric")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise FormatError(f"unreadable experiment state ({type(e).__name__}: {e})", uri=str(file)) from None
    return _State(trials, metric if isinstance(metric, str) else None)


def _load_trial(root: Path, trial: _Trial) -> _Loaded | Rejected:
    folder = root / trial.dirname
    loc = f"{root.name}/{trial.dirname}"
    try:
        params = _json_file(folder / "params.json")
        if not isinstance(params, dict):
            raise _FileProblem("params.json", "expected a JSON object")
        results = _results(folder)
    except _FileProblem as e:
        return Rejected(f"{loc}/{e.place}", e.reason, uri=str(folder / e.place.split(" ")[0]))
    error = None
    error_file = folder / (trial.error_file or "error.txt")
    if error_file.is_file():
        error = _error_text(error_file)
    return _Loaded(trial, params, results, error)


class _FileProblem(ValueError):
    def __init__(self, place: str, reason: str) -> None:
        super().__init__(reason)
        self.place = place
        self.reason = reason


def _json_file(file: Path) -> Any:
    name = file.name
    if not file.is_file():
        raise _FileProblem(name, "missing")
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise _FileProblem(name, f"larger than {MAX_FILE_BYTES:,} bytes")
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise _FileProblem(name, f"invalid JSON (truncated or malformed) at line {e.lineno} column {e.colno}: "
                                 f"{e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _FileProblem(name, f"unreadable: {e}") from None


def _results(folder: Path) -> list[dict[str, Any]]:
    """The trial's results, one per report: ``result.json`` (JSON lines), else ``progress.csv``."""
    file = folder / "result.json"
    if file.is_file():
        out = []
        try:
            with open(file, "rb") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    if not line.endswith(b"\n"):
                        raise _FileProblem(f"result.json line {lineno}",
                                           "cut short (no line end): the trial's last result was lost")
                    try:
                        value = json.loads(line)
                    except (ValueError, UnicodeDecodeError) as e:
                        raise _FileProblem(f"result.json line {lineno}", f"invalid JSON: {e}") from None
                    if not isinstance(value, dict):
                        raise _FileProblem(f"result.json line {lineno}", "expected a JSON object")
                    out.append(value)
        except OSError as e:
            raise _FileProblem("result.json", f"unreadable: {e}") from None
        return out
    file = folder / "progress.csv"
    if not file.is_file():
        return []
    try:
        with open(file, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _FileProblem("progress.csv", f"unreadable: {e}") from None
    return [{k: _cell(v) for k, v in row.items() if k is not None} for row in rows]


def _cell(text: str | None) -> Any:
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if re.fullmatch(r"-?\d+", text) else number


def _error_text(file: Path) -> str:
    """A Ray error file's exception line (``RuntimeError: CUDA out of memory...``)."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"error file unreadable: {e}"
    return exception_line(text) or "Ray Tune trial status ERROR"


def _int(value: Any) -> int | None:
    number = finite_number(value)
    return int(number) if number is not None and number >= 0 else None

"""Optuna: the trials of the studies in an Optuna storage, one record per finished trial.

Input: a SQLite file holding Optuna's tables (``metaml ingest study.db``), a journal file written by
``JournalStorage(JournalFileBackend(path))``, or, with ``OptunaStudies(storage=URL)``, any RDB URL
(``sqlite:///x.db``, ``postgresql://...``; ``metaml ingest sqlite:///x.db --format optuna``). ``studies=[...]``
(``--study NAME``) reads only those studies; default every study in the storage. ``mapping=`` (``--mapping FILE``)
says what the parameters mean (:mod:`collector.importers._trials`, one format shared with ``ray_tune`` and
``syne_tune``); without one, parameters are recognized by their names.

Reading uses Optuna itself, and never writes: an RDB is opened with ``skip_table_creation`` after its tables are
checked (a SQLite file read-only), a journal through a read-only backend that checks every line first.

Per trial (``study.get_trials``):

* parameters (``trial.params``) -> the record's configuration through the mapping; the study's and the trial's user
  attributes name the dataset, the model, the method or the task when the parameters do not: ``dataset`` /
  ``metaml_dataset``, ``model``, ``method``, ``primary_metric``, ``task_type``, and ``metaml_config`` (the
  configuration ``metaml_client.optuna`` records on each trial).
* the objective value -> ``outcome.score``. Its metric: ``task.primary_metric`` of the mapping, else the study's
  metric name (``study.set_metric_names``). A multi-objective study takes the objective the mapping's ``metric``
  names (a metric name or an index; default the first); the others go to ``outcome.metrics``. The study's direction
  declares the direction of a metric the vocabulary does not know.
* intermediate values (``trial.report(value, step)``) -> ``outcome.curve`` points of the score's metric at ``step``.
* ``datetime_complete - datetime_start`` -> ``outcome.runtime_s``.
* ``COMPLETE`` -> ``status = "ok"``; ``FAIL`` -> ``"failed"`` with the user attribute ``error`` / ``error_message``
  / ``fail_reason`` as message (kind read from it, or from ``error_kind``), else "Optuna trial state FAIL";
  ``PRUNED`` -> ``"stopped"``: stopped early by its pruner, no score, its intermediate values (the last one and its
  step included) are its partial curve.

Rejected, with ``study '<name>' trial <number>`` as locator: ``RUNNING`` / ``WAITING`` trials (not finished), a
pruned trial that reported nothing (it never trained: e.g. skipped by ``metaml_client.optuna.SkipUnpromising``), a
trial without dataset or model, a study whose metric nobody names. A journal line that is not JSON or is cut short
is rejected with its line number; the trials before it are read, the lines after it are not (Optuna replays a journal
in order, and a lost line would shift every later operation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._base import Item, RawRecord, Rejected, sqlite_tables
from collector.importers._trials import (
    INFERRED,
    TrialFormat,
    TrialMapping,
    TrialProblem,
    TrialResult,
    flatten,
    trial_record,
)
from collector.importers.mlflow_runs import SQLITE_SUFFIXES

OPTUNA_TABLES = frozenset({"studies", "trials", "trial_params", "trial_values", "version_info"})
JOURNAL_SNIFF = 1 << 16
#: User attributes that say something about the run (besides the inferred parameter names).
ATTRS: dict[str, str] = {"metaml_dataset": "dataset.name", "primary_metric": "task.primary_metric",
                         "task_type": "task.type"}
ERROR_ATTRS = ("error", "error_message", "fail_reason")


class OptunaStudies(TrialFormat):
    """Reads the trials of an Optuna storage.

    Args:
        storage: read this storage URL instead of the path given to :meth:`read`.
        studies: read only these studies (by name); default every study.
        mapping: a mapping file, dict or :class:`~collector.importers._trials.TrialMapping`.
    """

    name: ClassVar[str] = "optuna"
    description: ClassVar[str] = ("Optuna storage: SQLite file / RDB URL or journal file (trials: params, values, "
                                  "intermediate values, states)")
    source: ClassVar[str] = "optuna"

    def __init__(self, storage: str | None = None, studies: list[str] | None = None,
                 mapping: str | Path | Mapping[str, Any] | TrialMapping | None = None) -> None:
        super().__init__(mapping)
        self.storage = storage
        self.studies = list(studies) if studies else None

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A SQLite file with Optuna's tables, or an Optuna journal file."""
        return path.is_file() and (is_optuna_sqlite(path) or is_optuna_journal(path))

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one item per trial of the selected studies.

        Raises:
            FormatError: not an Optuna storage, it cannot be opened, or a named study is missing.
        """
        uri = self.storage or str(path)
        journal: _JournalLines | None = None
        if self.storage is None and path.is_file() and is_optuna_journal(path):
            journal = _JournalLines(path)
            storage = _journal_storage(journal, uri)
        else:
            storage = _rdb_storage(self.storage or _sqlite_url(path), uri)
        yield from self._read_storage(storage, uri)
        if journal is not None:
            yield from journal.problems()

    def _read_storage(self, storage: Any, uri: str) -> Iterator[Item]:
        import optuna

        names = _study_names(storage, uri)
        if self.studies:
            missing = [n for n in self.studies if n not in names]
            if missing:
                raise FormatError(f"no study named {', '.join(map(repr, missing))}; available: "
                                  f"{', '.join(map(repr, names)) or 'none'}", uri=uri)
            names = list(self.studies)
        for name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            for trial in study.get_trials(deepcopy=False):
                loc = f"study {name!r} trial {trial.number}"
                try:
                    yield RawRecord(self._record(study, trial), loc, uri)
                except TrialProblem as e:
                    yield Rejected(loc, str(e), field=e.field, uri=uri)

    def _record(self, study: Any, trial: Any) -> dict[str, Any]:
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        state = trial.state
        if state in (TrialState.RUNNING, TrialState.WAITING):
            raise TrialProblem("outcome.status", f"trial is {state.name}: not finished, nothing to import yet")
        if state == TrialState.PRUNED and not trial.intermediate_values:
            skipped = trial.user_attrs.get("metaml_action") == "skip"
            raise TrialProblem("outcome.curve", "pruned before it reported any value: it never trained"
                               + (" (skipped by the metaml skip check)" if skipped else ""))
        defaults = {**_attr_defaults(study.user_attrs), **_attr_defaults(trial.user_attrs)}
        parts = self.mapping.configuration(trial.params, defaults)
        names = study.metric_names or [None] * len(study.directions)
        index = self._objective(names)
        key = names[index] or self.mapping.primary_metric
        if key is None:
            raise TrialProblem("task.primary_metric", "the study does not name its metric: call "
                               "study.set_metric_names([...]) or set task.primary_metric in the mapping")
        result = TrialResult(status={TrialState.COMPLETE: "ok", TrialState.FAIL: "failed"}.get(state, "stopped"))
        if state == TrialState.COMPLETE:
            values = trial.values or []
            result.values = {(names[i] or (key if i == index else f"objective_{i}")): v for i, v in enumerate(values)}
        if state == TrialState.FAIL:
            result.error = next((str(trial.user_attrs[a]) for a in ERROR_ATTRS if trial.user_attrs.get(a)),
                                None) or "Optuna trial state FAIL"
            kind = trial.user_attrs.get("error_kind")
            if isinstance(kind, str) and kind:
                result.error = f"{kind}: {result.error}"
        result.curve = [(step, None, key, value) for step, value in sorted(trial.intermediate_values.items())]
        if trial.datetime_start and trial.datetime_complete:
            result.runtime_s = (trial.datetime_complete - trial.datetime_start).total_seconds()
        return trial_record(parts, result, key,
                            higher_is_better=study.directions[index] == StudyDirection.MAXIMIZE)

    def _objective(self, names: list[str | None]) -> int:
        metric = self.mapping.metric
        if metric is None:
            return 0
        if metric in names:
            return names.index(metric)
        if metric.isdigit() and int(metric) < len(names):
            return int(metric)
        raise TrialProblem("metric", f"the mapping's metric {metric!r} is not an objective of this study "
                           f"({', '.join(str(n) for n in names)})")


def _attr_defaults(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Record fields that user attributes name (lowest precedence)."""
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if name == "metaml_config" and isinstance(value, Mapping):
            out.update(_config_fields(value))
        elif name in ATTRS:
            out[ATTRS[name]] = value["name"] if isinstance(value, Mapping) and "name" in value else value
        elif INFERRED.get(name.lower()) in ("dataset.name", "model.id", "method.name") and isinstance(value, str):
            out[INFERRED[name.lower()]] = value
    return out


def _config_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as ``metaml_client`` records it (``model``, ``method``, ``hparams``) as record fields."""
    out: dict[str, Any] = {}
    model = config.get("model")
    if isinstance(model, Mapping) and model.get("id"):
        out["model.id"] = model["id"]
    method = config.get("method")
    if isinstance(method, Mapping):
        out.update({f"method.{k}": v for k, v in method.items() if k != "kind" and v is not None})
    hparams = config.get("hparams")
    if isinstance(hparams, Mapping):
        out.update({f"hparams.{k}": v for k, v in flatten(hparams).items() if "/" not in k and v is not None})
    return out


# -- RDB -----------------------------------------------------------------------------------------------------------


def is_optuna_sqlite(path: Path) -> bool:
    """A SQLite file (opened read-only) holding Optuna's tables."""
    return path.suffix.lower() in SQLITE_SUFFIXES and (sqlite_tables(path) or set()) >= OPTUNA_TABLES


def _sqlite_url(path: Path) -> str:
    if not path.is_file() or not is_optuna_sqlite(path):
        raise FormatError("not an Optuna storage (expected a SQLite file with Optuna's tables, or a journal file)",
                          uri=str(path))
    return f"sqlite:///{path.resolve()}"


def _rdb_storage(url: str, uri: str) -> Any:
    import sqlalchemy

    if url.startswith("sqlite:///") and not is_optuna_sqlite(Path(url[len("sqlite:///"):])):
        raise FormatError("not an Optuna database (refusing to create Optuna's tables in it)", uri=uri)
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
        raise FormatError(f"cannot open the storage: {_first_line(e)}", uri=uri) from None
    if not tables >= OPTUNA_TABLES:
        raise FormatError("not an Optuna database (refusing to create Optuna's tables in it)", uri=uri)
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(url, skip_table_creation=True)
    except Exception as e:  # Optuna raises RuntimeError / SQLAlchemy errors for incompatible or broken databases
        raise FormatError(f"cannot open the Optuna storage: {_first_line(e)}", uri=uri) from None


def _study_names(storage: Any, uri: str) -> list[str]:
    from optuna.study import get_all_study_names

    try:
        return list(get_all_study_names(storage))
    except Exception as e:  # a broken database surfaces here as a SQLAlchemy error
        raise FormatError(f"cannot list the studies: {_first_line(e)}", uri=uri) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# -- journal -------------------------------------------------------------------------------------------------------


def is_optuna_journal(path: Path) -> bool:
    """A text file whose first line is an Optuna journal operation (``op_code`` and ``worker_id``)."""
    if path.suffix.lower() in SQLITE_SUFFIXES or path.suffix.lower() in (".gz", ".parquet", ".csv"):
        return False
    try:
        with open(path, "rb") as f:
            line = f.readline(JOURNAL_SNIFF)
        op = json.loads(line)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(op, dict) and "op_code" in op and "worker_id" in op


def _journal_storage(journal: _JournalLines, uri: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import BaseJournalBackend

    class ReadOnlyJournal(BaseJournalBackend):
        """The checked operations of a journal file; appending is refused."""

        def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            yield from journal.ops[log_number_from:]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            raise FormatError("the journal is read-only while it is ingested", uri=uri)

    try:
        return JournalStorage(ReadOnlyJournal())
    except Exception as e:  # an operation Optuna cannot replay
        raise FormatError(f"cannot replay the journal: {_first_line(e)}", uri=uri) from None


class _JournalLines:
    """The operations of a journal file up to the first line that is not a whole JSON object; that line, if any,
    is kept as a problem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ops: list[dict[str, Any]] = []
        self.bad: tuple[int, str] | None = None
        self.lines = 0
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                self.lines = lineno
                if self.bad is not None:
                    continue
                if not line.endswith(b"\n"):
                    self.bad = (lineno, "cut short (no line end): the operation it recorded was lost")
                    continue
                try:
                    op = json.loads(line)
                except (ValueError, UnicodeDecodeError) as e:
                    self.bad = (lineno, f"not a JSON object ({e})")
                    continue
                if not isinstance(op, dict) or "op_code" not in op:
                    self.bad = (lineno, "not an Optuna journal operation (no op_code)")
                    continue
                self.ops.append(op)

    def problems(self) -> Iterator[Rejected]:
        """The bad line, if any, as a rejected item naming how many lines after it were not read."""
        if self.bad is None:
            return
        lineno, reason = self.bad
        after = self.lines - lineno
        tail = f"; the {after} line(s) after it were not read" if after else ""
        yield Rejected(f"{self.path.name} line {lineno}", f"journal line {reason}{tail}", uri=str(self.path))

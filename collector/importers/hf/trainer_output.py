"""The ``hf_trainer`` format: Hugging Face ``Trainer`` output directories, or a tar archive of them (TaskWeb's
``runs.tar.gz``) -> run records.

Input: a directory tree holding Trainer run directories, or a tar archive of one, read in place and in ONE streaming
pass (:class:`~collector.formats.TarStream`; only the files named in :data:`KNOWN_FILES` are held in memory).
Members are grouped by run directory as they stream by, and a run becomes a record as soon as the stream leaves its
directory (each directory's members must be contiguous, as ``tar -c DIR`` writes them).

A run directory directly holds ``trainer_state.json`` or a ``*_results.json`` (:data:`MARKER_FILES`), and is not a
``checkpoint-<N>`` directory; files in its sub-directories belong to it (checkpoints, adapter folders). A TaskWeb path
(``<TARGET>/<SOURCE>/<RUN>``) is mapped by :mod:`collector.importers.hf.taskweb` (source ``taskweb``); any other run
generically (source ``hf_trainer``): the dataset from the card (model-index, "on the X dataset", front matter), the
model from the adapter config, the card or ``config.json``, hyperparameters from the card over the directory name
over ``trainer_state.json``. Both use :mod:`collector.importers.hf.run_mapping`. The metric scale is decided per run,
TaskWeb runs whose values cannot tell waiting for their group (target, model, method).

Rejected (never dropped silently): a run without evaluation results, a JSON file that is not JSON, a missing primary
metric, an unknown TaskWeb model or method, (generic) no dataset, metric or base model, Trainer files outside any run
directory, a member arriving after its run directory was read. A truncated or corrupt archive: every run completed
before the cut is yielded, the run being read is rejected as incomplete, waiting runs are flushed, and a
``FormatError`` ends the input. Field mapping, counts and decisions: ``docs/sources/hf_trainer.md``.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from collector.errors import FormatError
from collector.formats._archive import (
    ARCHIVE_ERRORS,
    is_archive_name,
    peek_members,
    strip_archive_suffix,
)
from collector.formats._base import Format, Item, RawRecord, RecordProblem, Rejected
from collector.importers.hf._run_files import (
    CHECKPOINT,
    KNOWN_FILES,
    MARKER_FILES,
    Entry,
    Grouper,
    RunFiles,
    Stray,
    dir_entries,
    tar_entries,
)
from collector.importers.hf.card import TrainerCard, metric_name, parse_trainer_card
from collector.importers.hf.run_mapping import (
    EVAL_NON_METRICS,
    Draft,
    TrainerReport,
    adapter_method,
    apply_train_results,
    eval_metrics,
    finalize,
    mark_failure,
    merge_hparams,
    model_id,
    own_percent,
    primary_metric,
    software,
    state_curve,
    state_extra,
    state_hparams,
    task_type,
    trusted_card,
)
from collector.importers.hf.taskweb import build_taskweb, taskweb_run
from collector.schema._vocab import canonical_dataset, canonical_method, metric_info

_DETECT_MEMBERS = 200
_NAME_TOKENS = (
    ("learning_rate", re.compile(r"lr(?P<m>\d+(?:\.\d+)?)e-?(?P<e>\d+)|lr(?P<f>0?\.\d+)")),
    ("epochs", re.compile(r"(?:e|ep|epoch|epochs)(?P<n>\d+)")),
    ("batch_size", re.compile(r"(?:b|bs|batch)(?P<n>\d+)")),
    ("seed", re.compile(r"(?:s|seed)(?P<n>\d+)")),
)


@dataclass
class _Context:
    uri: str
    input_name: str
    license: str | None
    last_member: str | None = None

    def note_member(self, name: str) -> None:
        self.last_member = name


class TrainerOutput(Format):
    """Hugging Face Trainer output directories, or an archive of them (TaskWeb's runs.tar.gz)."""

    name: ClassVar[str] = "hf_trainer"
    priority: ClassVar[int] = 30
    description: ClassVar[str] = "Hugging Face Trainer output directories (trainer_state.json, *_results.json, " \
                                 "README card) or a tar archive of them, e.g. TaskWeb's runs.tar.gz"
    source: ClassVar[str] = "hf_trainer"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a run directory, a folder of run directories (no other data files at its top), or an archive
        whose first members include Trainer result files."""
        try:
            if path.is_dir():
                return _detect_dir(path, depth=4)
        except OSError:
            return False
        if path.is_file() and is_archive_name(path.name):
            return any(kind != "dir" and name.rpartition("/")[2] in MARKER_FILES
                       for name, kind in peek_members(path, _DETECT_MEMBERS))
        return False

    def read(self, path: Path) -> Iterator[Item]:
        """Yield one record (or rejection) per run directory under ``path``.

        Raises:
            FormatError: ``path`` is neither a directory nor a readable archive, or the archive is truncated or
                corrupt (after yielding everything read before the damage).
        """
        if not path.exists():
            raise FormatError("no such file or directory", uri=str(path))
        ctx = _Context(uri=str(path), input_name=path.name if path.is_dir() else strip_archive_suffix(path.name),
                       license=_origin_license(path))
        if path.is_dir():
            yield from self._read_entries(dir_entries(path), ctx)
            return
        if not is_archive_name(path.name) and not tarfile.is_tarfile(path):
            raise FormatError("expected a Trainer output directory or a tar archive of one", uri=str(path))
        yield from self._read_entries(tar_entries(path, ctx.note_member), ctx)

    def _read_entries(self, entries: Iterable[Entry], ctx: _Context) -> Iterator[Item]:
        grouper = Grouper()
        scales = _ScaleResolver(ctx.uri)
        try:
            for dirpath, name, data in entries:
                for unit in grouper.feed(dirpath, name, data):
                    yield from self._handle(unit, ctx, scales)
        except ARCHIVE_ERRORS as e:
            for unit in grouper.abort():
                yield from self._handle(unit, ctx, scales)
            yield from scales.flush()
            where = f" after member {ctx.last_member!r}" if ctx.last_member else ""
            raise FormatError(
                f"archive is truncated or corrupt{where} ({type(e).__name__}: {e}); the runs read before the damage "
                "were kept, the run being read was rejected as incomplete, nothing after it could be read",
                uri=ctx.uri,
            ) from e
        for unit in grouper.finish():
            yield from self._handle(unit, ctx, scales)
        yield from scales.flush()

    def _handle(self, unit: RunFiles | Stray, ctx: _Context, scales: _ScaleResolver) -> Iterator[Item]:
        if isinstance(unit, Stray):
            files = ", ".join(unit.names) or "none"
            yield Rejected(locator=f"{unit.kind} {unit.path or ctx.input_name}",
                           reason=f"{unit.reason} (files: {files})", field=unit.field, uri=ctx.uri)
            return
        built = build_run(unit, ctx)
        if isinstance(built, Rejected):
            yield built
            return
        yield from scales.submit(built)


def _detect_dir(path: Path, depth: int) -> bool:
    names = {p.name for p in path.iterdir()}
    if names & MARKER_FILES and not CHECKPOINT.fullmatch(path.name):
        return True
    if depth <= 0:
        return False
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if any(p.is_file() and p.name.lower() not in {"readme.md", "origin.txt", "license", "license.txt"}
           for p in children):
        return False
    return any(_detect_dir(p, depth - 1) for p in [c for c in children if c.is_dir()][:3])


def _origin_license(path: Path) -> str | None:
    """The ``license:`` line of the ORIGIN.txt beside (or inside) ``path``."""
    for origin in (path / "ORIGIN.txt", path.parent / "ORIGIN.txt") if path.is_dir() else (
            path.parent / "ORIGIN.txt",):
        if origin.is_file():
            match = re.search(r"^license:\s*(.+?)\s*$", origin.read_text(encoding="utf-8", errors="replace"), re.M)
            return match.group(1) if match else None
    return None


class _ScaleResolver:
    """Decides percent vs fraction per run, with group evidence (TaskWeb) for runs whose values cannot tell: a
    group is percent as soon as one of its runs shows percent values; its other runs wait until then or until the
    input ends (an undecided group is a fraction)."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._percent_groups: set[tuple[str, ...]] = set()
        self._waiting: dict[tuple[str, ...], list[Draft]] = {}

    def submit(self, draft: Draft) -> list[RawRecord]:
        uri = self._uri
        if draft.group is None:
            return [finalize(draft, draft.own_percent, uri)]
        if draft.own_percent:
            self._percent_groups.add(draft.group)
            held = self._waiting.pop(draft.group, [])
            return [finalize(d, True, uri) for d in held] + [finalize(draft, True, uri)]
        if draft.group in self._percent_groups:
            return [finalize(draft, True, uri)]
        self._waiting.setdefault(draft.group, []).append(draft)
        return []

    def flush(self) -> Iterator[RawRecord]:
        """Runs of groups that never showed percent values: fractions."""
        waiting, self._waiting = self._waiting, {}
        for drafts in waiting.values():
            for draft in drafts:
                yield finalize(draft, False, self._uri)


# ------------------------------------------------------------------------------------------------ building a run


def build_run(run: RunFiles, ctx: _Context) -> Draft | Rejected:
    """Map one run directory to a record draft, or say why it cannot be one."""
    locator = f"run {run.path or ctx.input_name}"
    try:
        report = read_report(run)
        taskweb = taskweb_run(run.path)
        if taskweb is not None:
            return build_taskweb(report, taskweb, locator, ctx.license)
        return _build_generic(run, report, locator, ctx)
    except RecordProblem as e:
        return Rejected(locator=locator, reason=str(e), field=e.field, uri=ctx.uri)


def _load(run: RunFiles, name: str) -> dict[str, Any] | None:
    raw = run.files.get(name)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordProblem(None, f"{name} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise RecordProblem(None, f"{name} holds a {type(data).__name__}, expected a JSON object")
    return data


def read_report(run: RunFiles) -> TrainerReport:
    """Read the files of a run directory: the evaluation from ``eval_results.json``, else ``all_results.json``'s
    ``eval_*`` keys, else ``test_results.json`` / ``predict_results.json``; the state from ``trainer_state.json`` or
    the last checkpoint's.

    Raises:
        RecordProblem: a file is not a JSON object, or there are no evaluation results.
    """
    p = TrainerReport()
    all_results = _load(run, "all_results.json") or {}
    eval_results = _load(run, "eval_results.json")
    if eval_results is not None and _has_prefixed(eval_results, "eval_"):
        p.eval, p.eval_file = eval_results, "eval_results.json"
    elif _has_prefixed(all_results, "eval_"):
        p.eval, p.eval_file = {k: v for k, v in all_results.items() if k.startswith("eval_")}, "all_results.json"
    else:
        for name, prefix in (("test_results.json", "test_"), ("predict_results.json", "predict_")):
            test = _load(run, name)
            if test is not None and _has_prefixed(test, prefix):
                p.eval = {"eval_" + k[len(prefix):]: v for k, v in test.items() if k.startswith(prefix)}
                p.eval_file = name
                break
    p.train = _load(run, "train_results.json") or {k: v for k, v in all_results.items() if k.startswith("train_")}
    p.state = _load(run, "trainer_state.json") or _last_checkpoint_state(run)
    p.config = _load(run, "config.json")
    p.adapter = _find_nested(run, "adapter_config.json")
    p.head = _find_nested(run, "head_config.json")
    readme = run.files.get("README.md")
    if readme is not None:
        p.card = parse_trainer_card(readme.decode("utf-8", errors="replace"))
    if not p.eval:
        raise RecordProblem("outcome.score", "no evaluation results: neither eval_results.json nor all_results.json "
                            "(nor test/predict_results.json) holds an eval_* metric "
                            f"(files: {', '.join(sorted(run.files))})")
    return p


def _has_prefixed(data: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) and not EVAL_NON_METRICS.search(k[len(prefix):]) for k in data)


def _last_checkpoint_state(run: RunFiles) -> dict[str, Any] | None:
    steps = sorted((int(m.group(1)), name) for name in run.files
                   if (m := re.fullmatch(r"checkpoint-(\d+)/trainer_state\.json", name)))
    return _load(run, steps[-1][1]) if steps else None


def _find_nested(run: RunFiles, base: str) -> dict[str, Any] | None:
    if base in run.files:
        return _load(run, base)
    nested = sorted(n for n in run.files if n.endswith("/" + base) and not CHECKPOINT.match(n.split("/")[0]))
    return _load(run, nested[0]) if nested else None


def _build_generic(run: RunFiles, report: TrainerReport, locator: str, ctx: _Context) -> Draft:
    metrics = eval_metrics(report.eval)
    card = trusted_card(report, metrics)
    dataset_name, split = _generic_dataset(card)
    if dataset_name is None:
        raise RecordProblem("dataset.name", "no dataset name: the README.md card names none (the Trainer writes 'an "
                            "unknown dataset' unless given dataset_name) and the results JSONs never do"
                            + ("" if report.card is not None else "; this run has no README.md"))
    primary = primary_metric(metrics, _card_metrics(card))
    if primary is None:
        raise RecordProblem("task.primary_metric", f"no evaluation metric in {report.eval_file}: it reports only "
                            f"{', '.join(sorted(k for k in report.eval)) or 'nothing'}")
    candidates = [(report.adapter or {}).get("base_model_name_or_path")]
    if card is not None:
        candidates += [card.front_matter.get("base_model"), card.base_model]
    model, model_path = model_id([*candidates, (report.config or {}).get("_name_or_path")])
    if model is None:
        raise RecordProblem("model.id", "no base model: no config.json _name_or_path, no adapter_config "
                            "base_model_name_or_path and no 'fine-tuned version of' line in a README.md card")
    extra = metrics.extra
    if model_path:
        extra["model_path"] = model_path
    outcome: dict[str, Any] = {"status": "ok", "split": split or ("test" if report.eval_file in (
        "test_results.json", "predict_results.json") else "validation")}
    dataset: dict[str, Any] = {"name": dataset_name}
    apply_train_results(report.train, report.state, metrics, outcome, dataset)
    extra.update(state_extra(report.state))
    mark_failure(metrics, primary, outcome)

    run_name = run.path.rpartition("/")[2] or ctx.input_name
    layers = [("state", state_hparams(report.state)), ("dirname", _name_hparams(run_name)),
              ("extra", {"extra": extra})]
    if card is not None:
        layers.append(("card", card.record_hparams()))
    family = (report.config or {}).get("model_type") or (report.adapter or {}).get("model_type")
    architectures = (report.config or {}).get("architectures") or []
    task: dict[str, Any] = {"type": task_type(architectures if isinstance(architectures, list) else [],
                                              card.model_index_task_type() if card is not None else None),
                            "primary_metric": primary}
    if metric_info(primary) is None:
        task["metric_scale"] = "unbounded"
        task["higher_is_better"] = True
    license = (card.front_matter.get("license") if card is not None else None) or ctx.license
    data: dict[str, Any] = {
        "task": task, "dataset": dataset,
        "model": {"id": model, **({"family": family} if isinstance(family, str) and family else {})},
        "method": adapter_method(report.adapter, report.head) or {"name": _name_method(run_name)},
        "hparams": merge_hparams(layers), "outcome": outcome,
        "provenance": {"license": ", ".join(str(x) for x in license) if isinstance(license, list) else license},
    }
    versions = software(report, card)
    if versions:
        data["hardware"] = {"software": versions}
    curve = state_curve(report.state)
    if card is not None and not any(p["metric"] != "train_loss" for p in curve):
        curve = card.curve() or curve
    return Draft(data=data, locator=locator, metrics=metrics.metrics, primary=primary, curve=curve,
                 own_percent=own_percent(metrics.metrics))


def _generic_dataset(card: TrainerCard | None) -> tuple[str | None, str | None]:
    if card is None:
        return None, None
    dtype, config, split = card.model_index_dataset()
    if dtype:
        plain = ("default", "none", "plain_text", dtype.lower())
        name = f"{dtype}/{config}" if config and config.lower() not in plain else dtype
        return canonical_dataset(name), split
    if card.dataset_phrase:
        return canonical_dataset(card.dataset_phrase), None
    datasets = card.front_matter.get("datasets")
    if isinstance(datasets, list) and datasets and isinstance(datasets[0], str):
        return canonical_dataset(datasets[0]), None
    if isinstance(datasets, str) and datasets.strip():
        return canonical_dataset(datasets), None
    return None, None


def _card_metrics(card: TrainerCard | None) -> list[str]:
    """The metrics a card names, first the model-index's, then the front matter's ``metrics``."""
    if card is None:
        return []
    named = card.model_index_metrics()
    front = card.front_matter.get("metrics")
    if isinstance(front, list):
        named += [n for n in (metric_name(str(m)) for m in front) if n]
    return named


def _name_hparams(name: str) -> dict[str, Any]:
    """Hyperparameters spelled in a run-directory name (``...-lr2e-5-bs16-e3-s42``), when nothing else says."""
    hp: dict[str, Any] = {}
    for token in re.split(r"[-_]", name.replace("e-", "e~")):
        token = token.replace("e~", "e-").lower()
        for key, pattern in _NAME_TOKENS:
            match = pattern.fullmatch(token)
            if match is None or key in hp:
                continue
            if key == "learning_rate":
                hp[key] = float(match.group("f") or f"{match.group('m')}e-{match.group('e')}")
            else:
                hp[key] = int(match.group("n"))
            break
    return {k: v for k, v in hp.items() if v}


def _name_method(name: str) -> str:
    for token in re.split(r"[-_]", name.lower()):
        method = canonical_method(token)
        if method is not None and method != "full":
            return method
    return "full"


__all__ = ["KNOWN_FILES", "MARKER_FILES", "RunFiles", "TrainerOutput", "build_run", "read_report"]

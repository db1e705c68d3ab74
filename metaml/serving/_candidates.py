"""Candidate configurations for a new task, written as the runs-table rows the meta-model scores.

A caller describes the task once (dataset name and/or meta-features, task type, metric, regime) and each candidate
configuration in the record's own nested shape (``model``, ``method``, ``hparams``). Their parts are validated with
the record's own models (so method names, model ids and metric names are normalized exactly as on ingest), model
features are filled from the registry where missing, and every candidate becomes one runs-table row.

* :func:`task_row`: the task part every row shares.
* :func:`columnar_candidates`: the same from candidates sent as one array per field (``model.id``,
  ``hparams.learning_rate``...), each distinct value validated once; :func:`object_candidates` the same from
  candidate objects as decoded from JSON.
* :func:`candidate_columns`: one row per candidate, as columns. The model and method parts go through the record's
  models once per distinct (task, model, method) (remembered in :data:`PAIR_ROWS`), every candidate's hyperparameters
  fill the ``hparams_*`` columns; :func:`candidate_rows` is the same as a DataFrame from plain dicts.
* :func:`enumerate_space`: the candidates of a search space (a grid of the listed values, seeded draws of ranges).

Invalid parts raise :class:`~metaml.errors.InvalidCandidates` with the place of each error.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple, Protocol, get_args

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from collector.features import ModelRegistry
from collector.schema import Dataset, DatasetMeta, Hyperparameters, Method, Model, Task
from metaml._data import LEARN_COLUMNS, frame_of
from metaml._features import PairCodes
from metaml._lru import BoundedCache
from metaml.errors import InvalidCandidates

#: The hyperparameters the runs table (and so the model) holds: ``hparams_<name>`` columns.
HPARAM_COLUMNS: tuple[str, ...] = tuple(c[len("hparams_"):] for c in LEARN_COLUMNS if c.startswith("hparams_"))
_INT_HPARAMS = {name for name, prop in Hyperparameters.model_json_schema()["properties"].items()
                if "integer" in {t.get("type") for t in prop.get("anyOf", [prop])}}

Columns = dict[str, np.ndarray]


@cache
def model_registry() -> ModelRegistry:
    """The shipped model registry (loaded once per process)."""
    return ModelRegistry.load_default()


def _invalid(loc: tuple[Any, ...], error: ValidationError | ValueError) -> InvalidCandidates:
    if isinstance(error, ValidationError):
        return InvalidCandidates([{"loc": (*loc, *e["loc"]), "msg": e["msg"], "type": e["type"]}
                                  for e in error.errors()])
    return InvalidCandidates([{"loc": loc, "msg": str(error), "type": "value_error"}])


def _flatten(prefix: str, model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in model.model_dump(mode="json", exclude_none=True).items():
        if isinstance(value, dict) and key == "meta":
            out.update({f"{prefix}_{key}_{k}": v for k, v in value.items()})
        else:
            out[f"{prefix}_{key}"] = value
    return out


def task_row(task: Mapping[str, Any], dataset: Mapping[str, Any], *, source: str = "upload",
             dataset_meta: DatasetMeta | None = None) -> dict[str, Any]:
    """The task part of every candidate row: task, dataset and its meta-features, provenance source.

    Args:
        task: ``Task`` fields (``primary_metric`` at least, e.g. ``{"primary_metric": "accuracy"}``).
        dataset: ``Dataset`` fields (``name`` at least); ``meta`` may carry meta-features.
        source: what the rows are compared with (``upload`` for a new task).
        dataset_meta: meta-features to use where ``dataset`` carries none (e.g. from the knowledge base).
    """
    t = Task.model_validate(dict(task))
    d = Dataset.model_validate(dict(dataset))
    if dataset_meta is not None:
        merged = {**dataset_meta.model_dump(exclude_none=True), **d.meta.model_dump(exclude_none=True)}
        d.meta = DatasetMeta.model_validate(merged)
    return {**_flatten("task", t), **_flatten("dataset", d), "provenance_source": source}


class PairRows:
    """The runs-table row (without hyperparameters) of one (task, model, method), remembered for the last ``size``
    of them: the model and method parts are validated, normalized and completed from the registry once, not once per
    candidate."""

    def __init__(self, size: int = 4096) -> None:
        self._cache: BoundedCache[str, dict[str, Any]] = BoundedCache(size)

    def rows(self, task: Mapping[str, Any], pairs: Sequence[tuple[Model, Method]], *,
             loc: str = "candidates") -> tuple[list[str], list[dict[str, Any]]]:
        """One key and one row per pair (equal keys, equal rows: the key is the task, model and method as sent).

        Raises:
            InvalidCandidates: a registry-completed model fails validation (at ``loc``).
        """
        prefix = json.dumps(task, sort_keys=True, default=str)
        keys = [prefix + m.model_dump_json(exclude_none=True) + me.model_dump_json(exclude_none=True)
                for m, me in pairs]
        found = {k: hit for k in keys if (hit := self._cache.get(k)) is not None}
        missing = [i for i, k in enumerate(keys) if k not in found]
        registry = model_registry()
        for i in missing:
            model, method = pairs[i]
            known = registry.lookup(model.id)
            filled = {k: v for k, v in known.items() if k in Model.model_fields and getattr(model, k) is None}
            try:
                model = Model.model_validate({**model.model_dump(exclude_none=True), **filled})
            except ValidationError as e:
                raise _invalid((loc,), e) from None
            row = {**task, **_flatten("model", model), **_flatten("method", method)}
            if isinstance(row.get("method_config"), dict):
                row["method_config"] = json.dumps(row["method_config"], sort_keys=True) if row["method_config"] \
                    else None
            found[keys[i]] = row
            self._cache.put(keys[i], row)
        return keys, [found[k] for k in keys]


PAIR_ROWS = PairRows()


class CandidateColumns(NamedTuple):
    """Runs-table columns of candidates (:data:`~metaml._data.LEARN_COLUMNS`, object arrays) and each candidate's
    (model, method) pair with the pair's key in :data:`PAIR_ROWS`: candidates of one pair hold the same values in
    every column but the hyperparameters (what ``RunFeaturizer.transform_array(..., pairs=...)`` computes once per
    pair, and remembers by its key)."""

    columns: Columns
    pairs: PairCodes


def assemble(task: Mapping[str, Any], pairs: Sequence[tuple[Model, Method]], pair_index: np.ndarray,
             hparams: Mapping[str, Sequence[Any]], *, loc: str = "candidates") -> CandidateColumns:
    """Runs-table columns of candidates given as distinct (model, method) pairs, the pair of each candidate, and
    hyperparameter columns (validated values, None unset)."""
    keys, rows = PAIR_ROWS.rows(task, pairs, loc=loc)
    n = len(pair_index)
    out: Columns = {}
    for col in LEARN_COLUMNS:
        if col.startswith("hparams_"):
            values = hparams.get(col[len("hparams_"):])
            column = np.empty(n, dtype=object)
            if values is not None:
                column[:] = list(values)
        else:
            distinct = np.empty(len(rows), dtype=object)
            distinct[:] = [r.get(col) for r in rows]
            column = distinct[pair_index]
        out[col] = column
    return CandidateColumns(out, PairCodes(np.asarray(pair_index, dtype=np.int64), keys))


class CandidateParts(Protocol):
    """A candidate as validated parts (the service's request model is one)."""

    model: Model
    method: Method
    hparams: Hyperparameters


def candidate_columns(task: Mapping[str, Any], candidates: Sequence[CandidateParts], *,
                      loc: str = "candidates") -> CandidateColumns:
    """Runs-table columns of validated candidates."""
    keys: dict[Any, int] = {}
    pairs: list[tuple[Model, Method]] = []
    index = np.empty(len(candidates), dtype=np.int64)
    for i, c in enumerate(candidates):
        key = (_part_key(c.model), _part_key(c.method))
        j = keys.get(key)
        if j is None:
            j = keys[key] = len(pairs)
            pairs.append((c.model, c.method))
        index[i] = j
    hparams = [c.hparams for c in candidates]
    hp = {name: list(map(operator.attrgetter(name), hparams)) for name in HPARAM_COLUMNS}
    return assemble(task, pairs, index, hp, loc=loc)


def _part_key(part: Model | Method) -> Any:
    """A validated part's values as a hashable key (its JSON where a value is a list or an object)."""
    values = tuple(part.__dict__.values())
    try:
        hash(values)
    except TypeError:
        return part.model_dump_json(exclude_none=True)
    return values


#: The parts a columnar candidate field names (``<part>.<field>``) and the record model of each.
COLUMN_PARTS: dict[str, type] = {"model": Model, "method": Method, "hparams": Hyperparameters}


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def columnar_candidates(task: Mapping[str, Any], columns: Mapping[str, Sequence[Any]], *,
                        loc: str = "columns") -> CandidateColumns:
    """Runs-table columns of candidates given as one array per field: ``model.id`` (required), other ``model.*``
    and ``method.*`` fields (``method.name`` missing or null: full fine-tuning) and ``hparams.*``, all of one length.

    The same validation as :func:`candidate_columns`, done once per distinct value: each distinct (model, method)
    pair through the record's models, each distinct value of a hyperparameter column through ``Hyperparameters``.

    Raises:
        InvalidCandidates: an unknown field, arrays of different lengths, or an invalid value (at
            ``(loc, field, i)``, ``i`` the first candidate holding it).
    """
    fields: dict[str, dict[str, Sequence[Any]]] = {part: {} for part in COLUMN_PARTS}
    lengths = {len(values) for values in columns.values()}
    for name, values in columns.items():
        part, _, field = name.partition(".")
        if part not in COLUMN_PARTS or field not in COLUMN_PARTS[part].model_fields:
            raise InvalidCandidates([{"loc": (loc, name), "type": "value_error",
                                      "msg": "not a candidate field: use model.<field>, method.<field> or "
                                             "hparams.<field> of the run record (model.id, method.name, "
                                             "hparams.learning_rate...)"}])
        fields[part][field] = values
    if "id" not in fields["model"]:
        raise InvalidCandidates([{"loc": (loc,), "type": "missing", "msg": "model.id is required"}])
    if len(lengths) != 1 or 0 in lengths:
        raise InvalidCandidates([{"loc": (loc,), "type": "value_error",
                                  "msg": f"every field needs one value per candidate (lengths {sorted(lengths)})"}])
    n = lengths.pop()
    # the distinct (model, method) pairs, each validated once
    names = [("model", f) for f in fields["model"]] + [("method", f) for f in fields["method"]]
    series = [fields[part][f] for part, f in names]
    where: dict[tuple[Any, ...], int] = {}
    pairs: list[tuple[Model, Method]] = []
    index = np.empty(n, dtype=np.int64)
    for i, key in enumerate(_row_keys(series, n)):
        j = where.get(key)
        if j is None:
            parts: dict[str, dict[str, Any]] = {"model": {}, "method": {}}
            for (part, f), values in zip(names, series, strict=True):
                if values[i] is not None:
                    parts[part][f] = values[i]
            parts["method"].setdefault("name", "full")
            validated_parts = []
            for part in ("model", "method"):
                try:
                    validated_parts.append(COLUMN_PARTS[part].model_validate(parts[part]))
                except ValidationError as e:
                    raise InvalidCandidates([{"loc": (loc, f"{part}.{err['loc'][0]}" if err["loc"] else part, i),
                                              "msg": err["msg"], "type": err["type"]} for err in e.errors()]) from None
            j = where[key] = len(pairs)
            pairs.append((validated_parts[0], validated_parts[1]))
        index[i] = j
    hp = {field: _validated_hparam(field, values, loc) for field, values in fields["hparams"].items()}
    return assemble(task, pairs, index, {name: hp[name] for name in HPARAM_COLUMNS if name in hp}, loc=loc)


def object_candidates(task: Mapping[str, Any], candidates: Sequence[Any], *,
                      loc: str = "candidates") -> CandidateColumns:
    """Runs-table columns of candidates sent as objects (``{"model": {...}, "method": {...}, "hparams": {...}}``, as
    decoded from JSON; ``method`` missing: full fine-tuning): the validation of :class:`CandidateParts`, done as
    :func:`columnar_candidates` does it, once per distinct value, instead of once per candidate.

    Raises:
        InvalidCandidates: at ``(loc, i, part, field)``, ``i`` the first candidate holding the invalid value.
    """
    columns = _plain_object_columns(candidates)
    if columns is None:
        columns = _object_columns(candidates, loc)
    try:
        return columnar_candidates(task, columns, loc=loc)
    except InvalidCandidates as e:  # (loc, "part.field", i) -> (loc, i, part, field)
        raise InvalidCandidates([{**err, "loc": _object_loc(err["loc"])} for err in e.errors]) from None


def _plain_object_columns(candidates: Sequence[Any]) -> dict[str, list[Any]] | None:
    """Candidate objects as one list per ``part.field`` (None where a candidate leaves the field out) when every
    candidate and part is a plain object whose fields the part knows, with its required fields, and no null where the
    part needs a value: one pass per part and field. None otherwise (:func:`_object_columns` says where)."""
    n = len(candidates)
    if set(map(type, candidates)) - {dict}:
        return None
    for keys in set(map(tuple, candidates)):
        if "model" not in keys or not set(keys) <= COLUMN_PARTS.keys():
            return None
    columns: dict[str, list[Any]] = {}
    for part in COLUMN_PARTS:
        default = itertools.repeat(PART_DEFAULTS.get(part), n)
        values = list(map(dict.get, candidates, itertools.repeat(part, n), default))
        if set(map(type, values)) - {dict}:
            return None
        needed: set[str] = set()
        for keys in set(map(tuple, values)):
            checked = _checked_fields(part, keys)
            if checked is None:
                return None
            needed.update(checked)
        for field in dict.fromkeys(itertools.chain.from_iterable(values)):
            column = columns[f"{part}.{field}"] = list(map(dict.get, values, itertools.repeat(field, n)))
            if field in needed and None in column:  # a null (or a field some leave out) where the part needs a value
                return None
    return columns


def _object_columns(candidates: Sequence[Any], loc: str) -> dict[str, list[Any]]:
    """:func:`_plain_object_columns` of any candidates, each part validated where it is not a plain object of known
    fields.

    Raises:
        InvalidCandidates: at ``(loc, i, part, field)`` of the first candidate holding an invalid part.
    """
    n = len(candidates)
    fields: dict[str, dict[str, list[Any]]] = {part: {} for part in COLUMN_PARTS}
    for i, candidate in enumerate(candidates):
        if type(candidate) is not dict and not isinstance(candidate, Mapping):
            raise InvalidCandidates([{"loc": (loc, i), "type": "model_type",
                                      "msg": "Input should be an object: {\"model\": {...}, \"method\": {...}, "
                                             "\"hparams\": {...}}"}])
        if "model" not in candidate:
            raise InvalidCandidates([{"loc": (loc, i, "model"), "type": "missing", "msg": "Field required"}])
        if not candidate.keys() <= COLUMN_PARTS.keys():
            key = next(k for k in candidate if k not in COLUMN_PARTS)
            raise InvalidCandidates([{"loc": (loc, i, key), "type": "extra_forbidden",
                                      "msg": "Extra inputs are not permitted"}])
        for part, columns in fields.items():
            values = candidate.get(part, PART_DEFAULTS.get(part))
            checked = _checked_fields(part, tuple(values)) if type(values) is dict else None
            if checked is None or (checked and None in map(values.__getitem__, checked)):
                try:  # the part's own error (not an object, an unknown field, a null or missing required field)
                    part_model = COLUMN_PARTS[part].model_validate(values)
                except ValidationError as e:
                    raise _invalid((loc, i, part), e) from None
                if not isinstance(values, Mapping):  # a part given as its model
                    values = part_model.model_dump(exclude_none=True)
            for field, value in values.items():
                column = columns.get(field)
                if column is None:
                    column = columns[field] = [None] * n
                column[i] = value
    return {f"{part}.{field}": values for part, by_field in fields.items() for field, values in by_field.items()}


#: What a candidate object's missing part means.
PART_DEFAULTS: dict[str, dict[str, Any]] = {"method": {"name": "full"}, "hparams": {}}


@lru_cache(maxsize=1024)
def _checked_fields(part: str, keys: tuple[str, ...]) -> tuple[str, ...] | None:
    """For a part's keys: those null does not fill (required fields, and those whose type excludes None: what the
    columns read as unset), or None where the keys are not the part's (an unknown field, a required one missing)."""
    fields = COLUMN_PARTS[part].model_fields  # type: ignore[attr-defined]
    required = {name for name, f in fields.items() if f.is_required()}
    if not set(keys) <= fields.keys() or not required <= set(keys):
        return None
    return tuple(k for k in keys if k in required or type(None) not in get_args(fields[k].annotation))


def _object_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A :func:`columnar_candidates` error's place (``(loc, "part.field", i)``) as a candidate object's."""
    if len(loc) == 3 and isinstance(loc[1], str) and isinstance(loc[2], int):
        return (loc[0], loc[2], *loc[1].split(".", 1))
    return loc


def _row_keys(series: Sequence[Sequence[Any]], n: int) -> list[tuple[Any, ...]]:
    """Each row's values of ``series`` as a hashable tuple (objects and lists as JSON texts); equal tuples are equal
    values (1, 1.0 and True are told apart where a field mixes them)."""
    if all(len(types := set(map(type, values)) - {type(None)}) <= 1 and not types & {dict, list} for values in series):
        return list(zip(*series, strict=True))
    return [tuple((type(values[i]), _hashable(values[i])) for values in series) for i in range(n)]


@cache
def _hparam_column(field: str) -> TypeAdapter[list[Any]] | None:
    """A validator of a whole hyperparameter column: the field's own type and constraints, with the part's settings,
    over a list; None for a field with validators of its own (a column of those is validated value by value)."""
    decorators = Hyperparameters.__pydantic_decorators__.field_validators.values()
    if any(field in d.info.fields for d in decorators):
        return None
    annotation = Hyperparameters.model_fields[field].rebuild_annotation()
    return TypeAdapter(list[annotation], config=Hyperparameters.model_config)  # type: ignore[valid-type]


def _validated_hparam(field: str, values: Sequence[Any], loc: str) -> list[Any]:
    """A hyperparameter column, validated in one call where the field has no validator of its own and every value is
    valid (a column of a thousand distinct learning rates costs what a few values do), else each distinct value once
    (by type and value: 1, 1.0 and True apart), which finds the first invalid one; null is unset.

    Raises:
        InvalidCandidates: at the first candidate holding an invalid value.
    """
    values = list(values)
    column = _hparam_column(field)
    if column is not None:
        try:
            return column.validate_python(values)
        except ValidationError:
            pass  # the value-by-value check below says which candidate holds the invalid value
    seen: dict[Any, Any] = {None: None}

    def check(value: Any) -> Any:
        try:
            return getattr(Hyperparameters.model_validate({field: value}), field)
        except ValidationError as e:
            i = next(i for i, v in enumerate(values)
                     if v is value or (type(v) is type(value) and _hashable(v) == _hashable(value)))
            raise InvalidCandidates([{"loc": (loc, f"hparams.{field}", i), "msg": err["msg"], "type": err["type"]}
                                     for err in e.errors()]) from None

    if len(set(map(type, values)) - {type(None)}) <= 1:  # one type (the usual column): its values are the keys
        try:
            for value in dict.fromkeys(values):
                if value is not None:
                    seen[value] = check(value)
            return list(map(seen.__getitem__, values))
        except TypeError:  # unhashable values (lists, objects)
            pass
    seen = {(type(None), None): None}
    out = []
    for value in values:
        key = (type(value), _hashable(value))
        if key not in seen:
            seen[key] = check(value)
        out.append(seen[key])
    return out


@dataclass
class _Parts:
    model: Model
    method: Method
    hparams: Hyperparameters


def parse_candidates(configs: Sequence[Mapping[str, Any]], *, loc: str = "candidates") -> list[_Parts]:
    """Validate plain configurations (``{"model": {...}, "method": {...}, "hparams": {...}}``).

    Raises:
        InvalidCandidates: a part is invalid (unknown method, negative learning rate...), with its place.
    """
    out = []
    for i, config in enumerate(configs):
        if not isinstance(config, Mapping) or "model" not in config:
            raise _invalid((loc, i), ValueError("a configuration needs a `model` (and may have `method`, `hparams`)"))
        parts = []
        for part, cls in (("model", Model), ("method", Method), ("hparams", Hyperparameters)):
            value = config.get(part) or PART_DEFAULTS.get(part)
            try:
                parts.append(cls.model_validate(dict(value)))
            except ValidationError as e:
                raise _invalid((loc, i, part), e) from None
            except (TypeError, ValueError) as e:
                raise _invalid((loc, i, part), ValueError(f"not an object: {e}")) from None
        out.append(_Parts(*parts))
    return out


def as_frame(candidates: CandidateColumns) -> pd.DataFrame:
    """The candidates as a runs-table frame (dtypes inferred from the values)."""
    return frame_of(candidates.columns)


def candidate_rows(task: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One runs-table row per plain candidate configuration (``{"model": {...}, "method": {...}, "hparams":
    {...}}``), with model features from the shipped registry where the configuration does not give them.

    Raises:
        InvalidCandidates: a configuration is invalid.
    """
    return as_frame(candidate_columns(task, parse_candidates(configs)))


# -- search spaces ----------------------------------------------------------------------------------------------------


class RangeLike(Protocol):
    low: float
    high: float
    log: bool


class SpaceLike(Protocol):
    """A search space: models x methods x hyperparameters (each a list of values or a range) plus fixed values."""

    models: Sequence[Model]
    methods: Sequence[Method]
    hparams: Mapping[str, Any]
    fixed: Hyperparameters


def _is_range(choice: Any) -> bool:
    return hasattr(choice, "low") and hasattr(choice, "high")


def _labels(items: Sequence[str]) -> list[str]:
    """``items`` made unique: repeated ones get `` [i]``."""
    seen: dict[str, int] = {}
    for x in items:
        seen[x] = seen.get(x, 0) + 1
    return [x if seen[x] == 1 else f"{x} [{i}]" for i, x in enumerate(items)]


def method_config(method: Method) -> dict[str, Any]:
    """The method as a client wrote it: its name and the parameters it sets (no derived kind, no empty config)."""
    out = method.model_dump(mode="json", exclude_none=True, exclude={"kind"})
    if not out.get("config"):
        out.pop("config", None)
    return out


def method_label(method: Method) -> str:
    """``lora(lora_r=8, lora_alpha=16)``: the method's name and the parameters it sets."""
    params = method.model_dump(mode="json", exclude_none=True, exclude={"name", "kind", "config"})
    if method.config:
        params["config"] = json.dumps(method.config, sort_keys=True)
    return method.name + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")


@dataclass
class SpaceCandidates:
    """The candidates of a search space, as rows, and how to read them back."""

    frame: pd.DataFrame
    params: dict[str, str]
    truncated: bool
    models: dict[str, Model]
    methods: dict[str, Method]
    fixed: dict[str, Any]
    #: each row's (model, method) pair (:class:`CandidateColumns`)
    pairs: PairCodes

    def config(self, i: int) -> dict[str, Any]:
        """Candidate ``i`` as a plain configuration (model, method and the hyperparameters the space sets)."""
        row = self.frame.iloc[i]
        hparams = dict(self.fixed)
        for name, col in self.params.items():
            if name not in ("model", "method") and (v := _plain(row[col])) is not None:
                hparams[name] = v
        return {"model": self.models[row["search_model"]].model_dump(mode="json", exclude_none=True),
                "method": method_config(self.methods[row["search_method"]]), "hparams": hparams}


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _checked_values(space: SpaceLike) -> dict[str, list[Any]]:
    """Each listed value of a hyperparameter, validated and normalized by the record's ``Hyperparameters`` part (e.g.
    ``Cosine`` -> ``cosine``); each range end checked valid for it too (so every draw is)."""
    out: dict[str, list[Any]] = {}
    for name, choice in space.hparams.items():
        ranged = _is_range(choice)
        values = [choice.low, choice.high] if ranged else choice
        checked = []
        for i, v in enumerate(values):
            try:
                hp = Hyperparameters.model_validate({name: round(v) if ranged and name in _INT_HPARAMS else v})
            except ValidationError as e:
                where = ("space", "hparams", name, ("low" if i == 0 else "high") if ranged else i)
                raise _invalid(where, e) from None
            checked.append(getattr(hp, name))
        if not ranged:
            out[name] = checked
    return out


def _draw(choice: RangeLike, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if choice.log:
        values = np.exp(rng.uniform(math.log(choice.low), math.log(choice.high), n))
    else:
        values = rng.uniform(choice.low, choice.high, n)
    if name in _INT_HPARAMS:
        low, high = math.ceil(choice.low), math.floor(choice.high)
        if high < low:  # no integer inside the range: its nearest one
            low = high = round(choice.low)
        return np.clip(np.rint(values), low, high).astype(int)
    return values


def _decode(flat: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Mixed-radix digits of grid positions, one column per dimension."""
    out = np.empty((len(flat), len(sizes)), dtype=np.int64)
    rest = flat.copy()
    for d in range(len(sizes) - 1, -1, -1):
        out[:, d] = rest % sizes[d]
        rest //= sizes[d]
    return out


def enumerate_space(task: Mapping[str, Any], space: SpaceLike, *, max_candidates: int, samples_per_point: int,
                    seed: int) -> SpaceCandidates:
    """The candidates of ``space``: every grid point of models x methods x listed values (a seeded sample of grid
    points when there are more than ``max_candidates``), each with ``samples_per_point`` seeded draws of the ranges
    (fewer when the cap needs it).

    Raises:
        InvalidCandidates: a listed value or range end is invalid for its hyperparameter.
    """
    lists = _checked_values(space)
    rng = np.random.default_rng(seed)
    model_labels = _labels([m.id for m in space.models])
    method_labels = _labels([method_label(m) for m in space.methods])
    ranges = {k: v for k, v in space.hparams.items() if _is_range(v)}
    sizes = [len(space.models), len(space.methods), *(len(v) for v in lists.values())]
    grid = math.prod(sizes)
    truncated = grid > max_candidates
    if truncated:
        if grid <= 50_000_000:
            flat = np.sort(rng.choice(grid, size=max_candidates, replace=False))
        else:  # too large to sample without replacement by position: draw, then drop repeats
            flat = np.unique(rng.integers(0, grid, size=max_candidates, dtype=np.int64))
    else:
        flat = np.arange(grid, dtype=np.int64)
    per_point = 1 if not ranges else max(1, min(samples_per_point, max_candidates // max(len(flat), 1)))
    digits = np.repeat(_decode(flat, sizes), per_point, axis=0)
    n = len(digits)
    pair_of = digits[:, 0] * len(space.methods) + digits[:, 1]
    pairs = list(itertools.product(space.models, space.methods))
    fixed = space.fixed.model_dump(exclude_none=True, exclude={"extra"})
    columns: dict[str, Any] = {name: [value] * n for name, value in fixed.items() if name in HPARAM_COLUMNS}
    for d, (name, values) in enumerate(lists.items(), start=2):
        columns[name] = [values[i] for i in digits[:, d]]
    for name, choice in ranges.items():
        columns[name] = _draw(choice, name, n, rng).tolist()
    built = assemble(task, pairs, pair_of, columns, loc="space")
    frame = as_frame(built)
    frame["search_model"] = [model_labels[i] for i in digits[:, 0]]
    frame["search_method"] = [method_labels[i] for i in digits[:, 1]]
    params = {"model": "search_model", "method": "search_method",
              **{name: f"hparams_{name}" for name in space.hparams}}
    return SpaceCandidates(frame=frame, params=params, truncated=truncated,
                           models=dict(zip(model_labels, space.models, strict=True)),
                           methods=dict(zip(method_labels, space.methods, strict=True)),
                           fixed={k: v for k, v in fixed.items() if k not in space.hparams}, pairs=built.pairs)

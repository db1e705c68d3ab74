"""Search-space parameters shared by the tuner integrations (``metaml_client.optuna``, ``metaml_client.ray_tune``,
``metaml_client.syne_tune``).

A recommendation or suggestion names a configuration's parts as flat parameters: ``model`` (a model id), ``method``
(a label such as ``full`` or ``lora(lora_r=8)``, see :func:`method_label`) and each varied hyperparameter
(``learning_rate``...). :func:`config_from_params` turns such parameters back into the configuration they stand for,
:func:`params_from_config` the other way; :func:`param_specs` says what values each parameter takes (each tuner turns
them into its own distributions). Standard library only.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["INT_HPARAMS", "ParamSpec", "config_from_params", "draw_params", "method_label", "param_specs",
           "params_from_config", "params_key", "same_method"]

#: Hyperparameters the records hold as integers: their ranges become integer domains.
INT_HPARAMS = frozenset({"batch_size", "per_device_batch_size", "gradient_accumulation_steps", "max_steps",
                         "warmup_steps", "max_seq_length", "seed"})


def method_label(method: Mapping[str, Any]) -> str:
    """``lora(lora_r=8)``: a method's name and the parameters it sets, as the server labels it."""
    params = {k: v for k, v in method.items() if k not in ("name", "kind", "config") and v is not None}
    return str(method["name"]) + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")


def _parse_label(label: str) -> tuple[str, dict[str, str]]:
    name, _, rest = label.partition("(")
    params = dict(p.split("=", 1) for p in rest.rstrip(")").split(", ") if "=" in p) if rest else {}
    return name, params


def _same_value(a: str, b: str) -> bool:
    """``8`` and ``8.0`` alike (the server may send an integer parameter back as a float)."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def same_method(label: str, method: Mapping[str, Any]) -> bool:
    """Whether ``label`` names ``method`` (its parameters in any order, ``16`` and ``16.0`` alike: the server may
    list them in another order and send integers back as floats)."""
    name, given = _parse_label(str(label))
    mine = {k: str(v) for k, v in method.items() if k not in ("name", "kind", "config") and v is not None}
    return (method["name"] == name and mine.keys() == given.keys()
            and all(_same_value(mine[k], given[k]) for k in mine))


def config_from_params(params: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate configuration (``model``, ``method``, ``hparams``) a trial's parameters stand for in
    ``space`` (the search space sent to ``recommend``): the method label is matched against the space's methods,
    other parameters are hyperparameters, and the space's ``fixed`` ones are added."""
    params = dict(params)
    config: dict[str, Any] = {"model": {"id": params.pop("model")}}
    label = params.pop("method", None)
    methods = list(space.get("methods") or [{"name": "full"}])
    if label is None:
        config["method"] = dict(methods[0])
    else:
        for m in methods:
            if same_method(str(label), m):
                config["method"] = dict(m)
                break
        else:
            raise ValueError(f"method {label!r} is not one of the space's methods "
                             f"({', '.join(method_label(m) for m in methods)})")
    config["hparams"] = {**dict(space.get("fixed") or {}), **params}
    return config


@dataclass(frozen=True)
class ParamSpec:
    """The values one parameter of a space takes: ``kind`` ``choice`` (one of ``choices``), ``float`` or ``int``
    (``low`` to ``high`` inclusive, ``log`` scaled)."""

    kind: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False


def _range_spec(name: str, spec: Mapping[str, Any]) -> ParamSpec:
    low, high, log_scale = spec["low"], spec["high"], bool(spec.get("log", False))
    if name in INT_HPARAMS or (isinstance(low, int) and isinstance(high, int)):
        lo, hi = math.ceil(low), math.floor(high)
        if hi < lo:  # no integer inside the range: its nearest one, as the server draws
            return ParamSpec("choice", (round(low),))
        return ParamSpec("int", low=lo, high=hi, log=log_scale)
    if low == high:
        return ParamSpec("choice", (float(low),))
    return ParamSpec("float", low=float(low), high=float(high), log=log_scale)


def param_specs(space: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """What each parameter of ``space`` takes: ``model`` (the space's model ids) and ``method`` (the labels of its
    methods, :func:`method_label`) as choices, each hyperparameter of ``space["hparams"]`` as a choice (a list of
    values) or a range (``int`` for integer hyperparameters). ``fixed`` hyperparameters are no parameters:
    :func:`config_from_params` adds them."""
    out = {"model": ParamSpec("choice", tuple(str(m["id"]) for m in space["models"])),
           "method": ParamSpec("choice", tuple(method_label(m) for m in space.get("methods") or [{"name": "full"}]))}
    for name, choice in (space.get("hparams") or {}).items():
        out[name] = _range_spec(name, choice) if isinstance(choice, Mapping) else ParamSpec("choice", tuple(choice))
    return out


def _draw(spec: ParamSpec, rng: random.Random) -> Any:
    if spec.kind == "choice":
        return rng.choice(spec.choices)
    if spec.log:
        value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    else:
        value = rng.uniform(spec.low, spec.high)
    if spec.kind == "int":
        return min(int(spec.high), max(int(spec.low), round(value)))
    return min(spec.high, max(spec.low, value))


def draw_params(space: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """Parameters of ``space`` drawn at random (uniformly, log-uniformly for log ranges): what a tuner integration
    evaluates when the service cannot be reached."""
    return {name: _draw(spec, rng) for name, spec in param_specs(space).items()}


def _model_choice(model_id: str, choices: tuple[Any, ...]) -> str:
    """The space's spelling of ``model_id``: the same id, else the one id with the same name after its organisation
    (the server names ``FacebookAI/roberta-base`` as ``roberta-base``)."""
    if model_id in choices:
        return model_id
    tail = model_id.rsplit("/", 1)[-1].lower()
    same = [c for c in choices if str(c).rsplit("/", 1)[-1].lower() == tail]
    if len(same) != 1:
        raise ValueError(f"model {model_id!r} is not one of the space's models ({', '.join(map(str, choices))}): "
                         "name the models as the knowledge base does")
    return str(same[0])


def params_from_config(config: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters (``model``, ``method`` label, each varied hyperparameter) that stand for ``config`` (a
    configuration the server proposed from ``space``), spelled as the space spells them: the inverse of
    :func:`config_from_params`.

    Raises:
        ValueError: ``config``'s model or method is not one of the space's, or it lacks a varied hyperparameter.
    """
    specs = param_specs(space)
    methods = list(space.get("methods") or [{"name": "full"}])
    method = dict(config.get("method") or {"name": "full"})
    labels = [label for label, m in zip(specs["method"].choices, methods, strict=True)
              if same_method(method_label(method), m)]
    if not labels:
        raise ValueError(f"method {method_label(method)!r} is not one of the space's methods "
                         f"({', '.join(specs['method'].choices)})")
    out: dict[str, Any] = {"model": _model_choice(str(config["model"]["id"]), specs["model"].choices),
                           "method": labels[0]}
    hparams = config.get("hparams") or {}
    for name, spec in specs.items():
        if name in ("model", "method"):
            continue
        if name not in hparams:
            raise ValueError(f"the configuration sets no {name!r}, a parameter of the space")
        value = hparams[name]
        if spec.kind == "int" or (spec.kind == "choice" and isinstance(value, float) and value.is_integer()
                                  and value not in spec.choices and int(value) in spec.choices):
            value = int(value)
        out[name] = value
    return out


def params_key(params: Mapping[str, Any]) -> str:
    """One string per distinct parameter assignment (``16`` and ``16.0`` alike; order does not matter)."""

    def norm(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return v
        return repr(float(v))

    return json.dumps({k: norm(v) for k, v in params.items()}, sort_keys=True, default=str)

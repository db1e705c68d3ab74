"""Search-space parameters shared by the tuner integrations (``metaml_client.optuna``, ``metaml_client.ray_tune``).

A recommendation names a configuration's parts as flat parameters: ``model`` (a model id), ``method`` (a label such as
``full`` or ``lora(lora_r=8)``, see :func:`method_label`) and each varied hyperparameter (``learning_rate``...).
:func:`config_from_params` turns such parameters back into the configuration they stand for. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["config_from_params", "method_label", "same_method"]


def method_label(method: Mapping[str, Any]) -> str:
    """``lora(lora_r=8)``: a method's name and the parameters it sets, as the server labels it."""
    params = {k: v for k, v in method.items() if k not in ("name", "kind", "config") and v is not None}
    return str(method["name"]) + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")


def _parse_label(label: str) -> tuple[str, dict[str, str]]:
    name, _, rest = label.partition("(")
    params = dict(p.split("=", 1) for p in rest.rstrip(")").split(", ") if "=" in p) if rest else {}
    return name, params


def same_method(label: str, method: Mapping[str, Any]) -> bool:
    """Whether ``label`` names ``method`` (its parameters in any order: the server may list them in another)."""
    name, given = _parse_label(str(label))
    mine = {k: str(v) for k, v in method.items() if k not in ("name", "kind", "config") and v is not None}
    return method["name"] == name and mine == given


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

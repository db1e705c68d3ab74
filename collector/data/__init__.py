"""Data the package ships and reads at run time: ``models.csv`` (the model registry table, written by
``data/build_model_registry.py``) and ``sources.toml`` (the manifest of the public sources).

They are package resources, read through :mod:`importlib.resources`, so an installed wheel finds them as a source
checkout does.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["resource_path"]


def resource_path(name: str) -> Path:
    """The file ``name`` shipped in this package (installed packages are unpacked, so it is a real file).

    Raises:
        FileNotFoundError: the package ships no such file.
    """
    found = files(__name__).joinpath(name)
    if not found.is_file():
        raise FileNotFoundError(f"{name} is not shipped in {__name__}")
    return Path(str(found))

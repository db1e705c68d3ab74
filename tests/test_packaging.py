"""What the built wheel declares and ships: the ``metaml.formats`` entry points (every built-in format, the
registration that outside packages use too) and the client's ``py.typed`` marker (its type hints are public)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built from a copy of the sources (the build files and the packages only)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "collector", "metaml", "metaml_client", "service"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(src)], check=True, capture_output=True, text=True, timeout=600)
    return zipfile.ZipFile(next((work / "dist").glob("metaml-*.whl")))


def test_wheel_ships_the_client_type_marker(wheel: zipfile.ZipFile) -> None:
    """metaml_client/py.typed is in the wheel, beside the client's modules."""
    names = set(wheel.namelist())
    assert "metaml_client/py.typed" in names and "metaml_client/_client.py" in names


def test_wheel_declares_every_format_as_an_entry_point(wheel: zipfile.ZipFile) -> None:
    """entry_points.txt holds the metaml.formats group with the 19 built-in formats and the metaml script."""
    text = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    formats = dict(parser["metaml.formats"])
    assert len(formats) == 19
    assert formats["hf_trainer"] == "collector.importers.hf.trainer_output:TrainerOutput"
    assert formats["parquet"] == "collector.formats.canonical:CanonicalParquet"
    assert parser["console_scripts"]["metaml"] == "service.cli:main"

"""A wheel that works: built from the sources, installed (not editable) in a fresh virtual environment, it ingests,
enriches and runs a quickstart subset with its own code and the data it ships (model registry, sources manifest)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What the wheel is built from: the packages and the build files (not the tests, benchmarks or environments).
_SOURCES = ("pyproject.toml", "README.md", "collector", "metaml", "metaml_client", "service")

PROBE = r"""
import json, sys
import collector, metaml, service
from collector.features._registry import ModelRegistry
from collector.sources import load_manifest
print(json.dumps({"files": [m.__file__ for m in (collector, metaml, service)], "path": sys.path,
                  "registry": len(ModelRegistry.load_default()), "sources": len(load_manifest())}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel built from a copy of the sources, installed with --no-deps into a fresh virtual environment that
    sees this environment's dependencies through a .pth file (placed after its own site-packages)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in _SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True, capture_output=True, text=True, timeout=600)
    wheel = next(dist.glob("metaml-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip())
    (own / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return {"wheel": wheel, "venv": venv, "python": python, "site": own, "work": work}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("METAML_", "PYTHON"))}


def test_the_wheel_ships_its_runtime_data(installed: dict[str, Path]) -> None:
    """The wheel holds the model registry and the sources manifest inside the collector package, and no tests."""
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "collector/data/models.csv" in names and "collector/data/sources.toml" in names
    assert not any(n.startswith("tests/") for n in names)


def test_the_installed_wheel_runs_from_itself(installed: dict[str, Path], public_data: Path) -> None:
    """Outside the source tree, the environment imports metaml's packages from the installed wheel (never from the
    checkout), reads the registry and manifest it ships, and `metaml ingest`, `metaml kb enrich` (model features from
    the shipped registry) and `metaml quickstart --no-serve` (TransferGraph runs, SST-2 texts: ingest, describe,
    train, register, key) succeed."""
    work, python = installed["work"], installed["python"]
    probe = subprocess.run([str(python), "-c", PROBE], cwd=work, env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    found = json.loads(probe.stdout)
    for f in found["files"]:
        assert Path(f).is_relative_to(installed["site"]) and not Path(f).is_relative_to(REPO), f
    assert found["registry"] > 400 and found["sources"] > 5

    metaml_exe = installed["venv"] / "bin" / "metaml"
    public = work / "public"
    (public / "metadatasets").mkdir(parents=True, exist_ok=True)
    (public / "text").mkdir(exist_ok=True)
    for link, target in ((public / "metadatasets" / "transfergraph", public_data / "metadatasets" / "transfergraph"),
                         (public / "text" / "glue_sst2", public_data / "text" / "glue_sst2")):
        if not link.exists():
            link.symlink_to(target)
    kb = work / "kb.duckdb"
    ingest = subprocess.run([str(metaml_exe), "ingest", str(public / "metadatasets" / "transfergraph"), "--kb",
                             str(kb), "--json"], cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert ingest.returncode in (0, 2), ingest.stderr[-2000:]
    assert json.loads(ingest.stdout)["ingested"] == 5443
    enrich = subprocess.run([str(metaml_exe), "kb", "enrich", "--kb", str(kb), "--no-datasets"],
                            cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert enrich.returncode == 0, enrich.stderr[-2000:]
    stats = json.loads(subprocess.run([str(metaml_exe), "kb", "stats", "--kb", str(kb), "--json"], cwd=work,
                                      env=_env(), capture_output=True, text=True, timeout=120).stdout)
    assert stats["coverage"]["model_n_params"] > 0.9 and stats["registered_models"] > 100

    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {**_env(), "METAML_KB": str(home / "data" / "kb.duckdb"),
           "METAML_TRACKING_URI": f"sqlite:///{home / 'data' / 'mlflow.db'}"}
    quick = subprocess.run([str(metaml_exe), "quickstart", "--from", str(public), "--no-serve", "--max-folds", "0"],
                           cwd=home, env=env, capture_output=True, text=True, timeout=900)
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert "metaml is ready" in quick.stdout and "(5,443 runs)" in quick.stdout
    assert "described 1 dataset" in quick.stderr
    assert (home / "data" / "models" / "latest" / "metadata.json").is_file()

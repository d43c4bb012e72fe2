"""retain as an installed package: the wheel carries the lab (model, data, tasks, demo configs) and runs.

Builds the wheel from a copy of the sources (nothing is written into the checkout), installs it into
a fresh directory (`pip install --no-deps --target`, the dependencies come from this environment) and
runs it from elsewhere, where the repository's configs/ cannot be found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DATA = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "retain").rglob("*")
                     if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A directory holding retain installed from its wheel; returns the directory (its `wheel` beside it)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(REPO / "retain", source / "retain", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(root / "wheel")],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "wheel").glob("retain-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return root


def run_installed(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root / "site"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    (root / "elsewhere").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=root / "elsewhere", env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_carries_every_data_file_of_the_package(installed):
    (wheel,) = (installed / "wheel").glob("retain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "retain/lab/configs/unprotected.yaml" in SOURCE_DATA and "retain/lab/model/model.safetensors" in SOURCE_DATA
    missing = [p for p in SOURCE_DATA if p not in names]
    assert not missing, f"package data left out of the wheel: {missing}"


def test_the_installed_package_finds_its_lab_and_demo_configs(installed):
    proc = run_installed(installed, "-c", """
import retain
from retain.config import load_config
from retain.core.paths import LAB_MODEL_DIR
from retain.evaluation.tasks import check_suite, load_suite
from retain.studies.demo import DEMO_CONFIGS, SUITE
print(retain.__file__)
for name in ("unprotected", "protected"):
    config = load_config(DEMO_CONFIGS / f"{name}.yaml")
    assert config.model.name == "retain-tiny", config
check_suite(load_suite(SUITE), "test")
assert (LAB_MODEL_DIR / "model.safetensors").is_file()
""")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(str(installed / "site")), proc.stdout  # the installed copy, not the checkout


def test_the_installed_command_scores_the_bundled_model(installed):
    proc = run_installed(installed, "-m", "retain", "eval", "retain-tiny", "--suite", "capital_recall,english",
                         "--split", "dev", "--limit", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "capital_recall" in proc.stdout and "word_perplexity=" in proc.stdout
    assert (installed / "site" / "bin" / "retain").is_file()  # the console script a user types

"""An installed wheel carries what a run reads: the profiles and the search spaces
(``search_spaces/`` is package data), found without any environment variable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)  # the first test builds the wheel (pip may take up to 600 s)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "automl", "dino", "metric_extractors", "search_spaces")
LOOKUP = """
import automl
from automl.config import read_profile
from automl.search_space import default_schema_path, default_space_path, default_template_path
from automl.study.runner import resolve_project_path
cpu = read_profile("smoke")["cpu"]["trainer"]["space"]
for path in (automl.__file__, default_schema_path(), default_space_path(), default_template_path(),
             resolve_project_path(cpu, None)):
    print(path)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources, so the checkout gets no build/ folder."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = dist.glob("dino_automl-*.whl")
    return built


def test_the_wheel_lists_the_search_spaces_and_profiles(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("automl/profiles/smoke.yaml", "search_spaces/dino/train.schema.json",
                 "search_spaces/dino/default_space.yaml", "search_spaces/dino/spec_template_train.yaml",
                 "search_spaces/dino/smoke_cpu_space.yaml", "search_spaces/dino/smoke_gpu_space.yaml"):
        assert data in names, data


def test_an_installed_wheel_finds_them_without_environment_variables(wheel, tmp_path):
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "AUTOML_SEARCH_SPACES"}
    env["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install
    proc = subprocess.run([sys.executable, "-c", LOOKUP], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.split()]
    assert len(paths) == 5
    for path in paths:
        assert path.is_file() and site in path.parents, path


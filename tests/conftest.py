"""Shared fixtures: a valid spec on disk that each test may bend one way."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "lab"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def dump(data: dict, path: Path) -> Path:
    yaml = YAML()
    with path.open("w") as fh:
        yaml.dump(data, fh)
    return path


@pytest.fixture
def lab_data() -> dict:
    """lab/ubuntu.yml as plain data."""
    return YAML(typ="safe").load((LAB / "ubuntu.yml").read_text())


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A directory with the lab's userlist and GitHub secret file beside where a spec goes."""
    for name in ("userlist.lab", "github-client-secret.lab"):
        shutil.copy(LAB / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def write_spec(spec_dir: Path, lab_data: dict):
    """write_spec(mutate) -> path of lab/ubuntu.yml changed by `mutate(data)`."""

    def _write(mutate=None, name: str = "cluster.yml") -> Path:
        data = copy.deepcopy(lab_data)
        if mutate:
            mutate(data)
        return dump(data, spec_dir / name)

    return _write


@pytest.fixture(scope="session")
def synthetic_cube(tmp_path_factory) -> Path:
    """The synthetic data cube, generated once per session: <share>/esdc-8d-2deg-synthetic.zarr."""
    from cablab_cluster.cube import write_cube

    return write_cube(tmp_path_factory.mktemp("cube-share"))

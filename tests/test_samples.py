"""The sample notebooks: clean in git, and each runs top to bottom against a generated cube."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import xarray as xr
from nbclient import NotebookClient

import cablab_cluster
from cablab_cluster.cube import CUBE_NAME

SAMPLES = Path(cablab_cluster.__file__).parent / "samples"
NOTEBOOKS = sorted(SAMPLES.glob("*.ipynb"))


def test_the_samples_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01-explore-the-cube.ipynb", "02-seasonal-climatology.ipynb", "03-save-your-results.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "clear the outputs before committing"
    source = "\n".join(c.source for c in code)
    assert 'Path.home() / "cube" / "esdc-8d-2deg-synthetic.zarr"' in source and "CABLAB_CUBE" in source
    assert nb.cells[0].cell_type == "markdown" and "synthetic" in nb.cells[0].source


@pytest.fixture(scope="session")
def home(synthetic_cube, tmp_path_factory) -> Path:
    """A home like a user's server: ~/cube is the (read-only) cube share."""
    home = tmp_path_factory.mktemp("home")
    (home / "cube").symlink_to(synthetic_cube.parent, target_is_directory=True)
    assert (home / "cube" / CUBE_NAME / ".zmetadata").is_file()
    return home


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CABLAB_CUBE", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    # raises CellExecutionError (naming the cell and its traceback) on the first error
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(home)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "every sample draws at least one figure"
    if path.name.startswith("03-"):
        with xr.open_dataset(home / "results" / "gpp_mean.nc") as saved:
            assert saved.gpp_mean.shape == (90, 180)
            assert saved.gpp_mean.attrs["units"] == "g m-2 d-1"
        assert (home / "results" / "amazon_point.csv").read_text().startswith("time,")

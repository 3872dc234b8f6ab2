"""The cluster checks ship in the wheel: `cablab-cluster verify` installed from it, run outside
any checkout, collects them (no cluster needed for --collect-only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "lab"


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_verify_from_an_installed_wheel_collects_the_checks(tmp_path):
    # The wheel, built from a copy of the sources (the build writes into its tree).
    src = tmp_path / "src"
    shutil.copytree(ROOT / "cablab_cluster", src / "cablab_cluster", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # Isolated, as any build: pip fetches the build-system's setuptools (cached after the first run).
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "dist", src, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("cablab_cluster-*.whl"))

    # A fresh venv with the wheel; the dependencies come from this interpreter's site-packages,
    # put on its path after its own (like --system-site-packages, where the "system" is this venv).
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Without PYTHONPATH: a checkout on it (with its egg-info) would make pip think the wheel is installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel,
        cwd=tmp_path, env=env)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_parent_env.pth").write_text("".join(f"{p}\n" for p in sorted(here)))

    # The lab spec with what it names beside it, and an ssh-config naming nothing real.
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    for name in ("ubuntu.yml", "userlist.lab", "github-client-secret.lab"):
        shutil.copy(LAB / name, spec_dir / name)
    (tmp_path / "ssh_config").write_text("Host node1 node2 node3\n  HostName 127.0.0.1\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    where = run(python, "-c", "import cablab_cluster; print(cablab_cluster.__file__)", cwd=outside, env=env)
    assert Path(where.strip()).is_relative_to(venv), where
    out = run(venv / "bin" / "cablab-cluster", "verify", spec_dir / "ubuntu.yml", "--ssh-config", tmp_path / "ssh_config",
              "--", "--collect-only", "-q", "-p", "no:cacheprovider", cwd=outside, env=env)
    ids = [line for line in out.splitlines() if "::" in line]
    assert len(ids) >= 40, out
    assert all("cablab_cluster/checks/test_" in i for i in ids), ids
    assert any("test_swarm.py::test_node_is_ready_active_with_its_role[node1]" in i for i in ids)
    assert any("test_notebook.py::test_a_scientists_day" in i for i in ids)
    assert any("test_browser.py::test_a_person_signs_in_and_runs_a_sample_notebook" in i for i in ids)
    # The end of the order: the browser's claim (its visit ran beside all before it), then the
    # renewal that rolls the proxy, last the backup's check, which restarts the hub.
    files = [i.split("::")[0].rsplit("/", 1)[-1] for i in ids]
    assert files[-1] == "test_backup.py" and files.count("test_backup.py") == 1, files
    # Before them, the checks that use early servers, after every check that needs none.
    groups = list(dict.fromkeys(files))
    servers = ["test_isolation.py", "test_notebook.py", "test_operations.py"]
    late = ["test_browser.py", "test_letsencrypt.py", "test_backup.py"]
    assert groups[-6:] == servers + late, groups
    assert files == sorted(files, key=lambda f: 2 + late.index(f) if f in late else int(f in servers)), files
    # The entry point loads the plugin in every run there; --spec stays defined once.
    assert run(python, "-m", "pytest", "--help", cwd=outside, env=env).count("--spec=SPEC.yml") == 1

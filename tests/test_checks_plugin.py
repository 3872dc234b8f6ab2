"""The checks' pytest plugin: skipped without --spec, usage errors with one, the spec's hosts
filled in, a missing ssh-config entry named before any connection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checks(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """pytest on the packaged checks, from a directory outside the checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "cablab_cluster.checks.plugin", "-p", "no:cacheprovider",
                           "--pyargs", "cablab_cluster.checks", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_without_spec_every_check_is_skipped(tmp_path):
    r = checks("-rs", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" not in r.stdout and " skipped" in r.stdout
    assert "cablab-cluster verify SPEC.yml --ssh-config FILE" in r.stdout


def test_spec_needs_an_ssh_config_and_a_valid_spec(write_spec, tmp_path):
    r = checks("--spec", str(write_spec()), cwd=tmp_path)
    assert r.returncode == 4 and "--spec needs --ssh-config FILE" in r.stderr
    bad = write_spec(lambda d: d["hosts"][1].update(roles=["manager"]), name="bad.yml")
    (tmp_path / "ssh_config").write_text("Host *\n")
    r = checks("--spec", str(bad), "--ssh-config", "ssh_config", cwd=tmp_path)
    assert r.returncode == 4 and "hosts: 2 managers" in r.stderr


def test_hosts_and_shares_of_the_spec_are_parameters(write_spec, tmp_path):
    (tmp_path / "ssh_config").write_text("Host *\n")
    r = checks("--spec", str(write_spec()), "--ssh-config", "ssh_config", "--collect-only", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [line.rsplit("/", 1)[-1] for line in r.stdout.splitlines() if "::" in line]  # relative to the rootdir
    assert "test_swarm.py::test_node_is_ready_active_with_its_role[node2]" in ids
    assert any(i.startswith("test_nfs.py::test_share_is_mounted[node1-") for i in ids)


def test_a_host_missing_from_the_ssh_config_fails_before_connecting(write_spec, tmp_path):
    (tmp_path / "ssh_config").write_text("Host node1\n  HostName 127.0.0.1\n")
    r = checks("--spec", str(write_spec()), "--ssh-config", "ssh_config", "-k", "test_hub_image_on_hub_host",
               cwd=tmp_path)
    assert r.returncode == 1
    assert "ssh_config has no `Host` entry for node2, node3" in r.stdout

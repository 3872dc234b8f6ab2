"""The command line: exit 0 ok, 2 invalid input (nothing written), 1 otherwise."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from cablab_cluster.cli import cli as main

LAB = Path(__file__).parent.parent / "lab"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_init_writes_a_spec_that_validates_once_the_secret_exists(tmp_path):
    spec = tmp_path / "cluster.yml"
    r = invoke("init", spec)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "userlist").read_text().splitlines()[1:] == ["alice admin", "bob"]
    r = invoke("validate", spec)
    assert r.exit_code == 2
    assert "hub.auth.github.client_secret_file: github-client-secret does not exist" in r.output
    (tmp_path / "github-client-secret").write_text("s3cret\n")
    r = invoke("validate", spec)
    assert r.exit_code == 0, r.output
    assert "cluster cablab (ubuntu), 3 hosts, 1 manager(s), 2 user(s)" in r.output
    assert invoke("init", spec).exit_code == 2  # no silent overwrite


def test_plan_prints_order_and_steps():
    r = invoke("plan", LAB / "centos.yml")
    assert r.exit_code == 0, r.output
    assert "1. node1 192.168.57.11  [manager, nfs-server, hub]  first" in r.output
    assert "2. node2 192.168.57.12  [worker]  after node1 (mounts its shares and joins its swarm)" in r.output
    assert "docker_lvm" in r.output


def test_render_writes_scripts_bundle_and_secrets(write_spec, tmp_path):
    spec = write_spec()
    out = tmp_path / "out"
    r = invoke("render", spec, "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "README", "hub/Dockerfile", "hub/cablab.json", "hub/cablab_hub.py", "hub/deploy.sh", "hub/jupyterhub_config.py",
        "hub/stack.yml", "hub/userlist", "node1.sh", "node2.sh", "node3.sh", "singleuser/Dockerfile",
        "singleuser/singleuser-constraints.txt"]
    assert (out / "node1.sh").stat().st_mode & 0o111
    assert (spec.parent / "secrets" / "lab-ubuntu" / "cookie_secret").exists()
    secrets = {p.read_text().strip() for p in (spec.parent / "secrets" / "lab-ubuntu").iterdir()}
    rendered = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert not any(s in rendered for s in secrets), "a secret leaked into the rendered output"


def test_invalid_spec_exit_2_and_nothing_written(write_spec, tmp_path):
    spec = write_spec(lambda d: d["hosts"][1].update(roles=["manager"]))
    out = tmp_path / "out"
    r = invoke("render", spec, "--out", out)
    assert r.exit_code == 2
    assert "hosts: 2 managers: swarm needs 1 or 3" in r.output
    assert "nothing was written" in r.output
    assert not out.exists()
    assert not (spec.parent / "secrets").exists()


def test_failed_render_keeps_the_previous_output(write_spec, tmp_path):
    out = tmp_path / "out"
    assert invoke("render", write_spec(), "--out", out).exit_code == 0
    before = (out / "node1.sh").read_text()
    bad = write_spec(lambda d: d.update(variant="gentoo"))
    r = invoke("render", bad, "--out", out)
    assert r.exit_code == 2 and "variant: 'gentoo' is not allowed" in r.output
    assert (out / "node1.sh").read_text() == before


def test_missing_spec_file_is_invalid_input(tmp_path):
    r = invoke("validate", tmp_path / "nope.yml")
    assert r.exit_code == 2 and "cannot read the spec" in r.output


def test_unexpected_failure_is_exit_1(write_spec, tmp_path, monkeypatch):
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "cablab_cluster.cli", "render", str(write_spec()),
                           "--out", str(blocker / "out")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_verify_invalid_spec_is_exit_2_before_any_check(write_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(pytest, "main", lambda *a, **k: pytest.fail("pytest must not run"))
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host node1\n")
    spec = write_spec(lambda d: d["hosts"][1].update(roles=["manager"]))
    r = invoke("verify", spec, "--ssh-config", ssh_config)
    assert r.exit_code == 2 and "hosts: 2 managers: swarm needs 1 or 3" in r.output
    assert invoke("verify", write_spec()).exit_code == 2  # --ssh-config is required


def test_verify_runs_the_packaged_checks_with_the_options(write_spec, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pytest, "main", lambda args, **k: calls.append(args) or pytest.ExitCode.TESTS_FAILED)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host node1\n")
    spec = write_spec()
    r = invoke("verify", spec, "--ssh-config", ssh_config, "--secrets", tmp_path, "--", "-x", "-k", "swarm")
    assert r.exit_code == 1, r.output  # pytest's exit status
    assert calls == [["--pyargs", "cablab_cluster.checks", "-p", "cablab_cluster.checks.plugin",
                      "--spec", str(spec.resolve()), "--ssh-config", str(ssh_config.resolve()),
                      "--secrets", str(tmp_path.resolve()), "-x", "-k", "swarm"]]

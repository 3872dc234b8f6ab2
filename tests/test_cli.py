"""The command line: exit 0 ok, 2 invalid input (nothing written), 1 otherwise."""

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from cablab_cluster.cli import PLACEHOLDER_SECRET
from cablab_cluster.cli import cli as main

LAB = Path(__file__).parent.parent / "lab"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_init_writes_a_spec_that_validates_and_says_what_to_replace(tmp_path):
    spec = tmp_path / "cluster.yml"
    r = invoke("init", spec)
    assert r.exit_code == 0, r.output
    assert "put your GitHub OAuth app's client secret in" in r.output
    assert (tmp_path / "userlist").read_text().splitlines()[1:] == ["alice admin", "bob"]
    secret = tmp_path / "github-client-secret"
    assert secret.read_text() == PLACEHOLDER_SECRET + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (tmp_path / ".gitignore").read_text().splitlines()[1:] == ["/secrets/", "/github-client-secret"]
    r = invoke("validate", spec)
    assert r.exit_code == 0, r.output
    assert "cluster cablab (ubuntu), 3 hosts, 1 manager(s), 2 user(s)" in r.output
    assert "still holds init's placeholder" in r.output
    secret.write_text("s3cret\n")
    r = invoke("validate", spec)
    assert r.exit_code == 0 and "placeholder" not in r.output, r.output
    assert invoke("init", spec).exit_code == 2  # no silent overwrite
    assert invoke("init", spec, "--force").exit_code == 0
    assert secret.read_text() == "s3cret\n"  # --force rewrites the spec only


def test_init_adds_only_the_missing_gitignore_lines(tmp_path):
    (tmp_path / ".gitignore").write_text("*.pyc\n/secrets/")  # no final newline
    assert invoke("init", tmp_path / "cluster.yml").exit_code == 0
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n/secrets/\n/github-client-secret\n"
    assert invoke("init", tmp_path / "cluster.yml", "--force").exit_code == 0
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n/secrets/\n/github-client-secret\n"


def test_plan_prints_order_and_steps():
    r = invoke("plan", LAB / "centos.yml")
    assert r.exit_code == 0, r.output
    assert "1. node1 192.168.57.11  [manager, nfs-server, hub]  first" in r.output
    assert "2. node2 192.168.57.12  [manager, notebooks]  after node1 (mounts its shares and joins its swarm)" in r.output
    assert "docker_lvm" in r.output


def test_render_writes_scripts_bundle_and_secrets(write_spec, tmp_path):
    spec = write_spec()
    out = tmp_path / "out"
    r = invoke("render", spec, "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        ".cablab-rendered", "README", "hub/Dockerfile", "hub/backup.sh", "hub/cablab.json", "hub/cablab_backup.py",
        "hub/cablab_hub.py", "hub/deploy.sh", "hub/jupyterhub_config.py", "hub/restore.sh", "hub/stack.yml", "hub/userlist",
        "node1.sh", "node2.sh", "node3.sh",
        "singleuser/Dockerfile", "singleuser/lazy_hub_imports.py", "singleuser/singleuser-constraints.txt",
        "singleuser/singleuser-start.sh"]
    assert (out / "node1.sh").stat().st_mode & 0o111
    assert (spec.parent / "secrets" / "lab-ubuntu" / "cookie_secret").exists()
    secrets = {p.read_text().strip() for p in (spec.parent / "secrets" / "lab-ubuntu").iterdir()}
    assert "" not in secrets
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
    assert r.exit_code == 2 and "(file): cannot be read: No such file" in r.output


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


# -- render --out: never deletes what render did not write -----------------


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where, reason", [
    (lambda spec, tmp: spec.parent, "holds the spec"),
    (lambda spec, tmp: Path("."), "holds the spec"),
    (lambda spec, tmp: spec.parent.parent, "holds the spec"),
    (lambda spec, tmp: spec.parent / "secrets", "holds the secrets directory"),
    (lambda spec, tmp: spec.parent / "secrets" / "lab-ubuntu", "holds the secrets directory"),
    (lambda spec, tmp: spec.parent / "secrets" / "lab-ubuntu" / "sub", "is inside the secrets directory"),
    (lambda spec, tmp: tmp / "photos", "non-empty directory render did not write"),
    (lambda spec, tmp: tmp / "link-to-photos", "is a symlink"),
    (lambda spec, tmp: tmp / "link-to-rendered", "is a symlink"),
    (lambda spec, tmp: tmp / "elsewhere", "holds hub.auth.github.client_secret_file"),
], ids=["spec-dir", "dot", "ancestor", "secrets", "secrets-cluster", "inside-secrets", "unrelated", "symlink",
        "symlink-to-output", "holds-client-secret"])
def test_render_refuses_an_out_it_would_destroy(where, reason, write_spec, tmp_path_factory, monkeypatch):
    tmp = tmp_path_factory.mktemp("other")
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "gh-secret").write_text("s3cret\n")
    spec = write_spec(lambda d: d["hub"]["auth"]["github"].update(client_secret_file=str(tmp / "elsewhere" / "gh-secret")))
    (tmp / "photos").mkdir()
    (tmp / "photos" / "cat.jpg").write_bytes(b"meow")
    (tmp / "link-to-photos").symlink_to(tmp / "photos")
    assert invoke("render", spec, "--out", tmp / "rendered").exit_code == 0  # makes the secrets too
    (tmp / "link-to-rendered").symlink_to(tmp / "rendered")
    monkeypatch.chdir(spec.parent)
    before = {d: _tree(d) for d in (spec.parent, tmp)}
    r = invoke("render", spec, "--out", where(spec, tmp))
    assert r.exit_code == 2, r.output
    assert "--out: " in r.output and reason in r.output, r.output
    assert {d: _tree(d) for d in (spec.parent, tmp)} == before


def test_render_replaces_its_own_output_and_an_empty_directory(write_spec, tmp_path):
    spec = write_spec()
    out = tmp_path / "out"
    out.mkdir()
    assert invoke("render", spec, "--out", out).exit_code == 0
    assert (out / ".cablab-rendered").read_text().startswith("rendered by cablab-cluster from ../cluster.yml;")
    (out / "stale.sh").write_text("old\n")
    r = invoke("render", spec, "--out", out)
    assert r.exit_code == 0, r.output
    assert not (out / "stale.sh").exists() and (out / "node1.sh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml", "github-client-secret.lab", "out",
                                                           "secrets", "userlist.lab"]


# -- validate makes every check render makes, and writes nothing -----------


def test_validate_checks_the_secrets_store_and_writes_nothing(write_spec, tmp_path):
    spec = write_spec()
    assert invoke("validate", spec).exit_code == 0
    assert not (spec.parent / "secrets").exists()
    assert invoke("render", spec, "--out", tmp_path / "out").exit_code == 0
    (spec.parent / "secrets" / "lab-ubuntu").chmod(0o777)
    for command in (("validate", spec), ("render", spec, "--out", tmp_path / "out")):
        r = invoke(*command)
        assert r.exit_code == 2 and "lab-ubuntu: has mode 0777" in r.output, r.output


def test_validate_checks_a_provided_pair(write_spec, spec_dir):
    from cryptography.hazmat.primitives.asymmetric import ec
    from test_secretstore import make_cert, pem_key

    cert, _ = make_cert("192.168.56.11")
    (spec_dir / "hub.crt").write_bytes(cert)
    (spec_dir / "hub.key").write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1())))
    spec = write_spec(lambda d: d["hub"].update(tls={"mode": "provided", "cert": "hub.crt", "key": "hub.key"}))
    r = invoke("validate", spec)
    assert r.exit_code == 2 and "hub.tls.key: the key does not belong to the first certificate" in r.output


def test_values_are_printed_as_written_not_as_emoji(write_spec):
    r = invoke("validate", write_spec(lambda d: d.update(name="a:x:b:smile:")))
    assert r.exit_code == 2 and "'a:x:b:smile:' is not valid here" in r.output


def test_drain_prints_the_commands_and_refuses_a_manager():
    result = invoke("drain", LAB / "ubuntu.yml", "node3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "docker node update --availability drain node3" in lines
    assert lines.index("docker swarm leave") < lines.index("docker node rm node3")
    assert "its NFS exports and firewall rules are withdrawn" in lines[-1]
    refused = invoke("drain", LAB / "ubuntu.yml", "node1")
    assert refused.exit_code == 2 and "HOST: node1 is not a worker" in refused.output

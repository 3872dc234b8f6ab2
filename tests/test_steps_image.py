"""The image step (steps/image.sh.j2) run for real in the sandbox of tests/hostile/ with a recording
docker stub: a new tarball under the same tag is loaded again, the replaced image kept as
<tag>-previous, older untagged cablab images pruned once unused, and a second run changes nothing.

Stub state: /var/lib/cablab-stub-dangling lists the untagged cablab images, /var/lib/cablab-stub-inuse
those a container still uses (`docker image prune` keeps them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.spec import load_spec

from test_bundle_deploy import between
from test_hostile import Run, _run

LAB = Path(__file__).parent.parent / "lab"
TARBALL = "/var/cache/cablab/images/singleuser.tar.gz"
REF = "cablab/singleuser:lab"


@pytest.fixture(scope="module")
def script() -> str:
    """The lab's notebook node: the prelude, its image step (source load), the footer; then `steps`."""
    plan = make_plan(load_spec(LAB / "ubuntu.yml"))
    r = Renderer(plan)
    hp = plan.for_host("node2")
    image = [s for s in hp.steps if s.kind == "image"]
    assert [s.params.key for s in image] == ["singleuser"]
    return "\n".join([r.render_template("prelude.sh.j2", host=hp.host, steps=image, after=(), why_after=""),
                      *(r.step(s) for s in image), r.render_template("footer.sh.j2")])


def run_steps(script: str, *steps: str) -> Run:
    """`provision NAME` runs the image step's script (marking the call log), printing its log."""
    lines = ["set -euo pipefail", "cat >/provision-image.sh <<'SCRIPT_EOF'", script.rstrip("\n"), "SCRIPT_EOF",
             'provision() { docker mark "$1"; echo "== $1"; bash /provision-image.sh 2>&1 | sed -n "s/^.*\\(step \\|done\\)/\\1/p"; }',
             *steps]
    run = _run("\n".join(lines) + "\n", {"STUB_SECRETS": "", "STUB_FILES": TARBALL, "STUB_DISKS": "", "STUB_FINDMNT": "",
                                         "STUB_CONTROL": "false", "STUB_PIN": "24.0", "STUB_DRIVER": "overlay2"}, "apt")
    assert run.rc == 0, run.output
    return run


def docker(calls: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [c[1:] for c in calls if c[0] == "docker" and c[1] in ("load", "tag", "image") and c[2:3] != ("inspect",)
            and c[2:3] != ("ls",)]


def test_a_new_tarball_is_loaded_again_and_the_old_image_kept_as_previous(script):
    run = run_steps(script, "provision first", "provision again", f"echo newer-image >>{TARBALL}", "provision new",
                    "provision settled")
    assert docker(between(run, "first", "again")) == [("load", "-i", TARBALL)]
    assert docker(between(run, "again", "new")) == []
    assert docker(between(run, "new", "settled")) == [("tag", REF, f"{REF}-previous"), ("load", "-i", TARBALL)]
    assert docker(between(run, "settled")) == []
    assert run.output.count("done: 1 steps, 0 changed") == 2, run.output


def test_old_untagged_cablab_images_are_pruned_once_unused(script):
    run = run_steps(script, "provision first", "printf 'sha256:old1\\nsha256:old2\\n' >/var/lib/cablab-stub-dangling",
                    "echo sha256:old2 >/var/lib/cablab-stub-inuse", "provision prune", "provision again")
    assert ("image", "prune", "-f", "--filter", "label=org.cablab.image") in docker(between(run, "prune", "again"))
    assert "removed 1 old cablab image(s)" in run.output
    # the one a container still uses stays, and is not reported as a change again
    assert run.output.rstrip().endswith("done: 1 steps, 0 changed"), run.output


def test_the_tarball_is_skipped_only_where_the_very_same_image_is(tmp_path):
    """The plan's `unless` for an image tarball names the image's identity (steps/image.py), which the
    rendered Dockerfile labels it with: an upgrade under the same tag (a package added) needs the
    tarball again. The lab's first upgrade skipped it when `unless` asked for the tag only."""
    from cablab_cluster.steps.image import IDENTITY_LABEL, image_identity

    spec = load_spec(LAB / "ubuntu.yml")
    plan = make_plan(spec)
    r = Renderer(plan)
    for key in ("hub", "singleuser"):
        identity = image_identity(spec.cluster, key)
        assert f"LABEL {IDENTITY_LABEL}={identity}\n" in r.dockerfile(key)
    unless = next(i.unless for i in plan.for_host("node2").inputs if i.local == "singleuser.tar.gz")
    assert image_identity(spec.cluster, "singleuser") in unless and IDENTITY_LABEL in unless

    for name in ("userlist.lab", "github-client-secret.lab"):
        (tmp_path / name).write_text((LAB / name).read_text())
    changed = tmp_path / "ubuntu.yml"
    changed.write_text((LAB / "ubuntu.yml").read_text().replace("    singleuser:\n", "    singleuser:\n      packages: [tqdm==4.67.1]\n", 1))
    upgraded = load_spec(changed).cluster
    assert image_identity(upgraded, "singleuser") != image_identity(spec.cluster, "singleuser")
    assert image_identity(upgraded, "hub") == image_identity(spec.cluster, "hub")  # the hub image is the same


def test_the_unless_runs_as_a_shell_condition(tmp_path):
    """The condition itself, against a fake docker: the right label passes, another or none fails."""
    import subprocess

    from cablab_cluster.steps.image import image_identity

    spec = load_spec(LAB / "ubuntu.yml")
    unless = next(i.unless for i in make_plan(spec).for_host("node2").inputs if i.local == "singleuser.tar.gz")
    (tmp_path / "docker").write_text('#!/bin/bash\ncase "$1" in info) echo overlay2 ;; image) cat "$LABEL_FILE" ;; esac\n')
    (tmp_path / "docker").chmod(0o755)
    label = tmp_path / "label"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LABEL_FILE": str(label)}
    for have, needed in ((image_identity(spec.cluster, "singleuser"), False), ("0123456789abcdef", True), ("", True)):
        label.write_text(have + "\n")
        done = subprocess.run(["sh", "-c", unless], env=env, check=False)
        assert (done.returncode != 0) is needed, (have, unless)


def test_each_images_identity_covers_exactly_the_templates_its_dockerfile_is_made_of(monkeypatch):
    """A template one Dockerfile includes is in that image's identity; the other image's is not in it
    (a change to the single-user Dockerfile does not make a new hub image)."""
    import re
    from importlib import resources

    from cablab_cluster.steps import image

    templates = resources.files("cablab_cluster") / "templates" / "bundle"
    for key, names in image._TEMPLATES.items():
        own = f"{key}.Dockerfile.j2"
        included = re.findall(r"\{%\s*include\s+'bundle/([^']+)'\s*%\}", (templates / own).read_text())
        assert sorted(names) == sorted([own, *included]), key
    cluster = load_spec(LAB / "ubuntu.yml").cluster
    before = {key: image.image_identity(cluster, key) for key in image._TEMPLATES}
    real = resources.files

    class Edited:
        def __init__(self, path):
            self.path = path

        def __truediv__(self, name):
            return Edited(self.path / name)

        def read_text(self, encoding="utf-8"):
            text = self.path.read_text(encoding=encoding)
            return text + "# edited\n" if self.path.name == "singleuser.Dockerfile.j2" else text

    monkeypatch.setattr(image.resources, "files", lambda pkg: Edited(real(pkg)))
    after = {key: image.image_identity(cluster, key) for key in image._TEMPLATES}
    assert after["singleuser"] != before["singleuser"] and after["hub"] == before["hub"]


@pytest.mark.parametrize("name, value", [("HUB_COMMAND", ("jupyterhub", "-f", "/etc/jupyterhub/config.py")),
                                         ("HUB_CONTAINER_DIR", "/etc/jupyterhub")])
def test_the_hub_images_identity_covers_its_command_and_working_directory(monkeypatch, name, value):
    """The hub's Dockerfile takes its WORKDIR and CMD from layout, not from its template's text: a
    change to either is a new hub image (else a node would keep the old one under the same identity)."""
    from cablab_cluster.steps import image

    cluster = load_spec(LAB / "ubuntu.yml").cluster
    before = {key: image.image_identity(cluster, key) for key in image._TEMPLATES}
    monkeypatch.setattr(image, name, value)
    after = {key: image.image_identity(cluster, key) for key in image._TEMPLATES}
    assert after["hub"] != before["hub"] and after["singleuser"] == before["singleuser"]

"""Steps as units: a module and its template each, registered once, run in a declared order."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from cablab_cluster import steps
from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.spec import load_spec

LAB = Path(__file__).parent.parent / "lab"

# The order of the steps on a host, as the step modules declare it (their `order`).
ORDER = ["preflight", "hostname", "firewall", "docker_lvm", "docker_thinpool", "docker_engine", "container_firewall",
         "nfs_server", "seed_shares", "nfs_mounts", "swarm_init", "swarm_network", "swarm_join", "image", "letsencrypt",
         "hub", "letsencrypt_issue"]

MODULE = '''
from dataclasses import dataclass

from cablab_cluster.spec import Role
from cablab_cluster.steps import register


@dataclass(frozen=True)
class Params:
    motd: str


STEP = register(__name__, kind="motd", order=145, title="message of the day",
                applies=lambda c, h: Role.HUB in h.roles, params=lambda c, h: Params(motd=f"welcome to {c.name}"),
                packages={"apt": ("cowsay",), "dnf": ("cowsay", "figlet")})
'''
TEMPLATE = """step motd
ensure_packages {{ packages | package_words }}
install_file 0644 /etc/motd < <(printf '%s\\n' {{ motd | q }})
"""


def test_the_built_in_steps_and_their_order():
    assert [s.kind for s in steps.registry()] == ORDER
    for s in steps.registry():
        assert s.template.is_file() and s.template.parent == Path(steps.__file__).parent, s


@pytest.fixture
def throwaway_step(tmp_path, monkeypatch):
    """A step defined outside the package: one module and its template, nothing else."""
    (tmp_path / "cablab_motd_step.py").write_text(MODULE)
    (tmp_path / "cablab_motd_step.sh.j2").write_text(TEMPLATE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("cablab_motd_step")
    steps.unregister("motd")
    sys.modules.pop("cablab_motd_step", None)


def test_a_new_step_is_a_module_and_a_template(throwaway_step):
    plan = make_plan(load_spec(LAB / "ubuntu.yml"))
    assert [s.kind for s in plan.for_host("node1").steps][-2:] == ["hub", "motd"]  # its order: after the hub
    assert "motd" not in [s.kind for s in plan.for_host("node2").steps]  # it applies to the hub host only
    files = render_plan(plan)
    script = files["node1.sh"]
    assert f"STEPS_TOTAL={len(plan.for_host('node1').steps)}\n" in script
    block = ("step motd\nensure_packages apt=cowsay 'dnf=cowsay figlet'\n"
             "install_file 0644 /etc/motd < <(printf '%s\\n' 'welcome to lab-ubuntu')\n")
    assert script.index("\nstep hub\n") < script.index(block) < script.index("\nfinish_step\n")
    assert "step motd" not in files["node2.sh"]


def test_the_throwaway_step_is_gone_afterwards():
    assert "motd" not in [s.kind for s in steps.registry()]


def test_a_step_needs_its_template_and_an_order_of_its_own(tmp_path, monkeypatch):
    (tmp_path / "cablab_bad_step.py").write_text(MODULE.replace('order=145', 'order=140'))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="no template"):
        importlib.import_module("cablab_bad_step")
    sys.modules.pop("cablab_bad_step", None)
    (tmp_path / "cablab_bad_step.sh.j2").write_text(TEMPLATE)
    with pytest.raises(ValueError, match="order 140 is taken by hub"):
        importlib.import_module("cablab_bad_step")
    sys.modules.pop("cablab_bad_step", None)


def test_dockers_go_templates_live_in_the_prelude_only():
    """Docker's `--format '{{…}}'` braces are Jinja's too: one `{% raw %}` block in the prelude holds
    every Go template (docker_info, node_label, service_state, …); step templates call those helpers."""
    step_dir = Path(steps.__file__).parent
    templates = sorted(step_dir.glob("*.sh.j2"))
    assert len(templates) >= 15
    for template in templates:
        text = template.read_text()
        assert "{% raw %}" not in text, template.name
        assert "--format" not in text, f"{template.name}: ask Docker through the prelude's helpers"
    prelude = (step_dir.parent / "templates" / "prelude.sh.j2").read_text()
    assert prelude.count("{% raw %}") == 1


def test_the_prelude_helpers_ask_docker_what_the_steps_used_to(tmp_path):
    """The helpers pass Docker the same Go templates the steps had inline (a stub docker records them)."""
    import subprocess

    from cablab_cluster.render import Renderer

    plan = make_plan(load_spec(Path(__file__).parent.parent / "lab" / "ubuntu.yml"))
    hp = plan.for_host("node1")
    prelude = Renderer(plan).render_template("prelude.sh.j2", host=hp.host, steps=hp.steps, after=(), why_after="")
    start = prelude.index("# Docker's Go templates")
    end = prelude.index("\n[ \"$(id -u)\" = 0 ]")
    stub = tmp_path / "docker"
    stub.write_text('#!/bin/sh\nprintf "%s|" "$@" >>"$CALLS"; echo >>"$CALLS"\n')
    stub.chmod(0o755)
    calls = tmp_path / "calls"
    script = prelude[start:end] + """
docker_info Swarm.NodeID
self_label cablab.hub
image_label cablab/hub:lab org.cablab.dockerfile-sha256
service_state cablab_hub
services_running cablab_proxy cablab_hub || true
swarm_facts
network_shape cablab
"""
    subprocess.run(["bash", "-c", script], check=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(calls)})
    assert calls.read_text().splitlines() == [
        "info|--format|{{.Swarm.NodeID}}|",
        'node|inspect|self|--format|{{.ID}} {{index .Spec.Labels "cablab.hub"}}|',
        'image|inspect|--format|{{index .Config.Labels "org.cablab.dockerfile-sha256"}}|cablab/hub:lab|',
        "service|ps|cablab_hub|--filter|desired-state=running|--format|{{.CurrentState}}|",
        "service|ps|cablab_proxy|cablab_hub|--filter|desired-state=running|--format|{{.Name}} {{.CurrentState}}|",
        "info|--format|{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
        "{{if .Swarm.Cluster}} {{json .Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}{{end}}|",
        "network|inspect|--format|{{.Driver}} {{.Attachable}}{{range $k, $v := .Options}} {{$k}}{{end}}|cablab|",
    ]

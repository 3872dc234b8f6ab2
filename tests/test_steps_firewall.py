"""The firewall step: fixtures (spec in, rules out) and runs against stateful stand-ins of
firewall-cmd and ufw (tests/fakes/: not a real firewalld or ufw, their command lines and
outputs as documented), first run, second run, and a host removed from the spec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.spec import load_spec
from cablab_cluster.steps.firewall import Params, params

FAKES = Path(__file__).parent / "fakes"


def firewall_params(path: Path, host: str = "node1") -> Params:
    plan = make_plan(load_spec(path))
    return params(plan.cluster, plan.cluster.host(host))


def test_cluster_ports_include_ssh_and_nfs4_needs_2049_only(write_spec):
    p = firewall_params(write_spec())
    words = [(x.word, x.public) for x in p.ports]
    assert words == [("22/tcp", False), ("7946/tcp", False), ("7946/udp", False), ("4789/udp", False),
                     ("2377/tcp", False), ("2049/tcp", False), ("443/tcp", True), ("80/tcp", True)]
    assert p.sources == ("192.168.56.12", "192.168.56.13")


def test_nfs3_opens_the_pinned_side_ports(write_spec):
    p = firewall_params(write_spec(lambda d: d.update(nfs_version="3")))
    cluster = [x.word for x in p.ports if not x.public]
    for word in ("111/tcp", "111/udp", "20048/tcp", "20048/udp", "662/tcp", "662/udp", "32803/tcp", "32803/udp"):
        assert word in cluster
    plan = make_plan(load_spec(write_spec(lambda d: d.update(nfs_version="3"))))
    script = Renderer(plan).host_script("node1")
    assert "install_file 0644 /etc/nfs.conf.d/cablab.conf" in script
    for line in ("'[mountd]'", "port=20048", "port=662", "port=32803", "udp-port=32803"):
        assert f"  {line} \\\n" in script or f"  {line})\n" in script, line
    assert "nfs.conf.d/cablab.conf ]; then" not in script  # v3: kept, not removed


def test_nfs4_removes_the_pinning_file():
    script = Renderer(make_plan(load_spec(Path("lab/ubuntu.yml")))).host_script("node1")
    assert "if [ -e /etc/nfs.conf.d/cablab.conf ]; then\n  run rm -f /etc/nfs.conf.d/cablab.conf\n" in script


def test_esp_between_swarm_hosts_when_the_overlay_is_encrypted(write_spec):
    on = firewall_params(write_spec(lambda d: d["swarm"].update(encrypted=True)), "node2")
    off = firewall_params(write_spec(lambda d: d["swarm"].update(encrypted=False)), "node2")
    assert (on.protocols, off.protocols) == (("esp",), ())
    assert ("cablab 192.168.56.11 esp", ("allow", "from", "192.168.56.11", "to", "any", "proto", "esp")) \
        in on.ufw_rules()
    step = render_step(write_spec(lambda d: d["swarm"].update(encrypted=True)), "node2")
    assert "  want_protocols=(esp)\n" in step
    assert "  ufw_rule 'cablab 192.168.56.11 esp' allow from 192.168.56.11 to any proto esp\n" in step
    assert "  want_protocols=(esp)\n" in step


def test_both_families_render_ssh_to_the_cluster_only(write_spec):
    step = render_step(write_spec(), "node2")
    assert "  want_ports=(22/tcp " in step and "  # 22/tcp: ssh between the cluster's hosts (tokens, copies)\n" in step
    assert "  ufw_rule 'cablab 192.168.56.11 22/tcp' allow from 192.168.56.11 to any port 22 proto tcp\n" in step
    assert "  want_sources=(192.168.56.11 192.168.56.13)\n" in step


def render_step(spec: Path, host: str) -> str:
    r = Renderer(make_plan(load_spec(spec)))
    hp = r.plan.for_host(host)
    return r.step(next(s for s in hp.steps if s.kind == "firewall"))


# --------------------------------------------------------------------------
# Runs against the stand-ins

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the provisioners refuse to run without root")


def firewall_script(spec: Path, host: str, tmp: Path) -> Path:
    r = Renderer(make_plan(load_spec(spec)))
    hp = r.plan.for_host(host)
    steps = [s for s in hp.steps if s.kind == "firewall"]
    text = (r.render_template("prelude.sh.j2", host=hp.host, steps=steps, after=(), why_after="")
            + r.step(steps[0]) + r.render_template("footer.sh.j2"))
    path = tmp / f"{spec.stem}-{host}.sh"
    path.write_text(text)
    return path


def run(script: Path, tmp: Path, tool: str) -> list[str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shutil.copy(FAKES / tool, bin_dir / tool)
    if tool == "firewall-cmd":  # the steps ask systemd whether firewalld runs
        shutil.copy(FAKES / "systemctl", bin_dir / "systemctl")
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_STATE": str(state),
           "CABLAB_LOG": str(tmp / "log"), "CABLAB_STATE_DIR": str(tmp / "cablab")}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.splitlines()


def notes(tmp: Path) -> list[str]:
    return json.loads((tmp / "cablab" / "last-run.json").read_text())["steps"][0]["notes"]


def without_node3(d: dict) -> None:
    d["hosts"] = [h for h in d["hosts"] if h["name"] != "node3"]


@needs_root
def test_firewalld_first_run_second_run_and_a_removed_host(write_spec, tmp_path):
    spec = write_spec(lambda d: d.update(nfs_version="3") or d["swarm"].update(encrypted=True))
    run(firewall_script(spec, "node1", tmp_path), tmp_path, "firewall-cmd")
    state = json.loads((tmp_path / "state" / "firewalld.json").read_text())
    zone = state["zones"]["cablab"]
    assert zone["source"] == ["192.168.56.12", "192.168.56.13"]
    assert "22/tcp" in zone["port"] and "20048/udp" in zone["port"] and zone["protocol"] == ["esp"]
    assert state["zones"]["public"]["port"] == ["443/tcp", "80/tcp"]
    assert "firewall-cmd --reload" in (tmp_path / "state" / "calls").read_text()

    out = run(firewall_script(spec, "node1", tmp_path), tmp_path, "firewall-cmd")
    assert out[-1] == "[cablab node1] done: 1 steps, 0 changed"

    # node3 leaves the spec, NFS goes v4, the overlay plain: node1's next run takes back all of it.
    smaller = write_spec(lambda d: without_node3(d) or d["swarm"].update(encrypted=False), name="smaller.yml")
    (tmp_path / "state" / "calls").unlink()
    run(firewall_script(smaller, "node1", tmp_path), tmp_path, "firewall-cmd")
    zone = json.loads((tmp_path / "state" / "firewalld.json").read_text())["zones"]["cablab"]
    assert zone["source"] == ["192.168.56.12"]
    assert zone["port"] == ["22/tcp", "7946/tcp", "7946/udp", "4789/udp", "2377/tcp", "2049/tcp"]
    assert zone["protocol"] == []
    assert "firewalld --zone=cablab removed source 192.168.56.13" in notes(tmp_path)
    calls = (tmp_path / "state" / "calls").read_text()
    assert "firewall-cmd --permanent --zone=cablab --remove-protocol=esp" in calls
    # At run time too, and no reload: a reload flushes Docker's IPsec rules of the encrypted overlay.
    assert "firewall-cmd --zone=cablab --remove-source=192.168.56.13" in calls
    assert "--reload" not in calls
    out = run(firewall_script(smaller, "node1", tmp_path), tmp_path, "firewall-cmd")
    assert out[-1] == "[cablab node1] done: 1 steps, 0 changed"


@needs_root
def test_ufw_first_run_second_run_and_a_removed_host(write_spec, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    # The operator's own rules, and one of an earlier run without a tag: both left alone.
    (state / "ufw.rules").write_text("ufw allow 22/tcp comment 'ssh of the host'\nufw allow 8080/tcp\n")
    spec = write_spec(lambda d: d["swarm"].update(encrypted=True))
    run(firewall_script(spec, "node2", tmp_path), tmp_path, "ufw")
    rules = (state / "ufw.rules").read_text().splitlines()
    assert rules[:2] == ["ufw allow 22/tcp comment 'ssh of the host'", "ufw allow 8080/tcp"]
    assert "ufw allow from 192.168.56.13 to any port 22 proto tcp comment 'cablab 192.168.56.13 22/tcp'" in rules
    assert "ufw allow from 192.168.56.11 to any proto esp comment 'cablab 192.168.56.11 esp'" in rules
    assert "ufw allow from 192.168.56.11 to any port 2049 proto tcp comment 'cablab 192.168.56.11 2049/tcp'" \
        not in rules  # node2 serves no NFS

    out = run(firewall_script(spec, "node2", tmp_path), tmp_path, "ufw")
    assert out[-1] == "[cablab node2] done: 1 steps, 0 changed"

    smaller = write_spec(lambda d: without_node3(d) or d["swarm"].update(encrypted=False), name="smaller.yml")
    run(firewall_script(smaller, "node2", tmp_path), tmp_path, "ufw")
    rules = (state / "ufw.rules").read_text()
    assert "192.168.56.13" not in rules and " esp " not in rules
    assert "ufw allow 22/tcp comment 'ssh of the host'\nufw allow 8080/tcp\n" in rules
    assert "ufw deleted allow from 192.168.56.13 to any port 22 proto tcp" in notes(tmp_path)
    out = run(firewall_script(smaller, "node2", tmp_path), tmp_path, "ufw")
    assert out[-1] == "[cablab node2] done: 1 steps, 0 changed"

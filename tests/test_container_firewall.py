"""The container firewall (steps/container_firewall): rendered rules, run against a fake iptables.

Fixture-style: the lab spec in, the installed script out; the script then runs under bash
with `iptables`/`ip6tables` replaced by a fake that keeps its chains in a JSON file, so the
rules, their hooks, idempotence and the recovery after Docker or a reboot are checked here;
the lab check (checks/test_isolation.py) proves the rules on real nodes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import render_plan
from cablab_cluster.spec import load_spec
from cablab_cluster.steps import container_firewall

LAB = Path(__file__).parent.parent / "lab"

FAKE = r'''
import json, sys
from pathlib import Path
state = Path(sys.argv[1])
args = [a for a in sys.argv[3:] if a != "-w"]
family = sys.argv[2]
chains = json.loads(state.read_text())
t = chains.setdefault(family, {"INPUT": [], "FORWARD": []})
op = args[0]
if op == "-n":
    args = args[1:]
    op = args[0]
name, rule = args[1], " ".join(args[2:])
if op == "-L":
    sys.exit(0 if name in t else 1)
if op == "-N":
    if name in t: sys.exit(1)
    t[name] = []
elif op == "-S":
    if name not in t: sys.exit(1)
    print(f"-N {name}")
    for r in t[name]:
        print(f"-A {name} {r}".replace("--comment cablab-rules", '--comment "cablab-rules') + ('"' if "cablab-rules" in r else ""))
elif op == "-F":
    t[name] = []
elif op == "-A":
    t[name].append(rule)
elif op == "-C":
    sys.exit(0 if rule in t.get(name, []) else 1)
elif op == "-I":
    assert args[2] == "1"
    t[name].insert(0, " ".join(args[3:]))
else:
    sys.exit(f"fake iptables: unexpected {args}")
state.write_text(json.dumps(chains))
'''


def installed_script(spec: Path = LAB / "ubuntu.yml", host: str = "node2") -> str:
    script = render_plan(make_plan(load_spec(spec)))[f"{host}.sh"]
    body = script[script.index("step container_firewall"):]
    return body.split("<<'CABLAB_EOF'\n", 1)[1].split("\nCABLAB_EOF\n", 1)[0] + "\n"


@pytest.fixture
def fake(tmp_path):
    """bin/ with iptables and ip6tables faked; state.json: DOCKER-USER as Docker leaves it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "fake.py").write_text(FAKE)
    for family in ("iptables", "ip6tables"):
        (bindir / family).write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path}/fake.py {tmp_path}/state.json '
                                     f'{family} "$@"\n')
        (bindir / family).chmod(0o755)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"iptables": {"INPUT": [], "FORWARD": [], "DOCKER-USER": ["-j RETURN"]},
                                 "ip6tables": {"INPUT": [], "FORWARD": []}}))
    return tmp_path


def run(fake: Path, script: str) -> str:
    path = fake / "cablab-container-firewall"
    path.write_text(script)
    env = {**os.environ, "PATH": f"{fake / 'bin'}:/usr/bin:/bin"}
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, check=True).stdout


def chains(fake: Path) -> dict:
    return json.loads((fake / "state.json").read_text())


def test_containers_are_refused_the_cluster_hosts_control_ports(fake):
    out = run(fake, installed_script())
    v4 = chains(fake)["iptables"]
    # Docker's chain sends both bridges to ours, before its own RETURN; INPUT too (a container's own node)
    assert v4["DOCKER-USER"] == ["-i docker0 -j CABLAB-CONTAINERS", "-i docker_gwbridge -j CABLAB-CONTAINERS",
                                 "-j RETURN"]
    assert v4["INPUT"] == ["-i docker0 -j CABLAB-CONTAINERS-IN", "-i docker_gwbridge -j CABLAB-CONTAINERS-IN"]
    rules = v4["CABLAB-CONTAINERS"]
    for host in ("192.168.56.11", "192.168.56.12", "192.168.56.13"):
        tcp = next(r for r in rules if f"-d {host} -p tcp" in r)
        ports = set(re.search(r"--dports (\S+)", tcp).group(1).split(","))
        assert {"2049", "111", "20048", "2375", "2376", "2377", "7946", "22", "8001"} <= ports
        assert tcp.endswith("-j REJECT --reject-with tcp-reset")
        udp = next(r for r in rules if f"-d {host} -p udp" in r)
        assert {"2049", "111", "4789", "7946"} <= set(re.search(r"--dports (\S+)", udp).group(1).split(","))
    into_node = v4["CABLAB-CONTAINERS-IN"]
    assert any("-p tcp" in r and "2049" in r and "-d " not in r for r in into_node)
    # an IPv4-only cluster: IPv6 guards the node itself only
    v6 = chains(fake)["ip6tables"]
    assert "CABLAB-CONTAINERS" not in v6 and len(v6["CABLAB-CONTAINERS-IN"]) == 3
    assert "iptables: CABLAB-CONTAINERS filled" in out.splitlines()


def test_a_second_run_changes_nothing(fake):
    script = installed_script()
    run(fake, script)
    before = chains(fake)
    assert run(fake, script) == ""
    assert chains(fake) == before


def test_after_docker_recreates_its_chain_the_hooks_come_back(fake):
    script = installed_script()
    run(fake, script)
    state = chains(fake)
    state["iptables"]["DOCKER-USER"] = ["-j RETURN"]  # a fresh DOCKER-USER; our chains are kept
    (fake / "state.json").write_text(json.dumps(state))
    out = run(fake, script)
    assert out.splitlines() == ["iptables: DOCKER-USER sends docker_gwbridge to CABLAB-CONTAINERS",
                                "iptables: DOCKER-USER sends docker0 to CABLAB-CONTAINERS"]


def test_changed_rules_replace_the_old_ones(fake):
    run(fake, installed_script())
    state = chains(fake)
    state["iptables"]["CABLAB-CONTAINERS"].append("-d 10.0.0.9 -p tcp -j ACCEPT")  # stale
    state["iptables"]["CABLAB-CONTAINERS"][0] = "-m comment --comment cablab-rules 000000000000"
    (fake / "state.json").write_text(json.dumps(state))
    run(fake, installed_script())
    assert not any("10.0.0.9" in r for r in chains(fake)["iptables"]["CABLAB-CONTAINERS"])


def test_the_unit_re_applies_them_whenever_docker_starts():
    script = render_plan(make_plan(load_spec(LAB / "ubuntu.yml")))["node1.sh"]
    unit = script.split("/etc/systemd/system/cablab-container-firewall.service <<'CABLAB_EOF'\n", 1)[1]
    unit = unit.split("\nCABLAB_EOF\n", 1)[0]
    assert "After=docker.service" in unit and "PartOf=docker.service" in unit
    assert "WantedBy=docker.service multi-user.target" in unit
    assert "ExecStart=/usr/local/sbin/cablab-container-firewall" in unit


def test_every_swarm_node_gets_it():
    plan = make_plan(load_spec(LAB / "ubuntu.yml"))
    assert all("container_firewall" in [s.kind for s in hp.steps] for hp in plan.hosts)


def test_the_installed_script_is_shellcheck_clean(tmp_path):
    from tests.test_render import shellcheck

    (tmp_path / "s.sh").write_text(installed_script())
    result = shellcheck([tmp_path / "s.sh"])
    assert result.returncode == 0, result.stdout


def test_the_hub_needs_none_of_the_refused_ports():
    """The hub reaches Docker through the local socket (no TCP API), the proxy's API over the internal overlay."""
    stack = render_plan(make_plan(load_spec(LAB / "ubuntu.yml")))["hub/stack.yml"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in stack
    assert 8001 in dict(container_firewall.TCP) and 2375 in dict(container_firewall.TCP)

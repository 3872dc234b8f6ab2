"""The hosts as the preflight found them and the engine as it is kept: the preflight's line in
the provision log, the Docker pin held, unattended-upgrades kept off Docker (apt), and on SELinux
hosts the confined combination (selinux-enabled off the hub host, the NFS boolean); where firewalld
runs, the cluster's zone as the spec has it and a cluster-only port closed to the outside."""

from __future__ import annotations

import socket

import pytest

from cablab_cluster.layout import PROVISION_LOG
from cablab_cluster.spec import Role
from cablab_cluster.steps.docker_engine import NFS_BOOLEANS, UNATTENDED_NEVER
from cablab_cluster.steps.firewall import ZONE, params
from cablab_cluster.steps.preflight import DISTRIBUTIONS

pytestmark = pytest.mark.cluster


def family(nodes, host) -> str:
    return "apt" if nodes[host].exists("apt-get") else "dnf"


def test_the_preflight_passed_on_a_supported_distribution(any_host, nodes):
    lines = [line for line in nodes[any_host].check_output("grep '^preflight: ' %s || true", str(PROVISION_LOG))
             .splitlines()]
    assert lines, f"no preflight line in {PROVISION_LOG} on {any_host.name}"
    os_release = nodes[any_host].check_output(". /etc/os-release && echo \"$ID $VERSION_ID\"")
    ident, version = os_release.split()
    assert any(d.id == ident and (version == d.version or (d.minor_releases and version.startswith(d.version + ".")))
               for d in DISTRIBUTIONS), f"{any_host.name} runs {os_release}, not a supported distribution"


def test_the_docker_pin_is_held(swarm_host, nodes, cluster):
    if not cluster.docker.version:
        pytest.skip("docker.version is not pinned")
    engine = {"apt": "docker.io" if cluster.docker.source.value == "distro" else "docker-ce", "dnf": "docker-ce"}
    fam = family(nodes, swarm_host)
    if fam == "apt":
        held = nodes[swarm_host].check_output("apt-mark showhold").split()
    else:
        held = [line.rsplit("-", 2)[0] for line in nodes[swarm_host].check_output("dnf -q versionlock list").split()]
    assert engine[fam] in " ".join(held), f"{engine[fam]} is not held on {swarm_host.name}: {held}"


def test_unattended_upgrades_leave_docker_alone(swarm_host, nodes):
    if family(nodes, swarm_host) != "apt":
        pytest.skip("dnf host")
    text = nodes[swarm_host].file("/etc/apt/apt.conf.d/51cablab-docker").content_string
    assert "Unattended-Upgrade::Package-Blacklist" in text
    assert all(f'"{name}$";' in text for name in UNATTENDED_NEVER)


def test_selinux_confines_containers_off_the_hub_host(swarm_host, nodes):
    if nodes[swarm_host].run("selinuxenabled").rc != 0:
        pytest.skip("no SELinux on this host")
    options = nodes[swarm_host].check_output("docker info --format '{{json .SecurityOptions}}'")
    if Role.HUB in swarm_host.roles:
        assert "selinux" not in options, "the hub host's containers must stay unlabelled (the hub uses the socket)"
    else:
        assert "selinux" in options, f"containers on {swarm_host.name} are not confined: {options}"
    booleans = [nodes[swarm_host].run("getsebool %s", b) for b in NFS_BOOLEANS]
    assert any(r.rc == 0 for r in booleans) and all(r.stdout.strip().endswith("on") for r in booleans if r.rc == 0)


def zone_listing(text: str) -> dict[str, list[str]]:
    """`firewall-cmd --list-all`'s `  key: values` lines, as {key: [values]} (one call: each costs
    seconds on a slow host)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines()[1:]:
        key, sep, values = line.strip().partition(":")
        if sep:
            out[key] = values.split()
    return out


def test_the_firewall_lets_only_the_cluster_reach_its_ports(any_host, nodes, cluster):
    """With firewalld running (EL's default): the zone bound to the other hosts holds exactly them
    and the step's ports, at run time as in the permanent configuration; and a cluster-only port
    (swarm gossip, 7946/tcp, dockerd's own listener) answers another host of the cluster and not
    this checker, which is outside the cluster."""
    node = nodes[any_host]
    if not node.exists("firewall-cmd") or node.run("systemctl is-active --quiet firewalld.service").rc != 0:
        pytest.skip("firewalld is not running on this host")
    want = params(cluster, any_host)
    for where in ("firewall-cmd", "firewall-cmd --permanent"):  # run time, then what a reload keeps
        listed = zone_listing(node.check_output(f"{where} --zone={ZONE} --list-all"))
        assert set(listed["sources"]) == set(want.sources), f"{any_host.name}: {where} sources"
        assert set(listed["ports"]) == {p.word for p in want.ports if not p.public}, f"{any_host.name}: {where} ports"
        assert set(listed["protocols"]) == set(want.protocols), f"{any_host.name}: {where} protocols"
    public = zone_listing(node.check_output("firewall-cmd --list-all"))["ports"]
    assert {p.word for p in want.ports if p.public} <= set(public), f"{any_host.name}: public ports {public}"
    others = [h for h in cluster.swarm_hosts if h != any_host]
    if not (any_host.is_manager or any_host.is_worker) or not others:
        return
    address, other = str(any_host.address), others[0]
    probe = nodes[other].run("timeout 10 bash -c %s", f"</dev/tcp/{address}/7946")
    assert probe.rc == 0, f"{other.name} cannot reach {address}:7946 (swarm gossip): {probe.stderr}"
    try:
        socket.create_connection((address, 7946), timeout=10).close()
    except OSError:
        pass  # rejected (or dropped): the checker is not one of the cluster's hosts
    else:
        pytest.fail(f"{address}:7946 (cluster only) answers this checker, a machine outside the cluster")

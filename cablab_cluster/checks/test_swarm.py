"""Swarm: every swarm host is a ready node with its spec role, the overlay
network is as the spec says, and no host offers Docker's API over TCP."""

from __future__ import annotations

import json

import pytest

from cablab_cluster.steps.docker_engine import OFFLINE_ENV

from .test_user import running_container

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def swarm_nodes(nodes, cluster) -> dict[str, dict]:
    """`docker node ls` on the first manager, by hostname."""
    out = nodes[cluster.first_manager].check_output("docker node ls --format '{{json .}}'")
    return {n["Hostname"]: n for n in (json.loads(line) for line in out.splitlines() if line.strip())}


def test_the_swarm_is_exactly_the_spec_swarm_hosts(swarm_nodes, cluster):
    assert sorted(swarm_nodes) == sorted(h.name for h in cluster.swarm_hosts)


def test_node_is_ready_active_with_its_role(swarm_host, swarm_nodes):
    node = swarm_nodes.get(swarm_host.name)
    assert node, f"{swarm_host.name} is not a swarm node (nodes: {', '.join(swarm_nodes)})"
    assert node["Status"] == "Ready"
    assert node["Availability"] == "Active"
    if swarm_host.is_manager:
        assert node["ManagerStatus"] in ("Leader", "Reachable"), f"{swarm_host.name} should be a reachable manager"
    else:
        assert node["ManagerStatus"] == "", f"{swarm_host.name} should be a worker, is {node['ManagerStatus']}"


def test_node_advertises_its_spec_address(swarm_host, nodes):
    info = nodes[swarm_host].check_output("docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.NodeAddr}}'")
    assert info == f"active {swarm_host.address}"


def test_manager_count_and_one_leader(swarm_nodes, cluster):
    statuses = [n["ManagerStatus"] for n in swarm_nodes.values() if n["ManagerStatus"]]
    assert len(statuses) == len(cluster.managers), f"manager statuses: {statuses}"
    assert statuses.count("Leader") == 1


def test_overlay_network(nodes, cluster):
    swarm = cluster.swarm
    result = nodes[cluster.first_manager].run("docker network inspect --format '{{json .}}' %s", swarm.network)
    assert result.rc == 0, f"no network {swarm.network} on {cluster.first_manager.name}: {result.stderr.strip()}"
    net = json.loads(result.stdout)
    assert net["Driver"] == "overlay"
    assert net["Scope"] == "swarm"
    assert net["Attachable"] is swarm.attachable
    assert ("encrypted" in (net.get("Options") or {})) is swarm.encrypted, f"options: {net.get('Options')}"


def test_no_docker_api_on_tcp(any_host, nodes):
    listening = nodes[any_host].socket.get_listening_sockets()  # tcp://0.0.0.0:22, tcp://:::22, unix://...
    exposed = [s for s in listening if s.startswith("tcp://") and s.rsplit(":", 1)[-1] in ("2375", "2376")]
    assert not exposed, f"{any_host.name} listens on {', '.join(exposed)}: an unauthenticated Docker API"


def test_the_hub_label_is_on_the_hub_host_only(nodes, cluster):
    """The hub and the proxy are pinned by the node label HUB_LABEL (not a hostname), set by the
    hub host's run on itself; their tasks run there."""
    from cablab_cluster.layout import HUB_LABEL, STACK

    manager = nodes[cluster.first_manager]
    labelled = manager.check_output(f"docker node ls --filter node.label={HUB_LABEL}=true --format '{{{{.ID}}}}'")
    addrs = [manager.check_output(f"docker node inspect --format '{{{{.Status.Addr}}}}' {node_id}")
             for node_id in labelled.split()]
    assert addrs == [str(cluster.hub_host.address)], f"nodes labelled {HUB_LABEL}=true: {addrs}"
    for service in (f"{STACK}_hub", f"{STACK}_proxy"):
        constraints = manager.check_output(
            f"docker service inspect --format '{{{{json .Spec.TaskTemplate.Placement.Constraints}}}}' {service}")
        assert f"node.labels.{HUB_LABEL} == true" in json.loads(constraints), f"{service}: {constraints}"


def test_each_node_declares_its_engine_labels(nodes, cluster):
    """Users' servers are placed by engine labels (steps/docker_engine.py: engine_labels), never by
    hostname: each swarm node, found by its address, carries exactly its host's labels as the swarm
    sees them (what the placement constraints read)."""
    from cablab_cluster.steps.docker_engine import engine_labels

    listed = json.loads(nodes[cluster.first_manager].check_output("docker node inspect $(docker node ls -q)"))
    seen = {n["Status"]["Addr"]: n["Description"]["Engine"].get("Labels") or {} for n in listed}
    for h in cluster.swarm_hosts:
        want = dict(label.split("=", 1) for label in engine_labels(cluster, h))
        assert seen.get(str(h.address)) == want, f"{h.name}: engine labels {seen.get(str(h.address))}, want {want}"


def test_swarm_tasks_start_from_the_nodes_own_images(swarm_host, nodes):
    """No task's start asks a registry for its image first (step docker_engine's drop-in): dockerd runs
    with OFFLINE_ENV, and has logged no pull attempt since it started (the hub's and the proxy's tasks
    on the hub host, users' servers on the notebook hosts: this check runs after most checks that spawn)."""
    host = nodes[swarm_host]
    pid = host.check_output("systemctl show -p MainPID --value docker")
    assert pid not in ("", "0"), f"Docker is not running on {swarm_host.name}"
    invocation = host.check_output("systemctl show -p InvocationID --value docker")
    environ = host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid).splitlines()
    assert OFFLINE_ENV in environ, f"dockerd (pid {pid}) runs without {OFFLINE_ENV}: restart Docker"
    # This start of dockerd only (its systemd invocation): not an earlier boot's, whatever its pid.
    log = host.check_output("journalctl -q --no-pager -o cat _SYSTEMD_INVOCATION_ID=%s", invocation).splitlines()
    assert log, f"no log of dockerd's invocation {invocation} in the journal"
    pulls = [line for line in log if "pulling image failed" in line]
    assert not pulls, "dockerd tried a registry for a task's image:\n" + "\n".join(pulls[:5])


def test_the_users_network_is_held_open_on_each_notebook_host(notebook_host, nodes, cluster):
    """The stack's anchor (render.Renderer.anchor_service) runs on every notebook host, so the users'
    network is there before any server starts (no user waits for Docker to build it): one running
    task of it on the host, in the spec's network, and nothing more than a sleeping process — as
    nobody, no capability, a read-only root, no mount."""
    from cablab_cluster.layout import STACK
    from cablab_cluster.render import ANCHOR_SERVICE, NOBODY

    host = nodes[notebook_host]
    service = f"{STACK}_{ANCHOR_SERVICE}"
    container = json.loads(host.check_output("docker inspect %s", running_container(nodes, notebook_host, service)))[0]
    config, limits = container["Config"], container["HostConfig"]
    assert config["User"] == NOBODY and limits["ReadonlyRootfs"] is True, (config["User"], limits["ReadonlyRootfs"])
    assert [c.upper() for c in limits.get("CapDrop") or []] in (["ALL"], ["CAP_ALL"]), limits.get("CapDrop")
    assert not limits.get("CapAdd") and not container["Mounts"], (limits.get("CapAdd"), container["Mounts"])
    assert config["Cmd"] == ["sleep", "infinity"], config["Cmd"]
    networks = set(container["NetworkSettings"]["Networks"])
    assert networks == {cluster.swarm.network}, f"{service} on {notebook_host.name} is in {sorted(networks)}"
    # The network is instantiated on the host itself (a swarm network shows on a worker only then).
    assert host.run("docker network inspect --format '{{.Name}}' %s", cluster.swarm.network).rc == 0, \
        f"the users' network {cluster.swarm.network} is not on {notebook_host.name}"

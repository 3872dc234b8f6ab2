"""Plan: which steps each host gets, and the order between hosts."""

from pathlib import Path

from cablab_cluster.plan import StepKind, host_inputs, hub_secrets, make_plan, secret_names
from cablab_cluster.spec import load_spec

SPECS = Path(__file__).parent / "fixtures" / "specs"
LAB = Path(__file__).parent.parent / "lab"


def kinds(plan, host):
    return [s.kind for s in plan.for_host(host).steps]


def test_lab_ubuntu_order_and_steps():
    plan = make_plan(load_spec(LAB / "ubuntu.yml"))
    assert [hp.host.name for hp in plan.hosts] == ["node1", "node2", "node3"]
    assert plan.for_host("node1").after == ()
    assert plan.for_host("node2").after == ("node1",)
    assert kinds(plan, "node1") == [
        StepKind.HOSTNAME, StepKind.FIREWALL, StepKind.DOCKER_ENGINE, StepKind.NFS_SERVER, StepKind.SEED_SHARES,
        StepKind.NFS_MOUNTS, StepKind.SWARM_INIT, StepKind.SWARM_NETWORK, StepKind.IMAGE, StepKind.HUB,
    ]
    assert kinds(plan, "node3") == [
        StepKind.HOSTNAME, StepKind.FIREWALL, StepKind.DOCKER_ENGINE, StepKind.NFS_MOUNTS,
        StepKind.SWARM_JOIN, StepKind.IMAGE,
    ]
    # the hub image only where the hub runs, the notebook image only on the workers
    images = {hp.host.name: [s.params["key"] for s in hp.steps if s.kind is StepKind.IMAGE] for hp in plan.hosts}
    assert images == {"node1": ["hub"], "node2": ["singleuser"], "node3": ["singleuser"]}
    # the synthetic cube is an input of the NFS server only
    c = plan.cluster
    assert {h.name: host_inputs(c, h) for h in c.hosts} == {
        "node1": ("/var/cache/cablab/seed/esdc-8d-2deg-synthetic.tar.gz",), "node2": (), "node3": ()}


def test_lvm_storage_precedes_the_engine():
    plan = make_plan(load_spec(LAB / "centos.yml"))
    for hp in plan.hosts:
        k = [s.kind for s in hp.steps]
        assert k.index(StepKind.DOCKER_LVM) + 1 == k.index(StepKind.DOCKER_ENGINE)


def test_nas_first_then_first_manager_then_workers():
    plan = make_plan(load_spec(SPECS / "letsencrypt-docker-repo.yml"))
    assert [hp.host.name for hp in plan.hosts] == ["nas", "hub", "w1", "w2"]
    assert plan.for_host("hub").after == ("nas",)
    assert plan.for_host("w1").after == ("nas", "hub")
    # a storage host outside the swarm gets no Docker and no swarm
    assert kinds(plan, "nas") == [StepKind.HOSTNAME, StepKind.FIREWALL, StepKind.NFS_SERVER]
    hub = kinds(plan, "hub")
    assert hub.index(StepKind.IMAGE) < hub.index(StepKind.LETSENCRYPT) < hub.index(StepKind.HUB)


def test_three_managers_join_before_workers_and_as_managers():
    plan = make_plan(load_spec(SPECS / "three-managers-devicemapper.yml"))
    assert [hp.host.name for hp in plan.hosts] == ["vm1", "vm2", "vm3", "vm4"]
    joins = {hp.host.name: s.params["role"] for hp in plan.hosts for s in hp.steps if s.kind is StepKind.SWARM_JOIN}
    assert joins == {"vm2": "manager", "vm3": "manager", "vm4": "worker"}
    assert StepKind.DOCKER_THINPOOL in kinds(plan, "vm4")


def test_firewall_ports_by_role():
    plan = make_plan(load_spec(SPECS / "three-managers-devicemapper.yml"))

    def ports(host):
        step = next(s for s in plan.for_host(host).steps if s.kind is StepKind.FIREWALL)
        return {(p.number, p.proto.value, p.public) for p in step.params["ports"]}

    assert (2377, "tcp", False) in ports("vm2") and (2377, "tcp", False) not in ports("vm4")
    assert {(2049, "tcp", False), (111, "tcp", False), (20048, "tcp", False), (443, "tcp", True)} <= ports("vm1")
    assert not any(p[2] for p in ports("vm4"))  # nothing public on a worker


def test_single_host_runs_notebooks_on_the_manager():
    plan = make_plan(load_spec(SPECS / "single-host.yml"))
    keys = [s.params["key"] for s in plan.for_host("solo").steps if s.kind is StepKind.IMAGE]
    assert keys == ["hub", "singleuser"]
    mounts = next(s for s in plan.for_host("solo").steps if s.kind is StepKind.NFS_MOUNTS).params["mounts"]
    # the server binds its exports where clients mount them; a share already there needs nothing
    assert [(m.source, str(m.target), m.bind) for m in mounts] == [("/export/homes", "/srv/cablab/homes", True)]


def test_secret_names_follow_tls_and_lab():
    lab = load_spec(LAB / "ubuntu.yml").cluster
    assert secret_names(lab) == ("cookie_secret", "proxy_token", "metrics_token", "github_client_secret", "tls.crt", "tls.key",
                                 "lab_password")
    le = load_spec(SPECS / "letsencrypt-docker-repo.yml").cluster
    assert secret_names(le) == ("cookie_secret", "proxy_token", "metrics_token", "github_client_secret")
    # the hub still reads the TLS pair: certbot's renewal hook puts it there
    assert hub_secrets(le) == ("cookie_secret", "proxy_token", "metrics_token", "github_client_secret", "tls.crt", "tls.key")

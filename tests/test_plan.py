"""Plan: which steps each host gets, and the order between hosts."""

from pathlib import Path

from cablab_cluster.layout import secrets_hub_reads, secrets_operator_copies
from cablab_cluster.plan import InputKind, make_plan
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
        'hostname', 'firewall', 'docker_engine', 'container_firewall', 'nfs_server', 'seed_shares',
        'nfs_mounts', 'swarm_init', 'swarm_network', 'image', 'hub',
    ]
    assert kinds(plan, "node3") == [
        'hostname', 'firewall', 'docker_engine', 'container_firewall', 'nfs_mounts',
        'swarm_join', 'image',
    ]
    # the hub image only where the hub runs, the notebook image only on the workers
    images = {hp.host.name: [s.params.key for s in hp.steps if s.kind == 'image'] for hp in plan.hosts}
    assert images == {"node1": ["hub"], "node2": ["singleuser"], "node3": ["singleuser"]}
    # what the operator brings: the cube and the hub's secrets to the NFS/hub host, tokens to the joiners,
    # the saved images where they run
    inputs = {hp.host.name: [(i.kind, str(i.path), i.mode) for i in hp.inputs] for hp in plan.hosts}
    assert inputs == {
        "node1": [(InputKind.CUBE, "/var/cache/cablab/seed/esdc-8d-2deg-synthetic.tar.gz", "0644"),
                  (InputKind.IMAGE, "/var/cache/cablab/images/hub.tar.gz", "0644"),
                  *((InputKind.SECRET, f"/etc/cablab/secrets/{n}", "0600") for n in (
                      "cookie_secret", "proxy_token", "metrics_token", "github_client_secret", "tls.crt", "tls.key", "lab_password"))],
        "node2": [(InputKind.JOIN_TOKEN, "/etc/cablab/swarm/worker.token", "0600"),
                  (InputKind.IMAGE, "/var/cache/cablab/images/singleuser.tar.gz", "0644")],
        "node3": [(InputKind.JOIN_TOKEN, "/etc/cablab/swarm/worker.token", "0600"),
                  (InputKind.IMAGE, "/var/cache/cablab/images/singleuser.tar.gz", "0644")],
    }
    assert {i.from_host for hp in plan.hosts for i in hp.inputs if i.kind is InputKind.JOIN_TOKEN} == {"node1"}
    assert [[hp.host.name for hp in wave] for wave in plan.waves] == [["node1"], ["node2", "node3"]]


def test_waves_follow_the_order_between_hosts():
    plan = make_plan(load_spec(SPECS / "letsencrypt-docker-repo.yml"))
    assert [[hp.host.name for hp in wave] for wave in plan.waves] == [["nas"], ["hub"], ["w1", "w2"]]
    plan = make_plan(load_spec(SPECS / "three-managers-devicemapper.yml"))
    assert [[hp.host.name for hp in wave] for wave in plan.waves] == [["vm1"], ["vm2", "vm3", "vm4"]]


def test_letsencrypt_hub_needs_no_tls_pair_and_pulled_images_no_tarball():
    plan = make_plan(load_spec(SPECS / "letsencrypt-docker-repo.yml"))
    assert [(i.kind, i.key) for i in plan.for_host("hub").inputs] == [
        (InputKind.SECRET, "cookie_secret"), (InputKind.SECRET, "proxy_token"), (InputKind.SECRET, "metrics_token"),
        (InputKind.SECRET, "github_client_secret")]
    assert plan.for_host("nas").inputs == ()


def test_lvm_storage_precedes_the_engine():
    plan = make_plan(load_spec(LAB / "centos.yml"))
    for hp in plan.hosts:
        k = [s.kind for s in hp.steps]
        assert k.index('docker_lvm') + 1 == k.index('docker_engine')


def test_nas_first_then_first_manager_then_workers():
    plan = make_plan(load_spec(SPECS / "letsencrypt-docker-repo.yml"))
    assert [hp.host.name for hp in plan.hosts] == ["nas", "hub", "w1", "w2"]
    assert plan.for_host("hub").after == ("nas",)
    assert plan.for_host("w1").after == ("nas", "hub")
    # a storage host outside the swarm gets no Docker and no swarm
    assert kinds(plan, "nas") == ['hostname', 'firewall', 'nfs_server']
    hub = kinds(plan, "hub")
    assert hub.index('image') < hub.index('letsencrypt') < hub.index('hub')


def test_three_managers_join_before_workers_and_as_managers():
    plan = make_plan(load_spec(SPECS / "three-managers-devicemapper.yml"))
    assert [hp.host.name for hp in plan.hosts] == ["vm1", "vm2", "vm3", "vm4"]
    joins = {hp.host.name: s.params.role for hp in plan.hosts for s in hp.steps if s.kind == 'swarm_join'}
    assert joins == {"vm2": "manager", "vm3": "manager", "vm4": "worker"}
    assert 'docker_thinpool' in kinds(plan, "vm4")


def test_firewall_ports_by_role():
    plan = make_plan(load_spec(SPECS / "three-managers-devicemapper.yml"))

    def ports(host):
        step = next(s for s in plan.for_host(host).steps if s.kind == 'firewall')
        return {(p.number, p.proto.value, p.public) for p in step.params.ports}

    assert (2377, "tcp", False) in ports("vm2") and (2377, "tcp", False) not in ports("vm4")
    assert {(2049, "tcp", False), (111, "tcp", False), (20048, "tcp", False), (443, "tcp", True)} <= ports("vm1")
    assert not any(p[2] for p in ports("vm4"))  # nothing public on a worker


def test_single_host_runs_notebooks_on_the_manager():
    plan = make_plan(load_spec(SPECS / "single-host.yml"))
    keys = [s.params.key for s in plan.for_host("solo").steps if s.kind == 'image']
    assert keys == ["hub", "singleuser"]
    mounts = next(s for s in plan.for_host("solo").steps if s.kind == 'nfs_mounts').params.mounts
    # the server binds its exports where clients mount them; a share already there needs nothing
    assert [(m.source, str(m.target), m.bind) for m in mounts] == [("/export/homes", "/srv/cablab/homes", True)]


def test_secret_names_follow_tls_and_lab():
    lab = load_spec(LAB / "ubuntu.yml").cluster
    assert secrets_operator_copies(lab) == ("cookie_secret", "proxy_token", "metrics_token", "github_client_secret",
                                            "tls.crt", "tls.key", "lab_password")
    le = load_spec(SPECS / "letsencrypt-docker-repo.yml").cluster
    assert secrets_operator_copies(le) == ("cookie_secret", "proxy_token", "metrics_token", "github_client_secret")
    # the hub still reads the TLS pair: certbot's renewal hook puts it there
    assert secrets_hub_reads(le) == ("cookie_secret", "proxy_token", "metrics_token", "github_client_secret",
                                     "tls.crt", "tls.key")

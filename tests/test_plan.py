"""Plan: which steps each host gets, and the order between hosts."""

from pathlib import Path

from cablab_cluster.layout import secrets_hub_reads, secrets_operator_copies
from cablab_cluster.plan import InputKind, make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.steps.image import image_identity
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
        'preflight', 'hostname', 'firewall', 'docker_engine', 'container_firewall', 'nfs_server', 'seed_shares',
        'nfs_mounts', 'swarm_init', 'swarm_network', 'image', 'hub',
    ]
    assert kinds(plan, "node3") == [
        'preflight', 'hostname', 'firewall', 'docker_engine', 'container_firewall', 'nfs_mounts',
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


def test_lab_centos_managers_join_with_the_manager_token_of_node1():
    plan = make_plan(load_spec(LAB / "centos.yml"))
    tokens = {hp.host.name: [(str(i.path), i.from_host) for i in hp.inputs if i.kind is InputKind.JOIN_TOKEN]
              for hp in plan.hosts}
    assert tokens == {"node1": [], "node2": [("/etc/cablab/swarm/manager.token", "node1")],
                      "node3": [("/etc/cablab/swarm/manager.token", "node1")]}
    joins = {hp.host.name: s.params.role for hp in plan.hosts for s in hp.steps if s.kind == 'swarm_join'}
    assert joins == {"node2": "manager", "node3": "manager"}
    # the notebook image only where notebooks run: not on node1, a manager too
    images = {hp.host.name: [s.params.key for s in hp.steps if s.kind == 'image'] for hp in plan.hosts}
    assert images == {"node1": ["hub"], "node2": ["singleuser"], "node3": ["singleuser"]}


def test_a_saved_image_is_not_needed_only_under_the_engines_storage_driver():
    """A box's images under overlay2 are not there once Docker runs devicemapper: the tarball is needed."""
    for lab, driver in (("centos", "overlay2"), ("centos-dm", "devicemapper")):
        item = make_plan(load_spec(LAB / f"{lab}.yml")).for_host("node2").inputs[1]
        assert item.kind is InputKind.IMAGE
        assert item.unless == (f"[ \"$(docker info --format '{{{{.Driver}}}}' 2>/dev/null)\" = {driver} ] && "
                               "[ \"$(docker image inspect --format '{{index .Config.Labels \"org.cablab.identity\"}}' "
                               f"cablab/singleuser:lab 2>/dev/null)\" = {image_identity(load_spec(LAB / f'{lab}.yml').cluster, 'singleuser')} ]")


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
    assert kinds(plan, "nas") == ['preflight', 'hostname', 'firewall', 'nfs_server']
    hub = kinds(plan, "hub")
    # certbot's webroot and a stand-in certificate before the stack; the issuance needs the stack's port 80
    assert hub.index('image') < hub.index('letsencrypt') < hub.index('hub') < hub.index('letsencrypt_issue')


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


# --------------------------------------------------------------------------
# Adding and removing a node


def add_node4(d):
    d["hosts"].append({"name": "node4", "address": "192.168.56.14", "roles": ["worker"]})


def step_params(plan, host, kind):
    return next(s.params for s in plan.for_host(host).steps if s.kind == kind)


def test_a_fourth_host_joins_and_every_other_host_lets_it_in(write_spec):
    from cablab_cluster.render import render_plan
    from cablab_cluster.steps.nfs_server import exports

    plan = make_plan(load_spec(write_spec(add_node4)))
    assert kinds(plan, "node4") == kinds(plan, "node3")  # joins as a worker, mounts the shares, gets the image
    assert plan.for_host("node4").after == ("node1",)
    for host in ("node1", "node2", "node3"):
        assert "192.168.56.14" in step_params(plan, host, "firewall").sources
    assert all("192.168.56.14(" in line for line in exports(step_params(plan, "node1", "nfs_server")))
    files = render_plan(plan)
    assert "192.168.56.14(" in files["node1.sh"]  # the exports file the NFS server writes
    assert "clients='192.168.56.12 192.168.56.13 192.168.56.14'" in files["node1.sh"]
    assert '"node4"' in files["hub/cablab.json"]  # a notebook node users can be placed on


def test_a_removed_host_loses_exports_and_firewall_rules(write_spec):
    from cablab_cluster.render import render_plan

    def remove_node3(d):
        d["hosts"] = [h for h in d["hosts"] if h["name"] != "node3"]

    with_it, without = (render_plan(make_plan(load_spec(write_spec(m, name=f"{i}.yml"))))
                        for i, m in enumerate((None, remove_node3)))
    assert "192.168.56.13" in with_it["node1.sh"] and "192.168.56.13" in with_it["node2.sh"]
    assert "192.168.56.13" not in without["node1.sh"] and "192.168.56.13" not in without["node2.sh"]
    # the exports file is rewritten as a whole and re-exported; a client left in the kernel's table is withdrawn
    assert "install_file 0644 /etc/exports.d/cablab.exports" in without["node1.sh"]
    assert "\nclients=192.168.56.12\n" in without["node1.sh"]
    assert '"node3"' not in without["hub/cablab.json"]


def test_removal_commands_drain_wait_leave_and_remove():
    import pytest

    from cablab_cluster.plan import removal
    from cablab_cluster.spec import SpecError

    c = load_spec(LAB / "ubuntu.yml").cluster
    assert [(x.host, x.command) for x in removal(c, "node3")] == [
        ("node1", "docker node update --availability drain node3"),
        ("node1", 'until [ -z "$(docker node ps node3 --filter desired-state=running -q)" ]; do sleep 5; done'),
        ("node3", "docker swarm leave"),
        ("node1", "docker node rm node3"),
    ]
    for host, why in (("node1", "node1 is not a worker"), ("node9", "'node9' is not a host")):
        with pytest.raises(SpecError) as exc:
            removal(c, host)
        assert why in exc.value.lines()[0]


def test_later_hosts_wait_for_the_steps_that_make_what_they_need():
    """A joiner needs the first manager's swarm (tokens), a client the server's exports: not the
    hub's start after them, which may run beside the joiners (the lab's provision does so)."""
    ubuntu = make_plan(load_spec(LAB / "ubuntu.yml"))
    assert ubuntu.for_host("node1").gates == ()
    gates = [(g.host, g.step, g.why) for g in ubuntu.for_host("node2").gates]
    assert gates == [("node1", "nfs_server", "mounts its shares"), ("node1", "swarm_init", "joins its swarm")]
    kinds1 = kinds(ubuntu, "node1")
    assert all(kinds1.index(g.step) < kinds1.index("hub") for g in ubuntu.for_host("node2").gates)
    # the name is the one node1's script logs ("step N/M swarm_init: ..."), which the lab watches for
    script = Renderer(ubuntu).host_script("node1").splitlines()
    assert all(f"step {g.step}" in script for g in ubuntu.for_host("node2").gates)
    # a separate NFS server: the first manager waits for its exports only, the workers for both
    split = make_plan(load_spec(SPECS / "letsencrypt-docker-repo.yml"))
    assert [(g.host, g.step) for g in split.for_host("hub").gates] == [("nas", "nfs_server")]
    assert [(g.host, g.step) for g in split.for_host("w1").gates] == [("nas", "nfs_server"), ("hub", "swarm_init")]

"""Every validation rule, with the error text the operator sees."""

from pathlib import Path

import pytest
import yaml

from cablab_cluster.spec import Role, SpecError, StorageDriver, load_spec

LAB = Path(__file__).parent.parent / "lab"


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    return exc.value.lines()


def one(path: Path) -> str:
    lines = problems(path)
    assert len(lines) == 1, lines
    return lines[0]


def test_lab_specs_are_valid():
    for variant in ("ubuntu", "centos"):
        spec = load_spec(Path(__file__).parent.parent / "lab" / f"{variant}.yml")
        c = spec.cluster
        assert c.variant.value == variant
        assert [h.name for h in c.hosts] == ["node1", "node2", "node3"]
        assert c.first_manager.name == c.nfs_server.name == c.hub_host.name == "node1"
        assert [h.name for h in c.notebook_hosts] == ["node2", "node3"]
        assert spec.userlist.admins == ("alice",)
    assert load_spec(Path(__file__).parent.parent / "lab" / "centos.yml").cluster.docker.storage.driver \
        is StorageDriver.LVM
    # one manager in the ubuntu lab; three in the centos lab, notebooks still on node2/node3 only
    assert [h.name for h in load_spec(LAB / "ubuntu.yml").cluster.managers] == ["node1"]
    assert [h.name for h in load_spec(LAB / "centos.yml").cluster.managers] == ["node1", "node2", "node3"]


def test_the_devicemapper_lab_is_the_centos_lab_but_its_storage_and_network():
    """lab/centos-dm.yml runs the seed's thin pool; in all else it stays lab/centos.yml."""
    centos, dm = (yaml.safe_load((LAB / f"{n}.yml").read_text()) for n in ("centos", "centos-dm"))
    c = load_spec(LAB / "centos-dm.yml").cluster
    assert c.docker.storage.driver is StorageDriver.DEVICEMAPPER and c.docker.major == 20
    assert (dm.pop("name"), centos.pop("name")) == ("lab-centos-dm", "lab-centos")
    assert dm["docker"].pop("version") == "20.10"
    assert dm["docker"]["storage"].pop("driver") == "devicemapper-direct-lvm"
    assert centos["docker"]["storage"].pop("driver") == "lvm"
    assert dm["hub"].pop("public_host") == "hub.lab-centos-dm.test"
    centos["hub"].pop("public_host")
    # Let's Encrypt is the centos lab's (its pebble listens on that lab's network); the dm lab self-signs.
    assert dm["hub"].pop("tls") == {"mode": "self-signed"}
    assert centos["hub"].pop("tls")["mode"] == "letsencrypt"
    for a, b in zip(dm["hosts"], centos["hosts"]):  # its own libvirt network: both labs may stand at once
        assert a.pop("address").removeprefix("192.168.58.") == b.pop("address").removeprefix("192.168.57.")
    assert dm == centos


def test_notebooks_role_needs_a_swarm_node(write_spec):
    def notebooks_only(d):
        d["hosts"].append({"name": "node4", "address": "192.168.56.14", "roles": ["notebooks"]})

    assert "hosts[3].roles: needs exactly one of `manager` or `worker`" in one(write_spec(notebooks_only))


def test_notebooks_role_places_servers_on_some_managers(write_spec):
    def three(d):
        for h in d["hosts"][1:]:
            h["roles"] = ["manager", "notebooks"]

    c = load_spec(write_spec(three)).cluster
    assert [h.name for h in c.notebook_hosts] == ["node2", "node3"]


def test_unknown_key_names_path_line_and_suggestion(write_spec):
    def typo(d):
        d["hosts"][1]["adress"] = d["hosts"][1].pop("address")

    lines = problems(write_spec(typo))
    assert any("hosts[1].adress: unknown key 'adress' (hint: did you mean 'address'?" in l for l in lines), lines
    assert any("hosts[1].address: Field required" in l for l in lines), lines
    # the line number is the spec's line of that key
    text = (write_spec(typo)).read_text().splitlines()
    line = next(l for l in lines if "adress" in l).split(":")[1]
    assert "adress" in text[int(line) - 1]


def test_wrong_type(write_spec):
    line = one(write_spec(lambda d: d["swarm"].update(attachable="sometimes")))
    assert "swarm.attachable:" in line and "write true or false" in line


def test_bad_address(write_spec):
    line = one(write_spec(lambda d: d["hosts"][2].update(address="192.168.56.300")))
    assert "hosts[2].address: '192.168.56.300' is not an IP address" in line


def test_bad_enum(write_spec):
    line = one(write_spec(lambda d: d["hosts"][0]["roles"].append("consul")))
    assert "hosts[0].roles[3]: 'consul' is not allowed (hint: use one of: 'manager', 'worker', 'nfs-server', 'hub' or 'notebooks')" in line


def test_two_managers_rejected_with_quorum_reason(write_spec):
    line = one(write_spec(lambda d: d["hosts"][1].update(roles=["manager"])))
    assert "hosts: 2 managers: swarm needs 1 or 3" in line
    assert "raft quorum" in line and "tolerate no failure" in line


def test_three_managers_accepted(write_spec):
    def three(d):
        for h in d["hosts"][1:]:
            h["roles"] = ["manager"]

    c = load_spec(write_spec(three)).cluster
    assert len(c.managers) == 3 and c.workers == ()
    assert [h.name for h in c.notebook_hosts] == ["node1", "node2", "node3"]


def test_exactly_one_nfs_server(write_spec):
    assert "1 hosts" not in one(write_spec(lambda d: d["hosts"][0]["roles"].remove("nfs-server")))
    assert "hosts: 0 hosts have the role nfs-server; exactly one must" in \
        one(write_spec(lambda d: d["hosts"][0]["roles"].remove("nfs-server")))


def test_nfs_server_cannot_be_a_worker(write_spec):
    def move(d):
        d["hosts"][0]["roles"].remove("nfs-server")
        d["hosts"][1]["roles"].append("nfs-server")

    assert "hosts[1].roles: an NFS server cannot be a swarm worker" in one(write_spec(move))


def test_storage_only_nfs_host_outside_the_swarm(write_spec):
    def nas(d):
        d["hosts"][0]["roles"].remove("nfs-server")
        d["hosts"].append({"name": "nas", "address": "192.168.56.20", "roles": ["nfs-server"]})

    c = load_spec(write_spec(nas)).cluster
    assert c.nfs_server.name == "nas" and c.nfs_server not in c.swarm_hosts


def test_hub_must_be_on_a_manager(write_spec):
    def move(d):
        d["hosts"][0]["roles"].remove("hub")
        d["hosts"][2]["roles"].append("hub")

    assert "hosts[2].roles: the hub must run on a manager" in one(write_spec(move))


def test_unique_names_and_addresses(write_spec):
    def dup(d):
        d["hosts"][2]["name"] = "node2"
        d["hosts"][2]["address"] = "192.168.56.12"

    lines = problems(write_spec(dup))
    assert any("hosts[2].name: 'node2' is already the name of hosts[1]" in l for l in lines)
    assert any("hosts[2].address: 192.168.56.12 is already the address of hosts[1]" in l for l in lines)


def test_manager_and_worker_both_rejected(write_spec):
    lines = problems(write_spec(lambda d: d["hosts"][1]["roles"].append("manager")))
    assert any("hosts[1].roles: needs exactly one of `manager` or `worker`" in l for l in lines), lines


@pytest.mark.parametrize("driver", ["lvm", "devicemapper-direct-lvm"])
def test_disk_storage_needs_a_disk(write_spec, driver):
    def storage(d):
        d["docker"]["storage"] = {"driver": driver}
        d["docker"]["version"] = "20.10"

    assert f"docker.storage.disks: storage driver {driver} needs a disk" in one(write_spec(storage))


@pytest.mark.parametrize("version, ok", [(None, False), ("25.0", False), ("28.1.1", False), ("20.10", True), ("24.0.7", True)])
def test_devicemapper_needs_docker_below_25(write_spec, version, ok):
    def storage(d):
        d["docker"]["storage"] = {"driver": "devicemapper-direct-lvm", "disks": ["/dev/vdb"]}
        if version:
            d["docker"]["version"] = version

    path = write_spec(storage)
    if ok:
        assert load_spec(path).cluster.docker.major == int(version.split(".")[0])
    else:
        line = one(path)
        assert "docker.version: devicemapper-direct-lvm needs Docker < 25" in line
        assert "Docker 25 removed the devicemapper driver" in line


@pytest.mark.parametrize("source, lab, ok", [("distro", False, False), ("docker-repo", False, True),
                                             ("distro", True, True)])
def test_centos_needs_dockers_repository_outside_the_lab(write_spec, source, lab, ok):
    """EL 9 ships no Docker engine; a lab spec's centos variant runs on Debian stand-ins with docker.io."""
    def el(d):
        d["variant"] = "centos"
        d["docker"]["source"] = source
        d["lab"] = lab
        if not lab:
            d["hub"]["auth"].pop("lab_password", None)

    path = write_spec(el)
    if ok:
        assert load_spec(path).cluster.variant.family == "dnf"
    else:
        line = one(path)
        assert "docker.source: variant centos (Rocky/Alma/RHEL 9) has no distribution Docker engine" in line
        assert "docker.source: docker-repo" in line


def test_letsencrypt_needs_a_dns_name_and_email(write_spec):
    lines = problems(write_spec(lambda d: d["hub"]["tls"].update(mode="letsencrypt")))
    assert any("hub.public_host: Let's Encrypt issues certificates for DNS names, not IP addresses" in l for l in lines)
    assert any("hub.tls.email: letsencrypt needs a contact email" in l for l in lines)

    def ok(d):
        d["hub"]["public_host"] = "hub.example.org"
        d["hub"]["tls"] = {"mode": "letsencrypt", "email": "ops@example.org",
                           "acme_directory": "https://localhost:14000/dir"}

    assert load_spec(write_spec(ok)).cluster.hub.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"


def test_provided_tls_needs_existing_files(write_spec):
    lines = problems(write_spec(lambda d: d["hub"]["tls"].update(mode="provided")))
    assert any("hub.tls.cert: tls mode `provided` needs `cert`" in l for l in lines)
    line = one(write_spec(lambda d: d["hub"].update(tls={"mode": "provided", "cert": "no.pem", "key": "userlist.lab"})))
    assert "hub.tls.cert: 'no.pem' does not exist" in line


def test_lab_password_needs_a_lab_spec(write_spec):
    line = one(write_spec(lambda d: d.update(lab=False)))
    assert "hub.auth.lab_password: the lab password login is for lab clusters only" in line


def test_github_secret_file_must_exist(write_spec):
    line = one(write_spec(lambda d: d["hub"]["auth"]["github"].update(client_secret_file="missing")))
    assert "hub.auth.github.client_secret_file: 'missing' does not exist" in line


def test_userlist_errors_carry_their_line(write_spec, spec_dir):
    (spec_dir / "userlist.lab").write_text("alice admin\nbob sudo\n")
    line = one(write_spec())
    assert "hub.userlist:" in line and "userlist.lab line 2: 'bob sudo' is not `name` or `name admin`" in line


def test_empty_userlist_admits_nobody(write_spec, spec_dir):
    (spec_dir / "userlist.lab").write_text("# nobody yet\n")
    assert "names no user; JupyterHub would admit nobody" in one(write_spec())


def test_shares_rules(write_spec):
    def bad(d):
        d["shares"][0]["mount"] = "/var/lib/docker/volumes"
        d["shares"][1]["options"] = ["no_root_squash"]
        d["hub"]["users"]["home_share"] = "cube"
        d["hub"]["users"]["read_only_mounts"][1]["share"] = "nope"

    lines = problems(write_spec(bad))
    assert any("shares[0].mount: NFS must never be mounted over Docker's data root" in l for l in lines)
    assert any("shares[1].options: 'no_root_squash' is set by `read_only` / `root_squash`" in l for l in lines)
    assert any("hub.users.home_share: share 'cube' is read-only; homes must be writable" in l for l in lines)
    assert any("hub.users.read_only_mounts[1].share: no share named 'nope'" in l for l in lines)


def test_load_source_needs_a_tarball(write_spec):
    line = one(write_spec(lambda d: d["hub"]["images"]["hub"].pop("tarball")))
    assert "hub.images.hub.tarball: source `load` needs the tarball's path on the nodes" in line


def test_every_problem_at_once(write_spec):
    def many(d):
        d["name"] = "Bad Name"
        d["hosts"][0]["address"] = "nope"
        d["variant"] = "arch"

    lines = problems(write_spec(many))
    assert {l.split(": ")[1] for l in lines} >= {"name", "variant", "hosts[0].address"}


def test_yaml_syntax_error_has_a_line(spec_dir):
    path = spec_dir / "broken.yml"
    path.write_text("name: x\nhosts: [\n")
    line = one(path)
    assert line.startswith(f"{path}:") and "not valid YAML" in line


def test_roles_enum():
    assert {r.value for r in Role} == {"manager", "worker", "nfs-server", "hub", "notebooks"}


def test_a_long_value_is_echoed_cut(write_spec):
    line = one(write_spec(lambda d: d.update(name="y" * 5000)))
    assert f"name: '{'y' * 60}…' is not valid here" in line and len(line) < 400


def test_anchors_and_aliases_are_refused_before_expansion(write_spec):
    spec = write_spec()
    spec.write_text(spec.read_text() + 'a: &a [x, x]\nb: [*a, *a]\n')
    line = one(spec)
    assert "(yaml): not valid YAML: anchors and aliases (&name, *name, <<: *name) are not allowed in a spec" in line


def test_a_spec_that_is_not_utf8_names_the_file(write_spec):
    spec = write_spec()
    spec.write_bytes(spec.read_bytes() + b"# caf\xe9\n")
    assert one(spec).startswith(f"{spec}: (file): not UTF-8 text (byte ")


@pytest.mark.parametrize("mutate, where, text, hint", [
    (lambda d: d["shares"][0].update(path="/srv/x';touch /tmp/p;'"), "shares[0].path", "has characters", "A-Z a-z 0-9"),
    (lambda d: d["shares"][0].update(mount="/srv/x$(touch /tmp/p)"), "shares[0].mount", "has characters", "A-Z a-z 0-9"),
    (lambda d: d["shares"][0].update(mount="/srv/x\n- /:/hostroot"), "shares[0].mount", "has characters", "A-Z a-z 0-9"),
    (lambda d: d["shares"][0].update(path="/srv/../var/lib/docker"), "shares[0].path", "not a normalised path", "'..'"),
    (lambda d: d["shares"][0].update(path="/"), "shares[0].path", "is a system directory", "/srv/nfs/homes"),
    (lambda d: d["shares"][0].update(mount="/etc/cablab"), "shares[0].mount", "is a system directory", "/srv/cablab"),
    (lambda d: d["shares"][0].update(path="/home"), "shares[0].path", "is a system directory", "of its own"),
    (lambda d: d["hub"]["users"].update(home_target="work"), "hub.users.home_target", "not an absolute path", "absolute"),
    (lambda d: d["hub"]["users"]["read_only_mounts"][0].update(target="cube"),
     "hub.users.read_only_mounts[0].target", "not an absolute path", "absolute"),
    (lambda d: d["hub"]["images"]["hub"].update(tarball="/var/cache/x y.tar"), "hub.images.hub.tarball",
     "has characters", "A-Z a-z 0-9"),
    (lambda d: d["hosts"][1].update(address="fe80::1%x$(touch${IFS}p)"), "hosts[1].address", "zone id",
     "without a zone id"),
    (lambda d: d["docker"].update(version=20.10), "docker.version", "20.1 is a YAML number", 'version: "20.10"'),
    (lambda d: d.update(nfs_version=4.1), "nfs_version", "4.1 is a YAML number", 'nfs_version: "4.2"'),
    (lambda d: d["hub"]["images"]["singleuser"].update(packages=["jupyterlab; os_name=='nt'"]),
     "hub.images.singleuser.packages[0]", "is not valid here", "pip requirement"),
    (lambda d: d["hub"]["images"]["singleuser"].update(packages=["a$(touch /tmp/p)"]),
     "hub.images.singleuser.packages[0]", "is not valid here", "pip requirement"),
    (lambda d: d["docker"].update(storage={"driver": "lvm", "disks": ["/dev/../etc/passwd"]}), "docker.storage.disks[0]",
     "not a normalised path", "'..'"),
])
def test_hostile_values_are_refused_with_a_hint(write_spec, mutate, where, text, hint):
    lines = problems(write_spec(mutate))
    line = next((l for l in lines if f": {where}: " in l), None)
    assert line is not None, lines
    assert text in line and "(hint: " in line and hint in line.split("(hint: ", 1)[1], line


def test_requirements_with_specifiers_and_integer_versions_are_accepted(write_spec):
    def ok(d):
        d["hub"]["images"]["singleuser"]["packages"] = ["jupyterlab>=4.0,<5", "ipywidgets[extra]==8.1.1"]
        d["nfs_version"] = 4

    c = load_spec(write_spec(ok)).cluster
    assert c.nfs_version == "4"
    assert c.hub.images.singleuser.packages == ("jupyterlab>=4.0,<5", "ipywidgets[extra]==8.1.1")


# --------------------------------------------------------------------------
# Operations: hub.users.cull, limits, reservations, overrides


def test_operation_defaults(write_spec):
    def bare(d):
        for key in ("cull", "limits", "reservations", "overrides"):
            d["hub"]["users"].pop(key, None)

    users = load_spec(write_spec(bare)).cluster.hub.users
    assert (users.cull.enabled, users.cull.timeout, users.cull.every, users.cull.max_age) == (True, 3600, 300, 0)
    assert users.resources("bob").limits.memory is None and users.resources().reservations.cpus is None


def test_an_override_replaces_the_defaults_key_by_key():
    from cablab_cluster.spec import memory_bytes

    users = load_spec(Path(__file__).resolve().parent.parent / "lab" / "ubuntu.yml").cluster.hub.users
    erin, frank, bob = users.resources("erin"), users.resources("frank"), users.resources("bob")
    assert (erin.limits.memory, erin.limits.cpus, erin.reservations.memory) == ("320M", 1.0, "256M")
    assert (frank.limits.memory, frank.reservations.memory, frank.reservations.cpus) == ("4G", "4G", 0.1)
    assert bob == users.resources()
    assert memory_bytes("512M") == 512 << 20 and memory_bytes("2G") == 2 << 30


@pytest.mark.parametrize("mutate, where, text, hint", [
    (lambda d: d["hub"]["users"]["limits"].update(memory="2GB"), "hub.users.limits.memory", "is not valid here",
     "512M or 2G"),
    (lambda d: d["hub"]["users"]["limits"].update(memory="2g"), "hub.users.limits.memory", "is not valid here",
     "512M or 2G"),
    (lambda d: d["hub"]["users"]["reservations"].update(memory="$(reboot)"), "hub.users.reservations.memory",
     "is not valid here", "512M or 2G"),
    (lambda d: d["hub"]["users"]["limits"].update(cpus="2"), "hub.users.limits.cpus", "not a number of CPUs",
     "e.g. 1 or 0.5"),
    (lambda d: d["hub"]["users"]["limits"].update(cpus=True), "hub.users.limits.cpus", "not a number of CPUs",
     "e.g. 1 or 0.5"),
    (lambda d: d["hub"]["users"]["limits"].update(memory="32M"), "hub.users.limits.memory", "too little",
     "at least 64M"),
    (lambda d: d["hub"]["users"]["reservations"].update(memory="1G"), "hub.users.reservations.memory",
     "reserves 1G, more than the limit 896M", "at most the limit"),
    (lambda d: d["hub"]["users"]["reservations"].update(cpus=2), "hub.users.reservations.cpus",
     "reserves 2 CPUs, more than the limit 1", "at most the limit"),
    (lambda d: d["hub"]["users"]["overrides"]["erin"].update(reservations={"memory": "512M"}),
     "hub.users.overrides.erin.reservations.memory", "more than the limit 320M", "at most the limit"),
    (lambda d: d["hub"]["users"]["overrides"].update(mallory={"limits": {"memory": "1G"}}),
     "hub.users.overrides.mallory", "not in the userlist", "add the user to the userlist"),
    (lambda d: d["hub"]["users"]["overrides"].update({"a b": {}}), "hub.users.overrides.a b.[key]", "is not valid here",
     "GitHub login"),
    (lambda d: d["hub"]["users"]["overrides"]["erin"].update(limit={"memory": "1G"}),
     "hub.users.overrides.erin.limit", "unknown key 'limit'", "did you mean 'limits'"),
    (lambda d: d["hub"]["users"]["cull"].update(timeout=30), "hub.users.cull.timeout", "greater than or equal to 60",
     ""),
    (lambda d: d["hub"]["users"]["cull"].update(every=600), "hub.users.cull.every",
     "longer than the idle timeout (180 s)", "at most 180"),
])
def test_operation_values_are_refused_with_a_hint(write_spec, mutate, where, text, hint):
    lines = problems(write_spec(mutate))
    line = next((l for l in lines if f": {where}: " in l), None)
    assert line is not None, lines
    assert text in line, line
    if hint:
        assert "(hint: " in line and hint in line.split("(hint: ", 1)[1], line


def test_jupyterhub_version_is_a_spec_key_defaulting_to_the_lock(write_spec):
    """`hub.images.hub.jupyterhub`: the lock's version by default; another one needs a new lock."""
    from cablab_cluster.bundle import locked

    assert load_spec(write_spec(lambda d: None)).cluster.hub.images.hub.jupyterhub == locked("jupyterhub")

    def other(d):
        d["hub"].setdefault("images", {}).setdefault("hub", {"name": "cablab/hub:1.0"})["jupyterhub"] = "5.2.1"

    line = one(write_spec(other))
    assert "hub.images.hub.jupyterhub: JupyterHub 5.2.1 is not the locked version" in line
    assert "lock-singleuser.sh" in line

    def unquoted(d):
        d["hub"].setdefault("images", {}).setdefault("hub", {"name": "cablab/hub:1.0"})["jupyterhub"] = 6.1

    assert "hub.images.hub.jupyterhub" in one(write_spec(unquoted))


def _letsencrypt(bundle: str | None):
    def mutate(d):
        d["hub"]["public_host"] = "hub.example.org"
        d["hub"]["tls"] = {"mode": "letsencrypt", "email": "ops@example.org",
                           "acme_directory": "https://10.0.0.1:14000/dir"}
        if bundle is not None:
            d["hub"]["tls"]["acme_ca_bundle"] = bundle
    return mutate


def test_acme_ca_bundle_is_read_as_certificates_only(write_spec, tmp_path):
    from cablab_cluster.secretstore import self_signed

    spec = load_spec(write_spec(_letsencrypt(None)))
    assert spec.acme_ca == ""  # unset: certbot trusts the system's CAs (Let's Encrypt itself)
    cert_pem, key_pem = self_signed(spec)
    path = write_spec(_letsencrypt("acme-ca.pem"))
    (path.parent / "acme-ca.pem").write_bytes(b"# the test CA\n" + cert_pem + key_pem)
    got = load_spec(path).acme_ca
    assert got == cert_pem.decode() and "PRIVATE KEY" not in got and "#" not in got


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot be read: No such file or directory"),
    (b"not a certificate\n", "holds no valid PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "holds no valid PEM certificate"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_acme_ca_bundle_must_be_pem_certificates(write_spec, content, message):
    path = write_spec(_letsencrypt("acme-ca.pem"))
    if content is not None:
        (path.parent / "acme-ca.pem").write_bytes(content)
    line = one(path)
    assert ": hub.tls.acme_ca_bundle: " in line
    assert message in line


def test_acme_ca_bundle_only_in_letsencrypt_mode(write_spec):
    line = one(write_spec(lambda d: d["hub"]["tls"].update(acme_ca_bundle="ca.pem")))
    assert "hub.tls.acme_ca_bundle: acme_ca_bundle is only read in mode `letsencrypt` (mode is self-signed)" in line

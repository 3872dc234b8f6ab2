"""NFS: the server exports exactly the spec's shares to exactly the other
hosts of the cluster, every swarm host mounts them from fstab, the home share
is one file system across hosts, and read-only shares refuse writes."""

from __future__ import annotations

import re
import uuid

import pytest

from .hosts import proc_mounts_escape

pytestmark = pytest.mark.cluster

CLIENT = re.compile(r"^(?P<client>[^()\s]+)\((?P<options>[^()]*)\)$")


def parse_exports(text: str) -> dict[str, dict[str, set[str]]]:
    """`exportfs -v` (or `exportfs -s`) → {path: {client: {options}}}.

    exportfs -v writes `path<TAB>client(opts)` per client, and puts a long path on
    a line of its own with the client on the next; -s writes `path client(opts)`.
    """
    exports: dict[str, dict[str, set[str]]] = {}
    path = None
    for token in text.split():
        match = CLIENT.match(token)
        if match and path is not None:
            exports[path][match["client"]] = set(match["options"].split(","))
        elif token.startswith("/"):
            path = token.replace("\\040", " ")
            exports.setdefault(path, {})
        else:
            raise ValueError(f"unexpected {token!r} in the export list")
    return exports


def writer_ids(cluster, share) -> tuple[int, int]:
    """Who writes test files into a share: its owner, or the notebook user if root owns it
    (root is squashed to nobody on the clients)."""
    uid, gid = (int(x) for x in share.owner.split(":"))
    return (uid, gid) if uid != 0 else (cluster.hub.users.uid, cluster.hub.users.gid)


def setpriv(uid: int, gid: int) -> str:
    return f"setpriv --reuid={uid} --regid={gid} --clear-groups"


@pytest.fixture(scope="module")
def server(cluster):
    return cluster.nfs_server


@pytest.fixture(scope="module")
def exports(nodes, server) -> dict[str, dict[str, set[str]]]:
    return parse_exports(nodes[server].check_output("exportfs -v"))


def test_exports_are_exactly_the_spec_shares(exports, cluster):
    assert sorted(exports) == sorted(str(s.path) for s in cluster.shares)


def test_share_is_exported_to_the_cluster_only(share, exports, cluster, server):
    clients = exports.get(str(share.path))
    assert clients is not None, f"{share.path} is not exported"
    by_name = {str(h.address): h.name for h in cluster.hosts} | {h.name: h.name for h in cluster.hosts}
    # exportfs may print a client by the name it resolves to (the provisioner puts them in /etc/hosts)
    got = sorted(by_name.get(c, by_name.get(c.split(".")[0], c)) for c in clients)
    assert got == sorted(h.name for h in cluster.hosts if h != server), f"exported to {sorted(clients)}"
    for client, options in clients.items():
        assert ("ro" if share.read_only else "rw") in options, f"{share.path} to {client}: {sorted(options)}"
        squash = "root_squash" if share.root_squash else "no_root_squash"
        assert squash in options, f"{share.path} to {client}: {sorted(options)}"


def test_share_is_mounted(swarm_host, share, nodes, cluster, server):
    mount = str(share.mount)
    host = nodes[swarm_host]
    if swarm_host == server:
        if share.mount == share.path:
            assert host.file(mount).is_directory, f"{mount} is missing"
            return
        mounted = nodes.mount_point(swarm_host, mount)
        assert mounted.exists, f"{mount} is not mounted on {swarm_host.name}"
        assert ("ro" if share.read_only else "rw") in mounted.options, f"options: {mounted.options}"
        same = host.check_output("stat -c %%d:%%i %s %s", mount, str(share.path)).split()
        assert same[0] == same[1], f"{mount} is not a bind of {share.path}"
        return
    mounted = nodes.mount_point(swarm_host, mount)
    assert mounted.exists, f"{mount} is not mounted on {swarm_host.name}"
    assert mounted.filesystem in ("nfs", "nfs4")
    assert mounted.device == proc_mounts_escape(f"{_server_address(server)}:{share.path}")
    assert ("ro" if share.read_only else "rw") in mounted.options, f"options: {mounted.options}"
    vers = next((o.split("=", 1)[1] for o in mounted.options if o.startswith("vers=")), "")
    want = cluster.nfs_version
    assert vers == want or (want == "4" and vers.startswith("4.")), f"NFS version {vers}, spec says {want}"


def test_share_is_in_fstab(swarm_host, share, nodes, server):
    if swarm_host == server and share.mount == share.path:
        pytest.skip("the share is used in place on the server")
    entries = [e for e in nodes.fstab(swarm_host) if e.target == str(share.mount)]
    assert len(entries) == 1, f"/etc/fstab on {swarm_host.name} has {len(entries)} entries for {share.mount}"
    entry = entries[0]
    if swarm_host == server:
        assert entry.source == str(share.path) and "bind" in entry.options, f"not a bind: {entry}"
    else:
        assert entry.source == f"{_server_address(server)}:{share.path}"
        assert entry.fstype in ("nfs", "nfs4")
        assert "_netdev" in entry.options, f"no _netdev (mounted before the network is up): {entry.options}"


def test_home_share_is_one_file_system_across_hosts(nodes, cluster, server, wait_until):
    home = cluster.share(cluster.hub.users.home_share)
    clients = [h for h in cluster.swarm_hosts if h != server]
    if not clients:
        pytest.skip("no swarm host besides the NFS server")
    writer, readers = clients[0], clients[1:]
    uid, gid = writer_ids(cluster, home)
    who = setpriv(uid, gid)
    name = f".cablab-check-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    nodes[writer].check_output(f"{who} sh -c %s sh %s %s", 'printf "%s\\n" "$1" > "$2"', token, f"{home.mount}/{name}")
    try:
        for reader in readers:
            path = f"{home.mount}/{name}"
            wait_until(lambda: nodes[reader].run(f"{who} cat %s", path).stdout.strip() == token, 30,
                       f"{path}, written on {writer.name}, to be read on {reader.name}", interval=2)
        path = f"{home.path}/{name}"
        on_server = nodes[server]
        assert on_server.check_output("cat %s", path).strip() == token, f"{path} on the server"
        assert on_server.check_output("stat -c %%u:%%g %s", path) == f"{uid}:{gid}", f"owner of {path} on the server"
    finally:
        nodes[writer].run(f"{who} rm -f %s", f"{home.mount}/{name}")


def test_read_only_share_refuses_writes(nfs_client, read_only_share, nodes):
    path = f"{read_only_share.mount}/.cablab-check-{uuid.uuid4().hex}"
    result = nodes[nfs_client].run("touch %s", path)
    if result.rc == 0:
        nodes[nfs_client].run("rm -f %s", path)
        pytest.fail(f"root on {nfs_client.name} could write {path} into read-only share {read_only_share.name}")


def test_root_is_squashed_on_clients(nfs_client, squashed_share, nodes):
    path = f"{squashed_share.mount}/.cablab-check-{uuid.uuid4().hex}"
    if nodes[nfs_client].run("touch %s", path).rc == 0:
        try:
            owner = nodes[nfs_client].check_output("stat -c %%u %s", path)
            assert owner != "0", f"root on {nfs_client.name} created {path} as root: not squashed"
        finally:
            nodes[nfs_client].run("rm -f %s", path)


DOCKER_DROP_IN = "/etc/systemd/system/docker.service.d/cablab-mounts.conf"


def test_docker_starts_after_the_shares_are_mounted(swarm_host, nodes, cluster, server):
    """After a reboot no container may bind an empty mount point: docker.service requires the mounts."""
    expected = {str(s.mount) for s in cluster.shares if swarm_host != server or s.mount != s.path}
    if not expected:
        pytest.skip("every share is used in place on this host: nothing to wait for")
    host = nodes[swarm_host]
    assert host.file(DOCKER_DROP_IN).is_file, f"{DOCKER_DROP_IN} is missing on {swarm_host.name}"
    listed = set(host.check_output("systemctl show -p RequiresMountsFor --value docker.service").split())
    assert expected <= listed, \
        f"docker.service on {swarm_host.name} requires mounts for {sorted(listed)}, not {sorted(expected - listed)}"
    after = host.check_output("systemctl show -p After --value docker.service").split()
    for mount in expected:
        unit = host.check_output("systemd-escape --path --suffix=mount %s", mount)
        assert unit in after, f"docker.service on {swarm_host.name} is not ordered after {unit}"


def _server_address(server) -> str:
    return f"[{server.address}]" if server.address.version == 6 else str(server.address)

"""Users are apart (issue 8 A): from inside alice's server, the NFS server, rpcbind, the Docker API,
the swarm's control ports, ssh and the proxy's API cannot be reached (the container firewall and
the network split), while the hub's API, which her server needs, can; alice's uid cannot list or
read bob's home by any path; bob's files belong to bob's uid. alice and bob are lab/userlist.lab's
users; lab clusters only (`hub.auth.lab_password`), as every check that logs a user in."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from cablab_cluster.plan import STACK
from cablab_cluster.render import PROXY_API_ALIAS, PROXY_API_PORT

from .spawner import deployed_uids
from .test_nfs import setpriv
from .test_user import UserServer, container

pytestmark = pytest.mark.cluster

ALICE, BOB = "alice", "bob"

# Run in alice's container as her server runs (docker exec: the service's user, her uid): each
# target as `host:port`, "gateway" meaning her node itself (through docker_gwbridge's gateway: the
# INPUT path). Prints {target: "open" | the error}.
PROBE = r"""
import json, socket, struct, sys
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
out = {}
for target in json.loads(sys.argv[1]):
    host, port = target.rsplit(":", 1)
    host = gateway() if host == "gateway" else host
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        out[target] = "open"
    except OSError as exc:
        out[target] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def servers(hub_client, password, spec, cluster, nodes, wait_until):
    """alice's server on the last notebook node and bob's on the first (another, with two or more),
    started at once; stopped afterwards. name -> (its host, its container)."""
    names = {u.name for u in spec.userlist.users}
    if not {ALICE, BOB} <= names:
        pytest.skip(f"the userlist lacks {ALICE} or {BOB}")
    if not cluster.hub.auth.lab_password:
        pytest.skip("hub.auth.lab_password is off: the checks cannot log users in")
    where = {ALICE: cluster.notebook_hosts[-1], BOB: cluster.notebook_hosts[0]}
    servers = {}
    for name in where:
        browser = hub_client()
        assert browser.login(name, password).status == 302, f"logging in as {name}"
        servers[name] = UserServer(browser, name, wait_until)

    def start(name: str) -> None:
        servers[name].stop()
        servers[name].start(where[name].name)

    try:
        # Two nodes start one server each, side by side (each start is bound by its node's CPU).
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(start, name) for name in where]
        for future in futures:
            future.result()
        yield {name: (where[name], container(nodes, where[name], name)) for name in where}
    finally:
        # Every server, started or not (a start that timed out may still be spawning): each stop tried.
        errors = []
        for server in servers.values():
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001  # the other server is stopped first; raised below
                errors.append(exc)
        if errors:
            raise errors[0]


def probe(nodes, node, cid: str, targets: list[str]) -> dict[str, str]:
    return json.loads(nodes[node].check_output("docker exec %s python3 -c %s %s", cid, PROBE, json.dumps(targets)))


def test_alices_server_runs_as_her_own_uid(servers, nodes, cluster):
    uids = deployed_uids(nodes, cluster)
    for name, (node, cid) in servers.items():
        got = nodes[node].check_output("docker exec %s id -u", cid)
        assert got == str(uids[name]) and got != str(cluster.hub.users.uid), f"{name}'s server runs as uid {got}"


def test_alice_reaches_no_control_port(servers, nodes, cluster):
    node, cid = servers[ALICE]
    nfs = cluster.nfs_server
    refused = [f"{nfs.address}:2049", f"{nfs.address}:111", f"{STACK}_proxy:{PROXY_API_PORT}",
               f"{PROXY_API_ALIAS}:{PROXY_API_PORT}", "gateway:22", "gateway:7946"]
    for h in cluster.hosts:
        refused += [f"{h.address}:22", f"{h.address}:2375", f"{h.address}:2376", f"{h.address}:7946"]
        if h.is_manager:
            refused.append(f"{h.address}:2377")
    if nfs == node:
        refused.append("gateway:2049")
    needed = [f"{STACK}_hub:8081"]  # the hub's API: her server reports to it (and proves the probe can connect)
    got = probe(nodes, node, cid, refused + needed)
    assert got[needed[0]] == "open", f"alice's server cannot reach the hub's API: {got[needed[0]]}"
    reached = {t: r for t, r in got.items() if t in refused and r == "open"}
    assert not reached, f"alice's server reached {sorted(reached)}"
    assert nodes[node].run("docker exec %s test -e /var/run/docker.sock", cid).rc != 0, \
        "the Docker socket is in alice's container"


def test_alice_cannot_list_or_read_bobs_home(servers, nodes, cluster):
    (node, alice), (bob_node, bob) = servers[ALICE], servers[BOB]
    users = cluster.hub.users
    home = cluster.share(users.home_share)
    uids = deployed_uids(nodes, cluster)
    note = f".cablab-check-{uuid.uuid4().hex}"
    nodes[bob_node].check_output("docker exec %s sh -c %s", bob, f"echo secret > {users.home_target}/{note}")
    # In her container: the home share appears only as her own home.
    mountinfo = nodes[node].check_output("docker exec %s cat /proc/self/mountinfo", alice)
    assert f"/{BOB}" not in mountinfo and str(home.mount) not in mountinfo, mountinfo
    # Through her node's NFS mount as her uid (what a user could do with AUTH_SYS, were NFS reachable).
    who = setpriv(uids[ALICE], users.gid)
    for path in (f"{home.mount}/{BOB}", f"{home.mount}/{BOB}/{note}", str(home.mount)):
        for verb in ("ls", "cat"):
            result = nodes[node].run(f"{who} {verb} %s", path)
            assert result.rc != 0, f"alice's uid could {verb} {path}: {result.stdout[:200]}"


def test_bobs_files_belong_to_bobs_uid(servers, nodes, cluster):
    node, cid = servers[BOB]
    users = cluster.hub.users
    home = cluster.share(users.home_share)
    uid = deployed_uids(nodes, cluster)[BOB]
    nodes[node].check_output("docker exec %s sh -c %s", cid,
                             f"mkdir -p {users.home_target}/.cablab-check && touch {users.home_target}/.cablab-check/f")
    where = f"{home.path}/{BOB}"
    server = nodes[cluster.nfs_server]
    assert server.check_output("stat -c %%u:%%a %s", where) == f"{uid}:700"
    foreign = server.check_output("find %s -xdev ! -uid %s", where, str(uid))
    assert foreign == "", f"files in {where} not owned by bob's uid {uid}:\n{foreign}"
    assert server.check_output("stat -c %%a %s", str(home.path)) == "1733", "the homes directory lists its homes"

"""Users are apart (issue 8 A): from inside one user's server, the NFS server, rpcbind, the Docker
API, the swarm's control ports, ssh and the proxy's API cannot be reached (the container firewall
and the network split), while the hub's API, which the server needs, can; that user's uid cannot
list or read another user's home by any path; a user's files belong to their uid. The two servers
are borrowed from those started at the session's start when there are (`early`), else alice's and
bob's (lab/userlist.lab) are started; lab clusters only (`hub.auth.lab_password`), as every check
that logs a user in."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from cablab_cluster.plan import STACK
from cablab_cluster.render import PROXY_API_ALIAS, PROXY_API_PORT
from cablab_cluster.spec import Host

from .spawner import deployed_uids
from .test_nfs import setpriv
from .test_user import UserServer, container

pytestmark = pytest.mark.cluster

ALICE, BOB = "alice", "bob"  # the pair this check starts when it can borrow none
THEM, OTHER = "them", "other"  # the user looking around, and the user whose home they look for

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


@dataclass(frozen=True)
class Placed:
    name: str  # the user
    host: Host  # the server runs there
    cid: str  # its container there


@pytest.fixture(scope="module")
def servers(hub_client, password, spec, cluster, nodes, early, wait_until):
    """Two users' servers on two notebook nodes (one, with a single notebook host): THEM on the last,
    OTHER on the first. Servers already started at the session's start (conftest.py: `early`) are
    borrowed: these checks only look inside them (docker exec, the home's files) and neither stop
    nor restart them. Else alice's and bob's (lab/userlist.lab) are started at once and stopped
    afterwards. role -> Placed."""
    if not cluster.hub.auth.lab_password:
        pytest.skip("hub.auth.lab_password is off: the checks cannot log users in")
    where = {THEM: cluster.notebook_hosts[-1], OTHER: cluster.notebook_hosts[0]}

    def placed(names: dict[str, str]) -> dict[str, Placed]:
        return {role: Placed(names[role], where[role], container(nodes, where[role], names[role])) for role in where}

    borrowed: dict[str, str] = {}
    for role, host in where.items():
        lent = [u for u in early.borrowable(host.name) if u not in borrowed.values()]
        if lent:
            borrowed[role] = lent[0]
    if len(borrowed) == len(where):  # both or none: two users the check starts itself are one pair, at once
        for user in borrowed.values():
            early.borrow(user)  # ready (a failed start raises, with its error)
        yield placed(borrowed)
        return

    names = {THEM: ALICE, OTHER: BOB}
    if not set(names.values()) <= {u.name for u in spec.userlist.users}:
        pytest.skip(f"the userlist lacks {ALICE} or {BOB}, and no server started early can be borrowed")
    servers = {}
    for role, name in names.items():
        servers[role] = UserServer(hub_client().logged_in(name, password), name, wait_until)

    def start(role: str) -> None:
        servers[role].stop()
        servers[role].start(where[role].name)

    try:
        # Two nodes start one server each, side by side (each start is bound by its node's CPU).
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(start, role) for role in servers]
        for future in futures:
            future.result()
        yield placed(names)
    finally:
        # Every server started, or not (a start that timed out may still be spawning): each stop tried.
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


def test_each_server_runs_as_its_users_own_uid(servers, nodes, cluster):
    uids = deployed_uids(nodes, cluster)
    for placed in servers.values():
        got = nodes[placed.host].check_output("docker exec %s id -u", placed.cid)
        assert got == str(uids[placed.name]) and got != str(cluster.hub.users.uid), \
            f"{placed.name}'s server runs as uid {got}"


def test_a_users_server_reaches_no_control_port(servers, nodes, cluster):
    them = servers[THEM]
    node = them.host
    nfs = cluster.nfs_server
    refused = [f"{nfs.address}:2049", f"{nfs.address}:111", f"{STACK}_proxy:{PROXY_API_PORT}",
               f"{PROXY_API_ALIAS}:{PROXY_API_PORT}", "gateway:22", "gateway:7946"]
    for h in cluster.hosts:
        refused += [f"{h.address}:22", f"{h.address}:2375", f"{h.address}:2376", f"{h.address}:7946"]
        if h.is_manager:
            refused.append(f"{h.address}:2377")
    if nfs == node:
        refused.append("gateway:2049")
    needed = [f"{STACK}_hub:8081"]  # the hub's API: the server reports to it (and proves the probe can connect)
    got = probe(nodes, node, them.cid, refused + needed)
    assert got[needed[0]] == "open", f"{them.name}'s server cannot reach the hub's API: {got[needed[0]]}"
    reached = {t: r for t, r in got.items() if t in refused and r == "open"}
    assert not reached, f"{them.name}'s server reached {sorted(reached)}"
    assert nodes[node].run("docker exec %s test -e /var/run/docker.sock", them.cid).rc != 0, \
        f"the Docker socket is in {them.name}'s container"


def test_a_user_cannot_list_or_read_another_users_home(servers, nodes, cluster):
    them, other = servers[THEM], servers[OTHER]
    users = cluster.hub.users
    home = cluster.share(users.home_share)
    uids = deployed_uids(nodes, cluster)
    note = f".cablab-check-{uuid.uuid4().hex}"
    nodes[other.host].check_output("docker exec %s sh -c %s", other.cid, f"echo secret > {users.home_target}/{note}")
    try:
        # In their container: the home share appears only as their own home.
        mountinfo = nodes[them.host].check_output("docker exec %s cat /proc/self/mountinfo", them.cid)
        assert f"/{other.name}" not in mountinfo and str(home.mount) not in mountinfo, mountinfo
        # Through their node's NFS mount as their uid (what a user could do with AUTH_SYS, were NFS reachable).
        who = setpriv(uids[them.name], users.gid)
        for path in (f"{home.mount}/{other.name}", f"{home.mount}/{other.name}/{note}", str(home.mount)):
            for verb in ("ls", "cat"):
                result = nodes[them.host].run(f"{who} {verb} %s", path)
                assert result.rc != 0, f"{them.name}'s uid could {verb} {path}: {result.stdout[:200]}"
    finally:
        nodes[other.host].run("docker exec %s rm -f %s", other.cid, f"{users.home_target}/{note}")


def test_a_users_files_belong_to_their_uid(servers, nodes, cluster):
    other = servers[OTHER]
    users = cluster.hub.users
    home = cluster.share(users.home_share)
    uid = deployed_uids(nodes, cluster)[other.name]
    nodes[other.host].check_output("docker exec %s sh -c %s", other.cid,
                                   f"mkdir -p {users.home_target}/.cablab-check && touch {users.home_target}/.cablab-check/f")
    where = f"{home.path}/{other.name}"
    server = nodes[cluster.nfs_server]
    assert server.check_output("stat -c %%u:%%a %s", where) == f"{uid}:700"
    foreign = server.check_output("find %s -xdev ! -uid %s", where, str(uid))
    assert foreign == "", f"files in {where} not owned by {other.name}'s uid {uid}:\n{foreign}"
    assert server.check_output("stat -c %%a %s", str(home.path)) == "1733", "the homes directory lists its homes"

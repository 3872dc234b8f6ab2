"""A real user through the hub's HTTPS front door: the lab password logs in, a wrong
one or an unknown user does not; helpers to drive a user's server (test_notebook.py
runs the user's whole day with them). Lab clusters only (`hub.auth.lab_password`):
real clusters log in through GitHub, which these checks cannot drive."""

from __future__ import annotations

import json
import uuid
from typing import Callable, Optional

import pytest

from cablab_cluster.layout import HUB_CONTAINER_DATA, HUB_DB
from cablab_cluster.plan import STACK
from cablab_cluster.render import user_mounts

from .hub import spawn_outcome
from .spawner import service_name

pytestmark = pytest.mark.cluster

START_TIMEOUT = 600  # s; the VMs run under slow emulation
STOP_TIMEOUT = 300


class UserServer:
    """A user's default server, driven through the hub's REST API with the user's own session."""

    def __init__(self, session, name: str, wait_until: Callable, poll: float = 5.0):
        """`poll`: seconds between the hub's answers while it stops the server, or starts it where the
        progress stream cannot say (each a request the hub serves: a check whose next step waits on
        it asks every second, the others less often)."""
        self.session = session
        self.name = name
        self.wait_until = wait_until
        self.poll = poll

    def model(self) -> Optional[dict]:
        """The server's model while it is active (starting, running, stopping), else None."""
        response = self.session.api("GET", f"/users/{self.name}")
        assert response.status == 200, f"GET /hub/api/users/{self.name}: {response}"
        return (response.json().get("servers") or {}).get("")

    def start(self, node: str) -> None:
        # The rendered pre_spawn_hook pins the server to the user option "node".
        response = self.session.api("POST", f"/users/{self.name}/server", {"node": node})
        assert response.status in (201, 202), f"starting {self.name}'s server on {node}: {response}"
        what = f"{self.name}'s server on {node} to be ready"
        outcome = spawn_outcome(self.session, self.name)
        if outcome is None:  # the stream could not say: ask the hub every `poll` s
            self.wait_until(self._ready, START_TIMEOUT, what, self.poll)
        elif outcome:
            raise AssertionError(f"{what}: {outcome}; {self._where_to_look()}")

    def _where_to_look(self) -> str:
        return (f"on the first manager see `docker service ps --no-trunc {service_name(self.name)}` "
                f"and `docker service logs {STACK}_hub`")

    def _ready(self) -> bool:
        server = self.model()
        if server is None:
            raise AssertionError(f"{self.name}'s server stopped while starting: {self._where_to_look()}")
        return bool(server.get("ready"))

    def stop(self) -> None:
        if self.model() is None:
            return
        response = self.session.api("DELETE", f"/users/{self.name}/server")
        assert response.status in (202, 204), f"stopping {self.name}'s server: {response}"
        self.wait_until(lambda: self.model() is None, STOP_TIMEOUT, f"{self.name}'s server to stop", self.poll)


@pytest.fixture
def server(session, username, wait_until):
    srv = UserServer(session, username, wait_until)
    srv.stop()  # left running by an earlier run
    yield srv
    srv.stop()  # also when a check failed


def placement(nodes, cluster, username: str) -> str:
    return nodes[cluster.first_manager].check_output(
        "docker service ps --filter desired-state=running --format %s %s", "{{.Node}}", service_name(username)).strip()


def running_container(nodes, host, service: str) -> str:
    """The one running container of the swarm service `service` on `host`."""
    label = f"label=com.docker.swarm.service.name={service}"
    ids = nodes[host].check_output("docker ps -q --filter %s --filter status=running", label).split()
    assert len(ids) == 1, f"{len(ids)} running containers of {service} on {host.name} (want 1)"
    return ids[0]


def container(nodes, host, username: str) -> str:
    return running_container(nodes, host, service_name(username))


# In the user's container, one `docker exec` each (a Docker CLI start is ~1 s on an emulated VM):
# as the user, where each link leads and whether it lists; as root, which probes could be written.
_RESOLVE = 'for x in "$@"; do printf "%s\\t%s\\t%s\\n" "$x" "$(readlink -f "$x")" "$(ls -A "$x/" >/dev/null && echo yes)"; done'
_WRITE = 'for p in "$@"; do if touch "$p" 2>/dev/null; then rm -f "$p"; echo "$p"; fi; done'


def check_read_only_mounts(nodes, host, cid: str, cluster) -> None:
    """Every read-only share is mounted read-only where the hub mounts it, found by the user at
    its target (a link from the home), readable, and not writable even by root."""
    inspected = nodes[host].check_output("docker inspect --format %s %s", "{{json .Mounts}}", cid)
    binds = {m["Destination"]: m for m in json.loads(inspected)}
    mounts = user_mounts(cluster)
    for mount in mounts:
        where = mount.container_path
        assert where in binds, f"{where} ({mount.share}) is not mounted in the user's container"
        assert binds[where]["RW"] is False, f"{where} is mounted read-write: {binds[where]}"
    if not mounts:
        return
    targets = [str(m.target) for m in mounts]
    out = nodes[host].check_output("docker exec %s sh -c %s sh" + " %s" * len(targets), cid, _RESOLVE, *targets)
    seen = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines() if line.count("\t") == 2}
    for mount in mounts:
        resolved, readable = seen.get(str(mount.target), ["(not found)", ""])
        assert resolved == mount.container_path, \
            f"{mount.target} leads to {resolved}, not to the share at {mount.container_path}"
        assert readable == "yes", f"{mount.target} ({mount.share}) cannot be listed by the user"
    probes = [f"{m.container_path}/.cablab-check-{uuid.uuid4().hex}" for m in mounts]
    # -w /: root may not enter the user's home, the container's working directory (root_squash, 0700).
    written = nodes[host].check_output("docker exec -u 0 -w / %s sh -c %s sh" + " %s" * len(probes), cid, _WRITE,
                                       *probes)
    assert not written.strip(), f"root in the user's container could write into read-only shares: {written.split()}"


def test_lab_password_logs_in(session, username):
    response = session.api("GET", f"/users/{username}")
    assert response.status == 200, str(response)
    assert response.json()["name"] == username


def test_wrong_password_and_unknown_user_are_refused(hub_client, username, password):
    for name, secret in ((username, password + "-wrong"), ("cablab-not-in-userlist", password)):
        browser = hub_client()
        response = browser.login(name, secret)
        assert response.status != 302 and not browser.cookie("jupyterhub-hub-login"), \
            f"{name} logged in with a wrong password or without being in the userlist"


# lab/userlist.lab's user that only the spawn bench starts (its "one more"): during verify its server
# is never running, so its start reaches the user-options check instead of "already running".
UNPINNABLE_USER = "bench11"


def test_a_start_pinned_to_a_node_that_runs_no_notebooks_is_refused_at_once(hub_client, spec, cluster, nodes,
                                                                             password):
    """The `node` user option must name a notebook node (the hub's apply_user_options): any other
    name is a 400 with the nodes to use, answered to the start request itself, and no service is made."""
    if UNPINNABLE_USER not in {u.name for u in spec.userlist.users}:
        pytest.skip(f"{UNPINNABLE_USER} is not in the userlist: this check needs a user no other check starts")
    session = hub_client().logged_in(UNPINNABLE_USER, password)
    response = session.api("POST", f"/users/{UNPINNABLE_USER}/server", {"node": "cablab-no-such-node"})
    assert response.status == 400, f"a start pinned to a node that does not exist: {response}"
    message = response.json().get("message", "")
    assert "'cablab-no-such-node' does not run notebooks; use one of " in message, message
    offered = set(message.rsplit("use one of ", 1)[1].split(", "))
    assert offered == {h.name for h in cluster.notebook_hosts}, message
    made = nodes[cluster.first_manager].run("docker service inspect %s", service_name(UNPINNABLE_USER))
    assert made.rc != 0, f"{service_name(UNPINNABLE_USER)} was made for a refused start"
    # JupyterHub saved the request's options as the next start's before refusing them: a start without
    # a body would reuse the bad node, and be refused again, unless the hub forgot them.
    hub = running_container(nodes, cluster.hub_host, f"{STACK}_hub")
    kept = nodes[cluster.hub_host].check_output("docker exec %s python3 -c %s %s %s", hub, _SAVED_OPTIONS,
                                                  str(HUB_CONTAINER_DATA / HUB_DB), UNPINNABLE_USER)
    assert json.loads(kept) in (None, {}), f"{UNPINNABLE_USER}'s next start would reuse {kept}"


# The options JupyterHub keeps for a user's next start, read from the hub's database in the hub's container.
_SAVED_OPTIONS = (
    "import sqlite3, sys; "
    "db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True, timeout=10); "
    "row = db.execute(\"select s.user_options from spawners s join users u on u.id = s.user_id "
    "where u.name = ? and s.name = ''\", (sys.argv[2],)).fetchone(); "
    "print(row[0] if row and row[0] else 'null')"
)

"""Operating the hub: the idle culler stops an idle server and keeps a busy one, a kernel past its
memory limit dies alone, a server no node can reserve for fails in seconds with a clear message,
and /hub/metrics answers only with the metrics token. Each check has userlist users of its own
(lab/userlist.lab: carol, dave, erin, frank), so culling or a limit never reaches another check's
server; carol's, dave's and erin's servers start at the session's start (conftest.py: `early`), erin's
kernel grows past its limit as soon as her server is ready, and frank's impossible start is asked
in a lane of its own once they have their servers: their spawns, the cull timeout, the kernel's death
and the refusal's wait overlap the other checks. Lab clusters only where a user logs in
(`hub.auth.lab_password`)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from cablab_cluster.plan import STACK
from cablab_cluster.spec import memory_bytes

from .early import Role
from .hub import failure_message
from .spawner import service_name
from .test_notebook import open_kernel, user_token
from .test_user import UserServer

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def login(hub_client, password, spec):
    """login(name) -> a logged-in session of a userlist user (skips if the userlist lacks them)."""

    def _login(name: str):
        if name not in {u.name for u in spec.userlist.users}:
            pytest.skip(f"{name} is not in the userlist: this check needs a user of its own")
        return hub_client().logged_in(name, password)

    return _login


def fresh_server(session, name: str, wait_until) -> UserServer:
    server = UserServer(session, name, wait_until)
    server.stop()  # left running by an earlier run
    return server


def post_start(server: UserServer, node: str) -> None:
    response = server.session.api("POST", f"/users/{server.name}/server", {"node": node})
    assert response.status in (201, 202), f"starting {server.name}'s server on {node}: {response}"


# --- /hub/metrics --------------------------------------------------------------


def test_metrics_answer_only_the_metrics_token(hub_client, secrets, session):
    anonymous = hub_client().request("GET", "/hub/metrics")
    assert anonymous.status == 403, f"/hub/metrics without a token: {anonymous}"
    user = session.request("GET", "/hub/metrics")
    assert user.status == 403, f"/hub/metrics for a user's login (no read:metrics): {user}"
    token = (secrets / "metrics_token").read_text(encoding="utf-8").strip()
    scraped = hub_client().request("GET", "/hub/metrics", headers={"Authorization": f"token {token}"})
    assert scraped.status == 200, f"/hub/metrics with the metrics token: {scraped}"
    assert "jupyterhub_" in scraped.text and "jupyterhub_running_servers" in scraped.text


# --- The idle culler -------------------------------------------------------------

BUSY_LOOP = """
import time
for i in range({n}):
    time.sleep(10)
    print(i, flush=True)
"""


def cull_wait(cull) -> int:
    """How long after a server is ready the culler must have stopped it, if idle (s): a timeout, a
    pass, the hub's activity updates (about a quarter of the timeout, 30..300 s, twice), slack."""
    return cull.timeout + cull.every + 2 * max(30, min(300, cull.timeout // 4)) + 120


def start_busy_kernel(session, username: str, seconds: int) -> None:
    """A kernel of the user's server that works (a loop printing every 10 s) for `seconds`, its
    websocket then closed: only jupyterhub-singleuser's activity reports keep the server alive."""
    kernel = open_kernel(session, username, user_token(session, username))
    msg = kernel._message("execute_request", {"code": BUSY_LOOP.format(n=seconds // 10), "silent": False,
                                              "store_history": False, "user_expressions": {},
                                              "allow_stdin": False, "stop_on_error": True})
    kernel.ws.send(json.dumps(msg))
    kernel.close()


def test_the_culler_stops_an_idle_server_and_keeps_a_busy_one(early, cluster, timings):
    """carol's and the busy user's servers were started at the session's start (conftest.py: `early`):
    dave's with a busy kernel, or erin's, whose kernel first grew past her memory limit (early.py:
    one server for both checks); carol's was left alone, and watched through the hub's API only."""
    cull = cluster.hub.users.cull
    if not cull.enabled:
        pytest.skip("hub.users.cull.enabled is false")
    if cull.timeout > 900:
        pytest.skip(f"hub.users.cull.timeout is {cull.timeout} s: too long to wait for in a check (the lab sets 180)")
    busy_user = early.busy_user()
    idle = early.claim("carol", wait_for_follow_up=True)
    busy = early.claim(busy_user, wait_for_follow_up=True) if busy_user else None
    if idle is None or busy is None:
        pytest.skip("carol and dave are not both in the userlist: this check needs users of its own")
    shared = busy.planned.role is Role.MEMORY_THEN_BUSY  # the memory check claims it next, and stops it
    try:
        culled = idle.info.get("culled_after")
        assert culled is not None, \
            f"the culler did not stop carol's idle server in {idle.info.get('waited')} s ({cull.timeout} s timeout)"
        timings["idle server culled after (s since ready)"] = culled
        # The busy server has now gone longer than the timeout without a request through the proxy:
        # without its kernel's activity it would be gone too.
        since = busy.info.get("busy_since", busy.ready_at)
        time.sleep(max(0.0, cull.timeout + cull.every - (time.monotonic() - since)))
        timings[f"busy server ({busy_user}) kept for (s without a request)"] = round(time.monotonic() - since, 1)
        model = busy.server.model()
        assert model is not None and model.get("ready"), \
            f"the culler stopped {busy_user}'s server although its kernel was busy ({cull.timeout} s timeout)"
        assert model["last_activity"] > model["started"], f"no activity of {busy_user}'s server reached the hub: {model}"
    finally:
        idle.server.stop()
        if not shared:
            busy.server.stop()


# --- Limits and reservations ---------------------------------------------------------

GROW = """
chunks = []
for i in range({n}):
    chunks.append(b"x" * (32 << 20))  # written, not only mapped
    print(i, flush=True)
"""


def grow_past_limit(session, username: str, limit: str, token: str) -> str:
    """Run, in a new kernel of the user's server (`token`: an API token of theirs), code that writes
    three times the memory `limit`; return how the kernel ended (its death as the kernel protocol or
    the websocket tells it). Fails if the code ran to its end. The memory check's follow-up
    (conftest.py: `early`) once erin's server is ready, or the check itself where erin's server was
    not started early."""
    kernel = open_kernel(session, username, token)
    # three times the limit: past it even where the container may swap as much again
    n = 3 * memory_bytes(limit) // (32 << 20)
    msg = kernel._message("execute_request", {"code": GROW.format(n=n), "silent": False, "store_history": False,
                                              "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    kernel.ws.send(json.dumps(msg))
    outcome = None
    deadline = time.monotonic() + 600
    try:
        while outcome is None and time.monotonic() < deadline:
            kernel.ws.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                reply = json.loads(kernel.ws.recv())
            except Exception as exc:  # the server closed the kernel's websocket
                outcome = f"websocket closed ({type(exc).__name__})"
                break
            kind, content = reply.get("msg_type"), reply.get("content", {})
            if kind == "status" and content.get("execution_state") in ("restarting", "dead", "autorestarting"):
                outcome = content["execution_state"]
            elif kind == "error":
                outcome = f"error {content.get('ename')}"
            elif kind == "status" and content.get("execution_state") == "idle" \
                    and reply.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"]:
                raise AssertionError(f"the kernel allocated {3 * memory_bytes(limit) >> 20} MiB past "
                                     f"{username}'s {limit} limit")
    finally:
        kernel.close()
    assert outcome, "the kernel neither finished nor died in 600 s"
    return outcome


def test_a_kernel_past_its_memory_limit_dies_alone(login, early, cluster, nodes, wait_until):
    """erin's server was started at the session's start (conftest.py: `early`), and her kernel grew
    past its limit as soon as it was ready; where it was not, both happen here."""
    limit = cluster.hub.users.resources("erin").limits.memory
    if limit is None:
        pytest.skip("erin has no memory limit (lab/*.yml: hub.users.overrides.erin)")
    started = early.claim("erin", wait_for_follow_up=True)
    if started is None:
        session = login("erin")
        server = fresh_server(session, "erin", wait_until)
    else:
        session, server = started.server.session, started.server
    try:
        if started is None:
            server.start(cluster.notebook_hosts[0].name)
        resources = json.loads(nodes[cluster.first_manager].check_output(
            "docker service inspect --format %s %s", "{{json .Spec.TaskTemplate.Resources}}", service_name("erin")))
        assert resources["Limits"]["MemoryBytes"] == memory_bytes(limit), resources
        reservation = cluster.hub.users.resources("erin").reservations.memory
        if reservation:
            assert resources["Reservations"]["MemoryBytes"] == memory_bytes(reservation), resources

        token = user_token(session, "erin")
        outcome = started.info["outcome"] if started is not None else grow_past_limit(session, "erin", limit, token)
        # The server, the hub and the node live on.
        status = session.request("GET", "/user/erin/api/status", headers={"Authorization": f"token {token}"})
        assert status.status == 200, f"erin's server after her kernel was killed ({outcome}): {status}"
        assert server.model() and server.model().get("ready")
        assert session.request("GET", "/hub/login").status in (200, 302), "the hub after erin's kernel was killed"
        tasks = nodes[cluster.first_manager].check_output(
            "docker service ps --filter desired-state=running --format %s %s", "{{.CurrentState}}",
            f"{STACK}_hub")
        assert tasks.startswith("Running"), f"the hub's task: {tasks}"
    finally:
        server.stop()


REFUSAL_USER = "frank"
REFUSAL_LANE = "refusal"  # conftest.py: `lanes`


def refusal_applies(cluster) -> bool:
    """frank reserves more memory than any notebook node has (lab/*.yml: hub.users.overrides.frank)."""
    reservation = cluster.hub.users.resources(REFUSAL_USER).reservations.memory
    biggest = max(h.vm.memory for h in cluster.notebook_hosts) << 20
    return reservation is not None and memory_bytes(reservation) > biggest


def ask_the_impossible(session, wait_until) -> dict[str, object]:
    """frank's start, which no node can reserve for: {"seconds": REST start -> the failure the user
    reads, "message": that failure}, once his server is gone from the hub. The check's lane runs it
    from the session's start (conftest.py: `lanes`), once the early starts have their servers."""
    fresh_server(session, REFUSAL_USER, wait_until)
    started = time.monotonic()
    response = session.api("POST", f"/users/{REFUSAL_USER}/server")
    message = response.text
    if response.status in (201, 202):
        # The spawn's progress stream ends with the failure the user sees on the spawn page.
        def failure() -> str:
            try:
                progress = session.api("GET", f"/users/{REFUSAL_USER}/server/progress")
            except httpx.TimeoutException:
                return ""  # still pending, quietly: ask again
            return failure_message(progress.text)

        message = wait_until(failure, 300, f"{REFUSAL_USER}'s spawn to fail", interval=2)
    elapsed = round(time.monotonic() - started, 1)
    wait_until(lambda: UserServer(session, REFUSAL_USER, wait_until).model() is None, 120,
               f"{REFUSAL_USER}'s server to be gone")
    return {"seconds": elapsed, "message": message}


def test_a_server_no_node_can_reserve_for_fails_fast(login, cluster, nodes, lanes, wait_until, timings):
    """Where the lab's userlist has frank, his start was asked from the session's start, in a lane of
    its own (conftest.py: `lanes`); else it is asked here."""
    if not refusal_applies(cluster):
        pytest.skip("frank reserves no more than a notebook node has (lab/*.yml: hub.users.overrides.frank)")
    lane = lanes.get(REFUSAL_LANE)
    refused = lane.claim() if lane is not None else ask_the_impossible(login(REFUSAL_USER), wait_until)
    elapsed, message = refused["seconds"], refused["message"]
    timings["spawn refused (no node can reserve)" + (" (alongside others)" if lane is not None else "")] = elapsed
    assert elapsed < 180, f"the refusal took {elapsed:.0f} s (the start timeout is 600 s)"
    reservation = cluster.hub.users.resources(REFUSAL_USER).reservations.memory
    assert f"no notebook node has {reservation} of memory" in message and "no suitable node" in message, message
    gone = nodes[cluster.first_manager].run("docker service inspect %s", service_name(REFUSAL_USER))
    assert gone.rc != 0, f"{service_name(REFUSAL_USER)} is still a swarm service after the refusal"

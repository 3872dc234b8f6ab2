"""Fault drills on a provisioned lab cluster (Molecule's side_effect), after verify.

    python -m lab ubuntu --drills          # the whole lab, then the drills
    python -m lab ubuntu --from drills     # only the drills, on VMs an earlier run left up

Each drill breaks something the way it breaks in real life, waits (bounded) for the
cluster to recover unattended, checks that nothing was lost, and records its recovery
times in the lab report (`notes["drills"][name]`, seconds), printed at the end. The
only timed assertion is the issue's explicit bound (a lost server noticed in <= 60 s);
every other wait fails only when its generous timeout runs out. The drills run in one
order and leave the cluster as they found it (every VM up, the user's server stopped):

1. hub_killed       the hub service restarted by force: the user's server keeps serving
                    through the proxy (every request 200), the hub comes back, same task.
2. worker_lost      a worker VM powered off hard (`virsh destroy`) under a user's server:
                    the hub notices within 60 s, a start pinned to that node is refused
                    with a message naming it, a start without options lands on the
                    surviving worker with the home intact; the VM boots and rejoins.
3. manager_rebooted the first manager (NFS server, hub) rebooted: the login page comes
                    back, the workers' NFS mounts are intact, the user works again with
                    the earlier file; Docker started only after the shares were mounted.
4. manager_lost     (three managers only; skipped with one) a manager other than the first
                    powered off hard: `docker node ls` on the first manager still answers
                    with 2 of 3 managers reachable and one leader (raft quorum), a user's
                    start lands on a surviving notebook node and becomes ready with the
                    home intact; the VM boots and the manager is reachable again.

Traffic goes to the lab's VMs only: the hub's HTTPS port, ssh, and the local libvirt.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import httpx

from cablab_cluster.checks.hub import HubResponse, HubSession, failure_message, spawn_outcome
from cablab_cluster.checks.spawner import service_name
from cablab_cluster.checks.tls import hub_tls_context
from cablab_cluster.plan import STACK
from cablab_cluster.secretstore import read_lab_password, secrets_dir
from cablab_cluster.spec import Cluster as ClusterSpec
from cablab_cluster.uidmap import resolve as resolve_uids

if TYPE_CHECKING:
    from lab.harness import Lab

T = TypeVar("T")

LOST_SERVER_BOUND = 60.0  # s, the requirement: a server lost with its node is noticed
START_TIMEOUT = 600.0  # s, a cold server start under emulation (~60-150 s measured)
BOOT_TIMEOUT = 600.0  # s, a VM boot and rejoin under emulation (~90-200 s measured)
HTTP_TIMEOUT = 15.0  # s per request: a rebooting hub host must not stall a loop for a minute


class DrillFailed(RuntimeError):
    """A drill's requirement was not met (the cluster is left up to look at)."""


class DrillSkipped(RuntimeError):
    """The drill does not apply to this spec (the reason goes to the report)."""


def log(msg: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- Pure helpers (unit-tested in tests/test_lab_drills.py) --------------------


def wait_for(check: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 3.0,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> tuple[T, float]:
    """Call `check` until it returns something truthy: (that value, seconds it took).
    DrillFailed after `timeout` seconds, naming `what` and the last answer."""
    t0 = clock()
    last: Optional[T] = None
    while True:
        last = check()
        elapsed = clock() - t0
        if last:
            return last, round(elapsed, 1)
        if elapsed >= timeout:
            raise DrillFailed(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        sleep(interval)


def parse_domstate(text: str) -> str:
    """`virsh domstate DOMAIN` → 'running', 'shut off', ... (the first line)."""
    return text.strip().splitlines()[0].strip() if text.strip() else "unknown"


def vagrant_id(state_dir: Path, machine: str) -> str | None:
    """The libvirt domain UUID vagrant-libvirt keeps for a machine it made, in
    `<state>/machines/<name>/libvirt/id`; None when this vagrant state has none."""
    id_file = state_dir / "machines" / machine / "libvirt" / "id"
    if id_file.is_file():
        return id_file.read_text(encoding="utf-8").strip() or None
    return None


def domain_of(state_dir: Path, machine: str, fallback: str) -> str:
    """The libvirt domain of a vagrant machine: its UUID (virsh takes one), else its default name."""
    return vagrant_id(state_dir, machine) or fallback


def parse_nodes(text: str) -> dict[str, tuple[str, str]]:
    """`docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}'` → {hostname: (status, availability)}.
    A node that left and joined again is listed twice: a Ready entry wins."""
    nodes: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and nodes.get(fields[0], ("",))[0] != "Ready":
            nodes[fields[0]] = (fields[1], fields[2])
    return nodes


REACHABLE = ("Leader", "Reachable")  # `docker node ls` MANAGER STATUS of a manager in the raft quorum


def parse_managers(text: str) -> dict[str, tuple[str, str]]:
    """`docker node ls --format '{{.Hostname}}|{{.Status}}|{{.ManagerStatus}}'` → the managers,
    {hostname: (status, manager status)} (a worker's manager status is empty). A Ready entry wins."""
    managers: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[0] and fields[2] and managers.get(fields[0], ("",))[0] != "Ready":
            managers[fields[0]] = (fields[1], fields[2])
    return managers


def quorum_problem(managers: dict[str, tuple[str, str]], expected: int) -> Optional[str]:
    """Why the swarm's managers as listed have no working raft quorum, or None: more than half of the
    `expected` managers reachable, exactly one of them the leader."""
    reachable = sorted(h for h, (_, status) in managers.items() if status in REACHABLE)
    leaders = [h for h, (_, status) in managers.items() if status == "Leader"]
    if len(reachable) <= expected // 2:
        return f"{len(reachable)} of {expected} managers reachable ({', '.join(reachable) or 'none'}): no quorum"
    if len(leaders) != 1:
        return f"{len(leaders)} leaders ({', '.join(leaders) or 'none'}) among {', '.join(reachable)}"
    return None


@dataclass(frozen=True)
class ManagerLoss:
    """The manager_lost drill's victim and the notebook nodes left to run the user's server."""

    victim: str
    survivors: tuple[str, ...]


def manager_loss(c: ClusterSpec) -> ManagerLoss:
    """Which manager the drill powers off: not the first manager nor the hub's host, a notebook node
    if one is (the last in spec order). DrillSkipped unless the spec has 3 managers."""
    if len(c.managers) != 3:
        raise DrillSkipped(f"the spec has {len(c.managers)} manager(s): losing one without losing the swarm "
                           "needs 3 (raft quorum); the centos lab has 3 (python -m lab centos --drills)")
    spared = {c.first_manager.name, c.hub_host.name}
    candidates = [h for h in c.managers if h.name not in spared]
    victim = ([h for h in candidates if h in c.notebook_hosts] or candidates)[-1]
    survivors = tuple(h.name for h in c.notebook_hosts if h != victim)
    if not survivors:
        raise DrillSkipped(f"no notebook node but {victim.name} would be left to run a server")
    return ManagerLoss(victim.name, survivors)


@dataclass(frozen=True)
class Task:
    """A swarm task as `docker service ps` shows it."""

    id: str
    node: str  # empty while not yet assigned
    state: str  # lower case: running, preparing, pending, ...


def parse_tasks(text: str) -> list[Task]:
    """`docker service ps --format '{{.ID}}|{{.Node}}|{{.CurrentState}}'` → tasks
    (CurrentState reads like "Running 5 minutes ago")."""
    tasks = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3 and fields[0]:
            tasks.append(Task(fields[0], fields[1], (fields[2].split() or [""])[0].lower()))
    return tasks


def mount_unit(path: str) -> str:
    """systemd's mount unit for a path (`systemd-escape --path --suffix=mount`)."""
    trimmed = path.strip("/")
    if not trimmed:
        return "-.mount"
    out = []
    for i, ch in enumerate(trimmed):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
    return "".join(out) + ".mount"


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show -p A -p B unit1 unit2` → one {property: value} per unit, in order."""
    units: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            if units[-1]:
                units.append({})
            continue
        key, _, value = line.partition("=")
        units[-1][key] = value
    return [u for u in units if u]


def mounted_after_docker(docker: dict[str, str], mounts: dict[str, dict[str, str]]) -> list[str]:
    """The mount points that were not yet mounted when docker.service began to start
    (monotonic timestamps of this boot; 0 means never)."""
    started = int(docker.get("InactiveExitTimestampMonotonic") or 0)
    late = []
    for path, unit in mounts.items():
        mounted = int(unit.get("ActiveEnterTimestampMonotonic") or 0)
        if mounted == 0 or mounted > started:
            late.append(path)
    return late


# --- The lab user, driven through the hub's REST API ----------------------------


class HubUser:
    """A lab user's browser session and API token; their default server through the proxy."""

    def __init__(self, lab: Lab):
        c = lab.spec.cluster
        secrets = secrets_dir(lab.spec)
        self.name = lab.spec.userlist.first_user
        self.password = read_lab_password(secrets)
        self.session = HubSession(str(c.hub_host.address), c.hub.port, c.hub.public_host,
                                  hub_tls_context(c, secrets), timeout=HTTP_TIMEOUT)
        self.token = ""

    def close(self) -> None:
        self.session.close()

    def login(self) -> None:
        try:
            response = self.session.login(self.name, self.password)
        except (AssertionError, httpx.HTTPError, OSError) as exc:
            raise DrillFailed(f"logging in as {self.name}: {exc}") from exc
        if response.status != 302:
            raise DrillFailed(f"logging in as {self.name}: {response}")
        made = self.api("POST", f"/users/{self.name}/tokens", {"note": "cablab drills", "expires_in": 7200})
        if made.status not in (200, 201):
            raise DrillFailed(f"creating an API token for {self.name}: {made}")
        self.token = made.json()["token"]

    def try_request(self, method: str, path: str, body: Optional[bytes] = None,
                    headers: Optional[dict[str, str]] = None) -> Optional[HubResponse]:
        """One request; None when the hub host does not answer (down, rebooting)."""
        try:
            return self.session.request(method, path, body, headers)
        except (httpx.HTTPError, OSError):
            return None

    def login_page_up(self) -> bool:
        """The hub answers its login page: 200, or (the user's cookie is still good) a redirect to
        the user's server. The proxy alone answers 503 while the hub is away."""
        response = self.try_request("GET", "/hub/login")
        return response is not None and (response.status == 200 or (
            response.status == 302 and response.headers.get("location", "").startswith(("/user/", "/hub/"))))

    def api(self, method: str, path: str, data: Any = None) -> HubResponse:
        """/hub/api<path> as the user; DrillFailed when the hub does not answer at all."""
        try:
            return self.session.api(method, path, data)
        except (httpx.HTTPError, OSError) as exc:
            raise DrillFailed(f"{method} /hub/api{path}: {exc!r}") from exc

    def model(self) -> Optional[dict]:
        """The default server's model (None: not running); DrillFailed when the hub does not answer."""
        response = self.api("GET", f"/users/{self.name}")
        if response.status != 200:
            raise DrillFailed(f"GET /hub/api/users/{self.name}: {response}")
        return (response.json().get("servers") or {}).get("")

    def start(self, options: Optional[dict] = None) -> HubResponse:
        """POST the start; `options` None sends no body (JupyterHub then reuses kept options)."""
        return self.api("POST", f"/users/{self.name}/server", options)

    def wait_ready(self, what: str) -> float:
        """Seconds until the server is ready: on the hub's progress stream, as JupyterHub's spawn
        page waits (ready the moment the hub says so); polling the hub every 5 s where the stream
        cannot say (refused, dropped, or ended without an outcome: a hub that restarted)."""
        t0 = time.monotonic()
        outcome = spawn_outcome(self.session, self.name)
        if outcome:
            raise DrillFailed(f"{self.name}'s server failed to start ({what}): {outcome}")
        if outcome == "":
            return round(time.monotonic() - t0, 1)

        def ready() -> bool:
            server = self.model()
            if server is None:
                raise DrillFailed(f"{self.name}'s server stopped while starting ({what}): "
                                  f"{self.start_failure() or 'no message'}")
            return bool(server.get("ready"))

        wait_for(ready, START_TIMEOUT, f"{self.name}'s server to be ready ({what})", interval=5)
        return round(time.monotonic() - t0, 1)

    def start_failure(self) -> str:
        """The message of the last failed start (the spawn progress stream's failed event)."""
        response = self.try_request("GET", f"/hub/api/users/{self.name}/server/progress",
                                    headers={"Accept": "text/event-stream",
                                             "X-XSRFToken": self.session.cookie("_xsrf") or ""})
        if response is None or response.status != 200:
            return ""
        return failure_message(response.text)

    def stop(self) -> None:
        if self.model() is None:
            return
        response = self.api("DELETE", f"/users/{self.name}/server")
        if response.status not in (202, 204):
            raise DrillFailed(f"stopping {self.name}'s server: {response}")
        wait_for(lambda: self.model() is None, 300, f"{self.name}'s server to stop", interval=5)

    def server_request(self, method: str, path: str, data: Any = None) -> Optional[HubResponse]:
        """A request to the user's own server through the proxy (/user/<name>/<path>), with the token."""
        headers = {"Authorization": f"token {self.token}"}
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        return self.try_request(method, f"/user/{self.name}/{path}", body, headers)

    def write_file(self, name: str, text: str) -> None:
        response = self.server_request("PUT", f"api/contents/{name}",
                                       {"type": "file", "format": "text", "content": text})
        if response is None or response.status not in (200, 201):
            raise DrillFailed(f"writing ~/{name} in {self.name}'s server: {response}")

    def read_file(self, name: str) -> Optional[str]:
        response = self.server_request("GET", f"api/contents/{name}?content=1&type=file&format=text")
        if response is None or response.status != 200:
            return None
        return str(response.json().get("content"))


# --- The cluster from outside: ssh, docker CLI on the first manager, libvirt -----


@dataclass
class Cluster:
    lab: Lab

    @property
    def manager(self) -> str:
        return self.lab.spec.cluster.first_manager.name

    def run(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A command on a VM, cut off after 120 s (a docker CLI or a mount may hang while a host reboots)."""
        return self.lab.ssh(host, f"timeout 120 sh -c {shlex.quote(command)}", check=check)

    def service_task(self, service: str) -> Optional[Task]:
        """The service's task that should be running (None: no such service or task)."""
        out = self.run(self.manager, "sudo docker service ps --no-trunc --filter desired-state=running --format "
                                     f"'{{{{.ID}}}}|{{{{.Node}}}}|{{{{.CurrentState}}}}' {shlex.quote(service)}",
                       check=False)
        tasks = parse_tasks(out.stdout) if out.returncode == 0 else []
        return tasks[0] if tasks else None

    def running_task(self, service: str) -> Optional[Task]:
        task = self.service_task(service)
        return task if task is not None and task.state == "running" else None

    def managers(self) -> tuple[dict[str, tuple[str, str]], str]:
        """The managers as the first manager lists them, and docker's error when it cannot
        (no quorum: "The swarm does not have a leader")."""
        out = self.run(self.manager, "sudo docker node ls --format '{{.Hostname}}|{{.Status}}|{{.ManagerStatus}}'",
                       check=False)
        if out.returncode != 0:
            return {}, (out.stderr or out.stdout).strip()[:300]
        return parse_managers(out.stdout), ""

    def nodes(self) -> dict[str, tuple[str, str]]:
        out = self.run(self.manager, "sudo docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}'",
                       check=False)
        return parse_nodes(out.stdout) if out.returncode == 0 else {}

    def boot_id(self, host: str) -> str:
        out = self.run(host, "cat /proc/sys/kernel/random/boot_id", check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    def virsh(self, *args: str) -> str:
        uri = os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system")
        proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise DrillFailed(f"virsh {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def domain(self, host: str) -> str:
        return domain_of(self.lab.state, host, self.lab.domain_name(host))

    def late_mounts(self, host: str) -> list[str]:
        """The share mount points this host's Docker did not wait for at its last boot."""
        c = self.lab.spec.cluster
        mounts = [str(s.mount) for s in c.shares if c.host(host) != c.nfs_server or s.mount != s.path]
        if not mounts:
            return []
        units = ["docker.service"] + [mount_unit(m) for m in mounts]
        out = self.run(host, "sudo systemctl show -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic "
                             + " ".join(shlex.quote(u) for u in units)).stdout
        shown = parse_show(out)
        if len(shown) != len(units):
            raise DrillFailed(f"systemctl show on {host}: {len(shown)} units for {len(units)}: {out[:500]}")
        return mounted_after_docker(shown[0], dict(zip(mounts, shown[1:])))

    def mounts_intact(self, host: str, probe: str, user: str) -> bool:
        """Every share mounted on `host` answers (bounded: a hung NFS mount is a failure), and
        `probe` (a file in `user`'s home) reads back as the user's uid (root is squashed)."""
        c = self.lab.spec.cluster
        checks = [f"mountpoint -q {shlex.quote(str(s.mount))} && timeout 20 stat -t {shlex.quote(str(s.mount))} >/dev/null"
                  for s in c.shares]
        who = f"--reuid={resolve_uids(self.lab.spec).of(user)} --regid={c.hub.users.gid} --clear-groups"
        checks.append(f"timeout 20 sudo setpriv {who} cat {shlex.quote(probe)} >/dev/null")
        return self.run(host, " && ".join(checks), check=False).returncode == 0


# --- The drills -----------------------------------------------------------------


def placed_task(user: HubUser, cl: Cluster) -> Task:
    """The task of the user's server just started without options, once swarm has placed it on a node."""

    def placed() -> Optional[Task]:
        if user.model() is None:
            raise DrillFailed(f"{user.name}'s start without options failed: {user.start_failure() or 'no message'}")
        task = cl.service_task(service_name(user.name))
        return task if task is not None and task.node else None

    return wait_for(placed, 120, f"{user.name}'s new server task to be placed on a node", interval=3)[0]


def hub_killed(lab: Lab, user: HubUser, cl: Cluster, victim: str, note: str) -> dict[str, Any]:
    """The hub service restarted by force while the user's server runs on `victim`."""
    hub_service = f"{STACK}_hub"
    user_task = cl.running_task(service_name(user.name))
    old_hub = cl.running_task(hub_service)
    if user_task is None or user_task.node != victim or old_hub is None:
        raise DrillFailed(f"before the drill: {user.name}'s task {user_task}, expected on {victim}; hub task {old_hub}")
    warm = user.server_request("GET", "api/status")  # the server caches the token's owner (5 min)
    if warm is None or warm.status != 200:
        raise DrillFailed(f"before the drill, {user.name}'s server through the proxy: {warm}")
    statuses: list[int] = []
    cl.run(cl.manager, f"sudo docker service update --force --detach {hub_service} >/dev/null")

    def hub_back() -> bool:
        response = user.server_request("GET", "api/status")
        statuses.append(response.status if response is not None else 0)
        new = cl.running_task(hub_service)
        return new is not None and new.id != old_hub.id and user.login_page_up()

    _, back = wait_for(hub_back, 300, f"{hub_service} to run a new task and serve /hub/login", interval=2)
    failed = [s for s in statuses if s != 200]
    after = cl.running_task(service_name(user.name))
    server = user.model()
    result = {"hub back (login page) s": back, "requests to the user's server": len(statuses),
              "failed": len(failed), "same task": after == user_task}
    if failed:
        raise DrillFailed(f"{len(failed)} of {len(statuses)} requests to {user.name}'s server failed while the hub "
                          f"restarted (statuses {sorted(set(failed))}; 0: no answer): the proxy must keep routing "
                          "without the hub")
    if after != user_task:
        raise DrillFailed(f"{user.name}'s server task changed across the hub restart: {user_task} -> {after}")
    if not (server and server.get("ready")):
        raise DrillFailed(f"after the restart the hub does not count {user.name}'s running server: {server}")
    if user.read_file(note) is None:
        raise DrillFailed(f"~/{note} does not read back after the hub restart")
    return result


def worker_lost(lab: Lab, user: HubUser, cl: Cluster, victim: str, survivors: list[str], note: str,
                text: str) -> dict[str, Any]:
    """`victim` (running the user's server) powered off hard; the hub notices, a start pinned
    there is refused, a plain start lands on a survivor with the home intact; the VM rejoins."""
    domain = cl.domain(victim)
    t0 = time.monotonic()
    cl.virsh("destroy", domain)
    log(f"{victim} ({domain}) powered off")
    swarm_down: dict[str, float] = {}

    def noticed() -> bool:
        if not swarm_down and cl.nodes().get(victim, ("",))[0] == "Down":
            swarm_down["s"] = round(time.monotonic() - t0, 1)
        server = user.model()
        return server is None or not server.get("ready")

    wait_for(noticed, 180, f"the hub to notice that {user.name}'s server on {victim} is lost", interval=3)
    lost = round(time.monotonic() - t0, 1)
    result: dict[str, Any] = {"swarm marked the node down s": swarm_down.get("s"), "hub noticed the loss s": lost}
    if lost > LOST_SERVER_BOUND:
        raise DrillFailed(f"the hub noticed {user.name}'s server lost with {victim} after {lost:.0f} s; "
                          f"required: <= {LOST_SERVER_BOUND:.0f} s (Spawner.poll_interval, CablabSwarmSpawner.poll)")
    wait_for(lambda: user.model() is None, 120, f"the hub to finish stopping {user.name}'s lost server", interval=3)

    # A start pinned to the dead node: refused at once, naming the node.
    t1 = time.monotonic()
    pinned = user.start({"node": victim})
    if pinned.status in (201, 202):
        wait_for(lambda: user.model() is None, 120, f"the start pinned to {victim} to fail", interval=2)
        message = user.start_failure()
    else:
        message = pinned.text
    result["start pinned to the dead node refused s"] = round(time.monotonic() - t1, 1)
    if pinned.status == 201 or victim not in message:
        raise DrillFailed(f"a start pinned to {victim} (down) should be refused with a message naming it; got HTTP "
                          f"{pinned.status}: {message[:300]!r}")

    # The next start (no body): not pinned to the dead node by the earlier start's options.
    t2 = time.monotonic()
    plain = user.start(None)
    if plain.status not in (201, 202):
        raise DrillFailed(f"starting {user.name}'s server again (no options): {plain}")

    task = placed_task(user, cl)
    if task.node not in survivors:
        raise DrillFailed(f"{user.name}'s new server was placed on {task.node}, not on a surviving worker "
                          f"({', '.join(survivors)})")
    # The VM boots while the server starts (it is placed already).
    t3 = time.monotonic()
    cl.virsh("start", domain)
    log(f"{victim} booting")
    user.wait_ready(f"after {victim} was lost")
    result["restart on a surviving worker ready s"] = round(time.monotonic() - t2, 1)
    result["restarted on"] = task.node
    if user.read_file(note) != text:
        raise DrillFailed(f"~/{note}, written before {victim} was lost, does not read back on {task.node}")
    wait_for(lambda: cl.nodes().get(victim, ("", ""))[0] == "Ready", BOOT_TIMEOUT,
             f"{victim} to rejoin the swarm after `virsh start`", interval=5)
    result["node rejoined after boot s"] = round(time.monotonic() - t3, 1)
    late = cl.late_mounts(victim)
    if late:
        raise DrillFailed(f"Docker on {victim} started before {', '.join(late)} were mounted "
                          f"(docker.service.d/cablab-mounts.conf)")
    return result


def manager_rebooted(lab: Lab, user: HubUser, cl: Cluster, note: str, text: str) -> dict[str, Any]:
    """The first manager (NFS server, hub, proxy) rebooted: everything comes back by itself."""
    c = lab.spec.cluster
    host = cl.manager
    before = cl.boot_id(host)
    t0 = time.monotonic()
    cl.run(host, "sudo systemctl reboot", check=False)  # the connection drops
    _, ssh_back = wait_for(lambda: (lambda b: b and b != before)(cl.boot_id(host)), BOOT_TIMEOUT,
                           f"{host} to boot again", interval=5)
    wait_for(user.login_page_up, BOOT_TIMEOUT, "the hub's login page after the reboot", interval=5)
    result: dict[str, Any] = {"host back (ssh) s": ssh_back, "login page back s": round(time.monotonic() - t0, 1)}
    home = c.share(c.hub.users.home_share)
    probe = f"{home.mount}/{user.name}/{note}"
    others = [h.name for h in c.swarm_hosts if h.name != host]
    for other in others:
        wait_for(lambda: cl.mounts_intact(other, probe, user.name), 180, f"the shares on {other} to answer again", interval=5)
    result["workers' NFS mounts intact"] = others
    late = cl.late_mounts(host)
    if late:
        raise DrillFailed(f"Docker on {host} started before {', '.join(late)} were mounted")

    def working() -> Optional[str]:
        server = user.model()
        if server is None:  # the hub dropped it: the user starts it again, as from the home page
            result["server restarted"] = True
            started = user.start(None)
            if started.status not in (201, 202):
                raise DrillFailed(f"starting {user.name}'s server after the reboot: {started}")
            user.wait_ready(f"after {host} rebooted")
        return user.read_file(note)

    result["server restarted"] = False
    got, _ = wait_for(working, START_TIMEOUT, f"{user.name} working again (~/{note} through the proxy)", interval=5)
    result["user working again s"] = round(time.monotonic() - t0, 1)
    if got != text:
        raise DrillFailed(f"~/{note} reads {got!r} after {host} rebooted, wrote {text!r}")
    return result


def wait_managers(cl: Cluster, good: Callable[[dict[str, tuple[str, str]]], bool], timeout: float,
                  what: str) -> tuple[dict[str, tuple[str, str]], float]:
    """Poll the first manager's list of managers until `good` holds: (that list, seconds); DrillFailed
    after `timeout`, with the last list or docker's error (no quorum: no list at all)."""
    last: dict[str, Any] = {}

    def check() -> Optional[dict[str, tuple[str, str]]]:
        managers, error = cl.managers()
        last.update(managers=managers, error=error)
        return managers if managers and good(managers) else None

    try:
        return wait_for(check, timeout, what, interval=3)
    except DrillFailed as exc:
        raise DrillFailed(f"{exc}; `docker node ls` on {cl.manager}: {last.get('error') or last.get('managers')}") \
            from exc


def manager_lost(lab: Lab, user: HubUser, cl: Cluster, note: str, text: str) -> dict[str, Any]:
    """A manager other than the first powered off hard (three managers): the swarm keeps its quorum,
    a user's start lands on a surviving notebook node, the manager is back when the VM boots."""
    loss = manager_loss(lab.spec.cluster)
    victim = loss.victim
    expected = len(lab.spec.cluster.managers)

    def back(managers: dict[str, tuple[str, str]], host: str) -> bool:
        return managers.get(host, ("", ""))[0] == "Ready" and managers[host][1] in REACHABLE

    wait_managers(cl, lambda m: len(m) == expected and all(back(m, h) for h in m), BOOT_TIMEOUT,
                  f"all {expected} managers Ready and reachable before the drill")
    user.stop()  # the drill's own start is placed with the manager gone
    domain = cl.domain(victim)
    t0 = time.monotonic()
    cl.virsh("destroy", domain)
    log(f"{victim} ({domain}) powered off")
    # If node3 led, the others elect a leader first: the quorum is judged once the list settles.
    managers, lost = wait_managers(
        cl, lambda m: m.get(victim) == ("Down", "Unreachable") and quorum_problem(m, expected) is None, 180,
        f"{victim} listed Down and Unreachable, the other managers a quorum with one leader")
    result: dict[str, Any] = {"manager marked down and unreachable s": lost}
    result["managers reachable"] = sorted(h for h, (_, ms) in managers.items() if ms in REACHABLE)

    # The quorum takes a write: a new service for the user's server, placed on a survivor.
    t1 = time.monotonic()
    started = user.start(None)
    if started.status not in (201, 202):
        raise DrillFailed(f"starting {user.name}'s server with {victim} (a manager) powered off: {started}")
    task = placed_task(user, cl)
    if task.node not in loss.survivors:
        raise DrillFailed(f"{user.name}'s server was placed on {task.node}, not on a surviving notebook node "
                          f"({', '.join(loss.survivors)})")
    user.wait_ready(f"with the manager {victim} lost")
    result["server ready on a surviving node s"] = round(time.monotonic() - t1, 1)
    result["server on"] = task.node
    if user.read_file(note) != text:
        raise DrillFailed(f"~/{note}, written before the drills, does not read back on {task.node}")

    t2 = time.monotonic()
    cl.virsh("start", domain)
    log(f"{victim} booting")
    wait_managers(cl, lambda m: back(m, victim), BOOT_TIMEOUT,
                  f"{victim} to be a Ready and reachable manager again after `virsh start`")
    result["manager back (Ready, reachable) after boot s"] = round(time.monotonic() - t2, 1)
    result["powered off to back s"] = round(time.monotonic() - t0, 1)
    return result


def run(lab: Lab) -> dict[str, dict[str, Any]]:
    """Every drill, in order; results go to lab.report.notes["drills"] as they come."""
    c = lab.spec.cluster
    if not c.hub.auth.lab_password:
        raise DrillFailed("the drills drive a lab user: the spec needs hub.auth.lab_password")
    workers = [h.name for h in c.notebook_hosts if h != c.first_manager]
    if len(workers) < 2:
        raise DrillFailed(f"the drills need two notebook nodes besides the first manager, the spec has {workers}")
    victim, survivors = workers[-1], workers[:-1]
    results: dict[str, dict[str, Any]] = lab.report.notes.setdefault("drills", {})  # type: ignore[assignment]
    cl = Cluster(lab)
    user = HubUser(lab)
    note, text = f"drill-{uuid.uuid4().hex[:8]}.txt", uuid.uuid4().hex
    try:
        wait_for(user.login_page_up, 300, "the hub's login page", interval=5)
        hosts = [h.name for h in c.swarm_hosts]
        wait_for(lambda: all(cl.nodes().get(h, ("",))[0] == "Ready" for h in hosts), BOOT_TIMEOUT,
                 f"every swarm node ({', '.join(hosts)}) to be Ready", interval=5)
        user.login()
        user.stop()  # left running by an earlier run
        t0 = time.monotonic()
        started = user.start({"node": victim})
        if started.status not in (201, 202):
            raise DrillFailed(f"starting {user.name}'s server on {victim}: {started}")
        user.wait_ready(f"on {victim}")
        log(f"{user.name}'s server ready on {victim} in {time.monotonic() - t0:.0f} s")
        user.write_file(note, text)

        drills: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("hub_killed", lambda: hub_killed(lab, user, cl, victim, note)),
            ("worker_lost", lambda: worker_lost(lab, user, cl, victim, survivors, note, text)),
            ("manager_rebooted", lambda: manager_rebooted(lab, user, cl, note, text)),
            ("manager_lost", lambda: manager_lost(lab, user, cl, note, text)),
        ]
        for name, drill in drills:
            log(f"{name} ...")
            t0 = time.monotonic()
            try:
                results[name] = drill()
            except DrillSkipped as exc:
                results[name] = {"skipped": str(exc)}
                log(f"{name} skipped: {exc}")
                continue
            except Exception as exc:
                results[name] = {"failed": str(exc)[:500]}
                raise
            finally:
                results.setdefault(name, {})["drill s"] = round(time.monotonic() - t0, 1)
                lab.report.save()
            log(f"{name}: {results[name]}")
        user.stop()
    finally:
        user.close()
        powered_off = [victim]
        try:
            powered_off.append(manager_loss(c).victim)
        except DrillSkipped:
            pass
        for host in dict.fromkeys(powered_off):
            try:  # a failed drill leaves the cluster up to look at, but not a VM powered off
                if parse_domstate(cl.virsh("domstate", cl.domain(host))) == "shut off":
                    log(f"{host} is powered off: starting it")
                    cl.virsh("start", cl.domain(host))
            except (DrillFailed, OSError, subprocess.SubprocessError) as exc:
                log(f"could not check {host}'s VM: {exc}")
    return results

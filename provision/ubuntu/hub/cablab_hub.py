"""The hub's own Python: configured from data, shipped beside jupyterhub_config.py.

This file runs inside the hub container (JupyterHub, dockerspawner, oauthenticator,
aiohttp; the standard library) and is unit-tested in cablab-cluster's fast suite.
It is delivered as a docker swarm config, so a change rolls the hub without a new
image. `configure(c, data)` is the only entry point; `data` is cablab.json, which
`cablab-cluster render` writes from the validated spec (JSON: data, never code).
"""

from __future__ import annotations

import asyncio
import fcntl
import hmac
import json
import os
import reprlib
import subprocess
import sys
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Mapping, Optional, Sequence

from aiohttp import ClientError, ClientTimeout, ThreadedResolver
from docker.errors import APIError
from dockerspawner import SwarmSpawner
from jupyterhub.httpclient import fetch
from jupyterhub.proxy import ConfigurableHTTPProxy
from oauthenticator.github import GitHubOAuthenticator
from sqlalchemy.orm import object_session
from tornado import web
from tornado.ioloop import PeriodicCallback
from traitlets import Dict, Float, Integer, List, Unicode, default




def secrets_dir() -> Path:
    """Where docker puts the hub's swarm secrets (another place in tests)."""
    return Path(os.environ.get("CABLAB_SECRETS_DIR", "/run/secrets"))


def secret(name: str) -> str:
    """A docker swarm secret's content, stripped."""
    return (secrets_dir() / name).read_text(encoding="utf-8").strip()


# --- Name resolution for the hub's own HTTP client ----------------------------
# A user's server is the swarm service jupyter-<name>; every start is a new
# service, with a new address, under the same name. JupyterHub's client resolves
# with c-ares (aiodns), which keeps answers for their TTL (600 s from Docker's
# DNS), and aiohttp keeps them 10 s more on top: a server started again within
# ten minutes was looked for at its old address and never became ready. Ask the
# system resolver on every connection, with neither cache.


class SystemResolver(ThreadedResolver):
    """getaddrinfo() per connection, no cache; bound to the loop that uses it."""

    def __init__(self) -> None:  # ThreadedResolver binds the running loop, none while config loads
        pass

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()


# --- LAB ONLY: a password form beside the GitHub button -----------------------
# Used only when cablab.json says `lab_password: true`, which render writes only
# for a spec with `lab: true` (validation refuses `lab_password` elsewhere).

LAB_LOGIN_HTML = """
<div class="service-login">
  <a role="button" class="btn btn-jupyter btn-lg" href="{{ authenticator_login_url }}">Sign in with GitHub</a>
</div>
<form action="{{ login_url }}?next={{ next }}" method="post" role="form" id="lab-login">
  <div class="auth-form-header"><h1>Lab sign-in</h1></div>
  <div class="auth-form-body m-auto">
    <p class="text-muted">This is a lab cluster: users of the userlist may sign in with the lab password.</p>
    {% if login_error %}<p class="login_error">{{ login_error }}</p>{% endif %}
    <input type="hidden" name="_xsrf" value="{{ xsrf }}" />
    <label for="username_input">Username:</label>
    <input id="username_input" type="text" autocapitalize="off" autocorrect="off" autocomplete="username"
           class="form-control" name="username" value="{{ username or '' }}" autofocus="autofocus" />
    <label for="password_input">Password:</label>
    <input id="password_input" type="password" class="form-control" autocomplete="current-password"
           name="password" />
    <div class="feedback-container">
      <input id="login_submit" type="submit" class="btn btn-jupyter form-control" value="Sign in" tabindex="3" />
    </div>
  </div>
</form>
"""


class LabPasswordGitHubOAuthenticator(GitHubOAuthenticator):
    """GitHub OAuth as on a real cluster, plus the generated lab password for userlist users."""

    def get_custom_html(self, base_url: str) -> str:
        return LAB_LOGIN_HTML

    async def authenticate(self, handler: Any, data: Mapping[str, str] | None = None, **kwargs: Any):
        if data and "password" in data:
            name = self.normalize_username(data.get("username", ""))
            ok = hmac.compare_digest(data["password"].encode(), secret("lab_password").encode())
            return {"name": name, "auth_state": None} if ok and name in self.allowed_users | self.admin_users else None
        return await super().authenticate(handler, data, **kwargs)


# --- The user's home and the server's placement --------------------------------


# Run as the notebook user (root_squash: the hub's root is nobody on the share): make
# the home 0700 if it is missing, then each link to a read-only share, replacing an empty
# directory left by an older layout; anything else of the user's is left alone.
# sh -c MAKE_HOME sh HOME REL TARGET [REL TARGET ...]
_MAKE_HOME = r"""
set -eu
home=$1; shift
[ -d "$home" ] || mkdir -m 0700 "$home"
while [ "$#" -ge 2 ]; do
  path=$home/$1 target=$2; shift 2
  if [ -L "$path" ]; then
    [ "$(readlink "$path")" = "$target" ] && continue
    rm -f "$path"
  elif [ -d "$path" ] && [ -z "$(ls -A "$path")" ]; then
    rmdir "$path"
  elif [ -e "$path" ]; then
    echo "$path exists and is not a link to $target: left as it is" >&2
    continue
  fi
  mkdir -p "$(dirname "$path")"
  ln -s "$target" "$path"
done
"""


def make_home(home: Path, uid: int, gid: int, links: Mapping[str, str]) -> None:
    """The user's home on the NFS share (mode 0700) with links to the read-only shares,
    all made as the notebook user: the share is root_squashed, so neither the hub (root)
    nor dockerd may create anything in it."""
    if home.is_dir() and all(os.path.islink(home / rel) and os.readlink(home / rel) == target
                             for rel, target in links.items()):
        return
    pairs = [arg for rel, target in sorted(links.items()) for arg in (rel, target)]
    subprocess.run(["sh", "-c", _MAKE_HOME, "sh", str(home), *pairs], check=True, user=uid, group=gid, extra_groups=[])


# --- Each user's uid -------------------------------------------------------------
# Userlist users: the map render keeps beside the spec (cablab.json `uids`). Members of
# allowed_organizations outside it: a uid from the hub's own range (`org_uids`), given at
# their first start and recorded in a file on the hub's volume (HUB_DATA, backed up with
# the database): stable across restarts, never given twice, never in the map's range.
# A user later added to the userlist gets a map uid at the next render; the NFS server's
# run then moves their home (owned by the hub's uid) to it.

RESERVED_UIDS = frozenset({65534, 65535, 2**32 - 2, 2**32 - 1})  # nobody/nogroup (root_squash), (uid_t)-1/-2


class OrgUids:
    """The hub's record of organisation members' uids: {"name": uid} in a JSON file, append-only."""

    def __init__(self, path: Path, first: int, count: int, taken: Sequence[int] = ()):
        self.path, self.first, self.count = Path(path), int(first), int(count)
        self.taken = frozenset(taken)  # the map's uids: never given here (they lie below `first` anyway)

    def read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            raise ValueError(f"{self.path} is not a mapping of user names to uids; restore it from a backup")
        return {str(k): int(v) for k, v in data.items()}

    def uid_of(self, name: str) -> int:
        """`name`'s uid, given now (the next free one of the range) if they have none yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one allocation at a time (spawns run concurrently)
            uids = self.read()
            if name in uids:
                return uids[name]
            uid = max([self.first - 1, *uids.values()]) + 1
            while uid in RESERVED_UIDS or uid in self.taken:
                uid += 1
            if uid >= self.first + self.count:
                raise web.HTTPError(503, f"no uid left for {name}: the hub's range of {self.count} is used up")
            uids[name] = uid
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(uids, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            return uid


def uid_resolver(spawner_data: Mapping[str, Any]):
    """name → uid: the map's, else the hub's own (OrgUids)."""
    mapped = {str(k).lower(): int(v) for k, v in spawner_data["uids"].items()}
    org = spawner_data["org_uids"]
    hub_given = OrgUids(Path(org["file"]), org["first"], org["count"], tuple(mapped.values()))

    def uid_of(name: str) -> int:
        name = name.lower()
        return mapped[name] if name in mapped else hub_given.uid_of(name)

    return uid_of


def make_pre_spawn_hook(spawner_data: Mapping[str, Any]):
    home_root = Path(spawner_data["home_root"])
    links = dict(spawner_data["home_links"])
    placement = list(spawner_data["placement"])
    node_label = str(spawner_data["node_label"])
    gid = int(spawner_data["gid"])
    uid_of = uid_resolver(spawner_data)

    def pre_spawn_hook(spawner: Any) -> None:
        """Make the home as the user's uid, run the server as it, then place the server
        (user option `node`, checked by `apply_user_options` before, pins it to a notebook node)."""
        uid = uid_of(spawner.user.name)
        make_home(home_root / spawner.user.name, uid, gid, links)
        # The container runs as the user's own uid (no passwd entry: HOME comes from the image's
        # ENV, USER from here); the image's jovyan is never used.
        spawner.extra_container_spec = {**spawner.extra_container_spec, "user": f"{uid}:{gid}"}
        spawner.environment = {**spawner.environment, "USER": spawner.user.name}
        constraints = list(placement)
        node = (spawner.user_options or {}).get("node")
        if node:
            constraints.append(f"engine.labels.{node_label} == {node}")
        spawner.extra_placement_spec = {"constraints": constraints}

    return pre_spawn_hook


# --- User options: what a start may ask -----------------------------------------
# A start's user options come from whoever calls the REST API: `node` (a notebook node's name, for
# this start only) is the one this hub reads. JupyterHub (>= 5.3) hands them to `apply_user_options`
# right before the pre-spawn hook, and without one logged a warning that called `node` unhandled at
# every pinned start. A bad `node`, and `image` (dockerspawner would refuse it only after the home
# was made and the start had waited its turn), are refused there with 400, before anything is made;
# any other key is ignored, and said so once in the log. JupyterHub saves a start's options as the
# next start's (a start without a body reuses them): this hub keeps none, so a pin is for one start
# and a refused option does not refuse every later start; what an older hub kept is cleared when
# this one builds the user's spawner (CablabSwarmSpawner.__init__).

USER_OPTIONS = ("node",)
REFUSED_OPTIONS = {"image": "this hub starts every server from its one single-user image"}
LOGGED_KEYS = 5  # ignored keys named in the log line, at most


def forget_user_options(spawner: Any) -> None:
    """Keep none of this start's options for the next start; this start still sees them. Committed at
    once: the hub's one database session is shared by every request, and a rollback anywhere before
    the spawn's next commit dropped the change (the lab saw pinned users stay pinned)."""
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is not None and orm_spawner.user_options:
        orm_spawner.user_options = {}
        session = object_session(orm_spawner)
        if session is not None:
            session.commit()


def make_apply_user_options(spawner_data: Mapping[str, Any]):
    nodes = list(spawner_data["notebook_nodes"])

    def apply_user_options(spawner: Any, user_options: Mapping[str, Any] | None) -> None:
        forget_user_options(spawner)
        options = user_options or {}
        for key, why in REFUSED_OPTIONS.items():
            if options.get(key):
                raise web.HTTPError(400, f"the user option `{key}` is not taken: {why}; start without it")
        node = options.get("node")
        if node and (not isinstance(node, str) or node not in nodes):
            raise web.HTTPError(400, f"node {reprlib.repr(node)} does not run notebooks; "
                                     f"use one of {', '.join(nodes)}")
        ignored = sorted(reprlib.repr(k) for k in options if k not in USER_OPTIONS and k not in REFUSED_OPTIONS)
        if ignored:
            more = f" and {len(ignored) - LOGGED_KEYS} more" if len(ignored) > LOGGED_KEYS else ""
            spawner.log.warning("%s's start: ignoring user option(s) %s%s (this hub reads: %s)", spawner.user.name,
                                ", ".join(ignored[:LOGGED_KEYS]), more, ", ".join(USER_OPTIONS))

    return apply_user_options


# --- Faults: a server lost with its node, a start that cannot be placed ----------
# Swarm keeps reporting a task as "running" while its node is down (the node cannot
# say otherwise), and dockerspawner's poll and start loop read the task's state only:
# the hub said `ready` for a server whose VM was gone, and a start constrained to a
# down node waited "pending" for the whole start timeout. Here poll also asks for the
# task's node, the start loop gives up on a task swarm cannot place, and a `node`
# user option names a node only for the start that sent it.

TASK_STARTING = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "rejected"})
UNPLACEABLE = "no suitable node"  # swarm's scheduler: "no suitable node (scheduling constraints not ...)"
UNSCHEDULABLE_GRACE = 20.0  # s a server's task may wait for a node that can take it


def task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "unknown").lower()


def created_at(task: Mapping[str, Any]) -> str:
    """A task's creation time as a string that sorts as time does (Docker writes RFC 3339 in UTC
    with up to nine digits of fraction, trailing zeros dropped)."""
    stamp = str(task.get("CreatedAt") or "").removesuffix("Z")
    whole, _, fraction = stamp.partition(".")
    return f"{whole}.{fraction:0<9}"


def current_task(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of a service's tasks, the one a start waits on: the newest that swarm wants running, or wants
    ready (a restart's replacement waits out its delay so), else the newest; None without tasks."""
    wanted = [t for t in tasks if str(t.get("DesiredState") or "").lower() in ("running", "ready")] or list(tasks)
    return max(wanted, key=created_at, default=None)


def unplaceable_reason(task: Mapping[str, Any]) -> str | None:
    """Swarm's reason why it cannot place a pending task ("no suitable node (...)"), or None."""
    status = task.get("Status") or {}
    err = str(status.get("Err") or "")
    return err if task_state(task) == "pending" and UNPLACEABLE in err else None


def node_problem(node: Mapping[str, Any] | None, *, for_new_servers: bool = False) -> str | None:
    """Why a swarm node cannot run a user's server, or None.

    A running server needs its node `ready`, or `unknown` (a manager that has just
    started has not heard from its nodes yet: the node turns `ready` or `down` within
    seconds); a new one needs it `ready` and `active` (`pause` keeps running tasks,
    `drain` moves them away)."""
    if node is None:
        return "not in the swarm"
    state = str((node.get("Status") or {}).get("State") or "unknown")
    availability = str((node.get("Spec") or {}).get("Availability") or "unknown")
    if state != "ready" and (for_new_servers or state != "unknown"):
        return f"{state} (swarm node state)"
    if for_new_servers and availability != "active":
        return f"{availability} (swarm node availability)"
    return None


def node_name(node: Mapping[str, Any] | None, label: str) -> str | None:
    """A swarm node's name as the spec has it: its engine label `label` (the host's own daemon.json),
    else its hostname (an engine not yet provisioned with it)."""
    description = (node or {}).get("Description") or {}
    return ((description.get("Engine") or {}).get("Labels") or {}).get(label) or description.get("Hostname")


def lost_reason(task: Mapping[str, Any] | None, node: Mapping[str, Any] | None, label: str) -> str | None:
    """Why a started server no longer serves (poll's answer), or None while its task
    runs on a ready node. `node` is the task's node (None: not found), named by its engine `label`."""
    if task is None:
        return "its swarm task is gone"
    state = task_state(task)
    if state != "running":
        status = task.get("Status") or {}
        detail = status.get("Err") or status.get("Message") or ""
        return f"its swarm task is {state}" + (f": {detail}" if detail else "")
    problem = node_problem(node)
    if problem:
        name = node_name(node, label) or task.get("NodeID") or "?"
        return f"its node {name} is {problem}"
    return None


def node_refusal(name: str, nodes: Sequence[Mapping[str, Any]], notebook_nodes: Sequence[str],
                 label: str) -> str | None:
    """Why a new server may not be pinned to the node `name` (its engine `label`; None: a node of that
    name is Ready and Active). A node that left and joined again is listed twice (the old entry
    down): any will do."""
    same = [n for n in nodes if node_name(n, label) == name]
    problems = [node_problem(n, for_new_servers=True) for n in same] or ["not in the swarm"]
    if any(p is None for p in problems):
        return None
    usable = sorted({node_name(n, label) for n in nodes
                     if node_problem(n, for_new_servers=True) is None} & set(notebook_nodes))
    return (f"node {name} cannot take a new server now: it is {problems[0]}. Start without the `node` "
            f"option to be placed on any ready node" + (f", or name one of {', '.join(usable)}" if usable else ""))


# --- A start's checks: its task running, then its server answering ---------------
# Each wait asks soon, then 1.5 times later each time, up to a longest delay: a check comes at most
# half again the time waited so far after what it waits for (or the longest delay, if less). Natively
# (the single-user image as a swarm service on this project's machine, benchmarks/native_start.py) a
# task runs 0.33 s after its service is created and the server answers at 0.71 s (p50): the earlier
# fixed waits (task checks 1.0 s apart at first, answer checks every 0.5 s) found it at 1.00 s. Under
# emulation (the lab) a task runs ~5 s after its service is created and its server answers ~7 s later:
# there the early checks are calls in vain. From 0.25 s: six before 5 s; natively the start is found
# at 0.75 s (0.71 s from 0.1 s). A task check is one Docker API call (`start_task`: ~16 ms of the
# manager's dockerd, lab), not SwarmSpawner's two (the service, then its tasks: ~27 ms); an answer
# check costs the hub ~2 ms of CPU (lab).
TASK_CHECK_MOST = 5.0  # s: the longest wait between two task checks


def checks(first: float, most: float, factor: float = 1.5) -> Iterator[float]:
    """The delays between a wait's checks: `first`, then `factor` times longer each time, up to `most`."""
    delay = min(first, most)
    while True:
        yield delay
        delay = min(delay * factor, most)


async def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` with a status below 500: as JupyterHub's
    wait_for_http_server asks, through the hub's own client (same resolver, no DNS cache)."""
    try:
        response = await fetch(url, raise_for_status=False, allow_redirects=False,
                               timeout=ClientTimeout(total=10))
    except (ClientError, OSError, asyncio.TimeoutError):
        return False
    response.release()
    return response.status < 500


# --- Starts, at most one per notebook CPU at a time ------------------------------
# A server's start is CPU-bound (one Python process importing JupyterLab and JupyterHub's client). N
# starts at once on a node with fewer CPUs each take N/CPUs times as long, so all of them are late: ten
# started at once on the lab's two one-CPU workers ran past the 300 s answer timeout (spawn bench,
# capacity). The hub runs as many starts at once as the ready notebook nodes have CPUs; the others wait
# their turn in order of arrival (within start_timeout, before their own http_timeout starts), told
# how many are ahead. Swarm spreads the starts that run at once over the nodes (fewest tasks first).

# What a start needs once its turn has come; JupyterHub's start_timeout covers the wait and the start.
# The emulated lab's starts took 95-110 s two at a time (spawn bench); natively the single-user server
# alone answered 0.9 s after its start (this machine's Docker), so real clusters' starts are seconds.
OWN_START_S = 150.0


def start_slots(nodes: Sequence[Mapping[str, Any]], notebook_nodes: Sequence[str], label: str) -> int:
    """How many starts may run at once: the whole CPUs of the ready notebook nodes, at least 1."""
    nano = sum(((n.get("Description") or {}).get("Resources") or {}).get("NanoCPUs") or 0 for n in nodes
               if node_problem(n, for_new_servers=True) is None and node_name(n, label) in notebook_nodes)
    return max(1, int(nano // 1_000_000_000))


class NoTurn(Exception):
    """A start's turn did not come in time."""


class StartQueue:
    """At most `limit` starts at once (the limit as the latest start saw it), the rest first come, first
    served. One per hub (a class attribute of the spawner): every user's start passes through it."""

    def __init__(self) -> None:
        self.running = 0
        self.limit = 1
        self.waiting: deque[asyncio.Future] = deque()

    def ahead(self, turn: asyncio.Future) -> int:
        """Starts before this waiting one: those running and those queued earlier."""
        return self.running + (self.waiting.index(turn) if turn in self.waiting else 0)

    @asynccontextmanager
    async def slot(self, limit: int, on_wait: Any = None, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold one of the `limit` slots for the block; `on_wait(turn)` is called if this start must wait,
        NoTurn raised if its turn has not come within `timeout` s."""
        self.limit = max(1, limit)
        self._wake()
        if self.running < self.limit and not self.waiting:
            self.running += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            self.waiting.append(turn)
            if on_wait is not None:
                on_wait(turn)
            try:
                await asyncio.wait_for(turn, timeout)
            except (asyncio.CancelledError, asyncio.TimeoutError) as e:
                if turn.done() and not turn.cancelled():
                    self._leave()  # its turn had come: give it to the next
                elif turn in self.waiting:
                    self.waiting.remove(turn)
                if isinstance(e, asyncio.TimeoutError):
                    raise NoTurn() from None
                raise
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiting and self.running < self.limit:
            turn = self.waiting.popleft()
            if not turn.done():
                self.running += 1
                turn.set_result(None)


class CablabSwarmSpawner(SwarmSpawner):
    """dockerspawner's SwarmSpawner, aware of swarm nodes: see the section's comment."""

    notebook_nodes = List(Unicode(), config=True, help="Nodes that run notebooks (named in refusals).")
    node_label = Unicode(config=True, help="The engine label that names a node as the spec does (cablab.json).")
    unplaceable_grace = Float(UNSCHEDULABLE_GRACE, config=True, help="""Seconds a start may stay unplaceable
        (swarm: "no suitable node": a node named that is down, no node with the reservation free) before it
        fails with swarm's reason, instead of waiting for start_timeout.""")
    resources = Dict(config=True, help="{'default': {limits, reservations}, 'users': {name: {...}}} from cablab.json")

    turn_timeout = Float(config=True, help="""Seconds a start may wait for its turn in the start queue
        (default: start_timeout less OWN_START_S, the time left for the start itself).""")

    @default("turn_timeout")
    def _default_turn_timeout(self) -> float:
        return max(0.0, float(self.start_timeout) - OWN_START_S)
    start_queue = StartQueue()  # one per hub: see "Starts, at most one per notebook CPU at a time"
    _turn: asyncio.Future | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A hub before this one kept each start's options as the next start's, and JupyterHub hands
        # saved options to a start without a body: what such a hub left (a pin, or a node it refused
        # and kept) would pin or refuse that user's next start. This hub keeps none (see "User
        # options"), so a stopped server's row is cleared when the hub first loads it; a running
        # server's options are the ones it runs with, and its next start clears them.
        if getattr(self.orm_spawner, "server", None) is None and self.user_options:
            forget_user_options(self)
            self.user_options = {}

    def user_resources(self) -> Mapping[str, Any]:
        return (self.resources.get("users") or {}).get(self.user.name) or self.resources.get("default") or {}
    start_check_interval = Float(0.25, config=True, help="""Seconds between the start loop's first two task
        checks (then 1.5 times longer each time, up to 5 s; see `checks`).""")
    ready_check_first = Float(0.05, config=True, help="""Seconds between the first two checks, at the end of
        a start, that the server answers (then 1.5 times longer each time, up to ready_check_interval).""")
    ready_check_interval = Float(0.5, config=True, help="""The longest wait between the checks, at the end of a
        start, that the server answers. JupyterHub's own check after the start backs off at random up to 5 s,
        and found a server 2.5 s after its first answer on average; it now finds it at its first try.""")

    async def docker_found(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`self.docker(method, ...)`'s answer, None when Docker answers 404 (no such object)."""
        try:
            return await self.docker(method, *args, **kwargs)
        except APIError as e:
            if e.response is not None and e.response.status_code == 404:
                return None
            raise

    async def swarm_node(self, node_id: str | None) -> dict | None:
        """The swarm node's record (docker node inspect), None when it is not in the swarm."""
        return await self.docker_found("inspect_node", node_id) if node_id else None

    async def poll(self):
        task = await self.get_task()
        if task is None:
            self.log.warning("Service %s not found", self.service_name)
            return 0
        node = await self.swarm_node(task.get("NodeID")) if task_state(task) == "running" else None
        reason = lost_reason(task, node, self.node_label)
        if reason:
            # JupyterHub does not stop a server that poll calls dead: remove the service
            # here, or swarm restarts its task on another node, where nobody uses it.
            self.log.warning("%s's server is lost: %s; removing %s", self.user.name, reason, self.service_name)
            try:
                await self.remove_object()
            except APIError as e:
                self.log.warning("Removing %s: %s (the next start removes it)", self.service_name, e)
        return reason

    async def start(self):
        apply_resources(self, self.user_resources())
        node = (self.user_options or {}).get("node")
        nodes = await self.docker("nodes")
        if node:
            refusal = node_refusal(str(node), nodes, self.notebook_nodes, self.node_label)
            if refusal:
                raise web.HTTPError(400, refusal)
        limit = start_slots(nodes, self.notebook_nodes, self.node_label)

        def waiting(turn: asyncio.Future) -> None:
            self._turn = turn
            self.log.info("%s's start waits for %d other(s) (%d at once)", self.user.name,
                          self.start_queue.ahead(turn), limit)

        try:
            async with self.start_queue.slot(limit, on_wait=waiting, timeout=self.turn_timeout):
                ip, port = await super().start()
                base_url = self.server.base_url if self.server else self.user.url
                await self.wait_until_answering(f"http://{ip}:{port}{base_url}api")
        except NoTurn:
            raise web.HTTPError(503, f"the cluster is busy starting other servers ({limit} at a time) and "
                                     f"{self.user.name}'s did not get its turn within {self.turn_timeout:g} s; "
                                     "try again in a few minutes") from None
        finally:
            self._turn = None
        return ip, port

    async def progress(self):
        """The spawn page's messages: the place in the queue while this start waits its turn."""
        await asyncio.sleep(0)  # start() runs first and queues itself
        while self._turn is not None and not self._turn.done():
            ahead = self.start_queue.ahead(self._turn)
            yield {"progress": 10, "message": f"Waiting for {ahead} other server{'s' if ahead != 1 else ''} "
                                              "to start first (the cluster starts a few at a time)"}
            await asyncio.sleep(2)
        yield {"progress": 50, "message": "Starting your server on the cluster..."}

    async def wait_until_answering(self, url: str) -> None:
        """Return once the server at `url` answers below 500 (what JupyterHub's own wait asks),
        asking every `ready_check_interval` s; fail after http_timeout s with a message for the user."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        delays = checks(self.ready_check_first, self.ready_check_interval)
        while True:
            if await answers(url):
                return
            if loop.time() >= deadline:
                raise web.HTTPError(500, f"{self.user.name}'s server started but did not answer "
                                         f"within {self.http_timeout:g} s")
            await asyncio.sleep(next(delays))

    async def start_task(self) -> Mapping[str, Any] | None:
        """The started service's task (`current_task`), from one Docker API call: SwarmSpawner's
        get_task asks for the service first, which a start has just created."""
        return current_task(await self.docker_found("tasks", filters={"service": self.service_name}) or [])

    async def start_object(self):
        """Wait for the service's task to run (SwarmSpawner's loop), but fail within
        `unplaceable_grace` seconds, with swarm's reason, when no node can take it."""
        loop = asyncio.get_running_loop()
        delays = checks(self.start_check_interval, TASK_CHECK_MOST)
        watch = SchedulingWatch(self.unplaceable_grace)
        while True:
            task = await self.start_task()
            if not task:
                raise RuntimeError(f"Service {self.service_name} not found")
            state = task_state(task)
            if state not in TASK_STARTING:
                break
            err = watch.observe(task, loop.time())
            if err:
                message = refusal(self.user.name, self.user_resources().get("reservations") or {}, err)
                self.log.warning("Giving up on %s: %s", self.service_name, message)
                raise Unschedulable(message)
            await asyncio.sleep(next(delays))
        if state != "running":
            status = task.get("Status") or {}
            raise RuntimeError(f"Service {self.service_name} not running: {status.get('Err') or status}")


# --- Everything, from data ------------------------------------------------------

HSTS = "max-age=31536000"  # no includeSubDomains: the hub's name says nothing of its siblings



# --- The proxy's routes ------------------------------------------------------
# configurable-http-proxy keeps its routing table in memory only. It runs as its own swarm
# service, rolled by every deploy that changes its secrets (a renewed certificate): the new
# proxy knows only its default target, every user's route is gone, and JupyterHub puts them
# back only at its next last_activity pass (up to 300 s). The hub checks the routes every
# ROUTE_CHECK_INTERVAL s instead (one GET of the proxy's table when nothing is missing).

ROUTE_CHECK_INTERVAL = 10


class CablabProxy(ConfigurableHTTPProxy):
    """CHP, externally managed, whose lost routes the hub restores within `route_check_interval`."""

    route_check_interval = Integer(ROUTE_CHECK_INTERVAL, config=True,
                                   help="s between two checks of the proxy's routing table (0: JupyterHub's own only)")
    _route_watch: PeriodicCallback | None = None

    async def check_routes(self, user_dict: Any, service_dict: Any, routes: Any = None) -> None:
        # The hub's first check_routes (at start, after its services) starts the watch.
        self.watch_routes()
        await super().check_routes(user_dict, service_dict, routes)

    def watch_routes(self) -> None:
        if self._route_watch is None and self.route_check_interval > 0 and self.app is not None:
            self._route_watch = PeriodicCallback(self.restore_routes, 1e3 * self.route_check_interval)
            self._route_watch.start()

    async def restore_routes(self) -> None:
        try:
            await self.check_routes(self.app.users, self.app._service_map)
        except Exception as exc:  # noqa: BLE001 - the proxy may be restarting: the next pass tries again
            self.log.warning("Could not check the proxy's routes: %s", exc)


def configure(c: Any, data: Mapping[str, Any]) -> None:
    """Configure JupyterHub `c` (a traitlets Config) from cablab.json's `data`."""
    # Proxy: its own swarm service (it outlives hub restarts, and the hub does not
    # wait a fixed 10 s for a proxy it started). It terminates TLS (>= 1.2).
    c.JupyterHub.public_url = data["public_url"]
    c.JupyterHub.proxy_class = CablabProxy  # restores a restarted proxy's routes within seconds
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = data["proxy_api_url"]
    c.ConfigurableHTTPProxy.auth_token = secret("proxy_token")
    c.JupyterHub.hub_ip = "0.0.0.0"
    c.JupyterHub.hub_connect_ip = data["hub_connect_ip"]
    c.JupyterHub.cookie_secret_file = str(secrets_dir() / "cookie_secret")
    c.JupyterHub.db_url = data["db_url"]
    c.JupyterHub.cleanup_servers = False  # user servers outlive a hub restart
    c.JupyterHubHTTPClient.connector_options = {"resolver": SystemResolver(), "use_dns_cache": False}
    # HTTPS only, remembered by browsers for a year (the proxy redirects plain HTTP).
    c.JupyterHub.tornado_settings = {"headers": {"Strict-Transport-Security": HSTS}}

    # Who may log in: exactly the userlist. A user removed from it loses access
    # (JupyterHub's default, allow_existing_users, would keep everyone in the database).
    c.Authenticator.allowed_users = set(data["allowed_users"])
    c.Authenticator.admin_users = set(data["admin_users"])
    c.Authenticator.allow_existing_users = False

    gh = data["github"]
    c.GitHubOAuthenticator.client_id = gh["client_id"]
    c.GitHubOAuthenticator.client_secret = secret("github_client_secret")
    c.GitHubOAuthenticator.oauth_callback_url = gh["callback_url"]
    if gh["allowed_organizations"]:
        # Members of these organisations are admitted too (a union with the userlist);
        # reading private memberships needs the read:org scope.
        c.GitHubOAuthenticator.allowed_organizations = set(gh["allowed_organizations"])
        c.GitHubOAuthenticator.scope = ["read:org"]
    c.JupyterHub.authenticator_class = LabPasswordGitHubOAuthenticator if data["lab_password"] else "github"

    # Spawner: one swarm service per user, on the overlay network.
    sp = data["spawner"]
    c.JupyterHub.spawner_class = CablabSwarmSpawner  # SwarmSpawner aware of swarm nodes (faults section)
    c.SwarmSpawner.image = sp["image"]
    # Explicit: without it dockerspawner inspects the image on the hub's own node to
    # read its CMD, and the hub's node need not hold the single-user image.
    c.SwarmSpawner.cmd = ["jupyterhub-singleuser"]
    c.SwarmSpawner.network_name = sp["network"]
    c.SwarmSpawner.use_internal_ip = True
    # The hub and the proxy reach a server by its service's name. dnsrr: the name resolves to the
    # one task's own address, with no virtual IP; a virtual IP (swarm's default) has every node on
    # the network program a load balancer (IPVS, iptables) for each server started and removed:
    # measured on the emulated lab, 3.4-4.2 CPU-s of dockerd per start on each node that does not
    # run it (lab/README, the fifteenth session). Nothing to balance: one task per service.
    c.SwarmSpawner.extra_endpoint_spec = {"mode": "dnsrr"}
    c.SwarmSpawner.start_timeout = 600
    c.SwarmSpawner.http_timeout = 300
    c.SwarmSpawner.notebook_dir = sp["home_target"]
    c.Spawner.default_url = sp["default_url"]
    # The user's home follows them to any node: a directory of the NFS share,
    # mounted at the same place on every host. raw_username: the GitHub login as is
    # (dockerspawner's {username} is escaped: a-b → a-2db).
    c.SwarmSpawner.volumes = {sp["home_root"].rstrip("/") + "/{raw_username}": sp["home_target"]}
    c.SwarmSpawner.read_only_volumes = dict(sp["read_only_volumes"])
    c.Spawner.apply_user_options = make_apply_user_options(sp)
    c.Spawner.pre_spawn_hook = make_pre_spawn_hook(sp)

    # Faults (CablabSwarmSpawner): a server lost with its node is noticed within
    # poll_interval (+10 % jitter) after swarm marks the node down (3 x swarm.heartbeat): <= 60 s.
    c.Spawner.poll_interval = 15
    c.CablabSwarmSpawner.notebook_nodes = list(sp["notebook_nodes"])
    c.CablabSwarmSpawner.node_label = str(sp["node_label"])
    configure_operations(c, data)


# --- Operating the hub over months: idle culler, metrics, per-user resources ----
# Everything below comes from cablab.json's `cull` and `resources` (the spec's
# hub.users.cull / limits / reservations / overrides) and the `metrics_token` secret.

CULLER = "idle-culler"  # the hub-managed service (and its role) that stops idle servers
METRICS = "metrics"  # the token-only service (and its role) Prometheus scrapes /hub/metrics as


def activity_interval(timeout: int) -> int:
    """How often activity reaches the hub (user servers report it, the hub reads the proxy's):
    a quarter of the idle timeout, within 30 s and JupyterHub's default 300 s, so an active
    server always reports well inside the timeout."""
    return max(30, min(300, timeout // 4))


def culler_service(cull: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """jupyterhub-idle-culler as a hub-managed service, and its role (JupyterHub RBAC: what it reads
    and stops; it never deletes users, so no admin:users)."""
    service = {
        "name": CULLER,
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={int(cull['timeout'])}",
                    f"--cull-every={int(cull['every'])}", f"--max-age={int(cull['max_age'])}"],
    }
    role = {"name": CULLER, "services": [CULLER],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}
    return service, role


def metrics_service(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A service without a process: its API token (the `metrics_token` secret) may read /hub/metrics."""
    return {"name": METRICS, "api_token": token}, {"name": METRICS, "services": [METRICS], "scopes": ["read:metrics"]}


class SchedulingWatch:
    """Decides when a server's swarm task will not be placed: docker keeps such a task `pending`
    with `Status.Err` "no suitable node (...)" (insufficient resources, constraints not met) and
    would wait for the whole start timeout. Unschedulable for `grace` s without a break: give up."""

    def __init__(self, grace: float = UNSCHEDULABLE_GRACE):
        self.grace = grace
        self.since: Optional[float] = None

    def observe(self, task: Optional[Mapping[str, Any]], now: float) -> Optional[str]:
        """docker's reason (Status.Err) once the task has been unschedulable for `grace` s, else None."""
        err = unplaceable_reason(task or {})
        if err is None:
            self.since = None
            return None
        if self.since is None:
            self.since = now
        return err if now - self.since >= self.grace else None


def _amount(resources: Mapping[str, Any]) -> str:
    parts = [f"{resources['memory']} of memory" if resources.get("memory") else "",
             f"{resources['cpus']:g} CPUs" if resources.get("cpus") else ""]
    return " and ".join(p for p in parts if p)


def refusal(user: str, reservations: Mapping[str, Any], docker_err: str) -> str:
    """What the user reads when no node will take their server."""
    if "insufficient resources" in docker_err and _amount(reservations):
        why = f"no notebook node has {_amount(reservations)} free to reserve for {user}'s server"
        hint = "try again when other servers have stopped, or ask an admin to lower your reservation"
    else:
        why = f"no notebook node can take {user}'s server"
        hint = "the node you asked for may be down or full; try another one or none, or ask an admin"
    return f"{why} (docker: {docker_err}); {hint}"


class Unschedulable(web.HTTPError):
    """The spawn failed because the swarm will not place the server; the hub shows `jupyterhub_message`."""

    def __init__(self, message: str):
        super().__init__(503, message)  # the service (a node for the server) is not available now
        self.jupyterhub_message = message


def apply_resources(spawner: Any, resources: Mapping[str, Any]) -> None:
    """A user's limits and reservations onto SwarmSpawner's traits (→ the service's Resources)."""
    limits, reservations = resources.get("limits") or {}, resources.get("reservations") or {}
    spawner.mem_limit = limits.get("memory")
    spawner.cpu_limit = limits.get("cpus")
    spawner.mem_guarantee = reservations.get("memory")
    spawner.cpu_guarantee = reservations.get("cpus")


EVENT_LOOP_TICK = 0.5  # s between the event-loop metric's ticks (JupyterHub's default: 0.05)


def configure_operations(c: Any, data: Mapping[str, Any]) -> None:
    """Culler, metrics and per-user resources; called at the end of `configure`."""
    services: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    cull = data["cull"]
    if cull["enabled"]:
        service, role = culler_service(cull)
        services.append(service)
        roles.append(role)
        interval = activity_interval(int(cull["timeout"]))
        c.JupyterHub.last_activity_interval = interval  # the proxy's record of each server's traffic
        environment = dict(c.Spawner.environment) if "environment" in c.Spawner else {}
        c.Spawner.environment = {**environment, "JUPYTERHUB_ACTIVITY_INTERVAL": str(interval)}
    service, role = metrics_service(secret("metrics_token"))
    services.append(service)
    roles.append(role)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    c.JupyterHub.authenticate_prometheus = True  # JupyterHub's default, stated: /hub/metrics needs read:metrics
    # JupyterHub's event-loop metric wakes the hub every 50 ms by default: on the lab's manager that
    # was 23 of the idle hub's 29 ms of CPU a second (a bare 50 ms sleep loop in the hub's image; 2.7
    # ms at 0.5 s), CPU the servers' starts there share. Every EVENT_LOOP_TICK s it still logs a loop
    # that blocked for a second or more, and /hub/metrics still has the histogram (from 0.5 s up; its
    # buckets below stay empty). A tick reports how much longer than EVENT_LOOP_TICK it took: a block
    # that began as a tick's sleep did shows as its length less the tick, so the threshold is that
    # much lower than JupyterHub's 1 s.
    c.PeriodicMetricsCollector.event_loop_interval_resolution = EVENT_LOOP_TICK
    c.PeriodicMetricsCollector.event_loop_interval_log_threshold = 1.0 - EVENT_LOOP_TICK

    c.CablabSwarmSpawner.resources = dict(data["resources"])  # (the spawner class is set by `configure`)
    default = data["resources"]["default"]
    # The defaults also as plain SwarmSpawner settings (what an admin reading the config sees).
    c.SwarmSpawner.mem_limit = default["limits"].get("memory")
    c.SwarmSpawner.cpu_limit = default["limits"].get("cpus")
    c.SwarmSpawner.mem_guarantee = default["reservations"].get("memory")
    c.SwarmSpawner.cpu_guarantee = default["reservations"].get("cpus")

"""Servers started at the session's start, in the background, for the checks that need one.

A cold spawn is most of a server check's time, and the culler check mostly waits out the
cull timeout: started together at the beginning (the `early` fixture, conftest.py), these
waits overlap the other checks instead of adding up. Each check then claims its server and
still checks everything it did (where the server runs, what it mounts, what the hub says);
a start that failed fails the check that claims it, with the start's own error. A check that only
looks inside a server (the isolation checks: docker exec, the home's files) borrows one before
its claimer (`borrow`), and neither stops nor restarts it.

Until a check claims it, a server is kept active (a request through the proxy every 30 s:
the idle culler would stop it) — except the culler check's idle server, which nobody touches,
and the busy one, whose kernel works.

A role may have a follow-up, run in the starting thread once the server is ready: the culler's
watch, the busy kernel, the memory check's kernel that grows past its limit. Its outcome waits in
`Started.info` for the check that claims the server; a borrower waits until it has ended.

Where both the memory check and the culler check run, erin's one server serves both (a spawn
less, ~55 s of this machine's CPU under emulation): her kernel grows past its limit, then a busy
kernel starts there and nothing else keeps her server active; the culler check (which claims it
first) finds it alive after the cull timeout, and the memory check stops it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional

from cablab_cluster.spec import Cluster

KEEPALIVE_EVERY = 30.0  # s, well inside any cull timeout a check waits out (>= 60 s)
FOLLOW_UP_TIMEOUT = 3600.0  # s: the culler's watch waits out a cull timeout of up to 900 s, and more
WAIT_SLICE = 2.0  # s: a wait that does something meanwhile (HubRestart) looks at its event this often
HUB_RESTART_TIMEOUT = 900.0  # s: a hub restarting under emulation, its database restored (HubRestart)


class Role(Enum):
    DAY_ONE = "the scientist's day, first node"  # test_notebook.py
    IDLE = "the culler's idle server"  # test_operations.py
    BUSY = "the culler's busy server"
    MEMORY = "the memory limit's server"
    MEMORY_THEN_BUSY = "the memory limit's server, then the culler's busy one"


CULLER_CHECK = "test_the_culler_stops_an_idle_server_and_keeps_a_busy_one"
MEMORY_CHECK = "test_a_kernel_past_its_memory_limit_dies_alone"
# Which checks claim which role (the test functions' names): a role is started only if all are selected.
CLAIMED_BY = {
    Role.DAY_ONE: ("test_a_scientists_day",),
    Role.IDLE: (CULLER_CHECK,),
    Role.BUSY: (CULLER_CHECK,),
    Role.MEMORY: (MEMORY_CHECK,),
    Role.MEMORY_THEN_BUSY: (MEMORY_CHECK, CULLER_CHECK),
}
BUSY_ROLES = (Role.BUSY, Role.MEMORY_THEN_BUSY)


@dataclass(frozen=True)
class Planned:
    user: str
    node: str
    role: Role


def early_plan(cluster: Cluster, userlist: set[str], default_user: str, selected: set[str]) -> list[Planned]:
    """What to start at the session's start: a server per role whose check is selected and whose
    user is in the userlist (lab clusters: the checks' own users), spread over the notebook nodes."""
    if not cluster.hub.auth.lab_password:
        return []
    hosts = [h.name for h in cluster.notebook_hosts]
    cull = cluster.hub.users.cull
    wanted = [(default_user, hosts[0], Role.DAY_ONE), ("erin", hosts[1 % len(hosts)], Role.MEMORY)]
    if cull.enabled and cull.timeout <= 900:  # else the culler check skips
        wanted += [("carol", hosts[0], Role.IDLE), ("dave", hosts[1 % len(hosts)], Role.BUSY)]
    if cluster.hub.users.resources("erin").limits.memory is None:
        wanted = [w for w in wanted if w[2] is not Role.MEMORY]
    plan = [Planned(u, n, r) for u, n, r in wanted if u in userlist and set(CLAIMED_BY[r]) <= selected]
    memory = next((p for p in plan if p.role is Role.MEMORY), None)
    busy = next((p for p in plan if p.role is Role.BUSY), None)
    if memory is not None and busy is not None and memory.node == busy.node:  # one server for both
        both = Planned(memory.user, memory.node, Role.MEMORY_THEN_BUSY)
        plan = [both if p == memory else p for p in plan if p != busy]
    return plan


@dataclass
class Started:
    """A server started early: what was planned (user, node, role), its UserServer (the starting
    thread's own session), the spawn's seconds (REST start → ready, alongside the other early
    spawns), when it was ready (time.monotonic()), and what the role's follow-up recorded."""

    planned: Optional[Planned] = None
    server: Any = None
    seconds: Optional[float] = None
    ready_at: Optional[float] = None
    info: dict[str, Any] = field(default_factory=dict)
    error: Optional[BaseException] = None
    thread: Optional[threading.Thread] = None
    claimed: threading.Event = field(default_factory=threading.Event)
    followed: threading.Event = field(default_factory=threading.Event)  # the follow-up (if any) has ended


class EarlyStarts:
    """start(planned, ...) in a thread each; claim(user) waits for that start and returns it."""

    def __init__(self, start_timeout: float):
        self.start_timeout = start_timeout
        self.started: dict[str, Started] = {}
        self.hub_restart = HubRestart()  # the backup lane's window beside the scientist's day (conftest.py)

    def start(self, planned: Planned, make_server: Callable[[str], Any],
              keepalive: Optional[Callable[[Any], None]], then: Optional[Callable[[Started], None]] = None) -> None:
        """Start `planned.user`'s server on `planned.node` in the background: make_server(user) -> a
        UserServer (logged in), its start, then `then(started)`; while unclaimed, `keepalive(server)`."""
        entry = Started(planned=planned)

        def run() -> None:
            try:
                entry.server = server = make_server(planned.user)
                server.stop()  # left running by an earlier run
                t0 = time.monotonic()
                server.start(planned.node)
                entry.ready_at = time.monotonic()
                entry.seconds = round(entry.ready_at - t0, 1)
                if then is not None:
                    then(entry)
                entry.followed.set()
                while keepalive is not None and not entry.claimed.wait(KEEPALIVE_EVERY):
                    keepalive(server)
            except BaseException as exc:  # noqa: BLE001  # handed to the check that claims it
                entry.error = exc
            finally:
                entry.followed.set()

        entry.thread = threading.Thread(target=run, name=f"early-{planned.user}", daemon=True)
        self.started[planned.user] = entry
        entry.thread.start()

    def _ready(self, user: str, entry: Started) -> None:
        deadline = time.monotonic() + self.start_timeout + 120
        while entry.error is None and entry.ready_at is None and entry.thread.is_alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"{user}'s early start did not end in {self.start_timeout:.0f} s")
            time.sleep(1)

    def _followed(self, user: str, entry: Started) -> None:
        if not entry.followed.wait(FOLLOW_UP_TIMEOUT):
            raise AssertionError(f"the follow-up of {user}'s early start did not end in {FOLLOW_UP_TIMEOUT:.0f} s")

    @staticmethod
    def _raise_if_failed(user: str, entry: Started) -> None:
        """The start's (or its follow-up's) own error, for the check that borrows or claims it."""
        if entry.error is not None:
            raise AssertionError(f"{user}'s server, started at the session's start: {entry.error}") from entry.error

    def settled(self) -> None:
        """Return once every early start is ready or has failed (for a lane that should not compete
        with them for the hub's start slots); a failure is left for the check that claims it."""
        for user, entry in self.started.items():
            try:
                self._ready(user, entry)
            except AssertionError:
                pass

    def quiet(self) -> None:
        """Return once every early start is ready or has failed and every follow-up has ended: none
        of them asks the hub anything any more (the culler's watch does, until its server is culled).
        Servers kept active go on being kept (a request through the proxy, best effort)."""
        self.settled()
        for user, entry in self.started.items():
            if entry.thread is not None and entry.thread.is_alive():
                self._followed(user, entry)

    def borrowable(self, node: str) -> list[str]:
        """The users whose early server is planned on `node` and may be lent: not the culler's alone
        (the idle one must see no use at all, the busy one's kernel is the check); erin's, which is
        both the memory check's and the busy one, is (a docker exec is no activity the hub sees)."""
        return [user for user, entry in self.started.items()
                if entry.planned.node == node and entry.planned.role not in (Role.IDLE, Role.BUSY)]

    def busy_user(self) -> Optional[str]:
        """The user whose server is the culler check's busy one (dave's, or erin's where it serves both)."""
        return next((user for user, entry in self.started.items() if entry.planned.role in BUSY_ROLES), None)

    def borrow(self, user: str) -> Optional[Started]:
        """The user's early start once its server is ready and its follow-up has ended (the memory
        check's kernel: no docker exec beside it in the container's cgroup), for a check that only
        looks inside it (docker exec, the files of its home) and neither stops nor restarts it: it
        stays kept active for the check that claims it. None: not started early; a failed start raises."""
        entry = self.started.get(user)
        if entry is None:
            return None
        self._ready(user, entry)
        self._followed(user, entry)
        self._raise_if_failed(user, entry)
        return entry

    def claim(self, user: str, wait_for_follow_up: bool = False) -> Optional[Started]:
        """The user's early start once its server is ready (None: not started early). With
        `wait_for_follow_up`, also once its follow-up has ended (the culler's watch, the memory
        check's kernel)."""
        entry = self.started.get(user)
        if entry is None:
            return None
        self._ready(user, entry)
        if wait_for_follow_up:
            self._followed(user, entry)
        entry.claimed.set()
        self._raise_if_failed(user, entry)
        return entry

    def close(self) -> None:
        """Stop what no check stopped (a check that failed early)."""
        for entry in self.started.values():
            entry.claimed.set()
        for entry in self.started.values():
            if entry.thread is not None:
                entry.thread.join(timeout=60)
            if entry.server is not None:
                try:
                    entry.server.stop()
                except Exception:  # noqa: BLE001  # best effort at the end of the session
                    pass


class HubRestart:
    """A window in which the hub may restart beside a check, instead of after every check.

    The backup check restarts the hub (it restores its database): nothing may ask the hub anything
    then. The scientist's day has a stretch that asks it nothing: its sample notebooks, run in a
    kernel whose websocket is already open, through the proxy (which keeps running) to a server the
    hub already knows. So the day `open()`s the window there; the backup lane (`ready_to_restart()`
    returns) backs up and restores, marks `restored()` once the restore has put the database and the
    homes back (the hub is then starting), and `done()` once the hub answers again (or it failed).
    The day writes nothing into the home until `wait_restored()` (a restore puts the homes back as
    they were at the backup), and asks the hub nothing until `wait_done()`.

    Not `expected` (no backup lane: its check or the day is not selected): every wait returns at
    once. A day that never opened it (it failed or was skipped before) leaves the lane waiting until
    the backup check, the last of all, calls `never()`: the lane then runs there, as it did when it
    was not a lane. `cancel()`, at the session's end, lets a lane still waiting give up."""

    def __init__(self, expected: bool = False):
        self.expected = expected
        self._open = threading.Event()
        self._restored = threading.Event()
        self._done = threading.Event()
        self.opened_by_day = False  # whether the restart ran beside the day (for the lane's timings)
        self.cancelled = False

    def open(self) -> None:
        self.opened_by_day = True
        self._open.set()

    def never(self) -> None:
        self._open.set()

    def cancel(self) -> None:
        """The session ends: a lane still waiting gives up without restarting anything."""
        self.cancelled = True
        self._open.set()

    def ready_to_restart(self, timeout: float) -> bool:
        """The lane: wait until the window is open (or will never be); False if it did not in `timeout`
        s or the session was cancelled."""
        return self._open.wait(timeout) and not self.cancelled

    def restored(self) -> None:
        self._restored.set()

    def done(self) -> None:
        self._restored.set()
        self._done.set()

    def _wait(self, event: threading.Event, what: str, timeout: float,
              meanwhile: Optional[Callable[[float], None]] = None) -> None:
        if not (self.expected and self._open.is_set()):
            return
        deadline = time.monotonic() + timeout
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the backup check's hub restart, beside this check, did not {what} "
                                     f"in {timeout:.0f} s")
            if meanwhile is None:
                event.wait(left)
            else:
                meanwhile(min(left, WAIT_SLICE))

    def wait_restored(self, timeout: float, meanwhile: Optional[Callable[[float], None]] = None) -> None:
        """The opener: return once the restore has put the database and homes back (or nothing waits).
        `meanwhile(seconds)`, if given, is called in slices while it waits (the day keeps its kernel's
        websocket read: jupyter-server closes one whose pings go unanswered for 90 s, and the lane may
        wait minutes for the other checks to leave the hub alone before it backs up)."""
        self._wait(self._restored, "put the database and the homes back", timeout, meanwhile)

    def wait_done(self, timeout: float) -> None:
        """The opener: return once the hub answers again after the restart (or nothing waits)."""
        self._wait(self._done, "end", timeout)


class Lane:
    """A check's whole visit run in a thread from the session's start, beside the other checks (the
    browser's: its spawn, JupyterLab's load and the notebook's kernel wait on one VM while the other
    checks use the rest). The check claims the outcome where it stands in the order: the visit's own
    failure, raised again, or what it returned."""

    def __init__(self, name: str, visit: Callable[[], Any]):
        self.name = name
        self.result: Any = None
        self.error: Optional[BaseException] = None

        def run() -> None:
            try:
                self.result = visit()
            except BaseException as exc:  # noqa: BLE001  # handed to the claiming check
                self.error = exc

        self.thread = threading.Thread(target=run, name=f"lane-{name}", daemon=True)
        self.thread.start()

    def claim(self, timeout: float = 3600) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the {self.name} lane did not end in {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        return self.result

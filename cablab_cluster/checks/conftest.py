"""Fixtures of the cluster checks, and host parameters filled from the spec.

Tests use these fixtures, never module globals: `spec`, `cluster`, `secrets`,
`nodes` (testinfra hosts: `nodes[host]`), `wait_until`, `hub_client` (a new
HTTPS session with the hub), `early` (servers started at the session's start:
early.py). A test that takes `swarm_host`, `any_host`,
`nfs_client`, `notebook_host`, `share`, `read_only_share` or `squashed_share`
(writable, root_squash) runs once for each.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import pytest

from cablab_cluster.layout import LAB_PASSWORD
from cablab_cluster.secretstore import read_lab_password
from cablab_cluster.secretstore import secrets_dir as default_secrets_dir
from cablab_cluster.spec import Cluster, LoadedSpec

from .plugin import SPEC_KEY

T = TypeVar("T")


def _host_params(c: Cluster) -> dict[str, tuple[tuple[Any, ...], list[str]]]:
    server = c.nfs_server
    hosts = {
        "any_host": c.hosts,
        "swarm_host": c.swarm_hosts,
        "nfs_client": tuple(h for h in c.swarm_hosts if h != server),
        "notebook_host": c.notebook_hosts,
    }
    out = {k: (v, [h.name for h in v]) for k, v in hosts.items()}
    shares = {
        "share": c.shares,
        "read_only_share": tuple(s for s in c.shares if s.read_only),
        "squashed_share": tuple(s for s in c.shares if s.root_squash and not s.read_only),
    }
    out |= {k: (v, [s.name for s in v]) for k, v in shares.items()}
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    loaded = metafunc.config.stash.get(SPEC_KEY, None)
    if loaded is None:
        return  # skipped at collection (no --spec): nothing to fill in
    for name, (values, ids) in _host_params(loaded.cluster).items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, ids=ids)


def wait_until(check: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 5.0) -> T:
    """Call `check` until it returns something truthy and return that; fail after `timeout` s.

    `check` may raise to give up at once (e.g. a server that failed to start).
    """
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@pytest.fixture(scope="session")
def spec(pytestconfig: pytest.Config) -> LoadedSpec:
    return pytestconfig.stash[SPEC_KEY]


@pytest.fixture(scope="session")
def cluster(spec: LoadedSpec) -> Cluster:
    return spec.cluster


@pytest.fixture(scope="session")
def secrets(pytestconfig: pytest.Config, spec: LoadedSpec) -> Path:
    given = pytestconfig.getoption("secrets", None)
    return Path(given) if given else default_secrets_dir(spec)


@pytest.fixture(scope="session")
def nodes(pytestconfig: pytest.Config, cluster: Cluster) -> Iterator[Any]:
    from .hosts import Nodes, missing_from_ssh_config

    ssh_config = pytestconfig.getoption("ssh_config")
    missing = missing_from_ssh_config(Path(ssh_config).read_text(encoding="utf-8", errors="replace"),
                                      [h.name for h in cluster.hosts])
    if missing:
        pytest.fail(f"{ssh_config} has no `Host` entry for {', '.join(missing)}: every host of the spec is "
                    f"reached as `ssh <name>` through it (e.g. `vagrant ssh-config > {ssh_config}`)", pytrace=False)
    # Short: a socket path has about 100 bytes (a long $TMPDIR would overflow it).
    control_dir = Path(tempfile.mkdtemp(prefix="cablab-ssh-", dir="/tmp" if Path("/tmp").is_dir() else None))
    hosts = Nodes(ssh_config, control_dir)
    yield hosts
    hosts.close()
    shutil.rmtree(control_dir, ignore_errors=True)


@pytest.fixture(name="wait_until", scope="session")
def _wait_until() -> Callable[..., Any]:
    return wait_until


@pytest.fixture(scope="session")
def hub_client(cluster: Cluster, secrets: Path) -> Iterator[Callable[[], Any]]:
    """hub_client() -> a new HubSession (its own cookies) with the cluster's hub; all closed at the end."""
    from .hub import HubSession

    sessions: list[HubSession] = []

    def new() -> HubSession:
        sessions.append(HubSession.for_cluster(cluster, secrets))
        return sessions[-1]

    yield new
    for session in sessions:
        session.close()
# A lab user (lab clusters: `hub.auth.lab_password`)


@pytest.fixture(scope="session")
def username(spec) -> str:
    if not spec.cluster.hub.auth.lab_password:
        pytest.skip("hub.auth.lab_password is off: this cluster logs in through GitHub only, "
                    "which the checks cannot drive")
    return spec.userlist.first_user


@pytest.fixture(scope="session")
def password(secrets, username) -> str:
    path = secrets / LAB_PASSWORD
    assert path.is_file(), f"{path} is missing: `cablab-cluster render` makes it for a lab_password spec"
    return read_lab_password(secrets)


@pytest.fixture(scope="session")
def session(hub_client, username, password):
    """The user's logged-in browser session."""
    return hub_client().logged_in(username, password)


@pytest.fixture(scope="session")
def timings():
    """Durations a check measured (name -> seconds): printed at the end, and written to
    $CABLAB_REPORT_DIR/verify-timings.json when that is set (the lab keeps them in its report)."""
    measured: dict[str, float] = {}
    yield measured
    if measured:
        print("\n" + "\n".join(f"timing: {k}: {v} s" for k, v in measured.items()))
        out = os.environ.get("CABLAB_REPORT_DIR")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "verify-timings.json").write_text(json.dumps(measured, indent=2) + "\n")


# The order (each group keeps its checks' own order). First the checks that need no user's server,
# while the early starts spawn; then those that claim or borrow an early server (by then it is
# ready, instead of their waiting for it with nothing else to do). At the end, first the checks
# that claim a lane (`lanes`: their visit ran beside everything before them), then those that roll
# the proxy (test_letsencrypt.py's renewal: no lane's page load may span it), last those that
# restart the hub (test_backup.py restores its database; servers started early must not span that).
SERVERS = ("test_isolation.py", "test_notebook.py", "test_operations.py")
LATE = ("test_browser.py", "test_letsencrypt.py", "test_backup.py")


def order(name: str) -> int:
    """Where a check file's checks go: 0 first, 1 the early servers' users, 2.. the LATE ones."""
    if name in LATE:
        return 2 + LATE.index(name)
    return 1 if name in SERVERS else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: order(item.path.name))


def selected_checks(request: pytest.FixtureRequest) -> set[str]:
    """The names of the check functions this session runs (parametrized ones once)."""
    return {getattr(item, "originalname", item.name) for item in request.session.items}


@pytest.fixture(scope="session", autouse=True)
def early(request, spec, cluster, hub_client, secrets, wait_until):
    """Servers started at the session's start for the checks that need one (early.py): their cold
    spawns and the culler's timeout overlap the other checks. Checks claim them: `early.claim(user)`."""
    from .early import EarlyStarts, Role, early_plan
    from .test_notebook import keep_active, user_token
    from .test_operations import cull_wait, grow_past_limit, start_busy_kernel
    from .test_user import START_TIMEOUT, UserServer

    users = spec.userlist.users
    default_user = spec.userlist.first_user
    selected = selected_checks(request)
    plan = early_plan(cluster, {u.name for u in users}, default_user, selected)
    starts = EarlyStarts(START_TIMEOUT)
    if plan:
        password = read_lab_password(secrets)

        def make_server(name: str) -> UserServer:
            return UserServer(hub_client().logged_in(name, password), name, wait_until)

        tokens: dict[str, str] = {}

        def keepalive(server: UserServer) -> None:
            try:
                if server.name not in tokens:
                    tokens[server.name] = user_token(server.session, server.name)
                keep_active(server.session, server.name, tokens[server.name])
            except Exception:  # noqa: BLE001  # best effort: the claiming check finds a culled server
                pass

        def busy(entry) -> None:  # a kernel that works for the whole session, its websocket closed
            start_busy_kernel(entry.server.session, entry.server.name, seconds=3600)

        def watch(entry) -> None:  # only the hub's API is asked about the idle server, never the server
            limit = cull_wait(cluster.hub.users.cull)
            entry.info["waited"] = limit
            while entry.server.model() is not None:
                if time.monotonic() - entry.ready_at > limit:
                    return
                time.sleep(10)
            entry.info["culled_after"] = round(time.monotonic() - entry.ready_at, 1)

        def past_limit(entry) -> None:  # the memory check's kernel, killed by the cgroup's limit
            user, session = entry.planned.user, entry.server.session
            limit = cluster.hub.users.resources(user).limits.memory
            entry.info["outcome"] = grow_past_limit(session, user, limit, user_token(session, user))

        def past_limit_then_busy(entry) -> None:  # one server for both: only the busy kernel keeps it active
            past_limit(entry)
            busy(entry)
            entry.info["busy_since"] = time.monotonic()

        follow_up = {Role.IDLE: (None, watch), Role.BUSY: (None, busy), Role.MEMORY: (keepalive, past_limit),
                     Role.MEMORY_THEN_BUSY: (None, past_limit_then_busy)}
        for p in plan:
            alive, then = follow_up.get(p.role, (keepalive, None))
            starts.start(p, make_server, alive, then)
    yield starts
    starts.close()


@pytest.fixture(scope="session", autouse=True)
def lanes(request, spec, cluster, hub_client, secrets, nodes, early, wait_until) -> Iterator[dict[str, Any]]:
    """Visits run from the session's start, each in a thread (early.Lane), for the selected checks
    that claim them (`lanes[name].claim()`), on a lab cluster whose userlist has the check's user:
    the browser's; frank's refused start, once the early starts have their servers (it would hold
    one of the hub's start slots for its grace); the backup check's, which restarts the hub while the
    scientist's sample notebooks run (early.HubRestart), once no other lane or early start asks the
    hub anything. A check without its lane runs the visit itself."""
    from .early import FOLLOW_UP_TIMEOUT, Lane
    from .test_backup import BACKUP_LANE, backup_and_restore
    from .test_browser import BROWSER_LANE, BROWSER_USER, screenshots_dir, visit
    from .test_operations import REFUSAL_LANE, REFUSAL_USER, ask_the_impossible, refusal_applies

    selected = selected_checks(request)
    users = {u.name for u in spec.userlist.users}
    wanted = {
        BROWSER_LANE: "test_a_person_signs_in_and_runs_a_sample_notebook" in selected and BROWSER_USER in users,
        REFUSAL_LANE: ("test_a_server_no_node_can_reserve_for_fails_fast" in selected and REFUSAL_USER in users
                       and refusal_applies(cluster)),
        BACKUP_LANE: ("test_backup_then_restore_brings_back_the_database_and_a_home_file" in selected
                      and "test_a_scientists_day" in selected),
    }
    started: dict[str, Any] = {}
    if cluster.hub.auth.lab_password and any(wanted.values()):
        password = read_lab_password(secrets)
        username = spec.userlist.first_user
        window = early.hub_restart
        window.expected = wanted[BACKUP_LANE]

        def refuse() -> dict[str, object]:
            early.settled()
            return ask_the_impossible(hub_client().logged_in(REFUSAL_USER, password), wait_until)

        def back_up_and_restore() -> dict[str, float]:
            try:
                session = hub_client().logged_in(username, password)  # while the hub surely answers
                if not window.ready_to_restart(FOLLOW_UP_TIMEOUT):
                    raise AssertionError("the session ended, or the scientist's day did not let the hub restart in "
                                         f"{FOLLOW_UP_TIMEOUT:.0f} s: no backup was made")
                early.quiet()  # the early starts and their follow-ups ask the hub no more
                for name, lane in started.items():
                    if name != BACKUP_LANE:
                        lane.thread.join(FOLLOW_UP_TIMEOUT)  # the browser's pages, frank's start
                return backup_and_restore(session, username, cluster, nodes, hub_client, wait_until, window)
            finally:
                window.done()

        visits = {BROWSER_LANE: lambda: visit(cluster, hub_client, BROWSER_USER, password, screenshots_dir()),
                  REFUSAL_LANE: refuse, BACKUP_LANE: back_up_and_restore}
        for name, want in wanted.items():  # `started` is filled before the backup lane reads it (once the day opens)
            if want:
                started[name] = Lane(name, visits[name])
    yield started
    early.hub_restart.cancel()  # a session that ended before its backup check: the lane restarts nothing
    for lane in started.values():
        lane.thread.join(timeout=60)

"""The hub's own module (cablab_cluster/bundle/cablab_hub.py), as the hub runs it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from jinja2 import Template
from oauthenticator.github import GitHubOAuthenticator
from traitlets.config import Config

from cablab_cluster.bundle import cablab_hub

SPAWNER = {
    "image": "cablab/singleuser:lab",
    "network": "swarmnet",
    "home_root": "/srv/cablab/homes",
    "home_target": "/home/jovyan",
    "uids": {"alice": 20000, "bob": 20001},
    "org_uids": {"first": 120000, "count": 100000, "file": "/nonexistent/org-uids.json"},
    "gid": 100,
    "default_url": "/lab",
    "read_only_volumes": {"/srv/cablab/cube": "/mnt/cablab/cube", "/srv/cablab/notebooks": "/mnt/cablab/samples",
                          "/srv/cablab/elsewhere": "/data/elsewhere"},
    "home_links": {"cube": "/mnt/cablab/cube", "samples": "/mnt/cablab/samples"},
    "notebook_nodes": ["node2", "node3"],
    "placement": ["engine.labels.cablab.notebooks == true"],
    "node_label": "cablab.node",
}


def data(lab: bool, orgs: list[str] | None = None) -> dict:
    return {
        "cluster": "t", "public_url": "https://hub.example/", "proxy_api_url": "http://proxy-api:8001",
        "hub_connect_ip": "cablab_hub", "db_url": "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite",
        "allowed_users": ["alice", "bob"], "admin_users": ["alice"],
        "github": {"client_id": "cid", "callback_url": "https://hub.example/hub/oauth_callback",
                   "allowed_organizations": orgs or []},
        "lab_password": lab, "spawner": SPAWNER,
        "cull": {"enabled": True, "timeout": 3600, "every": 300, "max_age": 0},
        "resources": {"default": {"limits": {"memory": None, "cpus": None},
                                  "reservations": {"memory": None, "cpus": None}}, "users": {}},
    }


@pytest.fixture
def secrets(tmp_path, monkeypatch):
    d = tmp_path / "secrets"
    d.mkdir()
    for name, value in {"cookie_secret": "ab" * 32, "github_client_secret": "gh", "proxy_token": "pt",
                        "metrics_token": "mt" * 16, "lab_password": "lab-password-123"}.items():
        (d / name).write_text(value + "\n")
    monkeypatch.setenv("CABLAB_SECRETS_DIR", str(d))
    return d


def configured(lab: bool, orgs: list[str] | None = None) -> Config:
    c = Config()
    cablab_hub.configure(c, data(lab, orgs))
    return c


def test_a_real_cluster_logs_in_with_github_only(secrets):
    c = configured(lab=False)
    assert c.JupyterHub.authenticator_class == "github"
    auth = GitHubOAuthenticator(config=c)
    assert auth.get_custom_html("/hub/") == ""  # JupyterHub's page: the GitHub button, no form
    assert "scope" not in c.GitHubOAuthenticator  # no organisations: no extra scope
    assert c.Authenticator.allow_existing_users is False


def test_organisations_need_read_org(secrets):
    c = configured(lab=False, orgs=["esdl"])
    assert c.GitHubOAuthenticator.allowed_organizations == {"esdl"}
    assert c.GitHubOAuthenticator.scope == ["read:org"]


def test_the_lab_login_page_has_a_form_beside_the_github_button(secrets):
    c = configured(lab=True)
    cls = c.JupyterHub.authenticator_class
    auth = cls(config=c)
    # rendered as JupyterHub's LoginHandler renders custom_html
    html = Template(auth.get_custom_html("/hub/")).render(
        login_url="/hub/login", authenticator_login_url="/hub/oauth_login?next=", next="%2Fhub%2F",
        xsrf="XSRF-TOKEN", login_error=None, username=None)
    assert 'href="/hub/oauth_login?next="' in html and "Sign in with GitHub" in html
    assert '<form action="/hub/login?next=%2Fhub%2F" method="post"' in html
    assert 'name="_xsrf" value="XSRF-TOKEN"' in html
    assert 'name="username"' in html and 'type="password"' in html and 'name="password"' in html

    def login(name, password):
        return asyncio.run(auth.get_authenticated_user(None, {"username": name, "password": password}))

    assert login("alice", "lab-password-123")["name"] == "alice"
    assert login("bob", "wrong") is None
    assert login("mallory", "lab-password-123") is None  # not in the userlist


def test_spawner_settings(secrets):
    c = configured(lab=False)
    assert c.SwarmSpawner.volumes == {"/srv/cablab/homes/{raw_username}": "/home/jovyan"}
    assert c.SwarmSpawner.notebook_dir == "/home/jovyan"
    assert c.Spawner.default_url == "/lab"
    assert c.SwarmSpawner.read_only_volumes["/srv/cablab/cube"] == "/mnt/cablab/cube"


@pytest.fixture
def homes(request):
    if os.geteuid() != 0:
        pytest.skip("creates homes as the users' uids, needs root")
    base = Path(tempfile.mkdtemp(prefix="cablab-homes-"))  # traversable by the users' uids
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base))
    homes = base / "homes"
    homes.mkdir()
    homes.chmod(0o1733)  # as the NFS server's run makes it: anyone may create, nobody may list
    return homes


def spawner_data(homes: Path) -> dict:
    return {**SPAWNER, "home_root": str(homes),
            "org_uids": {**SPAWNER["org_uids"], "file": str(homes.parent / "hub-data" / "org-uids.json")}}


class FakeSpawner:
    def __init__(self, name: str, options: dict | None = None):
        self.user = type("User", (), {"name": name})()
        self.user_options = options or {}
        self.extra_placement_spec: dict = {}
        self.extra_container_spec: dict = {"labels": {"kept": "yes"}}
        self.environment: dict = {"JUPYTERHUB_ACTIVITY_INTERVAL": "900"}


def test_pre_spawn_hook_makes_the_home_and_links_as_the_user_and_pins(homes):
    hook = cablab_hub.make_pre_spawn_hook(spawner_data(homes))
    sp = FakeSpawner("alice", {"node": "node3"})
    hook(sp)
    home = homes / "alice"
    st = home.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (20000, 100, 0o700)
    # the server runs as alice's own uid, never the image's 1000
    assert sp.extra_container_spec == {"labels": {"kept": "yes"}, "user": "20000:100"}
    assert sp.environment == {"JUPYTERHUB_ACTIVITY_INTERVAL": "900", "USER": "alice"}
    # the read-only shares below the home are links to where the container mounts them
    # (runc cannot look into a 0700 root-squashed home as root); made as the user
    assert {p.name: os.readlink(p) for p in home.iterdir()} == {"cube": "/mnt/cablab/cube",
                                                                 "samples": "/mnt/cablab/samples"}
    assert all(p.lstat().st_uid == 20000 for p in home.iterdir())
    assert sp.extra_placement_spec == {"constraints": ["engine.labels.cablab.notebooks == true",
                                                       "engine.labels.cablab.node == node3"]}


def test_pre_spawn_hook_replaces_empty_mount_points_and_keeps_the_users_things(homes):
    hook = cablab_hub.make_pre_spawn_hook(spawner_data(homes))
    hook(FakeSpawner("bob"))
    home = homes / "bob"
    (home / "cube").unlink()
    (home / "cube").mkdir()  # an empty mount point of the earlier layout
    (home / "samples").unlink()
    (home / "samples").mkdir()
    (home / "samples" / "mine.ipynb").write_text("{}")  # the user's own: kept
    (home / "notes.txt").write_text("mine")
    sp = FakeSpawner("bob")
    hook(sp)
    assert os.readlink(home / "cube") == "/mnt/cablab/cube"
    assert (home / "samples").is_dir() and not (home / "samples").is_symlink()
    assert (home / "samples" / "mine.ipynb").read_text() == "{}" and (home / "notes.txt").read_text() == "mine"
    assert sp.extra_placement_spec == {"constraints": ["engine.labels.cablab.notebooks == true"]}


def test_homes_of_different_users_are_apart(homes):
    """bob's home is bob's uid's, 0700: alice's uid can neither list nor read it; nobody lists the homes."""
    hook = cablab_hub.make_pre_spawn_hook(spawner_data(homes))
    hook(FakeSpawner("alice"))
    hook(FakeSpawner("bob"))
    assert (homes / "bob").stat().st_uid == 20001
    subprocess.run(["sh", "-c", 'echo secret > "$1/notes.txt"', "sh", str(homes / "bob")], user=20001, group=100,
                   extra_groups=[], check=True)
    probe = 'for p; do ls "$p" >/dev/null 2>&1 && echo "listed $p"; cat "$p" 2>/dev/null; done; :'
    out = subprocess.run(["sh", "-c", probe, "sh", str(homes / "bob"), str(homes), str(homes / "bob" / "notes.txt")],
                         user=20000, group=100, extra_groups=[], capture_output=True, text=True, check=True).stdout
    assert out == ""


def test_organisation_members_get_stable_uids_from_the_hubs_range(tmp_path):
    """Not in the map: the next uid of the hub's range, recorded, the same after a restart; never a map uid."""
    data = {**SPAWNER, "org_uids": {"first": 120000, "count": 3, "file": str(tmp_path / "d" / "org-uids.json")},
            "uids": {"alice": 20000, "zed": 120001}}
    uid_of = cablab_hub.uid_resolver(data)
    assert uid_of("Alice") == 20000  # the map's, whatever the case
    assert uid_of("carol") == 120000
    assert uid_of("dave") == 120002  # 120001 is zed's (a map uid in the range: never given)
    assert uid_of("carol") == 120000
    assert cablab_hub.uid_resolver(data)("carol") == 120000  # a hub restart reads the record
    assert json.loads((tmp_path / "d" / "org-uids.json").read_text()) == {"carol": 120000, "dave": 120002}
    assert stat.S_IMODE((tmp_path / "d" / "org-uids.json").stat().st_mode) == 0o600
    with pytest.raises(web.HTTPError, match="no uid left"):
        uid_of("erin")


def test_organisation_uids_skip_nobody(tmp_path):
    hub_given = cablab_hub.OrgUids(tmp_path / "u.json", 65533, 10)
    assert [hub_given.uid_of(n) for n in ("a", "b")] == [65533, 65536]


def test_hub_pages_carry_hsts(secrets):
    c = configured(lab=False)
    assert c.JupyterHub.tornado_settings["headers"]["Strict-Transport-Security"] == "max-age=31536000"


# --- Faults: a server lost with its node, a start that cannot be placed ---------

from docker.errors import APIError  # noqa: E402
from dockerspawner import SwarmSpawner  # noqa: E402
from tornado import web  # noqa: E402
from sqlalchemy.orm import object_session  # noqa: E402


def node(name: str, state: str = "ready", availability: str = "active", node_id: str | None = None,
         hostname: str | None = None) -> dict:
    """A swarm node as the API lists it: named `name` by its engine label, its hostname another
    (cloud-init's) unless given."""
    return {"ID": node_id or f"id-{name}",
            "Description": {"Hostname": hostname or f"ip-10-0-0-{name[-1]}",
                            "Engine": {"Labels": {"cablab.node": name}}},
            "Status": {"State": state}, "Spec": {"Availability": availability}}


def task(state: str, node_id: str | None = "id-node3", err: str | None = None) -> dict:
    status: dict = {"State": state, "Message": state}
    if err:
        status["Err"] = err
    return {"ID": "t1", "NodeID": node_id, "Status": status}


NO_NODE = "no suitable node (scheduling constraints not satisfied on 3 nodes)"


class NotFound(APIError):
    def __init__(self) -> None:
        super().__init__("not found", response=type("Response", (), {"status_code": 404, "reason": "Not Found"})())


class FakeDocker:
    """The docker API calls the spawner makes (`await spawner.docker(method, ...)`), answered from data;
    `tasks` is a list of answers consumed one per call (the last one repeats)."""

    def __init__(self, tasks: list[list[dict]] | None = None, nodes: list[dict] | None = None,
                 service: bool = True):
        self.tasks = tasks or [[]]
        self.nodes = nodes or []
        self.service = service
        self.calls: list[str] = []

    async def __call__(self, method: str, *args, **kwargs):
        self.calls.append(method)
        if method == "inspect_service":
            if not self.service:
                raise NotFound()
            return {"ID": "service-id"}
        if method == "tasks":
            return self.tasks.pop(0) if len(self.tasks) > 1 else self.tasks[0]
        if method == "nodes":
            return self.nodes
        if method == "remove_service":
            return None
        if method == "create_service":
            self.created = kwargs
            return {"ID": "service-id"}
        if method == "inspect_node":
            found = [n for n in self.nodes if n["ID"] == args[0]]
            if not found:
                raise NotFound()
            return found[0]
        raise AssertionError(f"unexpected docker call {method}")


_SESSIONS: list = []  # the rows' sessions stay open for the test run


def orm_spawner(options: dict):
    """A real (not running) default-server row of JupyterHub's ORM, in a database of its own."""
    from jupyterhub import orm

    db = orm.new_session_factory("sqlite://")()
    _SESSIONS.append(db)
    user = orm.User(name="alice")
    db.add(user)
    row = orm.Spawner(name="", user=user)
    db.add(row)
    row.user_options = options
    db.commit()
    return row


def cablab_spawner(fake: FakeDocker, options: dict | None = None, **traits) -> cablab_hub.CablabSwarmSpawner:
    user = type("User", (), {"name": "alice", "escaped_name": "alice", "url": "/user/alice/"})()
    sp = cablab_hub.CablabSwarmSpawner(user=user, orm_spawner=orm_spawner({}),
                                       notebook_nodes=["node2", "node3"], node_label="cablab.node", **traits)
    # as JupyterHub's spawn does with a request's options: saved as the next start's, then handed over
    sp.orm_spawner.user_options = dict(options or {})
    object_session(sp.orm_spawner).commit()
    sp.user_options = dict(options or {})
    sp.docker = fake  # the spawner's docker client, faked
    return sp


def test_user_options_are_applied_by_the_hubs_hook_node_checked_before_anything_starts(secrets):
    """JupyterHub's own path (Spawner._run_apply_user_options) with the configured hook: a pinned start
    logs nothing (JupyterHub's "unhandled user_options" warning is gone), a bad node or an image is a
    400 before anything is made, any other key is ignored and named in the log, and none of a start's
    options is kept for the next start (one that JupyterHub saved before the hook ran included)."""
    import logging

    c = configured(lab=True)
    hook = c.Spawner.apply_user_options
    assert callable(hook) and cablab_hub.USER_OPTIONS == ("node",)

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warned.append(record.getMessage())

    log = logging.getLogger("cablab.test.user_options")
    recorder = Recorder()
    log.addHandler(recorder)
    warned: list[str] = []

    def apply(options):
        # as JupyterHub's spawn does: the request's options saved as the next start's, then the hook
        sp = cablab_spawner(FakeDocker(), options, apply_user_options=hook)
        sp.log = log
        warned.clear()
        try:
            asyncio.run(sp._run_apply_user_options(sp.user_options))
        finally:
            assert sp.orm_spawner.user_options == {}, "a start's options were kept for the next start"
        assert sp.user_options == options  # this start still sees them
        return list(warned)

    try:
        assert apply({"node": "node3"}) == []
        assert apply({}) == []
        assert apply({"node": ""}) == []  # no pin, as the pre-spawn hook and start() read it
        assert apply({"image": ""}) == []  # nothing asked, as dockerspawner reads it
        for bad in ("node1", "node9", ["node2"], {"node2": 1}, 2):
            with pytest.raises(web.HTTPError) as e:
                apply({"node": bad})
            assert e.value.status_code == 400
            assert "does not run notebooks; use one of node2, node3" in e.value.log_message
        with pytest.raises(web.HTTPError) as e:
            apply({"node": "n" * 10_000})
        assert len(e.value.log_message) < 200  # the caller's value, shortened
        with pytest.raises(web.HTTPError) as e:
            apply({"node": "node2", "image": "evil/image"})
        assert e.value.status_code == 400 and "`image` is not taken" in e.value.log_message
        assert apply({"node": "node2", "colour": "blue", "cpu_limit": 64}) == [
            "alice's start: ignoring user option(s) 'colour', 'cpu_limit' (this hub reads: node)"]
        many = apply({f"k{i:02d}": i for i in range(40)})
        assert many == ["alice's start: ignoring user option(s) 'k00', 'k01', 'k02', 'k03', 'k04' and 35 more "
                        "(this hub reads: node)"]
    finally:
        log.removeHandler(recorder)


def test_configure_uses_the_node_aware_spawner_and_polls_often(secrets):
    c = configured(lab=True)
    assert c.JupyterHub.spawner_class is cablab_hub.CablabSwarmSpawner
    assert issubclass(cablab_hub.CablabSwarmSpawner, SwarmSpawner)
    assert c.Spawner.poll_interval == 15  # swarm marks a node down in ~15 s: noticed well within 60 s
    assert c.CablabSwarmSpawner.notebook_nodes == ["node2", "node3"]
    assert c.CablabSwarmSpawner.node_label == "cablab.node"


def test_a_servers_service_has_no_virtual_ip(secrets):
    """dnsrr: the service's name resolves to its task; no node programs a load balancer for it."""
    import asyncio

    c = configured(lab=True)
    fake = FakeDocker(tasks=[[task("pending")]])
    sp = cablab_spawner(fake, config=c)
    sp.api_token, sp.get_env = "t0ken", dict
    asyncio.run(sp.create_object())
    assert fake.created["endpoint_spec"] == {"Mode": "dnsrr"}
    assert fake.created["endpoint_spec"].get("Ports") is None  # nothing published (use_internal_ip)
    assert fake.created["task_template"]["Networks"] == [{"Target": "swarmnet"}]


@pytest.mark.parametrize(("tasks", "nodes", "dead"), [
    ([task("running")], [node("node3")], None),
    ([task("running")], [node("node3", availability="pause")], None),  # pause keeps running tasks
    ([task("running")], [node("node3", state="down")], "its node node3 is down"),
    # a manager that has just started has not heard from its nodes yet: not a loss (yet)
    ([task("running")], [node("node3", state="unknown")], None),
    ([task("running")], [node("node3", state="disconnected")], "its node node3 is disconnected"),
    ([task("running")], [], "its node id-node3 is not in the swarm"),
    # restarted by swarm after the node died, pinned there: not serving
    ([task("pending", None, NO_NODE)], [node("node3", state="down")], "its swarm task is pending: no suitable node"),
    ([task("failed", err="task: non-zero exit (137)")], [node("node3")], "its swarm task is failed"),
])
def test_poll_reports_a_server_whose_task_or_node_is_gone(tasks, nodes, dead):
    fake = FakeDocker([tasks], nodes)
    status = asyncio.run(cablab_spawner(fake).poll())
    if dead is None:
        assert status is None
        assert "remove_service" not in fake.calls
    else:
        assert status and dead in status
        # removed at once: JupyterHub does not stop a dead server, and swarm would restart it elsewhere
        assert "remove_service" in fake.calls


def test_poll_of_a_removed_service_is_a_stopped_server():
    assert asyncio.run(cablab_spawner(FakeDocker(service=False)).poll()) == 0


def test_a_start_pinned_to_a_down_node_is_refused_at_once(monkeypatch):
    async def never(self):
        raise AssertionError("started although its node is down")

    monkeypatch.setattr(SwarmSpawner, "start", never)
    fake = FakeDocker(nodes=[node("node1", availability="drain"), node("node2"), node("node3", state="down")])
    sp = cablab_spawner(fake, {"node": "node3", "profile": "small"})
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(sp.start())
    assert refused.value.status_code == 400
    message = refused.value.log_message
    assert "node node3" in message and "down" in message and "one of node2" in message, message


@pytest.mark.parametrize("nodes", [
    [node("node2"), node("node3")],
    # node3 left and joined again: its old entry stays down beside the new one
    [node("node2"), node("node3", state="down", node_id="old"), node("node3")],
])
def test_a_start_pinned_to_a_ready_node_goes_ahead_once(monkeypatch, nodes):
    async def started(self):
        return ("jupyter-alice", 8888)

    async def answering(url):
        return True

    monkeypatch.setattr(SwarmSpawner, "start", started)
    monkeypatch.setattr(cablab_hub, "answers", answering)
    sp = cablab_spawner(FakeDocker(nodes=nodes), {"node": "node3"})
    assert asyncio.run(sp.start()) == ("jupyter-alice", 8888)
    assert sp.user_options == {"node": "node3"}  # this start sees it (the hook pinned it)


async def _close_hub_http_client() -> None:
    """JupyterHub's HTTP client is a process-wide singleton bound to the loop that made it:
    close it with this test's loop, so that later tests get one of their own."""
    from jupyterhub.httpclient import JupyterHubHTTPClient

    await JupyterHubHTTPClient.loop_instance().close()


def _server_answering(statuses: list[int]):
    """A real HTTP server on loopback answering each request with the next status (the last
    repeats); returns (start, seen paths). Closed port until started."""
    from aiohttp import web as aioweb

    seen: list[str] = []

    async def handle(request):
        seen.append(request.path)
        return aioweb.Response(status=statuses.pop(0) if len(statuses) > 1 else statuses[0])

    async def start():
        app = aioweb.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = aioweb.AppRunner(app)
        await runner.setup()
        site = aioweb.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    return start, seen


def test_a_start_returns_once_the_server_answers_so_jupyterhubs_own_wait_finds_it_at_once(monkeypatch):
    """JupyterHub's wait after start backs off up to 5 s at random: the spawner asks every
    ready_check_interval s itself, for what JupyterHub asks (below 500 at <base_url>api)."""
    serve, seen = _server_answering([503, 503, 404])

    async def scenario():
        runner, port = await serve()

        async def started(self):
            return ("127.0.0.1", port)

        monkeypatch.setattr(SwarmSpawner, "start", started)
        sp = cablab_spawner(FakeDocker(), ready_check_interval=0.01, http_timeout=30)
        try:
            return await asyncio.wait_for(sp.start(), 20)
        finally:
            await runner.cleanup()
            await _close_hub_http_client()

    port_back = asyncio.run(scenario())
    assert port_back[0] == "127.0.0.1"
    assert seen == ["/user/alice/api"] * 3  # two 503s were not ready; the 404 was


def test_a_server_that_never_answers_fails_its_start_with_a_message(monkeypatch):
    async def scenario():
        import socket

        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

        async def started(self):
            return ("127.0.0.1", port)

        monkeypatch.setattr(SwarmSpawner, "start", started)
        sp = cablab_spawner(FakeDocker(), ready_check_interval=0.05, http_timeout=1)
        try:
            await asyncio.wait_for(sp.start(), 20)
        finally:
            await _close_hub_http_client()

    with pytest.raises(web.HTTPError) as failed:
        asyncio.run(scenario())
    assert failed.value.status_code == 500
    assert "alice's server started but did not answer within 1 s" in failed.value.log_message


def test_node_refusal_names_why():
    label = "cablab.node"
    assert cablab_hub.node_refusal("node2", [node("node2")], ["node2"], label) is None
    assert "drain" in cablab_hub.node_refusal("node2", [node("node2", availability="drain")], ["node2"], label)
    assert "unknown" in cablab_hub.node_refusal("node2", [node("node2", state="unknown")], ["node2"], label)
    missing = cablab_hub.node_refusal("node9", [node("node2")], ["node2", "node3"], label)
    assert "not in the swarm" in missing and "one of node2" in missing
    # the engine label names the node, not the hostname the machine's metadata gave it
    assert "not in the swarm" in cablab_hub.node_refusal("ip-10-0-0-2", [node("node2")], ["node2"], label)
    unlabelled = {"ID": "x", "Description": {"Hostname": "node2"}, "Status": {"State": "ready"},
                  "Spec": {"Availability": "active"}}
    assert cablab_hub.node_refusal("node2", [unlabelled], ["node2"], label) is None  # not yet provisioned with it


def test_unplaceable_reason():
    assert cablab_hub.unplaceable_reason(task("pending", None, NO_NODE)) == NO_NODE
    insufficient = "no suitable node (insufficient resources on 2 nodes)"
    assert cablab_hub.unplaceable_reason(task("pending", None, insufficient)) == insufficient
    assert cablab_hub.unplaceable_reason(task("pending", None)) is None
    assert cablab_hub.unplaceable_reason(task("running")) is None


def test_an_unplaceable_start_fails_fast_with_swarms_reason():
    fake = FakeDocker([[task("pending", None, NO_NODE)]])
    sp = cablab_spawner(fake, unplaceable_grace=0.0, start_check_interval=0.0)
    with pytest.raises(web.HTTPError) as failed:
        asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert failed.value.status_code == 503
    assert "no notebook node can take alice's server" in failed.value.log_message and NO_NODE in failed.value.log_message


def test_a_briefly_unplaceable_start_waits_for_its_task():
    fake = FakeDocker([[task("pending", None, NO_NODE)], [task("pending", None, NO_NODE)], [task("preparing")],
                       [task("running")]])
    sp = cablab_spawner(fake, unplaceable_grace=60.0, start_check_interval=0.0)
    asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert fake.calls.count("tasks") == 4


def test_a_waits_checks_come_soon_then_half_again_later_each_time_up_to_the_longest():
    delays = cablab_hub.checks(0.1, 5.0)
    assert [next(delays) for _ in range(11)] == pytest.approx([
        0.1, 0.15, 0.225, 0.3375, 0.5062, 0.7594, 1.1391, 1.7086, 2.5629, 3.8443, 5.0], abs=1e-4)
    assert next(delays) == 5.0
    assert [next(cablab_hub.checks(9.0, 0.5)) for _ in range(2)] == [0.5, 0.5]  # never above the longest


def _recorded_sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay, *args, **kwargs):
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(cablab_hub.asyncio, "sleep", sleep)
    return slept


def test_the_start_loop_checks_its_task_soon_then_less_often(monkeypatch):
    """A container starts within a second on a real cluster: the loop's task checks come at
    0, 0.25, 0.625, 1.19, 2.03 s ... (were 0, 1.0, 2.5 s), up to one every 5 s; each is one Docker
    API call (SwarmSpawner's get_task asks for the service too)."""
    slept = _recorded_sleeps(monkeypatch)
    fake = FakeDocker([[task("pending")]] * 9 + [[task("running")]])
    sp = cablab_spawner(fake)
    assert sp.start_check_interval == 0.25
    asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert fake.calls == ["tasks"] * 10
    assert slept == pytest.approx([0.25, 0.375, 0.5625, 0.8438, 1.2656, 1.8984, 2.8477, 4.2715, 5.0], abs=1e-4)


def test_the_answer_checks_come_soon_then_every_ready_check_interval(monkeypatch):
    slept = _recorded_sleeps(monkeypatch)
    replies = [False] * 9 + [True]

    async def answering(url):
        assert url == "http://10.0.1.5:8888/user/alice/api"
        return replies.pop(0)

    monkeypatch.setattr(cablab_hub, "answers", answering)
    sp = cablab_spawner(FakeDocker())
    assert (sp.ready_check_first, sp.ready_check_interval) == (0.05, 0.5)
    asyncio.run(asyncio.wait_for(sp.wait_until_answering("http://10.0.1.5:8888/user/alice/api"), 5))
    assert replies == []
    assert slept == pytest.approx([0.05, 0.075, 0.1125, 0.1688, 0.2531, 0.3797, 0.5, 0.5, 0.5], abs=1e-4)


def test_a_start_waits_on_the_task_swarm_wants_running_or_ready_else_the_newest():
    def t(name, desired, created):
        return {"ID": name, "DesiredState": desired, "CreatedAt": created, "Status": {"State": "x"}}

    failed = t("failed", "shutdown", "2026-11-29T03:09:03.5Z")
    # a restart's replacement waits out its delay wanted `ready`, even if swarm updated the failed
    # task since (a higher version)
    delayed = dict(t("delayed", "ready", "2026-11-29T03:09:04.09Z"), Version={"Index": 10})
    assert cablab_hub.current_task([dict(failed, Version={"Index": 30}), delayed])["ID"] == "delayed"
    running = t("running", "running", "2026-11-29T03:09:05Z")
    assert cablab_hub.current_task([running, failed, t("older", "running", "2026-11-29T03:09:04.999999999Z")]
                                   )["ID"] == "running"  # newest by time, whatever the fraction's digits
    assert cablab_hub.current_task([failed, t("oldest", "shutdown", "2026-11-29T03:09:02Z")])["ID"] == "failed"
    assert cablab_hub.current_task([{"ID": "bare"}])["ID"] == "bare"  # fields missing: still the one there
    assert cablab_hub.current_task([]) is None
    assert cablab_hub.created_at({"CreatedAt": "2026-11-29T03:09:05Z"}) > cablab_hub.created_at(
        {"CreatedAt": "2026-11-29T03:09:04.999999999Z"})


def test_a_service_gone_while_starting_fails_the_start():
    class Gone(FakeDocker):
        async def __call__(self, method, *args, **kwargs):
            if method == "tasks":
                assert kwargs == {"filters": {"service": "jupyter-alice"}}
                raise NotFound()
            return await super().__call__(method, *args, **kwargs)

    sp = cablab_spawner(Gone(), start_check_interval=0.0)
    with pytest.raises(RuntimeError, match="Service jupyter-alice not found"):
        asyncio.run(asyncio.wait_for(sp.start_object(), 5))


def test_a_task_that_ends_while_starting_fails_the_start():
    sp = cablab_spawner(FakeDocker([[task("failed", err="starting container failed: no such image")]]),
                        start_check_interval=0.0)
    with pytest.raises(RuntimeError, match="no such image"):
        asyncio.run(asyncio.wait_for(sp.start_object(), 5))


# --- Operations: culler, metrics, resources -------------------------------------


def configured_with(**changes) -> Config:
    c = Config()
    cablab_hub.configure(c, {**data(lab=False), **changes})
    return c


def test_the_culler_is_a_hub_managed_service_the_pinned_culler_understands(secrets):
    from jupyterhub_idle_culler import IdleCuller

    c = configured_with(cull={"enabled": True, "timeout": 900, "every": 60, "max_age": 86400})
    culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")
    assert culler["command"][1:3] == ["-m", "jupyterhub_idle_culler"]
    app = IdleCuller()
    app.parse_command_line(culler["command"][3:])
    assert (app.timeout, app.cull_every, app.max_age, app.cull_users) == (900, 60, 86400, False)
    # activity reaches the hub at least 4 times per timeout
    assert c.JupyterHub.last_activity_interval == 225
    assert c.Spawner.environment == {"JUPYTERHUB_ACTIVITY_INTERVAL": "225"}


def test_the_culler_role_has_exactly_the_scopes_it_needs(secrets):
    from jupyterhub.scopes import _check_scopes_exist

    roles = {r["name"]: r for r in configured_with().JupyterHub.load_roles}
    culler = roles["idle-culler"]
    assert culler["services"] == ["idle-culler"]
    assert sorted(culler["scopes"]) == ["delete:servers", "list:users", "read:servers", "read:users:activity"]
    assert "admin:users" not in culler["scopes"]  # it stops servers, never deletes users
    for role in roles.values():
        _check_scopes_exist(role["scopes"])  # JupyterHub's own check: every scope exists


def test_no_culler_when_disabled_but_metrics_still(secrets):
    c = configured_with(cull={"enabled": False, "timeout": 3600, "every": 300, "max_age": 0})
    assert [s["name"] for s in c.JupyterHub.services] == ["metrics"]
    assert "last_activity_interval" not in c.JupyterHub
    assert "environment" not in c.Spawner


def test_metrics_need_the_metrics_token(secrets):
    c = configured_with()
    metrics = next(s for s in c.JupyterHub.services if s["name"] == "metrics")
    assert metrics == {"name": "metrics", "api_token": "mt" * 16}  # no command: a token, not a process
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "metrics")
    assert role == {"name": "metrics", "services": ["metrics"], "scopes": ["read:metrics"]}
    assert c.JupyterHub.authenticate_prometheus is True


def _event_loop_warnings(collector, monkeypatch, caplog, ticks: list[float]) -> list[str]:
    """Run JupyterHub's own event-loop measurement over ticks that took `ticks` seconds (a fake clock)."""
    import jupyterhub.metrics as metrics

    clock, left = [0.0], list(ticks)

    class Done(Exception):
        pass

    async def sleep(delay):
        if not left:
            raise Done
        clock[0] += left.pop(0)

    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(metrics.asyncio, "sleep", sleep)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cablab-test-metrics"), pytest.raises(Done):
        asyncio.run(collector._measure_event_loop_interval())
    return [r.getMessage() for r in caplog.records if r.name == "cablab-test-metrics"]


def test_the_event_loop_metric_ticks_every_half_second_and_still_logs_a_loop_blocked_a_second(
        secrets, monkeypatch, caplog):
    """JupyterHub's own collector reads the settings (a misspelt class or trait would be ignored), and
    its own measurement still warns of a loop blocked for a second that began as a tick's sleep did."""
    from traitlets.config import Config
    from jupyterhub.metrics import PeriodicMetricsCollector

    log = logging.getLogger("cablab-test-metrics")
    collector = PeriodicMetricsCollector(config=configured_with(), log=log)
    assert collector.event_loop_interval_enabled is True
    assert collector.event_loop_interval_resolution == cablab_hub.EVENT_LOOP_TICK == 0.5
    assert PeriodicMetricsCollector().event_loop_interval_resolution == 0.05  # what it replaces
    # ticks: on time, a 1.0 s block from the tick's start, a 0.9 s one
    assert _event_loop_warnings(collector, monkeypatch, caplog, [0.5, 1.0, 0.9]) == [
        "Event loop was unresponsive for at least 0.50s!"]
    # The tick alone, with JupyterHub's 1 s threshold, would not have warned of that second
    only_tick = Config()
    only_tick.PeriodicMetricsCollector.event_loop_interval_resolution = cablab_hub.EVENT_LOOP_TICK
    assert _event_loop_warnings(PeriodicMetricsCollector(config=only_tick, log=log), monkeypatch, caplog,
                                [0.5, 1.0, 0.9]) == []


@pytest.mark.parametrize("timeout, interval", [(60, 30), (120, 30), (180, 45), (3600, 300), (86400, 300)])
def test_activity_interval(timeout, interval):
    assert cablab_hub.activity_interval(timeout) == interval


RESOURCES = {
    "default": {"limits": {"memory": "2G", "cpus": 2.0}, "reservations": {"memory": "512M", "cpus": 0.5}},
    "users": {"frank": {"limits": {"memory": "2G", "cpus": 2.0}, "reservations": {"memory": "4G", "cpus": None}}},
}


def spawner(c: Config, name: str):
    user = type("User", (), {"name": name, "id": 1, "url": f"/user/{name}/", "escaped_name": name})()
    return c.JupyterHub.spawner_class(user=user, config=c)


def test_resources_become_the_swarm_spawners_limits_and_reservations(secrets):
    c = configured_with(resources=RESOURCES)
    assert issubclass(c.JupyterHub.spawner_class, cablab_hub.SwarmSpawner)
    sp = spawner(c, "alice")
    cablab_hub.apply_resources(sp, sp.user_resources())
    assert (sp.mem_limit, sp.cpu_limit, sp.mem_guarantee, sp.cpu_guarantee) == (2 << 30, 2.0, 512 << 20, 0.5)
    sp = spawner(c, "frank")
    cablab_hub.apply_resources(sp, sp.user_resources())
    assert (sp.mem_limit, sp.cpu_limit, sp.mem_guarantee, sp.cpu_guarantee) == (2 << 30, 2.0, 4 << 30, None)
    # SwarmSpawner's traits are what create_object turns into the service's Resources
    assert c.SwarmSpawner.mem_limit == "2G" and c.SwarmSpawner.cpu_guarantee == 0.5


def pending_task(state: str, err: str = "") -> dict:
    return {"Status": {"State": state, "Message": "pending task scheduling", "Err": err}}


NO_ROOM = "no suitable node (insufficient resources on 2 nodes)"


def test_scheduling_watch_gives_up_only_after_the_grace_period():
    watch = cablab_hub.SchedulingWatch(grace=20)
    assert watch.observe(pending_task("pending"), 0) is None  # pending while swarm looks: normal
    assert watch.observe(pending_task("pending", NO_ROOM), 1) is None
    assert watch.observe(pending_task("pending", NO_ROOM), 20) is None
    assert watch.observe(pending_task("pending", NO_ROOM), 21) == NO_ROOM


def test_scheduling_watch_forgets_a_passing_shortage():
    watch = cablab_hub.SchedulingWatch(grace=20)
    watch.observe(pending_task("pending", NO_ROOM), 0)
    assert watch.observe(pending_task("assigned"), 15) is None  # a node freed up: placed
    assert watch.observe(pending_task("pending", NO_ROOM), 16) is None
    assert watch.observe(pending_task("pending", NO_ROOM), 30) is None  # 14 s since it came back
    assert watch.observe(pending_task("running"), 100) is None
    assert watch.observe(None, 200) is None


def test_the_refusal_names_what_could_not_be_reserved():
    text = cablab_hub.refusal("frank", {"memory": "4G", "cpus": 0.5}, NO_ROOM)
    assert text.startswith("no notebook node has 4G of memory and 0.5 CPUs free to reserve for frank's server")
    assert NO_ROOM in text
    other = cablab_hub.refusal("bob", {}, "no suitable node (scheduling constraints not satisfied on 3 nodes)")
    assert other.startswith("no notebook node can take bob's server")


def test_a_spawn_no_node_can_take_fails_within_the_grace_period(secrets, monkeypatch):
    async def unschedulable(self):
        return pending_task("pending", NO_ROOM)

    monkeypatch.setattr(cablab_hub.CablabSwarmSpawner, "start_task", unschedulable)
    c = configured_with(resources=RESOURCES)
    sp = spawner(c, "frank")
    sp.unplaceable_grace = 0.05
    sp.start_check_interval = 0.01
    with pytest.raises(cablab_hub.Unschedulable) as failed:
        asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert failed.value.status_code == 503
    assert failed.value.jupyterhub_message.startswith("no notebook node has 4G of memory free")


def test_a_spawn_that_gets_placed_starts(secrets, monkeypatch):
    answers = [pending_task("pending"), pending_task("assigned"), pending_task("running")]

    async def placed(self):
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(cablab_hub.CablabSwarmSpawner, "start_task", placed)
    sp = spawner(configured_with(resources=RESOURCES), "alice")
    sp.start_check_interval = 0.01
    asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert answers == [pending_task("running")]


def test_a_restarted_proxy_gets_its_routes_back_within_seconds(secrets, monkeypatch):
    """CHP forgets every route when it restarts (a renewed certificate rolls it): the hub checks
    the routing table every ROUTE_CHECK_INTERVAL s, not only at its last_activity pass (300 s)."""
    from jupyterhub.proxy import Proxy

    c = configured(lab=False)
    assert c.JupyterHub.proxy_class is cablab_hub.CablabProxy
    assert 0 < cablab_hub.ROUTE_CHECK_INTERVAL <= 15
    checks = []

    async def check_routes(self, user_dict, service_dict, routes=None):
        checks.append((user_dict, service_dict))

    monkeypatch.setattr(Proxy, "check_routes", check_routes)

    class App:
        users = {"alice": object()}
        _service_map = {"idle-culler": object()}

    async def scenario():
        proxy = cablab_hub.CablabProxy(app=App(), should_start=False, auth_token="t", route_check_interval=1)
        proxy.log.disabled = True
        await proxy.check_routes(App.users, App._service_map)  # the hub's own first check starts the watch
        await asyncio.sleep(2.5)
        proxy._route_watch.stop()
        return proxy

    proxy = asyncio.run(scenario())
    assert len(checks) >= 3 and all(u is App.users and s is App._service_map for u, s in checks)

    async def failing(self, user_dict, service_dict, routes=None):
        raise ConnectionRefusedError("proxy restarting")

    monkeypatch.setattr(Proxy, "check_routes", failing)
    asyncio.run(proxy.restore_routes())  # logged, not raised: the next pass tries again


def test_options_an_older_hub_kept_are_cleared_when_the_hub_loads_a_stopped_server(secrets):
    """A hub before this one kept a start's options for the next, so an upgraded hub finds rows holding
    a pin, or a node the old hook refused. JupyterHub's own User builds the spawner from the row, and
    its spawn hands the row's options to a start without a body: the stopped server's row is cleared as
    the spawner is built (committed: a rollback keeps it so), and that start passes the hook. A running
    server's row keeps the options it runs with."""
    from jupyterhub import orm
    from jupyterhub.user import User

    c = configured(lab=True)
    settings = {"spawner_class": cablab_hub.CablabSwarmSpawner, "config": c}

    def user_with(options: dict, running: bool = False):
        row = orm_spawner(options)
        if running:
            row.server = orm.Server()
            object_session(row).commit()
        return User(row.user, settings), row

    user, row = user_with({"node": "node1"})  # refused by the old hook, and kept
    sp = user.spawners[""]
    assert sp.user_options == {}
    db = object_session(row)
    db.rollback()  # what a request's end does with dirty objects
    db.expire_all()
    assert row.user_options == {}
    # the bodyless start, as User.spawn reads it, passes the hook
    asyncio.run(sp._run_apply_user_options(sp.orm_spawner.user_options or {}))

    user, row = user_with({"node": "node3"}, running=True)
    assert user.spawners[""].user_options == {"node": "node3"} and row.user_options == {"node": "node3"}


def test_the_forgotten_options_stay_forgotten_when_a_request_finishes_during_the_spawn():
    """JupyterHub's handlers roll back dirty objects when a request finishes (handlers/base.py), and a
    spawn's requests and the hub's others share one session: the lab saw a user pinned once stay
    pinned, because a poll finishing mid-spawn dropped the change. The real ORM, a real rollback."""
    from jupyterhub import orm

    db = orm.new_session_factory("sqlite://")()
    user = orm.User(name="bench02")
    db.add(user)
    db.commit()
    row = orm.Spawner(name="", user=user)
    db.add(row)
    row.user_options = {"node": "node2", "profile": "small"}
    db.commit()
    spawner = type("Spawner", (), {"orm_spawner": row})()
    cablab_hub.forget_user_options(spawner)
    db.rollback()  # what BaseHandler.finish does with dirty objects
    db.expire_all()
    assert db.query(orm.Spawner).one().user_options == {}


# -- starts, at most one per notebook CPU at a time ----------------------------------

def cpu_node(name: str, cpus: float, **kw) -> dict:
    n = node(name, **kw)
    n["Description"]["Resources"] = {"NanoCPUs": int(cpus * 1e9), "MemoryBytes": 3 << 30}
    return n


def test_start_slots_are_the_whole_cpus_of_the_ready_notebook_nodes():
    nodes = [cpu_node("node1", 4), cpu_node("node2", 1), cpu_node("node3", 1.5), cpu_node("node4", 8, state="down")]
    assert cablab_hub.start_slots(nodes, ["node2", "node3", "node4"], "cablab.node") == 2  # not node1's, nor down node4's
    assert cablab_hub.start_slots([], ["node2"], "cablab.node") == 1
    assert cablab_hub.start_slots([cpu_node("node2", 0.5)], ["node2"], "cablab.node") == 1


def test_the_queue_runs_limit_starts_at_once_in_order_of_arrival():
    async def scenario():
        q = cablab_hub.StartQueue()
        running, peak, order, waits = [], [0], [], []

        async def one(name: str, hold: float):
            async with q.slot(2, on_wait=lambda turn: waits.append((name, q.ahead(turn)))):
                running.append(name)
                order.append(name)
                peak[0] = max(peak[0], len(running))
                await asyncio.sleep(hold)
                running.remove(name)

        await asyncio.gather(*(one(f"u{i}", 0.05) for i in range(6)))
        return peak[0], order, waits, q.running, list(q.waiting)

    peak, order, waits, left, waiting = asyncio.run(scenario())
    assert peak == 2
    assert order == [f"u{i}" for i in range(6)]
    assert waits == [("u2", 2), ("u3", 3), ("u4", 4), ("u5", 5)]  # 2 running + those queued before
    assert (left, waiting) == (0, [])


def test_a_start_that_fails_or_is_cancelled_gives_its_place_to_the_next():
    async def scenario():
        q = cablab_hub.StartQueue()
        got = []

        async def failing():
            async with q.slot(1):
                await asyncio.sleep(0.02)
                raise RuntimeError("swarm said no")

        async def queued(name):
            async with q.slot(1):
                got.append(name)

        first = asyncio.ensure_future(failing())
        await asyncio.sleep(0)
        cancelled = asyncio.ensure_future(queued("cancelled"))
        later = asyncio.ensure_future(queued("later"))
        await asyncio.sleep(0)
        cancelled.cancel()
        results = await asyncio.gather(first, cancelled, later, return_exceptions=True)
        return got, results, q.running, list(q.waiting)

    got, results, running, waiting = asyncio.run(scenario())
    assert got == ["later"]
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], asyncio.CancelledError)
    assert (running, waiting) == (0, [])


def test_a_start_whose_turn_does_not_come_is_refused_with_the_reason(monkeypatch):
    async def never(self):
        raise AssertionError("started without its turn")

    monkeypatch.setattr(SwarmSpawner, "start", never)

    async def scenario():
        sp = cablab_spawner(FakeDocker(nodes=[cpu_node("node2", 1), cpu_node("node3", 1)]))
        sp.start_queue = cablab_hub.StartQueue()
        sp.start_queue.running = 2  # two other starts hold the cluster's two CPUs
        sp.turn_timeout = 0.1
        messages = []

        async def watch():
            async for event in sp.progress():
                messages.append(event["message"])

        watcher = asyncio.ensure_future(watch())
        with pytest.raises(web.HTTPError) as refused:
            await sp.start()
        await asyncio.wait_for(watcher, 5)
        return refused.value, messages, list(sp.start_queue.waiting)

    refused, messages, waiting = asyncio.run(scenario())
    assert refused.status_code == 503
    assert "busy starting other servers (2 at a time)" in refused.log_message
    assert "alice's did not get its turn within 0.1 s" in refused.log_message
    assert messages[0] == "Waiting for 2 other servers to start first (the cluster starts a few at a time)"
    assert waiting == []


def test_a_start_may_wait_its_turn_for_the_start_timeout_less_its_own_start(secrets):
    sp = cablab_spawner(FakeDocker())
    sp.start_timeout = 600
    assert sp.turn_timeout == 600 - cablab_hub.OWN_START_S == 450

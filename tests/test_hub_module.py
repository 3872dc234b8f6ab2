"""The hub's own module (cablab_cluster/bundle/cablab_hub.py), as the hub runs it."""

from __future__ import annotations

import asyncio
import os
import shutil
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
    "uid": 1000,
    "gid": 100,
    "default_url": "/lab",
    "read_only_volumes": {"/srv/cablab/cube": "/home/jovyan/cube", "/srv/cablab/notebooks": "/home/jovyan/samples",
                          "/srv/cablab/elsewhere": "/data/elsewhere"},
    "notebook_nodes": ["node2", "node3"],
    "placement": ["node.role == worker"],
}


def data(lab: bool, orgs: list[str] | None = None) -> dict:
    return {
        "cluster": "t", "public_url": "https://hub.example/", "proxy_api_url": "http://cablab_proxy:8001",
        "hub_connect_ip": "cablab_hub", "allowed_users": ["alice", "bob"], "admin_users": ["alice"],
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
    assert c.SwarmSpawner.read_only_volumes["/srv/cablab/cube"] == "/home/jovyan/cube"


@pytest.fixture
def homes(request):
    if os.geteuid() != 0:
        pytest.skip("creates homes as uid 1000, needs root")
    base = Path(tempfile.mkdtemp(prefix="cablab-homes-"))  # traversable by uid 1000
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base))
    homes = base / "homes"
    homes.mkdir()
    os.chown(homes, 1000, 100)
    homes.chmod(0o755)
    return homes


class FakeSpawner:
    def __init__(self, name: str, options: dict | None = None):
        self.user = type("User", (), {"name": name})()
        self.user_options = options or {}
        self.extra_placement_spec: dict = {}


def test_pre_spawn_hook_makes_the_home_and_mount_points_as_the_user_and_pins(homes):
    hook = cablab_hub.make_pre_spawn_hook({**SPAWNER, "home_root": str(homes)})
    sp = FakeSpawner("alice", {"node": "node3"})
    hook(sp)
    home = homes / "alice"
    st = home.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 100, 0o700)
    # the read-only shares' mount points below the home exist, owned by the user (root_squash
    # stops dockerd from making them); a target outside the home needs none
    assert sorted(p.name for p in home.iterdir()) == ["cube", "samples"]
    assert all(p.stat().st_uid == 1000 for p in home.iterdir())
    assert sp.extra_placement_spec == {"constraints": ["node.role == worker", "node.hostname == node3"]}
    with pytest.raises(ValueError, match="does not run notebooks"):
        hook(FakeSpawner("alice", {"node": "node1"}))


def test_pre_spawn_hook_repairs_missing_mount_points_only(homes):
    hook = cablab_hub.make_pre_spawn_hook({**SPAWNER, "home_root": str(homes)})
    hook(FakeSpawner("bob"))
    (homes / "bob" / "samples").rmdir()
    (homes / "bob" / "notes.txt").write_text("mine")
    sp = FakeSpawner("bob")
    hook(sp)
    assert sorted(p.name for p in (homes / "bob").iterdir()) == ["cube", "notes.txt", "samples"]
    assert sp.extra_placement_spec == {"constraints": ["node.role == worker"]}


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


def task(state: str, err: str = "") -> dict:
    return {"Status": {"State": state, "Message": "pending task scheduling", "Err": err}}


NO_NODE = "no suitable node (insufficient resources on 2 nodes)"


def test_scheduling_watch_gives_up_only_after_the_grace_period():
    watch = cablab_hub.SchedulingWatch(grace=20)
    assert watch.observe(task("pending"), 0) is None  # pending while swarm looks: normal
    assert watch.observe(task("pending", NO_NODE), 1) is None
    assert watch.observe(task("pending", NO_NODE), 20) is None
    assert watch.observe(task("pending", NO_NODE), 21) == NO_NODE


def test_scheduling_watch_forgets_a_passing_shortage():
    watch = cablab_hub.SchedulingWatch(grace=20)
    watch.observe(task("pending", NO_NODE), 0)
    assert watch.observe(task("assigned"), 15) is None  # a node freed up: placed
    assert watch.observe(task("pending", NO_NODE), 16) is None
    assert watch.observe(task("pending", NO_NODE), 30) is None  # 14 s since it came back
    assert watch.observe(task("running"), 100) is None
    assert watch.observe(None, 200) is None


def test_the_refusal_names_what_could_not_be_reserved():
    text = cablab_hub.refusal("frank", {"memory": "4G", "cpus": 0.5}, NO_NODE)
    assert text.startswith("no notebook node has 4G of memory and 0.5 CPUs free to reserve for frank's server")
    assert NO_NODE in text
    other = cablab_hub.refusal("bob", {}, "no suitable node (scheduling constraints not satisfied on 3 nodes)")
    assert other.startswith("no notebook node can take bob's server")


def test_a_spawn_no_node_can_take_fails_within_the_grace_period(secrets, monkeypatch):
    async def pending_forever(self):
        await asyncio.sleep(3600)  # SwarmSpawner's own loop waits for the whole start timeout

    async def unschedulable(self):
        return task("pending", NO_NODE)

    monkeypatch.setattr(cablab_hub.SwarmSpawner, "start_object", pending_forever)
    monkeypatch.setattr(cablab_hub.SwarmSpawner, "get_task", unschedulable)
    monkeypatch.setattr(cablab_hub, "WATCH_EVERY", 0.01)
    c = configured_with(resources=RESOURCES)
    sp = spawner(c, "frank")
    sp.unschedulable_grace = 0.05
    with pytest.raises(cablab_hub.Unschedulable) as failed:
        asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert failed.value.status_code == 507
    assert failed.value.jupyterhub_message.startswith("no notebook node has 4G of memory free")


def test_a_spawn_that_gets_placed_is_left_to_swarmspawner(secrets, monkeypatch):
    calls = []

    async def placed(self):
        await asyncio.sleep(0.05)
        calls.append("started")

    async def running(self):
        return task("running")

    monkeypatch.setattr(cablab_hub.SwarmSpawner, "start_object", placed)
    monkeypatch.setattr(cablab_hub.SwarmSpawner, "get_task", running)
    monkeypatch.setattr(cablab_hub, "WATCH_EVERY", 0.01)
    sp = spawner(configured_with(resources=RESOURCES), "alice")
    asyncio.run(asyncio.wait_for(sp.start_object(), 5))
    assert calls == ["started"]


def test_backup_db_copies_a_database_in_use(tmp_path):
    import sqlite3

    src, dst = tmp_path / "jupyterhub.sqlite", tmp_path / "backup.sqlite"
    db = sqlite3.connect(src)
    db.execute("create table users (name text)")
    db.executemany("insert into users values (?)", [("alice",), ("bob",)])
    db.commit()
    db.execute("insert into users values ('uncommitted')")  # the hub is writing meanwhile
    assert cablab_hub.main(["backup-db", str(src), str(dst)]) == 0
    db.rollback()
    db.close()
    copy = sqlite3.connect(dst)
    assert sorted(r[0] for r in copy.execute("select name from users")) == ["alice", "bob"]
    copy.close()
    assert dst.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "backup.sqlite.part").exists()
    assert cablab_hub.main(["backup-db", str(src)]) == 2

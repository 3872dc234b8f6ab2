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
    "read_only_volumes": {"/srv/cablab/cube": "/mnt/cablab/cube", "/srv/cablab/notebooks": "/mnt/cablab/samples",
                          "/srv/cablab/elsewhere": "/data/elsewhere"},
    "home_links": {"cube": "/mnt/cablab/cube", "samples": "/mnt/cablab/samples"},
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
    }


@pytest.fixture
def secrets(tmp_path, monkeypatch):
    d = tmp_path / "secrets"
    d.mkdir()
    for name, value in {"cookie_secret": "ab" * 32, "github_client_secret": "gh", "proxy_token": "pt",
                        "lab_password": "lab-password-123"}.items():
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


def test_pre_spawn_hook_makes_the_home_and_links_as_the_user_and_pins(homes):
    hook = cablab_hub.make_pre_spawn_hook({**SPAWNER, "home_root": str(homes)})
    sp = FakeSpawner("alice", {"node": "node3"})
    hook(sp)
    home = homes / "alice"
    st = home.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 100, 0o700)
    # the read-only shares below the home are links to where the container mounts them
    # (runc cannot look into a 0700 root-squashed home as root); made as the user
    assert {p.name: os.readlink(p) for p in home.iterdir()} == {"cube": "/mnt/cablab/cube",
                                                                 "samples": "/mnt/cablab/samples"}
    assert all(p.lstat().st_uid == 1000 for p in home.iterdir())
    assert sp.extra_placement_spec == {"constraints": ["node.role == worker", "node.hostname == node3"]}
    with pytest.raises(ValueError, match="does not run notebooks"):
        hook(FakeSpawner("alice", {"node": "node1"}))


def test_pre_spawn_hook_replaces_empty_mount_points_and_keeps_the_users_things(homes):
    hook = cablab_hub.make_pre_spawn_hook({**SPAWNER, "home_root": str(homes)})
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
    assert sp.extra_placement_spec == {"constraints": ["node.role == worker"]}


def test_hub_pages_carry_hsts(secrets):
    c = configured(lab=False)
    assert c.JupyterHub.tornado_settings["headers"]["Strict-Transport-Security"] == "max-age=31536000"

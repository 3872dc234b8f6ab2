"""The hub's own Python: configured from data, shipped beside jupyterhub_config.py.

This file runs inside the hub container (JupyterHub, dockerspawner, oauthenticator,
aiohttp; the standard library) and is unit-tested in cablab-cluster's fast suite.
It is delivered as a docker swarm config, so a change rolls the hub without a new
image. `configure(c, data)` is the only entry point; `data` is cablab.json, which
`cablab-cluster render` writes from the validated spec (JSON: data, never code).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from aiohttp import ThreadedResolver
from oauthenticator.github import GitHubOAuthenticator



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


def make_pre_spawn_hook(spawner_data: Mapping[str, Any]):
    home_root = Path(spawner_data["home_root"])
    links = dict(spawner_data["home_links"])
    nodes = list(spawner_data["notebook_nodes"])
    placement = list(spawner_data["placement"])
    uid, gid = int(spawner_data["uid"]), int(spawner_data["gid"])

    def pre_spawn_hook(spawner: Any) -> None:
        """Make the home, then place the server (user option `node` pins it to a notebook node)."""
        make_home(home_root / spawner.user.name, uid, gid, links)
        constraints = list(placement)
        node = (spawner.user_options or {}).get("node")
        if node:
            if node not in nodes:
                raise ValueError(f"node {node!r} does not run notebooks; use one of {', '.join(nodes)}")
            constraints.append(f"node.hostname == {node}")
        spawner.extra_placement_spec = {"constraints": constraints}

    return pre_spawn_hook


# --- Everything, from data ------------------------------------------------------

HSTS = "max-age=31536000"  # no includeSubDomains: the hub's name says nothing of its siblings



def configure(c: Any, data: Mapping[str, Any]) -> None:
    """Configure JupyterHub `c` (a traitlets Config) from cablab.json's `data`."""
    # Proxy: its own swarm service (it outlives hub restarts, and the hub does not
    # wait a fixed 10 s for a proxy it started). It terminates TLS (>= 1.2).
    c.JupyterHub.public_url = data["public_url"]
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = data["proxy_api_url"]
    c.ConfigurableHTTPProxy.auth_token = secret("proxy_token")
    c.JupyterHub.hub_ip = "0.0.0.0"
    c.JupyterHub.hub_connect_ip = data["hub_connect_ip"]
    c.JupyterHub.cookie_secret_file = str(secrets_dir() / "cookie_secret")
    c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
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
    c.JupyterHub.spawner_class = "dockerspawner.SwarmSpawner"
    c.SwarmSpawner.image = sp["image"]
    # Explicit: without it dockerspawner inspects the image on the hub's own node to
    # read its CMD, and the hub's node need not hold the single-user image.
    c.SwarmSpawner.cmd = ["jupyterhub-singleuser"]
    c.SwarmSpawner.network_name = sp["network"]
    c.SwarmSpawner.use_internal_ip = True
    c.SwarmSpawner.start_timeout = 600
    c.SwarmSpawner.http_timeout = 300
    c.SwarmSpawner.notebook_dir = sp["home_target"]
    c.Spawner.default_url = sp["default_url"]
    # The user's home follows them to any node: a directory of the NFS share,
    # mounted at the same place on every host. raw_username: the GitHub login as is
    # (dockerspawner's {username} is escaped: a-b → a-2db).
    c.SwarmSpawner.volumes = {sp["home_root"].rstrip("/") + "/{raw_username}": sp["home_target"]}
    c.SwarmSpawner.read_only_volumes = dict(sp["read_only_volumes"])
    c.Spawner.pre_spawn_hook = make_pre_spawn_hook(sp)

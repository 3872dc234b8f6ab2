# JupyterHub configuration for cluster 'lab-ubuntu'.
# Rendered by cablab-cluster from ubuntu.yml: change the spec, not this file.
# Secrets are read from files (docker swarm secrets in /run/secrets); none is in here.
import os
import subprocess
from pathlib import Path

c = get_config()  # noqa: F821 (provided by JupyterHub's config loader)

SECRETS = Path(os.environ.get("CABLAB_SECRETS_DIR", "/run/secrets"))


def secret(name):
    return (SECRETS / name).read_text().strip()


# --- Proxy: its own swarm service (it outlives hub restarts, and the hub does
# not wait a fixed 10 s for a proxy it started). It terminates TLS (>= 1.2).
c.JupyterHub.public_url = 'https://192.168.56.11/'
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = 'http://cablab_proxy:8001'
c.ConfigurableHTTPProxy.auth_token = secret("proxy_token")
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = 'cablab_hub'
c.JupyterHub.cookie_secret_file = str(SECRETS / "cookie_secret")
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
c.JupyterHub.cleanup_servers = False  # user servers outlive a hub restart

# --- Name resolution for the hub's own HTTP client --------------------------
# A user's server is the swarm service jupyter-<name>; every start is a new
# service, with a new address, under the same name. JupyterHub's client resolves
# with c-ares (aiodns), which keeps answers for their TTL (600 s from Docker's
# DNS), and aiohttp keeps them 10 s more on top: a server started again within
# ten minutes was looked for at its old address and never became ready. Ask the
# system resolver on every connection, with neither cache.
import asyncio  # noqa: E402

from aiohttp import ThreadedResolver  # noqa: E402


class SystemResolver(ThreadedResolver):
    """getaddrinfo() per connection, no cache; bound to the loop that uses it."""

    def __init__(self):  # ThreadedResolver binds the running loop, none while config loads
        pass

    @property
    def _loop(self):
        return asyncio.get_running_loop()


c.JupyterHubHTTPClient.connector_options = {"resolver": SystemResolver(), "use_dns_cache": False}

# --- Who may log in: the userlist, rendered ---------------------------------
c.Authenticator.allowed_users = {'alice', 'bob'}
c.Authenticator.admin_users = {'alice'}

# --- GitHub OAuth ------------------------------------------------------------
c.GitHubOAuthenticator.client_id = 'cablab-lab-client-id'
c.GitHubOAuthenticator.client_secret = secret("github_client_secret")
c.GitHubOAuthenticator.oauth_callback_url = 'https://192.168.56.11/hub/oauth_callback'

# --- LAB ONLY: rendered because the spec says `lab: true` and
# `hub.auth.lab_password: true`; a spec without `lab: true` is refused. The
# GitHub button works as on a real cluster; userlist users may also post
# username + the generated lab password to /hub/login (GitHub is unreachable
# from the lab).
import hmac  # noqa: E402

from oauthenticator.github import GitHubOAuthenticator  # noqa: E402


class LabPasswordGitHubOAuthenticator(GitHubOAuthenticator):
    """GitHub OAuth, plus a shared lab password for userlist users."""

    async def authenticate(self, handler, data=None, **kwargs):
        if data and "password" in data:
            name = self.normalize_username(data.get("username", ""))
            ok = hmac.compare_digest(data["password"].encode(), secret("lab_password").encode())
            return {"name": name, "auth_state": None} if ok and name in self.allowed_users | self.admin_users else None
        return await super().authenticate(handler, data, **kwargs)


c.JupyterHub.authenticator_class = LabPasswordGitHubOAuthenticator

# --- Spawner: one swarm service per user, on the overlay network -----------
c.JupyterHub.spawner_class = "dockerspawner.SwarmSpawner"
c.SwarmSpawner.image = 'cablab/singleuser:lab'
# Explicit: without it dockerspawner inspects the image on the hub's own node to
# read its CMD, and the hub's node need not hold the single-user image.
c.SwarmSpawner.cmd = ["jupyterhub-singleuser"]
c.SwarmSpawner.network_name = 'swarmnet'
c.SwarmSpawner.use_internal_ip = True
c.SwarmSpawner.start_timeout = 600
c.SwarmSpawner.http_timeout = 300
c.SwarmSpawner.notebook_dir = '/home/jovyan/work'
# The user's home follows them to any node: a directory of the NFS share,
# mounted at the same place on every host.
# raw_username: the GitHub login as is (dockerspawner's {username} is escaped: a-b → a-2db).
c.SwarmSpawner.volumes = {'/srv/cablab/homes/{raw_username}': '/home/jovyan/work'}
c.SwarmSpawner.read_only_volumes = {'/srv/cablab/cube': '/home/jovyan/cube', '/srv/cablab/notebooks': '/home/jovyan/samples'}

HOME_ROOT = '/srv/cablab/homes'
NOTEBOOK_NODES = ['node2', 'node3']
PLACEMENT = ['node.role == worker']


def pre_spawn_hook(spawner):
    """Create the user's home on the share as the notebook user, and place the server.

    The home is made with the notebook user's uid so that it works through
    root_squash. A server may be pinned to a node with the user option `node`.
    """
    home = os.path.join(HOME_ROOT, spawner.user.name)
    if not os.path.isdir(home):
        subprocess.run(["mkdir", "-m", "0700", home], check=True,
                       user=1000, group=100, extra_groups=[])
    constraints = list(PLACEMENT)
    node = (spawner.user_options or {}).get("node")
    if node:
        if node not in NOTEBOOK_NODES:
            raise ValueError(f"node {node!r} does not run notebooks; use one of {', '.join(NOTEBOOK_NODES)}")
        constraints.append(f"node.hostname == {node}")
    spawner.extra_placement_spec = {"constraints": constraints}


c.Spawner.pre_spawn_hook = pre_spawn_hook

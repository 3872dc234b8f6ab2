"""Where things live on the hosts, and the names of the hub's secrets: one place for both.

Imported by the plan, the steps, the renderer, the secrets store and the lab; imports
only the spec (for the two functions that depend on a cluster's settings).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from .spec import Cluster, TLSMode

ETC = PurePosixPath("/etc/cablab")
SECRETS_DIR = ETC / "secrets"  # the operator copies the spec's secrets dir here (hub host)
SWARM_TOKEN_DIR = ETC / "swarm"  # join tokens handed to joining hosts: <role>.token
HUB_DIR = PurePosixPath("/opt/cablab/hub")  # the hub bundle on the hub host
IMAGE_DIR = PurePosixPath("/opt/cablab/images")  # Dockerfiles for `source: build`
SEED_DIR = PurePosixPath("/var/cache/cablab/seed")  # the NFS server's inputs for seeded shares
STATE_DIR = PurePosixPath("/var/lib/cablab")  # what cablab keeps on a host
HUB_DATA = STATE_DIR / "hub"  # the hub's sqlite database
# Inside the hub's container (its image's WORKDIR): the bundle's configs are mounted here, HUB_DATA
# below it.
HUB_CONTAINER_DIR = PurePosixPath("/srv/jupyterhub")
HUB_CONTAINER_DATA = HUB_CONTAINER_DIR / "data"
HUB_CONFIG = HUB_CONTAINER_DIR / "jupyterhub_config.py"  # the bundle's static config, loads cablab_hub.py beside it
HUB_DB = "jupyterhub.sqlite"  # the hub's database, in HUB_DATA (HUB_CONTAINER_DATA in the hub) and in a backup
HUB_ORG_UIDS = "org-uids.json"  # beside it: the uids the hub gave organisation members
HUB_IMAGE_RECORD = STATE_DIR / "hub-image"  # "<image id> <JupyterHub version>" of the last deployed hub
UPGRADE_BACKUPS = PurePosixPath("/var/backups/cablab/upgrades")  # backup.sh's target before a new hub image
ACME_WEBROOT = STATE_DIR / "acme"  # letsencrypt: certbot's --webroot, served read-only on port 80 (hub host)
ACME_CA = ETC / "acme-ca.pem"  # letsencrypt: hub.tls.acme_ca_bundle, certbot's REQUESTS_CA_BUNDLE
LETSENCRYPT_LIVE = PurePosixPath("/etc/letsencrypt/live")  # certbot's lineages: <name>/fullchain.pem, privkey.pem
RUN_SUMMARY = STATE_DIR / "last-run.json"  # the provisioner's summary of its last run
PROVISIONER = PurePosixPath("/usr/local/sbin/cablab-provision")  # where a host's script is put and run
PROVISION_LOG = PurePosixPath("/var/log/cablab-provision.log")  # the provisioner's command output
# restore.sh saves the hub's log here before it stops the hub: scaling the service to 0 removes its
# task, and `docker service logs` loses that task's lines with it. One file per restore, 0600.
HUB_LOG_DIR = PurePosixPath("/var/log/cablab")
STACK = "cablab"  # docker stack name of the hub
# The swarm node label (`true`) that pins the hub and the proxy to the hub host: set by the hub
# host's own run (a manager), not its hostname (cloud-init may restore the metadata hostname).
HUB_LABEL = "cablab.hub"
# Docker engine labels (daemon.json, written by each swarm host's own run, so a worker declares
# itself): every swarm host's spec name, and `true` on the hosts that run users' servers. Users'
# servers are placed by them, never by hostname.
NODE_LABEL = "cablab.node"
NOTEBOOKS_LABEL = "cablab.notebooks"
CUBE_NAME = "esdc-8d-2deg-synthetic"  # the synthetic cube: <name>.zarr on the share, <name>.tar.gz input
CUBE_TARBALL = SEED_DIR / f"{CUBE_NAME}.tar.gz"  # where the NFS server expects it (`cablab-cluster cube --tarball`)

# Beside the spec: secrets/<cluster>/ (made by `cablab-cluster render`).
SECRETS_SUBDIR = "secrets"

# The hub's secrets: file names in SECRETS_DIR and in the spec's secrets directory.
COOKIE_SECRET = "cookie_secret"
PROXY_TOKEN = "proxy_token"
METRICS_TOKEN = "metrics_token"  # the `metrics` service's API token: Prometheus reads /hub/metrics with it
GITHUB_CLIENT_SECRET = "github_client_secret"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
LAB_PASSWORD = "lab_password"
SECRET_FILES = (COOKIE_SECRET, PROXY_TOKEN, METRICS_TOKEN, LAB_PASSWORD, GITHUB_CLIENT_SECRET, TLS_CERT, TLS_KEY)


def secrets_hub_reads(c: Cluster) -> tuple[str, ...]:
    """The files the hub reads from SECRETS_DIR (as docker swarm secrets)."""
    names = [COOKIE_SECRET, PROXY_TOKEN, METRICS_TOKEN, GITHUB_CLIENT_SECRET, TLS_CERT, TLS_KEY]
    if c.hub.auth.lab_password:
        names.append(LAB_PASSWORD)
    return tuple(names)


def secrets_operator_copies(c: Cluster) -> tuple[str, ...]:
    """Those of `secrets_hub_reads` that come from the spec's secrets directory (in letsencrypt
    mode certbot makes the TLS pair on the hub host itself)."""
    certbot = (TLS_CERT, TLS_KEY) if c.hub.tls.mode is TLSMode.LETSENCRYPT else ()
    return tuple(n for n in secrets_hub_reads(c) if n not in certbot)

# The single-user environment every spec gets; versions come from the lock
# (bundle/singleuser-constraints.txt), extra `packages` of the spec are added.
SINGLEUSER_STACK = (
    "jupyterhub",  # jupyterhub-singleuser: the hub's version, from the lock
    "jupyterlab",  # JupyterLab 4, the default UI (/lab)
    "notebook",  # Notebook 7 at /tree
    "ipykernel",  # the one Python kernel
    "numpy",  # arrays
    "pandas",  # tables and time indexes (xarray needs it)
    "xarray",  # the cube's labelled arrays: open_zarr / open_dataset
    "dask",  # out-of-core, chunked computation over the cube
    "zarr",  # the cube's storage format (ESDC is Zarr)
    "netCDF4",  # NetCDF in and out (results, other data sets)
    "matplotlib",  # maps and time series
)

# Versions baked into the hub image besides JupyterHub's own (`hub.images.hub.jupyterhub`, whose
# default is the single-user lock's): the fast suite tests the config against these, and checks
# them against pyproject's test pins.
VERSIONS = {
    "dockerspawner": "14.0.0",
    "oauthenticator": "17.4.0",
    # The hub-managed idle culler: 2.0.0 (a traitlets app, same CLI flags) speaks the REST API
    # of JupyterHub >= 2 (RBAC scopes) and is tested upstream against the newest JupyterHub.
    "jupyterhub-idle-culler": "2.0.0",
    "chp": "5.1.0",  # the newest whose dependencies accept bookworm's node 18
}

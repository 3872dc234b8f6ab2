"""Stage 2 — plan: a validated cluster becomes ordered steps per host and an
order between hosts.

The plan knows *what* each host needs and in which order; it knows nothing of
shell. Render (stage 3) turns each step into a small script from the step's
template. Variant and OS-family differences are data here (package names per
family, service names), never copied shell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath
from typing import Mapping

from .spec import (
    Cluster,
    Host,
    Image,
    LoadedSpec,
    Role,
    Seed,
    Share,
    StorageDriver,
    TLSMode,
)

# Where things live on the hosts (one place, used by every template).
ETC = PurePosixPath("/etc/cablab")
SECRETS_DIR = ETC / "secrets"  # the operator copies the spec's secrets dir here (hub host)
SWARM_TOKEN_DIR = ETC / "swarm"  # join tokens handed to joining hosts
HUB_DIR = PurePosixPath("/opt/cablab/hub")  # the hub bundle on the hub host
HUB_DATA = PurePosixPath("/var/lib/cablab/hub")  # the hub's sqlite database
IMAGE_DIR = PurePosixPath("/opt/cablab/images")  # Dockerfiles for `source: build`
SEED_DIR = PurePosixPath("/var/cache/cablab/seed")  # the NFS server's inputs for seeded shares
CUBE_NAME = "esdc-8d-2deg-synthetic"  # the synthetic cube: <name>.zarr on the share, <name>.tar.gz input
STATE_DIR = PurePosixPath("/var/lib/cablab")
STACK = "cablab"  # docker stack name of the hub


@dataclass(frozen=True)
class Packages:
    """One logical package set, named per OS package family (chosen at run time)."""

    apt: tuple[str, ...]
    dnf: tuple[str, ...]


# Package sets per logical need. The variants differ in data only.
PACKAGES = {
    "nfs-server": Packages(apt=("nfs-kernel-server",), dnf=("nfs-utils",)),
    "nfs-client": Packages(apt=("nfs-common",), dnf=("nfs-utils",)),
    "lvm": Packages(apt=("lvm2", "xfsprogs"), dnf=("lvm2", "xfsprogs")),
    "thinpool": Packages(apt=("lvm2", "thin-provisioning-tools"), dnf=("lvm2", "device-mapper-persistent-data")),
    "certbot": Packages(apt=("certbot",), dnf=("certbot",)),
    # apparmor: Debian's kernel has AppArmor on; without apparmor_parser Docker cannot load
    # its docker-default profile and refuses to start any container (a recommends, not a
    # dependency, so --no-install-recommends drops it). EL ships no Docker: docker-repo.
    "docker-distro": Packages(apt=("docker.io", "apparmor"), dnf=()),
    "docker-repo": Packages(apt=("docker-ce", "docker-ce-cli", "containerd.io", "apparmor"),
                            dnf=("docker-ce", "docker-ce-cli", "containerd.io")),
}


class Proto(str, Enum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class Port:
    number: int
    proto: Proto
    why: str
    public: bool = False  # open to everyone (the hub), else to the cluster only


@dataclass(frozen=True)
class Mount:
    """A share as one host sees it: NFS from the server, or a bind on the server itself."""

    share: Share
    source: str  # server:/path or the local path for a bind
    bind: bool

    @property
    def target(self) -> PurePosixPath:
        return self.share.mount

    @property
    def fstype(self) -> str:
        return "none" if self.bind else "nfs"


class StepKind(str, Enum):
    """One template per kind, in templates/steps/<value>.sh.j2."""

    HOSTNAME = "hostname"
    FIREWALL = "firewall"
    DOCKER_LVM = "docker_lvm"
    DOCKER_THINPOOL = "docker_thinpool"
    DOCKER_ENGINE = "docker_engine"
    NFS_SERVER = "nfs_server"
    SEED_SHARES = "seed_shares"
    NFS_MOUNTS = "nfs_mounts"
    SWARM_INIT = "swarm_init"
    SWARM_JOIN = "swarm_join"
    SWARM_NETWORK = "swarm_network"
    IMAGE = "image"
    LETSENCRYPT = "letsencrypt"
    HUB = "hub"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    title: str
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def template(self) -> str:
        return f"steps/{self.kind.value}.sh.j2"


@dataclass(frozen=True)
class HostPlan:
    host: Host
    steps: tuple[Step, ...]
    after: tuple[str, ...]  # hosts whose scripts must have run before this one
    why_after: str = ""


@dataclass(frozen=True)
class Plan:
    spec: LoadedSpec
    hosts: tuple[HostPlan, ...]  # in the order to run them

    @property
    def cluster(self) -> Cluster:
        return self.spec.cluster

    def for_host(self, name: str) -> HostPlan:
        return next(hp for hp in self.hosts if hp.host.name == name)


# --------------------------------------------------------------------------


def _ports(c: Cluster, h: Host) -> tuple[Port, ...]:
    ports: list[Port] = []
    if h.is_manager or h.is_worker:
        ports += [Port(7946, Proto.TCP, "swarm gossip"), Port(7946, Proto.UDP, "swarm gossip"),
                  Port(4789, Proto.UDP, "overlay network (VXLAN)")]
    if h.is_manager:
        ports.append(Port(2377, Proto.TCP, "swarm management (mutual TLS)"))
    if Role.NFS_SERVER in h.roles:
        ports.append(Port(2049, Proto.TCP, "NFS"))
        if c.nfs_version == "3":
            ports += [Port(111, Proto.TCP, "rpcbind"), Port(111, Proto.UDP, "rpcbind"),
                      Port(20048, Proto.TCP, "mountd")]
    if Role.HUB in h.roles:
        ports.append(Port(c.hub.port, Proto.TCP, "JupyterHub (HTTPS)", public=True))
        if c.hub.tls.mode is TLSMode.LETSENCRYPT:
            ports.append(Port(80, Proto.TCP, "ACME http-01 challenge", public=True))
    return tuple(ports)


def _mounts(c: Cluster, h: Host) -> tuple[Mount, ...]:
    server = c.nfs_server
    assert server is not None
    if h == server:
        return tuple(Mount(share=s, source=str(s.path), bind=True) for s in c.shares if s.mount != s.path)
    addr = f"[{server.address}]" if server.address.version == 6 else str(server.address)
    return tuple(Mount(share=s, source=f"{addr}:{s.path}", bind=False) for s in c.shares)


def _images_for(c: Cluster, h: Host) -> tuple[tuple[str, Image], ...]:
    images = []
    if Role.HUB in h.roles:
        images.append(("hub", c.hub.images.hub))
    if h in c.notebook_hosts:
        images.append(("singleuser", c.hub.images.singleuser))
    return tuple(images)


def host_steps(spec: LoadedSpec, h: Host) -> tuple[Step, ...]:
    c = spec.cluster
    steps = [Step(StepKind.HOSTNAME, "hostname and cluster names in /etc/hosts", {"host": h, "hosts": c.hosts})]
    in_swarm = h.is_manager or h.is_worker
    steps.append(Step(StepKind.FIREWALL, "open the cluster's ports if a firewall is active",
                      {"ports": _ports(c, h), "sources": tuple(str(x.address) for x in c.hosts if x != h)}))
    if in_swarm:
        storage = c.docker.storage
        if storage.driver is StorageDriver.LVM:
            steps.append(Step(StepKind.DOCKER_LVM, "Docker's data root on an LVM volume of its own disk",
                              {"storage": storage, "packages": PACKAGES["lvm"]}))
        elif storage.driver is StorageDriver.DEVICEMAPPER:
            steps.append(Step(StepKind.DOCKER_THINPOOL, "LVM thin pool for devicemapper (direct-lvm)",
                              {"storage": storage, "packages": PACKAGES["thinpool"]}))
        steps.append(Step(StepKind.DOCKER_ENGINE, "Docker engine, daemon.json, no TCP API",
                          {"docker": c.docker,
                           "packages": PACKAGES["docker-repo" if c.docker.source.value == "docker-repo"
                                                else "docker-distro"]}))
    if Role.NFS_SERVER in h.roles:
        steps.append(Step(StepKind.NFS_SERVER, "NFS server exporting the shares to the cluster only",
                          {"shares": c.shares, "clients": tuple(x for x in c.hosts if x != h),
                           "packages": PACKAGES["nfs-server"]}))
    if Role.NFS_SERVER in h.roles and any(s.seed for s in c.shares):
        steps.append(Step(StepKind.SEED_SHARES, "sample data and notebooks on empty shares",
                          {"shares": tuple(s for s in c.shares if s.seed)}))
    if c.shares and in_swarm:
        steps.append(Step(StepKind.NFS_MOUNTS, "shares mounted from fstab (_netdev, reboot-safe)",
                          {"mounts": _mounts(c, h), "nfs_version": c.nfs_version,
                           "packages": PACKAGES["nfs-client"]}))
    if h == c.first_manager:
        steps.append(Step(StepKind.SWARM_INIT, "initialise the swarm", {"host": h}))
        steps.append(Step(StepKind.SWARM_NETWORK, f"overlay network {c.swarm.network}", {"swarm": c.swarm}))
    elif in_swarm:
        role = "manager" if h.is_manager else "worker"
        steps.append(Step(StepKind.SWARM_JOIN, f"join the swarm as {role}",
                          {"host": h, "role": role, "manager": c.first_manager}))
    for key, image in _images_for(c, h):
        steps.append(Step(StepKind.IMAGE, f"{key} image {image.name} ({image.source.value})",
                          {"key": key, "image": image}))
    if Role.HUB in h.roles:
        if c.hub.tls.mode is TLSMode.LETSENCRYPT:
            steps.append(Step(StepKind.LETSENCRYPT, "Let's Encrypt certificate and renewal",
                              {"hub": c.hub, "packages": PACKAGES["certbot"]}))
        steps.append(Step(StepKind.HUB, "JupyterHub stack (bundle, secrets, deploy)",
                          {"hub": c.hub, "secrets": hub_secrets(c)}))
    return tuple(steps)


def cube_tarball() -> PurePosixPath:
    """Where the NFS server expects the synthetic cube (`cablab-cluster cube --tarball`)."""
    return SEED_DIR / f"{CUBE_NAME}.tar.gz"


def host_inputs(c: Cluster, h: Host) -> tuple[str, ...]:
    """Files an operator copies to host `h` before its script runs (besides tokens and secrets)."""
    if Role.NFS_SERVER in h.roles and any(s.seed is Seed.SYNTHETIC_CUBE for s in c.shares):
        return (str(cube_tarball()),)
    return ()


def hub_secrets(c: Cluster) -> tuple[str, ...]:
    """Files the hub reads from SECRETS_DIR (as docker swarm secrets)."""
    names = ["cookie_secret", "proxy_token", "metrics_token", "github_client_secret", "tls.crt", "tls.key"]
    if c.hub.auth.lab_password:
        names.append("lab_password")
    return tuple(names)


def secret_names(c: Cluster) -> tuple[str, ...]:
    """The hub's secrets that come from the spec's secrets directory (certbot makes the TLS
    pair itself in letsencrypt mode)."""
    certbot = ("tls.crt", "tls.key") if c.hub.tls.mode is TLSMode.LETSENCRYPT else ()
    return tuple(n for n in hub_secrets(c) if n not in certbot)


def _order(c: Cluster) -> list[tuple[Host, tuple[str, ...], str]]:
    """NFS server and first manager first; other managers; workers. Spec order within a rank."""
    server, first = c.nfs_server, c.first_manager
    assert server is not None

    def rank(h: Host) -> int:
        if h == server:
            return 0
        if h == first:
            return 1
        return 2 if h.is_manager else 3

    out = []
    for h in sorted(c.hosts, key=lambda h: (rank(h), c.hosts.index(h))):
        after, why = [], []
        if h != server and c.shares:
            after.append(server.name)
            why.append("mounts its shares")
        if h != first and (h.is_manager or h.is_worker):
            after.append(first.name)
            why.append("joins its swarm")
        out.append((h, tuple(dict.fromkeys(after)), " and ".join(why)))
    return out


def make_plan(spec: LoadedSpec) -> Plan:
    c = spec.cluster
    return Plan(spec=spec, hosts=tuple(HostPlan(host=h, steps=host_steps(spec, h), after=after, why_after=why)
                                       for h, after, why in _order(c)))

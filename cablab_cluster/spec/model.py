"""The spec's model: pydantic models, enums and the path/requirement types.

Structure and types are checked here (unknown keys are errors, so typos are
caught); the rules that span several fields are in `rules`, the YAML reading
in `load`, the problems and their hints in `problems`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from .. import bundle
from ..userlist import Userlist

# --------------------------------------------------------------------------
# Model

HOSTNAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DNSNAME = r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
IMAGE_REF = r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
NAME = r"^[a-z][a-z0-9_-]{0,62}$"
# Every path that reaches a host: these characters only (no whitespace, quotes,
# `$`, `;`, `#`, `:`, `%`, backslash, newline or non-ASCII), so a path is the
# same word to the shell, to fstab/exports and to YAML.
PATH_CHARS = r"^[A-Za-z0-9._/+-]+$"
PATH_HINT = ("an absolute, normalised path of the characters A-Z a-z 0-9 . _ / + - only "
             "(no '..', '.', '//' or trailing '/'), e.g. /srv/cablab/homes")
# Where nothing of ours may be shared, mounted or exported (and everything below).
SYSTEM_TREES = tuple(PurePosixPath(p) for p in (
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
    "/sys", "/run", "/var/lib/docker", "/root"))
DOCKER_ROOT = PurePosixPath("/var/lib/docker")
SYSTEM_DIRS = tuple(PurePosixPath(p) for p in ("/", "/home", "/var", "/var/lib", "/tmp"))
# PEP 508 requirement, without markers or URLs: name[extras]<specifiers>, no spaces.
_VERSION_SPEC = r"(~=|===|==|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+"
REQUIREMENT = (r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?"
               rf"({_VERSION_SPEC}(,{_VERSION_SPEC})*)?$")


def _custom(kind: str, message: str, value: object) -> PydanticCustomError:
    # The value goes in through the context: braces in it are never read as a template.
    return PydanticCustomError(kind, "{value} " + message, {"value": repr(value)})


def _safe_path(value: object) -> PurePosixPath:
    """A host or container path: absolute, normalised, of PATH_CHARS only."""
    if not isinstance(value, str):
        raise _custom("path_type", "is not a path", value)
    if not re.match(PATH_CHARS, value) or len(value) > 4095:
        raise _custom("path_chars", "has characters a path may not have here", value)
    if not value.startswith("/"):
        raise _custom("path_chars", "is not an absolute path", value)
    parts = value.split("/")[1:]
    if value != "/" and any(p in ("", ".", "..") for p in parts):
        raise _custom("path_chars", "is not a normalised path", value)
    if any(len(p) > 255 for p in parts):
        raise _custom("path_chars", "has a component longer than 255 characters", value)
    return PurePosixPath(value)


def system_path(p: PurePosixPath) -> bool:
    """`/`, `/home` and friends, or anything in the operating system's own trees."""
    return p in SYSTEM_DIRS or any(t == p or t in p.parents for t in SYSTEM_TREES)


def _block_device(value: object) -> str:
    path = _safe_path(value)
    if path.parent == PurePosixPath("/") or PurePosixPath("/dev") not in path.parents:
        raise _custom("block_device", "is not a device under /dev", value)
    return str(path)


def _version(value: object) -> object:
    """Versions are YAML strings: 20.10 unquoted is the float 20.1, so a float is refused
    (never str()-ed); a whole number (`3`) is exact and taken as its digits."""
    if isinstance(value, float):
        raise _custom("version_number", "is a YAML number, not a version string", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _requirement(value: str) -> str:
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging is a dependency; the pattern still holds
        return value
    try:
        req = Requirement(value)
    except InvalidRequirement:
        raise _custom("requirement", "is not a pip requirement", value) from None
    if req.marker is not None or req.url is not None:
        raise _custom("requirement", "is not a plain pip requirement", value)
    return value


def _no_zone(value: object) -> object:
    if isinstance(value, str) and "%" in value:
        raise _custom("zone_id", "has a zone id (%...)", value)
    return value


# Paths on the hosts and in the containers (see PATH_HINT).
SafePath = Annotated[PurePosixPath, BeforeValidator(_safe_path)]
BlockDevice = Annotated[str, BeforeValidator(_block_device)]
PipRequirement = Annotated[str, Field(pattern=REQUIREMENT, max_length=200), AfterValidator(_requirement)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False,
                              use_attribute_docstrings=True)  # the docstring under a field describes it


class Variant(str, Enum):
    """The hosts' distribution family: which OS package family (and so firewall, SELinux) the scripts expect."""

    UBUNTU = "ubuntu"  # Debian 12, Ubuntu 22.04/24.04: apt
    CENTOS = "centos"  # Rocky/Alma/RHEL 9: dnf, SELinux, firewalld

    @property
    def family(self) -> str:
        """The OS package family the variant's hosts have (see steps/preflight.py for the distributions)."""
        return "dnf" if self is Variant.CENTOS else "apt"


class Role(str, Enum):
    MANAGER = "manager"
    WORKER = "worker"
    NFS_SERVER = "nfs-server"
    HUB = "hub"
    NOTEBOOKS = "notebooks"


class VM(Strict):
    """Size of the host when the lab builds it as a VM (ignored on real hosts)."""

    memory: int = Field(1024, ge=512)
    """MiB."""
    cpus: int = Field(1, ge=1, le=16)
    """CPUs of the VM."""
    extra_disk: int = Field(0, ge=0)
    """GiB of an extra empty disk (vdb), 0 for none."""


class Host(Strict):
    name: Annotated[str, Field(pattern=HOSTNAME)]
    """hostname: lower case letters, digits and '-'."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    """IP address used inside the cluster (no IPv6 zone id)."""
    roles: tuple[Role, ...] = Field(min_length=1)
    """one of `manager`/`worker`, plus `nfs-server`, `hub` and `notebooks`; a host with only `nfs-server` is a
    storage host outside the swarm. `notebooks` on some swarm hosts runs users' servers there only (e.g. three
    managers, the hub's host not among them); without it they run on every worker, or every manager if there are
    none."""
    vm: VM = VM()
    """sizes the host as a lab VM (ignored on real hosts)."""

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: object) -> object:
        if isinstance(value, str):
            return ipaddress.ip_address(_no_zone(value))
        return value

    @property
    def is_manager(self) -> bool:
        return Role.MANAGER in self.roles

    @property
    def is_worker(self) -> bool:
        return Role.WORKER in self.roles

    @property
    def swarm_role(self) -> Optional[Role]:
        """manager or worker; None for a storage host outside the swarm."""
        return Role.MANAGER if self.is_manager else Role.WORKER if self.is_worker else None


# 3 missed heartbeats mark a node down; the hub's poll (15 s + 10 % jitter) then finds the lost
# server: 3 x 14 + 16.5 <= 60 s, the bound the operations issue sets for noticing a lost server.
HEARTBEAT_MAX = 14


class Swarm(Strict):
    network: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")] = "swarmnet"
    """the attachable overlay network of the hub and the users' servers."""
    attachable: bool = True
    """containers outside services may join the network."""
    encrypted: bool = True
    """IPsec-encrypt the overlay's traffic between nodes (ESP, opened between the hosts by the firewall step).
    Changing it on a running cluster recreates the network: the run stops and names the commands."""
    heartbeat: Annotated[int, Field(ge=1, le=HEARTBEAT_MAX)] = 5
    """seconds between a node's heartbeats to the managers (Docker's default: 5). A node that misses three
    is marked down, and swarm moves its tasks, users' servers included, to other nodes. A longer period
    spares a CPU-starved node (many servers starting at once on few cores, or emulated VMs) from being
    marked down while alive; a lost node is then noticed later: 3 x heartbeat + the hub's poll (<= 60 s
    in all, so at most 14)."""


class EngineSource(str, Enum):
    DISTRO = "distro"  # docker.io (Debian/Ubuntu); EL has no distro Docker
    DOCKER_REPO = "docker-repo"  # Docker's own apt/dnf repository, docker-ce


class StorageDriver(str, Enum):
    OVERLAY2 = "overlay2"
    LVM = "lvm"  # LV on an extra disk, xfs ftype=1 at /var/lib/docker, overlay2
    DEVICEMAPPER = "devicemapper-direct-lvm"  # the seed's thin pool; Docker < 25 only


class ThinPool(Strict):
    autoextend_threshold: int = Field(80, ge=50, le=100)
    """percent full at which LVM extends the thin pool."""
    autoextend_percent: int = Field(20, ge=1, le=100)
    """percent the thin pool grows by each time."""


class Storage(Strict):
    driver: StorageDriver = StorageDriver.OVERLAY2
    """`overlay2` on the root disk; `lvm`: an LV on the first empty disk of `disks`, xfs ftype=1 at
    `/var/lib/docker`, overlay2; `devicemapper-direct-lvm`: the seed's thin pool + autoextend profile (Docker < 25
    only)."""
    disks: tuple[BlockDevice, ...] = ()
    """candidate block devices, first present one wins (vdb under libvirt, sdb under VirtualBox); a disk holding
    anything but our own volume group is never touched."""
    volume_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")] = "docker"
    """LVM volume group made on the disk."""
    thinpool: ThinPool = ThinPool()
    """the thin pool's autoextend profile (`devicemapper-direct-lvm` only)."""

    @field_validator("disks", mode="before")
    @classmethod
    def _one_disk(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class Docker(Strict):
    source: EngineSource = EngineSource.DISTRO
    """`distro` (`docker.io`, Debian/Ubuntu; EL has none) or `docker-repo` (Docker's own repository, `docker-ce`,
    required on EL)."""
    version: Optional[Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}([~+-][A-Za-z0-9.~+-]*)?$")]] = None
    """optional pin, a version prefix as a YAML string (`"20.10"`)."""
    storage: Storage = Storage()
    """where and how Docker keeps images and containers."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, value: object) -> object:
        return _version(value)

    @property
    def major(self) -> Optional[int]:
        return int(self.version.split(".")[0]) if self.version else None


class Seed(str, Enum):
    """What the NFS server puts on a share while it is empty (never over anything else)."""

    SYNTHETIC_CUBE = "synthetic-cube"  # `cablab-cluster cube` output, a host input of the NFS server
    SAMPLES = "samples"  # the sample notebooks shipped with cablab-cluster, in the NFS server's script


class Share(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    """referred to by `hub.users.home_share` and `read_only_mounts[].share`."""
    path: SafePath  # directory on the NFS server
    """directory on the NFS server."""
    mount: SafePath  # mount point on every host
    """mount point on every host."""
    read_only: bool = False
    """exported and mounted read-only."""
    root_squash: bool = True
    """root on the clients is mapped to nobody."""
    options: tuple[Annotated[str, Field(pattern=r"^[a-z_]+(=[A-Za-z0-9_:./-]+)?$")], ...] = ("sync", "no_subtree_check")
    """further export options (not `rw`/`ro`/`*root_squash`: set by the keys above)."""
    owner: Annotated[str, Field(pattern=r"^[0-9]+:[0-9]+$")] = "0:0"
    """numeric `uid:gid` of the share's directory (the home share's is always `0:0`: each home in it is its user's)."""
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3,4}$")] = "0755"
    """octal mode of the share's directory (the home share's is always `1733`: anyone may make a home in it, nobody
    may list it)."""
    seed: Optional[Seed] = None
    """`synthetic-cube` (`cablab-cluster cube` output) or `samples` (the sample notebooks): filled while empty,
    never over anything else."""


class ImageSource(str, Enum):
    BUILD = "build"  # docker build from the rendered Dockerfile on each node
    PULL = "pull"  # docker pull from a registry
    LOAD = "load"  # docker load of a saved tarball already on the node


class Image(Strict):
    name: Annotated[str, Field(pattern=IMAGE_REF)]
    """`repo:tag`."""
    source: ImageSource = ImageSource.BUILD
    """`build` (on each node, from the rendered Dockerfile), `pull` (from a registry) or `load` (a saved tarball
    already on the node)."""
    tarball: Optional[SafePath] = None
    """on the node, for source `load`."""
    base: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")] = "debian:bookworm-slim"
    """the image built FROM."""
    packages: tuple[PipRequirement, ...] = ()
    """extra pip requirements baked into the image (pinned by the operator)."""


VERSION = r"^[0-9]+(\.[0-9]+){1,3}$"


class HubImage(Image):
    jupyterhub: Annotated[str, Field(pattern=VERSION)] = bundle.locked("jupyterhub")
    """JupyterHub's version in the hub image: the single-user lock's (`cablab_cluster/bundle/singleuser-constraints.txt`
    pins `jupyterhub-singleuser` at it); a new version needs a new lock (`lab/images/lock-singleuser.sh`)."""


class Images(Strict):
    hub: HubImage = HubImage(name="cablab/hub:1.0")
    """the hub's image."""
    singleuser: Image = Image(name="cablab/singleuser:1.0")
    """the users' servers' image: JupyterLab, a kernel and the data-cube stack are always in it; `packages` adds to
    them."""


class GitHub(Strict):
    client_id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    """the GitHub OAuth app's client id."""
    client_secret_file: Path
    """file holding the OAuth app's client secret (mode 0600)."""
    allowed_organizations: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}(:[A-Za-z0-9][A-Za-z0-9_-]{0,99})?$")], ...] = ()
    """an organisation, or `org:team` (oauthenticator's form)."""


class Auth(Strict):
    github: GitHub
    """GitHub OAuth login."""
    lab_password: bool = False
    """lab only: userlist users may also log in with a generated shared password (GitHub is unreachable from a
    lab); refused without `lab: true`."""


class TLSMode(str, Enum):
    SELF_SIGNED = "self-signed"
    PROVIDED = "provided"
    LETSENCRYPT = "letsencrypt"


LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"


class TLS(Strict):
    mode: TLSMode = TLSMode.SELF_SIGNED
    """`self-signed` (generated), `provided` (`cert`, `key`) or `letsencrypt` (`email`, `acme_directory`; certbot
    with a deploy hook and renewal timer; port 80 answers the HTTP-01 challenge and redirects the rest)."""
    cert: Optional[Path] = None
    """provided: full chain, PEM."""
    key: Optional[Path] = None
    """provided: private key, PEM."""
    email: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")]] = None
    """letsencrypt: the contact email."""
    acme_directory: Annotated[str, Field(pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/+-]*)?$",
                                         max_length=2000)] = LETSENCRYPT_PRODUCTION
    """letsencrypt: the ACME directory URL (https)."""
    acme_ca_bundle: Optional[Path] = None
    """letsencrypt, with a private ACME server (a test CA such as pebble): PEM file of the CAs that certbot trusts
    for `acme_directory`'s HTTPS, instead of the system's (the default, unset, is right for Let's Encrypt)."""


class UserMount(Strict):
    share: Annotated[str, Field(pattern=NAME)]
    """a share's name."""
    target: SafePath  # in the user's container
    """in the user's container; a target below the home gets its mount point made by the hub."""


# --- Operating the hub: culling idle servers, per-user limits and reservations ---------
MEMORY = r"^[1-9][0-9]{0,5}[MG]$"  # 512M, 2G (MiB / GiB, as docker and JupyterHub read them)
MEMORY_HINT = "a whole number of MiB or GiB, e.g. 512M or 2G"
MIN_MEMORY = 64 << 20  # docker refuses less than 6 MiB; a notebook server needs far more
GITHUB_LOGIN = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$"


def memory_bytes(value: str) -> int:
    """`512M` / `2G` (validated by MEMORY) in bytes, 1024-based as docker and JupyterHub count."""
    return int(value[:-1]) << (20 if value[-1] == "M" else 30)


def _cpus(value: object) -> object:
    """CPUs are a YAML number (1, 0.5); `true` or "1" are refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _custom("cpus_type", "is not a number of CPUs", value)
    return value


Cpus = Annotated[float, BeforeValidator(_cpus), Field(gt=0, le=1024)]


class Resources(Strict):
    """Memory and CPUs of one user's server (unset: no limit / no reservation)."""

    memory: Optional[Annotated[str, Field(pattern=MEMORY)]] = None
    """`512M`, `2G` (MiB/GiB)."""
    cpus: Optional[Cpus] = None
    """a number, e.g. `1` or `0.5`."""


class UserResources(Strict):
    """One user's own limits/reservations; each key set here replaces the default's."""

    limits: Resources = Resources()
    """replaces the default limits, key by key."""
    reservations: Resources = Resources()
    """replaces the default reservations, key by key."""


class Cull(Strict):
    """jupyterhub-idle-culler, run by the hub: stops servers idle for `timeout` seconds."""

    enabled: bool = True
    """run jupyterhub-idle-culler as a hub service."""
    timeout: int = Field(3600, ge=60, le=30 * 86400)
    """s without activity before a server is stopped."""
    every: int = Field(300, ge=10, le=86400)
    """s between two passes (at most `timeout`; a tenth of it is usual)."""
    max_age: int = Field(0, ge=0, le=365 * 86400)
    """s after which a server is stopped even if active; 0: never."""


# Each userlist user's uid lies in [uid_base, uid_base + USERLIST_UIDS); the hub gives organisation members
# theirs from uid_base + USERLIST_UIDS up, at most ORG_UIDS of them.
USERLIST_UIDS = 100_000
ORG_UIDS = 100_000
UID_BASE_MAX = 2**31 - 1 - USERLIST_UIDS - ORG_UIDS


class Users(Strict):
    home_share: Annotated[str, Field(pattern=NAME)]
    """the share of the homes: per-user `<mount>/<user>` → `home_target`; must be writable."""
    home_target: SafePath = PurePosixPath("/home/jovyan")
    """the home in the user's container: the whole home is the user's directory on the home share, so settings,
    ~/.local and dotfiles follow the user to any node."""
    uid: int = Field(1000, ge=1, le=65533)
    """the image's own user (`jovyan`); every server ran as it before each user had a uid of their own: the NFS
    server's run moves a home it still owns to its user's uid."""
    gid: int = Field(100, ge=0, le=65533)
    """the group of every user's server (homes are 0700: the group grants nothing)."""
    uid_base: int = Field(20000, ge=1000, le=UID_BASE_MAX)
    """each userlist user's server runs as a uid of their own, from here up (kept in `secrets/<cluster>/uids.yml`
    beside the spec: never changed, never reused); members of `allowed_organizations` outside the userlist get
    theirs from the hub, from `uid_base + 100000` up."""
    read_only_mounts: tuple[UserMount, ...] = ()
    """mounted read-only into every user container (data cube, sample notebooks)."""
    cull: Cull = Cull()
    """stopping idle servers."""
    limits: Resources = Resources()
    """every server's ceiling: a kernel growing past `memory` is killed, `cpus` throttles."""
    reservations: Resources = Resources()
    """what the swarm sets aside for every server on a node (a server that no node can reserve for does not start);
    at most the limit."""
    overrides: dict[Annotated[str, Field(pattern=GITHUB_LOGIN)], UserResources] = {}
    """per userlist user (a GitHub login): other limits/reservations, each key replacing the default's."""

    def resources(self, user: Optional[str] = None) -> UserResources:
        """The limits and reservations `user`'s server gets (the defaults with the user's overrides)."""
        own = self.overrides.get(user) if user is not None else None
        if own is None:
            return UserResources(limits=self.limits, reservations=self.reservations)
        return UserResources(
            limits=self.limits.model_copy(update=own.limits.model_dump(exclude_unset=True)),
            reservations=self.reservations.model_copy(update=own.reservations.model_dump(exclude_unset=True)))


class Hub(Strict):
    public_host: Annotated[str, Field(min_length=1)]
    """DNS name (lower case) or IP address of the public URL."""
    port: int = Field(443, ge=1, le=65535)
    """the public URL's port; the OAuth callback is derived: `https://<host>[:port]/hub/oauth_callback`."""
    images: Images = Images()
    """the hub's and the users' servers' images."""
    auth: Auth
    """how users log in."""
    userlist: Path
    """file: `name` or `name admin` per line, blank lines and `#` comments allowed."""
    tls: TLS = TLS()
    """the hub's certificate."""
    users: Users
    """the users' servers."""

    @field_validator("public_host")
    @classmethod
    def _host(cls, value: str) -> str:
        _no_zone(value)
        if _is_ip(value) or re.match(DNSNAME, value):
            return value
        raise ValueError("must be a DNS name (lower case) or an IP address")

    @property
    def public_url(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"https://{host}" + ("" if self.port == 443 else f":{self.port}")

    @property
    def oauth_callback_url(self) -> str:
        return f"{self.public_url}/hub/oauth_callback"


class Cluster(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    """cluster name (lower case); names the secrets directory."""
    variant: Variant
    """the hosts' distributions: `ubuntu` Debian 12 or Ubuntu 22.04/24.04 (apt), `centos` Rocky/Alma/RHEL 9 (dnf,
    SELinux); each script's preflight refuses a host of another family (a `lab: true` spec runs on Debian stand-ins,
    with a warning)."""
    lab: bool = False
    """`true` only for lab specs: allows `hub.auth.lab_password`."""
    nfs_version: Literal["3", "4", "4.1", "4.2"] = "4.2"
    """a YAML string."""
    hosts: tuple[Host, ...] = Field(min_length=1)
    """the machines."""
    swarm: Swarm = Swarm()
    """the swarm's network."""
    docker: Docker = Docker()
    """the Docker engine on every swarm host."""
    shares: tuple[Share, ...] = ()
    """NFS shares, exported by the NFS server and mounted on every host."""
    hub: Hub
    """JupyterHub."""

    @field_validator("nfs_version", mode="before")
    @classmethod
    def _nfs_str(cls, value: object) -> object:
        return _version(value)

    # -- derived views, used by plan and render ---------------------------
    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def managers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_manager)

    @property
    def workers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_worker)

    @property
    def swarm_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_manager or h.is_worker)

    @property
    def first_manager(self) -> Host:
        """Initialises the swarm: the NFS server if it is a manager, else the first manager listed."""
        nfs = self.nfs_server
        return nfs if nfs is not None and nfs.is_manager else self.managers[0]

    @property
    def nfs_server(self) -> Optional[Host]:
        return next((h for h in self.hosts if Role.NFS_SERVER in h.roles), None)

    @property
    def hub_host(self) -> Host:
        return next(h for h in self.hosts if Role.HUB in h.roles)

    @property
    def notebook_hosts(self) -> tuple[Host, ...]:
        """Where user servers may run: the hosts with the role `notebooks`; without any, the workers, or the
        managers if there are none."""
        chosen = tuple(h for h in self.hosts if Role.NOTEBOOKS in h.roles)
        return chosen or self.workers or self.managers

    def share(self, name: str) -> Share:
        return next(s for s in self.shares if s.name == name)


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with what it refers to already read."""

    cluster: Cluster
    path: Path
    userlist: Userlist
    acme_ca: str = ""  # hub.tls.acme_ca_bundle's PEM certificates, read and checked

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else self.base_dir / p



def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True

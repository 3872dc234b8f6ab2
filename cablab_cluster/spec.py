"""Stage 1 — spec: a YAML cluster spec becomes a validated, typed model.

Structure and types are checked by pydantic (unknown keys are errors, so typos
are caught); the rules that span several fields (one NFS server, 1 or 3
managers, the hub on a manager, ...) are checked afterwards so that *every*
problem is reported at once, each with its key path, the spec line it comes
from, and a hint how to fix it.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent

from .userlist import Userlist, UserlistError, parse_userlist

# --------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, what, and how to fix it."""

    path: str
    message: str
    hint: str = ""
    line: Optional[int] = None  # 1-based line in the spec file

    def format(self, source: str = "") -> str:
        where = f"{source}:{self.line}: " if source and self.line else (f"{source}: " if source else "")
        text = f"{where}{self.path}: {self.message}"
        text = f"{text} (hint: {self.hint})" if self.hint else text
        # A last guard: a problem is one readable line, whatever the input held.
        return excerpt(text, MAX_LINE)


MAX_LINE = 1000  # characters of one problem line
MAX_ECHO = 60  # characters of a user's value echoed in a message


def excerpt(value: object, limit: int = MAX_ECHO) -> str:
    """`value` as one line of at most `limit` characters (+ '…'), control characters escaped."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: object, limit: int = MAX_ECHO) -> str:
    """A user's value for a message: repr-quoted and cut to `limit` characters (quotes kept)."""
    text = repr(value)
    if len(text) <= limit + 2:
        return text
    close = text[-1] if text[-1] in "'\"" else ""
    return text[:limit + 1] + "…" + close


class SpecError(Exception):
    """The spec is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(p.format(source) for p in problems))

    def lines(self) -> list[str]:
        return [p.format(self.source) for p in self.problems]


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
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Variant(str, Enum):
    UBUNTU = "ubuntu"
    CENTOS = "centos"


class Role(str, Enum):
    MANAGER = "manager"
    WORKER = "worker"
    NFS_SERVER = "nfs-server"
    HUB = "hub"


class VM(Strict):
    """Size of the host when the lab builds it as a VM (ignored on real hosts)."""

    memory: int = Field(1024, ge=512, description="MiB")
    cpus: int = Field(1, ge=1, le=16)
    extra_disk: int = Field(0, ge=0, description="GiB of an extra empty disk (vdb), 0 for none")


class Host(Strict):
    name: Annotated[str, Field(pattern=HOSTNAME)]
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    roles: tuple[Role, ...] = Field(min_length=1)
    vm: VM = VM()

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


class Swarm(Strict):
    network: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")] = "swarmnet"
    attachable: bool = True
    encrypted: bool = False


class EngineSource(str, Enum):
    DISTRO = "distro"  # docker.io (Debian/Ubuntu); EL has no distro Docker
    DOCKER_REPO = "docker-repo"  # Docker's own apt/dnf repository, docker-ce


class StorageDriver(str, Enum):
    OVERLAY2 = "overlay2"
    LVM = "lvm"  # LV on an extra disk, xfs ftype=1 at /var/lib/docker, overlay2
    DEVICEMAPPER = "devicemapper-direct-lvm"  # the seed's thin pool; Docker < 25 only


class ThinPool(Strict):
    autoextend_threshold: int = Field(80, ge=50, le=100)
    autoextend_percent: int = Field(20, ge=1, le=100)


class Storage(Strict):
    driver: StorageDriver = StorageDriver.OVERLAY2
    # Candidate block devices, first present one wins (vdb under libvirt,
    # sdb under VirtualBox). A disk holding anything but our own volume group
    # is never touched.
    disks: tuple[BlockDevice, ...] = ()
    volume_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")] = "docker"
    thinpool: ThinPool = ThinPool()

    @field_validator("disks", mode="before")
    @classmethod
    def _one_disk(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class Docker(Strict):
    source: EngineSource = EngineSource.DISTRO
    version: Optional[Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}([~+-][A-Za-z0-9.~+-]*)?$")]] = None
    storage: Storage = Storage()

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
    path: SafePath  # directory on the NFS server
    mount: SafePath  # mount point on every host
    read_only: bool = False
    root_squash: bool = True
    options: tuple[Annotated[str, Field(pattern=r"^[a-z_]+(=[A-Za-z0-9_:./-]+)?$")], ...] = ("sync", "no_subtree_check")
    owner: Annotated[str, Field(pattern=r"^[0-9]+:[0-9]+$")] = "0:0"
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3,4}$")] = "0755"
    seed: Optional[Seed] = None


class ImageSource(str, Enum):
    BUILD = "build"  # docker build from the rendered Dockerfile on each node
    PULL = "pull"  # docker pull from a registry
    LOAD = "load"  # docker load of a saved tarball already on the node


class Image(Strict):
    name: Annotated[str, Field(pattern=IMAGE_REF)]
    source: ImageSource = ImageSource.BUILD
    tarball: Optional[SafePath] = None  # on the node, for source: load
    base: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")] = "debian:bookworm-slim"
    # Extra pip requirements baked into the image (pinned by the operator).
    packages: tuple[PipRequirement, ...] = ()


class Images(Strict):
    hub: Image = Image(name="cablab/hub:1.0")
    # JupyterLab, a kernel and the data-cube stack are always in it (render.SINGLEUSER_STACK);
    # `packages` adds to them.
    singleuser: Image = Image(name="cablab/singleuser:1.0")


class GitHub(Strict):
    client_id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    client_secret_file: Path
    # An organisation, or org:team (oauthenticator's form).
    allowed_organizations: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}(:[A-Za-z0-9][A-Za-z0-9_-]{0,99})?$")], ...] = ()


class Auth(Strict):
    github: GitHub
    # Lab only: userlist users may also log in with a generated shared password
    # (GitHub is unreachable from a lab). A spec without `lab: true` is refused.
    lab_password: bool = False


class TLSMode(str, Enum):
    SELF_SIGNED = "self-signed"
    PROVIDED = "provided"
    LETSENCRYPT = "letsencrypt"


LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"


class TLS(Strict):
    mode: TLSMode = TLSMode.SELF_SIGNED
    cert: Optional[Path] = None  # provided: full chain, PEM
    key: Optional[Path] = None  # provided: private key, PEM
    email: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")]] = None
    acme_directory: Annotated[str, Field(pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/+-]*)?$",
                                         max_length=2000)] = LETSENCRYPT_PRODUCTION


class UserMount(Strict):
    share: Annotated[str, Field(pattern=NAME)]
    target: SafePath  # in the user's container


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
    cpus: Optional[Cpus] = None


class UserResources(Strict):
    """One user's own limits/reservations; each key set here replaces the default's."""

    limits: Resources = Resources()
    reservations: Resources = Resources()


class Cull(Strict):
    """jupyterhub-idle-culler, run by the hub: stops servers idle for `timeout` seconds."""

    enabled: bool = True
    timeout: int = Field(3600, ge=60, le=30 * 86400)  # s without activity before a server is stopped
    every: int = Field(300, ge=10, le=86400)  # s between two passes
    max_age: int = Field(0, ge=0, le=365 * 86400)  # s after which a server is stopped even if active; 0: never


class Users(Strict):
    home_share: Annotated[str, Field(pattern=NAME)]
    # The whole home is the user's directory on the home share: settings, ~/.local and
    # dotfiles follow the user to any node (in the user's container).
    home_target: SafePath = PurePosixPath("/home/jovyan")
    uid: int = Field(1000, ge=1)
    gid: int = Field(100, ge=0)
    # Mounted read-only into every user container (data cube, sample notebooks).
    read_only_mounts: tuple[UserMount, ...] = ()
    cull: Cull = Cull()
    # Every server's ceiling (killed / throttled beyond it) and what the swarm sets aside
    # for it on a node (a server that no node can reserve for does not start).
    limits: Resources = Resources()
    reservations: Resources = Resources()
    # Per user (a userlist name): other limits/reservations, key by key.
    overrides: dict[Annotated[str, Field(pattern=GITHUB_LOGIN)], UserResources] = {}

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
    port: int = Field(443, ge=1, le=65535)
    images: Images = Images()
    auth: Auth
    userlist: Path
    tls: TLS = TLS()
    users: Users

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
    variant: Variant
    lab: bool = False
    nfs_version: Literal["3", "4", "4.1", "4.2"] = "4.2"
    hosts: tuple[Host, ...] = Field(min_length=1)
    swarm: Swarm = Swarm()
    docker: Docker = Docker()
    shares: tuple[Share, ...] = ()
    hub: Hub

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
        """Where user servers may run: the workers, or the managers if there are none."""
        return self.workers or self.managers

    def share(self, name: str) -> Share:
        return next(s for s in self.shares if s.name == name)


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with what it refers to already read."""

    cluster: Cluster
    path: Path
    userlist: Userlist

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else self.base_dir / p


# --------------------------------------------------------------------------
# Loading


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class _NoAliasComposer(Composer):
    """Refuses anchors and aliases before anything is expanded: a spec has no use
    for them, and nested aliases ("billion laughs") expand exponentially."""

    def compose_node(self, parent: object, index: object) -> object:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, "anchors and aliases (&name, *name, <<: *name) are not allowed in a spec",
                                event.start_mark)
        return super().compose_node(parent, index)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")  # round-trip: keeps line/column of every node
    yaml.allow_duplicate_keys = False
    yaml.Composer = _NoAliasComposer
    yaml.max_depth = 50  # a spec nests about 5 deep
    return yaml


MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a 100-host spec is about 20 KiB
MAX_USERLIST_BYTES = 256 << 10  # 256 KiB: about 6000 users


class InputFileError(ValueError):
    """A file the spec needs is missing, not a regular file, too large, not UTF-8, or unreadable."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_input(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (never blocks on a FIFO or device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory itself
        os.close(fd)
        raise InputFileError(path, f"not a regular file: not a {what}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputFileError(path, f"cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise InputFileError(path, f"larger than {_size(limit)}: not a {what}")
    return data


def read_text(path: Path, limit: int, what: str = "file") -> str:
    """`read_input` decoded as UTF-8, or an InputFileError naming the file."""
    data = read_input(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not UTF-8 text (byte {exc.start})") from None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def load_spec(path: Path | str) -> LoadedSpec:
    """Read, parse and validate a spec file. Raises SpecError with every problem."""
    path = Path(path)
    try:
        text = read_text(path, MAX_SPEC_BYTES, "spec")
    except InputFileError as exc:
        raise SpecError([Problem("(file)", exc.reason, "give the path of a cluster spec: "
                                                       "a YAML file (UTF-8) of at most 1 MiB")], str(path)) from None
    return loads_spec(text, path)


def loads_spec(text: str, path: Path) -> LoadedSpec:
    source = str(path)
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([Problem("(file)", f"larger than {_size(MAX_SPEC_BYTES)}: not a spec",
                                 "a cluster spec is a few KiB of YAML")], source)
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        hint = ("write the value out where it is used" if "alias" in str(exc.problem) else "fix the YAML syntax")
        raise SpecError([Problem("(yaml)", f"not valid YAML: {excerpt(exc.problem, 200)}", hint, line)],
                        source) from None
    except Exception as exc:  # duplicate keys and friends
        raise SpecError([Problem("(yaml)", f"not valid YAML: {excerpt(exc, 200)}", "fix the YAML syntax")],
                        source) from None
    if not isinstance(data, dict):
        raise SpecError([Problem("(top)", "the spec must be a mapping of keys", "start from `cablab-cluster init`")], source)

    try:
        cluster = Cluster.model_validate(_plain(data))
    except ValidationError as exc:
        raise SpecError([_from_pydantic(err, data) for err in exc.errors()], source) from None

    problems = [_with_line(p, data) for p in cross_checks(cluster)]
    userlist = None
    upath = cluster.hub.userlist if cluster.hub.userlist.is_absolute() else path.parent / cluster.hub.userlist
    try:
        userlist = parse_userlist(read_text(upath, MAX_USERLIST_BYTES, "userlist"), str(upath))
    except InputFileError as exc:
        problems.append(_with_line(Problem("hub.userlist", str(exc),
                                           "a userlist is a UTF-8 text file: one GitHub user per line, "
                                           "`name admin` for admins"), data))
    except UserlistError as exc:
        for err in exc.errors:
            problems.append(_with_line(Problem("hub.userlist", err, "each line is `name` or `name admin`; "
                                                                     "# starts a comment"), data))
    else:
        for name in cluster.hub.users.overrides if userlist.users else ():
            if name.lower() not in {u.name.lower() for u in userlist.users}:
                problems.append(_with_line(Problem(f"hub.users.overrides.{name}", f"{name!r} is not in the userlist "
                                                   f"{upath.name}", "add the user to the userlist, or remove the "
                                                   "override"), data))
        if not userlist.users:
            problems.append(_with_line(Problem("hub.userlist", f"{upath} names no user; JupyterHub would admit nobody",
                                               "add at least one GitHub user, e.g. `alice admin`"), data))
    problems += [_with_line(p, data) for p in _file_checks(cluster, path.parent)]
    if problems:
        raise SpecError(problems, source)
    assert userlist is not None
    return LoadedSpec(cluster=cluster, path=path, userlist=userlist)


def _plain(node: object) -> object:
    """ruamel's commented containers → plain dicts/lists (pydantic wants plain)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# --------------------------------------------------------------------------
# Cross-field rules


def cross_checks(c: Cluster) -> list[Problem]:
    """Rules that involve more than one field. Each returns a path, message and hint."""
    out: list[Problem] = []
    names: dict[str, int] = {}
    addrs: dict[str, int] = {}
    for i, h in enumerate(c.hosts):
        if h.name in names:
            out.append(Problem(f"hosts[{i}].name", f"{h.name!r} is already the name of hosts[{names[h.name]}]",
                               "give every host a unique name"))
        names.setdefault(h.name, i)
        if str(h.address) in addrs:
            out.append(Problem(f"hosts[{i}].address", f"{h.address} is already the address of hosts[{addrs[str(h.address)]}]",
                               "give every host its own address"))
        addrs.setdefault(str(h.address), i)
        if len(set(h.roles)) != len(h.roles):
            out.append(Problem(f"hosts[{i}].roles", "a role is listed twice", "list each role once"))
        swarm_roles = {Role.MANAGER, Role.WORKER} & set(h.roles)
        storage_only = set(h.roles) == {Role.NFS_SERVER}
        if len(swarm_roles) != 1 and not storage_only:
            out.append(Problem(f"hosts[{i}].roles", "needs exactly one of `manager` or `worker`",
                               "a swarm node is `manager` or `worker` (not both); only a storage host outside "
                               "the swarm has `nfs-server` alone"))
        if Role.NFS_SERVER in h.roles and Role.WORKER in h.roles:
            out.append(Problem(f"hosts[{i}].roles", "an NFS server cannot be a swarm worker: the managers mount its "
                                                    "shares before it could join (it needs their join token)",
                               "make the NFS server a manager, or a storage host outside the swarm "
                               "(roles: [nfs-server])"))

    managers = [i for i, h in enumerate(c.hosts) if h.is_manager]
    if len(managers) not in (1, 3):
        why = ("2 managers need both alive for a raft quorum, so they tolerate no failure and are worse than 1"
               if len(managers) == 2 else f"{len(managers)} managers")
        out.append(Problem("hosts", f"{len(managers)} managers: swarm needs 1 or 3 ({why})",
                           "make 1 host a manager (simple) or 3 (tolerates one failure)"))

    nfs = [i for i, h in enumerate(c.hosts) if Role.NFS_SERVER in h.roles]
    if len(nfs) != 1:
        out.append(Problem("hosts", f"{len(nfs)} hosts have the role nfs-server; exactly one must",
                           "add `nfs-server` to the roles of one host"))
    hubs = [i for i, h in enumerate(c.hosts) if Role.HUB in h.roles]
    if len(hubs) != 1:
        out.append(Problem("hosts", f"{len(hubs)} hosts have the role hub; exactly one must",
                           "add `hub` to the roles of one manager"))
    for i in hubs:
        if not c.hosts[i].is_manager:
            out.append(Problem(f"hosts[{i}].roles", "the hub must run on a manager (it creates swarm services)",
                               "add `hub` to a manager's roles instead"))

    storage = c.docker.storage
    if storage.driver is not StorageDriver.OVERLAY2 and not storage.disks:
        out.append(Problem("docker.storage.disks", f"storage driver {storage.driver.value} needs a disk",
                           "name the extra disk, e.g. `disks: [/dev/vdb, /dev/sdb]`"))
    if storage.driver is StorageDriver.DEVICEMAPPER and (c.docker.major is None or c.docker.major >= 25):
        got = f"version {c.docker.version}" if c.docker.version else "no version pin"
        out.append(Problem("docker.version", f"devicemapper-direct-lvm needs Docker < 25 ({got}); "
                                             "Docker 25 removed the devicemapper driver",
                           "pin an older engine (e.g. `version: \"20.10\"`) or use `storage.driver: lvm`"))

    share_names: dict[str, int] = {}
    for i, s in enumerate(c.shares):
        if s.name in share_names:
            out.append(Problem(f"shares[{i}].name", f"{s.name!r} is already the name of shares[{share_names[s.name]}]",
                               "give every share a unique name"))
        share_names.setdefault(s.name, i)
        if DOCKER_ROOT == s.mount or DOCKER_ROOT in s.mount.parents:
            out.append(Problem(f"shares[{i}].mount", "NFS must never be mounted over Docker's data root: "
                                                     "Docker's volume database is per daemon",
                               "mount the share elsewhere, e.g. /srv/cablab/<name>"))
        elif system_path(s.mount):
            out.append(Problem(f"shares[{i}].mount", f"{s.mount} is a system directory; mounting a share there "
                                                     "would hide or replace the system's own files",
                               f"mount the share in a directory of its own, e.g. /srv/cablab/{s.name}"))
        if system_path(s.path):
            out.append(Problem(f"shares[{i}].path", f"{s.path} is a system directory; the NFS server would chown "
                                                    "and export it to the cluster",
                               f"share a directory of its own, e.g. /srv/nfs/{s.name}"))
        for opt in s.options:
            if opt.split("=")[0] in {"rw", "ro", "root_squash", "no_root_squash", "all_squash"}:
                out.append(Problem(f"shares[{i}].options", f"{opt!r} is set by `read_only` / `root_squash`",
                                   "remove it from options and use those keys"))
    for kind in Seed:
        seeded = [i for i, s in enumerate(c.shares) if s.seed is kind]
        for i in seeded[1:]:
            out.append(Problem(f"shares[{i}].seed", f"shares[{seeded[0]}] is already seeded with {kind.value}",
                               "seed one share with each"))
    mounts = [s.mount for s in c.shares]
    if len(set(mounts)) != len(mounts):
        out.append(Problem("shares", "two shares use the same mount point", "give every share its own mount"))

    users = c.hub.users
    if users.home_share not in share_names:
        out.append(Problem("hub.users.home_share", f"no share named {users.home_share!r}",
                           f"use one of: {', '.join(share_names) or '(define shares first)'}"))
    elif c.shares[share_names[users.home_share]].read_only:
        out.append(Problem("hub.users.home_share", f"share {users.home_share!r} is read-only; homes must be writable",
                           "set `read_only: false` on it or pick another share"))
    targets = [users.home_target]
    target_keys = ["hub.users.home_target"]
    for i, m in enumerate(users.read_only_mounts):
        if m.share not in share_names:
            out.append(Problem(f"hub.users.read_only_mounts[{i}].share", f"no share named {m.share!r}",
                               f"use one of: {', '.join(share_names) or '(define shares first)'}"))
        targets.append(m.target)
        target_keys.append(f"hub.users.read_only_mounts[{i}].target")
    for key, target in zip(target_keys, targets):
        if system_path(target):
            out.append(Problem(key, f"{target} is a system directory of the user's container",
                               "mount it in a directory of its own, e.g. /home/jovyan/data"))
    if len(set(targets)) != len(targets):
        out.append(Problem("hub.users", "two user mounts use the same target", "give each mount its own target"))

    out += _operation_checks(users)

    tls = c.hub.tls
    if tls.mode is TLSMode.LETSENCRYPT:
        if _is_ip(c.hub.public_host):
            out.append(Problem("hub.public_host", "Let's Encrypt issues certificates for DNS names, not IP addresses",
                               "use a DNS name that resolves to the hub host, or `tls.mode: self-signed`"))
        if not tls.email:
            out.append(Problem("hub.tls.email", "letsencrypt needs a contact email", "add `email: you@example.org`"))
    if tls.mode is TLSMode.PROVIDED:
        for key in ("cert", "key"):
            if getattr(tls, key) is None:
                out.append(Problem(f"hub.tls.{key}", f"tls mode `provided` needs `{key}`",
                                   f"give the path of the PEM {'full chain' if key == 'cert' else 'private key'}"))
    else:
        for key in ("cert", "key"):
            if getattr(tls, key) is not None:
                out.append(Problem(f"hub.tls.{key}", f"cert/key are only read in mode `provided` "
                                                     f"(mode is {tls.mode.value})",
                                   "remove them or set `mode: provided`"))

    if c.hub.auth.lab_password and not c.lab:
        out.append(Problem("hub.auth.lab_password", "the lab password login is for lab clusters only",
                           "remove `lab_password` (real clusters log in with GitHub), or set `lab: true` on a lab spec"))

    for key, image in (("hub", c.hub.images.hub), ("singleuser", c.hub.images.singleuser)):
        if image.source is ImageSource.LOAD and image.tarball is None:
            out.append(Problem(f"hub.images.{key}.tarball", "source `load` needs the tarball's path on the nodes",
                               "add `tarball: /var/cache/cablab/images/<name>.tar`"))
        if image.tarball is not None and image.tarball == PurePosixPath("/"):
            out.append(Problem(f"hub.images.{key}.tarball", "/ is a directory, not a saved image",
                               "give the file, e.g. `tarball: /var/cache/cablab/images/<name>.tar`"))
        if image.source is not ImageSource.LOAD and image.tarball is not None:
            out.append(Problem(f"hub.images.{key}.tarball", f"a tarball is only read with source `load` "
                                                            f"(source is {image.source.value})",
                               "remove it or set `source: load`"))
    return out


def _operation_checks(users: Users) -> list[Problem]:
    """Culling and resources: a pass at least once per timeout, memory sizes a server can
    live with, and nothing reserved beyond its limit (by default and for each override)."""
    out = []
    cull = users.cull
    if cull.enabled and cull.every > cull.timeout:
        out.append(Problem("hub.users.cull.every", f"a pass every {cull.every} s is longer than the idle timeout "
                                                   f"({cull.timeout} s): servers would live up to twice as long",
                           f"set `every` to at most {cull.timeout} (a tenth of the timeout is usual)"))
    scopes = [("hub.users", None)] + [(f"hub.users.overrides.{name}", name) for name in users.overrides]
    for key, name in scopes:
        own = users.overrides.get(name) if name else None
        for part in ("limits", "reservations"):
            res = getattr(own if own else users, part)
            if res.memory is not None and memory_bytes(res.memory) < MIN_MEMORY:
                out.append(Problem(f"{key}.{part}.memory", f"{res.memory} is too little for a notebook server",
                                   "give at least 64M (a server with a kernel needs about 200M)"))
        eff = users.resources(name)
        lim, res = eff.limits, eff.reservations
        if lim.memory and res.memory and memory_bytes(res.memory) > memory_bytes(lim.memory):
            out.append(Problem(f"{key}.reservations.memory", f"reserves {res.memory}, more than the limit "
                                                             f"{lim.memory}", "reserve at most the limit"))
        if lim.cpus is not None and res.cpus is not None and res.cpus > lim.cpus:
            out.append(Problem(f"{key}.reservations.cpus", f"reserves {res.cpus:g} CPUs, more than the limit "
                                                           f"{lim.cpus:g}", "reserve at most the limit"))
    return out


def _is_file(p: Path) -> bool:
    """Path.is_file() that says no, not OSError, for a name the system refuses (too long, ...)."""
    try:
        return p.is_file()
    except OSError:
        return False


def _file_checks(c: Cluster, base: Path) -> list[Problem]:
    """Files the spec points to on the operator's machine must exist."""
    out = []
    secret = c.hub.auth.github.client_secret_file
    if not _is_file(secret if secret.is_absolute() else base / secret):
        out.append(Problem("hub.auth.github.client_secret_file", f"{quoted(str(secret))} does not exist",
                           "save the GitHub OAuth app's client secret in that file (mode 0600)"))
    if c.hub.tls.mode is TLSMode.PROVIDED:
        for key in ("cert", "key"):
            p = getattr(c.hub.tls, key)
            if p is not None and not _is_file(p if p.is_absolute() else base / p):
                out.append(Problem(f"hub.tls.{key}", f"{quoted(str(p))} does not exist",
                                   "give the path of an existing PEM file"))
    return out


# --------------------------------------------------------------------------
# Error locations → key paths, lines and hints


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _parse_path(path: str) -> tuple:
    parts: list = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _line(data: object, loc: tuple) -> Optional[int]:
    """1-based line of the deepest node of `loc` that exists in the YAML."""
    node, line = data, None
    for part in loc:
        try:
            if isinstance(node, dict) and part in node:
                line = node.lc.key(part)[0] + 1  # type: ignore[attr-defined]
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1  # type: ignore[attr-defined]
                node = node[part]
            else:
                break
        except (AttributeError, KeyError, TypeError):
            break
    return line


def _with_line(p: Problem, data: object) -> Problem:
    return Problem(p.path, p.message, p.hint, _line(data, _parse_path(p.path)))


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The model class that owns the mapping at `loc` (to suggest valid keys)."""
    model: object = Cluster
    keyed = False  # the previous part was a mapping of names (e.g. hub.users.overrides): skip the name
    for part in loc:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        keyed = typing.get_origin(annotation) is dict
        model = _unwrap(typing.get_args(annotation)[1] if keyed else annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(tp: object) -> object:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType, tuple, list):
            args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else (args[0] if args else tp)
            if not models and len(args) != 1:
                return tp
        else:
            return tp


HINTS = {
    "missing": "add this key",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number",
    "int_parsing": "write a whole number",
    "ip_address": "write an IP address, e.g. 192.168.56.11",
    "ip_any_address": "write an IP address, e.g. 192.168.56.11",
    "ipv4": "write an IP address, e.g. 192.168.56.11",
    "tuple_type": "write a YAML list, e.g. [a, b]",
    "list_type": "write a YAML list, e.g. [a, b]",
    "model_type": "write a mapping of keys",
    "model_attributes_type": "write a mapping of keys",
    "path_type": PATH_HINT,
    "path_chars": PATH_HINT,
    "block_device": "a block device path such as /dev/vdb",
    "version_number": 'quote it: `version: "20.10"`, `nfs_version: "4.2"` (unquoted, 20.10 is the number 20.1)',
    "requirement": "a pip requirement: name[extras] and version specifiers, no spaces, quotes, markers or URLs, "
                   "e.g. jupyterlab==4.2.5",
    "zone_id": "write the address without a zone id (%eth0): the cluster's addresses are global ones",
    "cpus_type": "write a number of CPUs, e.g. 1 or 0.5",
}


def _from_pydantic(err: dict, data: object) -> Problem:
    loc = tuple(err["loc"])
    # Drop pydantic's union branch names (e.g. 'IPv4Address') from the location.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
    kind = err["type"]
    message = err["msg"]
    hint = HINTS.get(kind, "")
    if kind == "extra_forbidden":
        key = loc[-1]
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(key), allowed, n=1)
        message = f"unknown key {quoted(key)}"
        hint = (f"did you mean {close[0]!r}?" if close else "") + (f" valid keys: {', '.join(allowed)}" if allowed else "")
        hint = hint.strip()
    elif kind == "enum":
        message = f"{quoted(err.get('input'))} is not allowed"
        hint = f"use one of: {err['ctx']['expected']}"
    elif kind == "string_pattern_mismatch":
        message = f"{quoted(err.get('input'))} is not valid here"
        hint = _pattern_hint(loc)
    elif kind.startswith("ip_") or kind.startswith("ipv") or kind == "value_error" and "address" in str(loc[-1:]):
        message = f"{quoted(err.get('input'))} is not an IP address"
        hint = HINTS["ip_address"]
    elif kind == "literal_error":
        message = f"{quoted(err.get('input'))} is not allowed"
        hint = f"use one of: {err['ctx']['expected']}"
    elif kind == "value_error":
        message = str(err["ctx"]["error"]) if "ctx" in err else message
    return Problem(_path(loc), message, hint, _line(data, loc))


def _pattern_hint(loc: tuple) -> str:
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    return {
        "name": "lower case letters, digits and '-' (a hostname or identifier)",
        "client_id": "the GitHub OAuth app's client id (letters, digits, '.', '_', '-')",
        "disks": "a block device path such as /dev/vdb",
        "version": "a version like 20.10 or 24.0.7",
        "owner": "numeric uid:gid, e.g. 1000:100",
        "mode": "an octal mode, e.g. 0755",
        "email": "an email address",
        "acme_directory": "an https:// URL of an ACME directory (A-Z a-z 0-9 . - _ ~ / + in the path)",
        "packages": "a pip requirement: name[extras] and version specifiers, no spaces, quotes, markers or URLs, "
                    "e.g. jupyterlab==4.2.5",
        "allowed_organizations": "a GitHub organisation, or org:team",
        "memory": MEMORY_HINT,
        "[key]": "a GitHub login (letters, digits, single '-' between them) of the userlist",
    }.get(str(last), "see the spec reference in the README")

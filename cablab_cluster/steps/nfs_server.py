"""The NFS server: each share exported to the cluster's other hosts only; the users' homes
made and owned by their own uids, as root here (root_squash stops the hub from chowning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..spec import Cluster, Host, Role, Share
from ..spec.model import USERLIST_UIDS
from . import register
from .firewall import NFS3_PORTS

NFS_CONF = "/etc/nfs.conf.d/cablab.conf"  # NFSv3's side services on the ports the firewall opens

if TYPE_CHECKING:
    from ..render import Renderer

# The home share's own directory: root's, and anyone may create in it (the hub makes an
# organisation member's home as their uid, through root_squash) but nobody may list it or
# remove another's entry (sticky). Each home in it is its user's, 0700.
HOMES_OWNER = "0:0"
HOMES_MODE = "1733"


@dataclass(frozen=True)
class Homes:
    path: str  # the home share's directory here
    gid: int
    legacy_uid: int  # the image's uid: every home belonged to it before per-user uids
    org_first: int  # the hub's range for organisation members: a home of such a uid moves to a map uid


@dataclass(frozen=True)
class Params:
    shares: tuple[Share, ...]
    clients: tuple[Host, ...]
    nfs_version: str
    homes: Homes


def exports(p: Params) -> list[str]:
    """/etc/exports lines (their fields are validated: no whitespace, no newline)."""
    lines = []
    for s in p.shares:
        opts = ["ro" if s.read_only else "rw", *s.options, "root_squash" if s.root_squash else "no_root_squash"]
        if p.clients:
            lines.append(f"{s.path} " + " ".join(f"{h.address}({','.join(opts)})" for h in p.clients))
        else:
            lines.append(f"# {s.path}: no other host to export to")
    return lines


def params(c: Cluster, h: Host) -> Params:
    users = c.hub.users
    home = c.share(users.home_share)
    shares = tuple(s.model_copy(update={"owner": HOMES_OWNER, "mode": HOMES_MODE}) if s is home else s for s in c.shares)
    return Params(shares=shares, clients=tuple(x for x in c.hosts if x != h), nfs_version=c.nfs_version,
                  homes=Homes(path=str(home.path), gid=users.gid, legacy_uid=users.uid,
                              org_first=users.uid_base + USERLIST_UIDS))


def nfs_conf() -> list[str]:
    """nfs.conf(5) lines pinning mountd, statd and lockd (NFSv3 only; NFSv4 needs 2049 alone)."""
    return ["# Written by cablab-cluster (step nfs_server): NFSv3's side services on fixed ports,",
            "# the ones the firewall step opens to the cluster's hosts.",
            "[mountd]", f"port={NFS3_PORTS['mountd']}",
            "[statd]", f"port={NFS3_PORTS['statd']}",
            "[lockd]", f"port={NFS3_PORTS['lockd']}", f"udp-port={NFS3_PORTS['lockd']}"]


def home_owners(r: Renderer) -> list[tuple[str, int]]:
    """(name, uid) of every userlist user: their home's directory name and owner."""
    return [(name, r.uids.of(name)) for name in sorted({n.lower() for n in r.plan.spec.userlist.allowed})]


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"exports": exports(p), "nfs_conf": nfs_conf() if p.nfs_version == "3" else [], "nfs_conf_path": NFS_CONF,
            "home_owners": home_owners(r)}


STEP = register(
    __name__, kind="nfs_server", order=60, title="NFS server exporting the shares to the cluster only",
    applies=lambda c, h: Role.NFS_SERVER in h.roles, params=params, context=context,
    packages={"apt": ("nfs-kernel-server",), "dnf": ("nfs-utils",)},
)

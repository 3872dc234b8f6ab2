"""The NFS server: each share exported to the cluster's other hosts only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..spec import Cluster, Host, Role, Share
from . import register
from .firewall import NFS3_PORTS

NFS_CONF = "/etc/nfs.conf.d/cablab.conf"  # NFSv3's side services on the ports the firewall opens

if TYPE_CHECKING:
    from ..render import Renderer


@dataclass(frozen=True)
class Params:
    shares: tuple[Share, ...]
    clients: tuple[Host, ...]
    nfs_version: str


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
    return Params(shares=tuple(c.shares), clients=tuple(x for x in c.hosts if x != h), nfs_version=c.nfs_version)


def nfs_conf() -> list[str]:
    """nfs.conf(5) lines pinning mountd, statd and lockd (NFSv3 only; NFSv4 needs 2049 alone)."""
    return ["# Written by cablab-cluster (step nfs_server): NFSv3's side services on fixed ports,",
            "# the ones the firewall step opens to the cluster's hosts.",
            "[mountd]", f"port={NFS3_PORTS['mountd']}",
            "[statd]", f"port={NFS3_PORTS['statd']}",
            "[lockd]", f"port={NFS3_PORTS['lockd']}", f"udp-port={NFS3_PORTS['lockd']}"]


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"exports": exports(p), "nfs_conf": nfs_conf() if p.nfs_version == "3" else [], "nfs_conf_path": NFS_CONF}


STEP = register(
    __name__, kind="nfs_server", order=60, title="NFS server exporting the shares to the cluster only",
    applies=lambda c, h: Role.NFS_SERVER in h.roles, params=params, context=context,
    packages={"apt": ("nfs-kernel-server",), "dnf": ("nfs-utils",)},
)

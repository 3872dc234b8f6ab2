"""The NFS server: each share exported to the cluster's other hosts only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..spec import Cluster, Host, Role, Share
from . import register

if TYPE_CHECKING:
    from ..render import Renderer


@dataclass(frozen=True)
class Params:
    shares: tuple[Share, ...]
    clients: tuple[Host, ...]


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
    return Params(shares=tuple(c.shares), clients=tuple(x for x in c.hosts if x != h))


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"exports": exports(p)}


STEP = register(
    __name__, kind="nfs_server", order=60, title="NFS server exporting the shares to the cluster only",
    applies=lambda c, h: Role.NFS_SERVER in h.roles, params=params, context=context,
    packages={"apt": ("nfs-kernel-server",), "dnf": ("nfs-utils",)},
)

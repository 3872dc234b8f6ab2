"""The shares mounted from fstab on every swarm host (NFS, or a bind on the server itself)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Mapping

from ..spec import Cluster, Host, Share
from . import register

if TYPE_CHECKING:
    from ..render import Renderer


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


@dataclass(frozen=True)
class Params:
    mounts: tuple[Mount, ...]
    nfs_version: str


def mounts(c: Cluster, h: Host) -> tuple[Mount, ...]:
    server = c.nfs_server
    assert server is not None
    if h == server:
        return tuple(Mount(share=s, source=str(s.path), bind=True) for s in c.shares if s.mount != s.path)
    addr = f"[{server.address}]" if server.address.version == 6 else str(server.address)
    return tuple(Mount(share=s, source=f"{addr}:{s.path}", bind=False) for s in c.shares)


def mount_options(m: Mount, nfs_version: str) -> str:
    access = "ro" if m.share.read_only else "rw"
    if m.bind:
        return f"bind,{access}" if m.share.read_only else "bind"
    return f"nfsvers={nfs_version},{access},hard,noatime,_netdev"


def fstab(p: Params) -> list[str]:
    """fstab lines of the mounts (their fields are validated: no whitespace, no newline)."""
    return [f"{m.source} {m.target} {m.fstype} {mount_options(m, p.nfs_version)} 0 0" for m in p.mounts]


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"fstab": fstab(p)}


STEP = register(
    __name__, kind="nfs_mounts", order=80, title="shares mounted from fstab (_netdev, reboot-safe)",
    applies=lambda c, h: bool(c.shares) and (h.is_manager or h.is_worker),
    params=lambda c, h: Params(mounts=mounts(c, h), nfs_version=c.nfs_version),
    packages={"apt": ("nfs-common",), "dnf": ("nfs-utils",)}, context=context,
)

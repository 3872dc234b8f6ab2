"""The cluster's ports, opened in firewalld or ufw when one is active."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..spec import Cluster, Host, Role, TLSMode
from . import register


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
class Params:
    ports: tuple[Port, ...]
    sources: tuple[str, ...]  # the other hosts' addresses


def ports(c: Cluster, h: Host) -> tuple[Port, ...]:
    out: list[Port] = []
    if h.is_manager or h.is_worker:
        out += [Port(7946, Proto.TCP, "swarm gossip"), Port(7946, Proto.UDP, "swarm gossip"),
                Port(4789, Proto.UDP, "overlay network (VXLAN)")]
    if h.is_manager:
        out.append(Port(2377, Proto.TCP, "swarm management (mutual TLS)"))
    if Role.NFS_SERVER in h.roles:
        out.append(Port(2049, Proto.TCP, "NFS"))
        if c.nfs_version == "3":
            out += [Port(111, Proto.TCP, "rpcbind"), Port(111, Proto.UDP, "rpcbind"),
                    Port(20048, Proto.TCP, "mountd")]
    if Role.HUB in h.roles:
        out.append(Port(c.hub.port, Proto.TCP, "JupyterHub (HTTPS)", public=True))
        if c.hub.tls.mode is TLSMode.LETSENCRYPT:
            out.append(Port(80, Proto.TCP, "ACME http-01 challenge", public=True))
        elif c.hub.port == 443:
            out.append(Port(80, Proto.TCP, "HTTP, redirected to HTTPS", public=True))
    return tuple(out)


def params(c: Cluster, h: Host) -> Params:
    return Params(ports=ports(c, h), sources=tuple(str(x.address) for x in c.hosts if x != h))


STEP = register(__name__, kind="firewall", order=20, title="open the cluster's ports if a firewall is active",
                params=params)

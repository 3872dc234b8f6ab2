"""The cluster's ports, opened in firewalld or ufw when one is active, and kept to the spec.

Between cluster hosts: SSH (the operator's copies go host to host), the swarm's ports, the
NFS server's, and ESP (IP protocol 50) when the overlay is encrypted (IPsec). Public: the
hub's HTTPS port (and 80 for its redirect or the ACME challenge).

Every run reconciles what it manages with the spec: firewalld's `cablab` zone holds only the
spec's other hosts as sources, and only the cluster's ports and protocols; ufw's rules of
cablab (tagged by their comment `cablab <source> <what>`) that the spec no longer names are
deleted. A host removed from the spec loses its access at the next run of every other host.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..spec import Cluster, Host, Role, TLSMode
from . import register

ZONE = "cablab"  # firewalld's zone bound to the other hosts' addresses
UFW_TAG = "cablab"  # first word of the comment of every ufw rule this step manages


class Proto(str, Enum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class Port:
    number: int
    proto: Proto
    why: str
    public: bool = False  # open to everyone (the hub), else to the cluster only

    @property
    def word(self) -> str:
        """firewalld's and ufw's name of it: 2377/tcp."""
        return f"{self.number}/{self.proto.value}"


# NFSv3's side services, on fixed ports (the NFS server pins them in /etc/nfs.conf.d/cablab.conf,
# step nfs_server): NFSv4 needs 2049 only.
NFS3_PORTS = {"mountd": 20048, "statd": 662, "lockd": 32803}


@dataclass(frozen=True)
class Params:
    ports: tuple[Port, ...]
    protocols: tuple[str, ...]  # IP protocols open to the cluster's hosts (esp)
    sources: tuple[str, ...]  # the other hosts' addresses

    def ufw_rules(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(comment, ufw arguments) of every rule, in order: what the step adds and keeps."""
        out: list[tuple[str, tuple[str, ...]]] = []
        for src in self.sources:
            for p in self.ports:
                if not p.public:
                    out.append((f"{UFW_TAG} {src} {p.word}",
                                ("allow", "from", src, "to", "any", "port", str(p.number), "proto", p.proto.value)))
            for proto in self.protocols:
                out.append((f"{UFW_TAG} {src} {proto}", ("allow", "from", src, "to", "any", "proto", proto)))
        for p in self.ports:
            if p.public:
                out.append((f"{UFW_TAG} any {p.word}", ("allow", p.word)))
        return tuple(out)


def ports(c: Cluster, h: Host) -> tuple[Port, ...]:
    out: list[Port] = [Port(22, Proto.TCP, "ssh between the cluster's hosts (tokens, copies)")]
    if h.is_manager or h.is_worker:
        out += [Port(7946, Proto.TCP, "swarm gossip"), Port(7946, Proto.UDP, "swarm gossip"),
                Port(4789, Proto.UDP, "overlay network (VXLAN)")]
    if h.is_manager:
        out.append(Port(2377, Proto.TCP, "swarm management (mutual TLS)"))
    if Role.NFS_SERVER in h.roles:
        out.append(Port(2049, Proto.TCP, "NFS"))
        if c.nfs_version == "3":
            out += [Port(111, Proto.TCP, "rpcbind"), Port(111, Proto.UDP, "rpcbind")]
            for name, number in NFS3_PORTS.items():
                out += [Port(number, Proto.TCP, f"NFSv3 {name} (pinned)"), Port(number, Proto.UDP, f"NFSv3 {name} (pinned)")]
    if Role.HUB in h.roles:
        out.append(Port(c.hub.port, Proto.TCP, "JupyterHub (HTTPS)", public=True))
        if c.hub.tls.mode is TLSMode.LETSENCRYPT:
            out.append(Port(80, Proto.TCP, "ACME http-01 challenge", public=True))
        elif c.hub.port == 443:
            out.append(Port(80, Proto.TCP, "HTTP, redirected to HTTPS", public=True))
    return tuple(out)


def protocols(c: Cluster, h: Host) -> tuple[str, ...]:
    """ESP between swarm hosts when the overlay is encrypted (IPsec in transport mode)."""
    return ("esp",) if c.swarm.encrypted and (h.is_manager or h.is_worker) else ()


def params(c: Cluster, h: Host) -> Params:
    return Params(ports=ports(c, h), protocols=protocols(c, h),
                  sources=tuple(str(x.address) for x in c.hosts if x != h))


STEP = register(__name__, kind="firewall", order=20, title="the cluster's ports in the active firewall, kept to the spec",
                params=params, context=lambda r, p: {"zone": ZONE, "ufw_tag": UFW_TAG, "ufw_rules": p.ufw_rules()})

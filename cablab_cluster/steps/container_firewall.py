"""Containers cannot reach the cluster's control ports.

A user's server leaves its node through `docker_gwbridge` (overlay networks) or `docker0`
(plain bridges), masqueraded to the node's address: without this it could speak NFS to the
NFS server as any uid, drive a swarm manager, reach sshd or the proxy's API. Rules, in a
chain of our own per family:

- CABLAB-CONTAINERS, jumped to from DOCKER-USER (Docker's place for rules on forwarded
  traffic: it keeps the chain and its rules across its restarts) for traffic in from the
  bridges: the cluster's hosts' control ports are refused;
- CABLAB-CONTAINERS-IN, jumped to from INPUT for traffic in from the bridges (a container
  reaching its own node's address, or the bridge's gateway, never passes DOCKER-USER): the
  same ports of the node itself are refused.

The rules are an installed script, re-applied by a systemd unit started with docker (after
a reboot, and after every restart of docker), and where firewalld runs, after each of its
reloads (WATCH_UNIT). Each chain carries a stamp of its rules: the
script refills a chain only when its rendered rules changed, so a second run changes nothing.
Traffic between containers of one overlay never passes these chains: the proxy's API lives
on a network the users' servers are not on (render.stack).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import PurePosixPath

from ..spec import Cluster, Host
from . import register

SCRIPT = PurePosixPath("/usr/local/sbin/cablab-container-firewall")
UNIT = "cablab-container-firewall.service"
# Where firewalld runs: its reload flushes iptables rules it did not make (measured in the centos
# lab: every chain and jump of this step gone after `firewall-cmd --reload`); this unit watches
# firewalld's Reloaded signal on D-Bus (dbus-monitor) and applies the script again.
WATCH_UNIT = "cablab-container-firewall-watch.service"
BRIDGES = ("docker_gwbridge", "docker0")  # where containers' traffic enters a node
FORWARD_CHAIN = "CABLAB-CONTAINERS"
INPUT_CHAIN = "CABLAB-CONTAINERS-IN"

# What no container may reach on any cluster host (the hub uses the local Docker socket, and
# the hosts themselves mount NFS: no container needs any of these).
TCP = (
    (22, "ssh"),
    (111, "rpcbind"),
    (2049, "NFS"),
    (2375, "Docker API"),
    (2376, "Docker API (TLS)"),
    (2377, "swarm management"),
    (7946, "swarm gossip"),
    (8001, "the proxy's API"),
    (20048, "NFS mountd"),
)
UDP = ((111, "rpcbind"), (2049, "NFS"), (4789, "overlay VXLAN"), (7946, "swarm gossip"))


@dataclass(frozen=True)
class Family:
    command: str  # iptables | ip6tables
    destinations: tuple[str, ...]  # the cluster's hosts of this family


@dataclass(frozen=True)
class Params:
    families: tuple[Family, ...]
    tcp: str  # multiport list
    udp: str
    stamp: str  # changes when the rules do


def params(c: Cluster, h: Host) -> Params:
    v4 = tuple(str(x.address) for x in c.hosts if isinstance(x.address, IPv4Address))
    v6 = tuple(str(x.address) for x in c.hosts if not isinstance(x.address, IPv4Address))
    families = (Family("iptables", v4), Family("ip6tables", v6))
    tcp = ",".join(str(p) for p, _ in TCP)
    udp = ",".join(str(p) for p, _ in UDP)
    stamp = hashlib.sha256(repr((families, tcp, udp, BRIDGES)).encode()).hexdigest()[:12]
    return Params(families=families, tcp=tcp, udp=udp, stamp=stamp)


STEP = register(
    __name__, kind="container_firewall", order=55, title="containers cannot reach the cluster's control ports",
    applies=lambda c, h: h.is_manager or h.is_worker, params=params,
    context=lambda r, p: {"script": SCRIPT, "unit": UNIT, "watch_unit": WATCH_UNIT, "bridges": BRIDGES, "forward_chain": FORWARD_CHAIN,
                          "input_chain": INPUT_CHAIN, "tcp_ports": TCP, "udp_ports": UDP},
    # dbus-monitor for the watch: Debian's dbus-bin comes with firewalld's dbus; EL has it in dbus-tools.
    packages={"apt": ("iptables",), "dnf": ("iptables-nft", "dbus-tools")},
)

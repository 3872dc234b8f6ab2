"""Preflight: the host is one the spec can work on, checked before anything changes.

Refused (one line per problem, exit 1, nothing changed): a distribution not in DISTRIBUTIONS, a host
of another package family than the spec's variant (`centos` → dnf, `ubuntu` → apt), an EL host
without Docker's repository (`docker.source: distro`), too little free disk, the disk named for LVM
missing or holding something that is not our volume group. Warned about: SELinux permissive or
disabled on EL, no running firewall, the clock not synchronised, swap on.

The variant is a contract about the hosts; the package family a script uses is still read from the
host at run time (the prelude's `FAMILY`). A lab spec (`lab: true`) may run a `centos` variant on
Debian stand-ins (this machine has no EL mirror): the preflight says so and goes on. Whatever the
spec alone decides is validation's (spec/rules.py), not the preflight's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..spec import Cluster, Host, StorageDriver, Variant
from . import register

if TYPE_CHECKING:
    from ..render import Renderer


@dataclass(frozen=True)
class Distribution:
    """A supported distribution, as /etc/os-release names it."""

    id: str  # ID
    version: str  # VERSION_ID; with `minor_releases`, its major part (Rocky's VERSION_ID is 9.4)
    family: str  # the OS package family: apt or dnf
    name: str  # for people
    minor_releases: bool = False


# The one table of supported distributions (README: "Variants and distributions").
DISTRIBUTIONS: tuple[Distribution, ...] = (
    Distribution("debian", "12", "apt", "Debian 12"),
    Distribution("ubuntu", "22.04", "apt", "Ubuntu 22.04"),
    Distribution("ubuntu", "24.04", "apt", "Ubuntu 24.04"),
    Distribution("rocky", "9", "dnf", "Rocky Linux 9", minor_releases=True),
    Distribution("almalinux", "9", "dnf", "AlmaLinux 9", minor_releases=True),
    Distribution("rhel", "9", "dnf", "RHEL 9", minor_releases=True),
)

# Free space (MiB) the run needs before it starts: packages on /, images and containers where
# Docker keeps them (on / unless the spec gives Docker a disk of its own).
MIN_FREE_MIB = {"/": 1024, "/var/lib/docker": 4096}


@dataclass(frozen=True)
class Params:
    host: Host
    variant_family: str
    variant: str
    lab: bool
    docker_distro: bool  # docker.source: distro (no engine on EL)
    swarm: bool  # the host runs Docker
    storage_driver: StorageDriver
    disks: tuple[str, ...]
    volume_group: str
    min_free: tuple[tuple[str, int], ...]  # (path, MiB)


def params(c: Cluster, h: Host) -> Params:
    swarm = h.is_manager or h.is_worker
    storage = c.docker.storage
    own_disk = swarm and storage.driver is not StorageDriver.OVERLAY2
    min_free = {"/": MIN_FREE_MIB["/"]}
    if swarm and not own_disk:
        min_free["/var/lib/docker"] = MIN_FREE_MIB["/var/lib/docker"]
    return Params(host=h, variant_family=c.variant.family, variant=c.variant.value, lab=c.lab,
                  docker_distro=c.docker.source.value == "distro", swarm=swarm, storage_driver=storage.driver,
                  disks=tuple(str(d) for d in storage.disks) if own_disk else (), volume_group=storage.volume_group,
                  min_free=tuple(min_free.items()))


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"distributions": DISTRIBUTIONS, "variants": tuple(Variant),
            "variant_hosts": " or ".join(d.name for d in DISTRIBUTIONS if d.family == p.variant_family)}


STEP = register(
    __name__, kind="preflight", order=5, title="preflight: this host can run the spec (nothing changes)",
    params=params, context=context,
)

"""The Docker engine (distribution or Docker's repository, optionally pinned), daemon.json, no TCP API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..layout import NODE_LABEL, NOTEBOOKS_LABEL
from ..spec import Cluster, Docker, EngineSource, Host, Role, StorageDriver
from . import Packages, register

if TYPE_CHECKING:
    from ..render import Renderer

# apparmor: Debian's kernel has AppArmor on; without apparmor_parser Docker cannot load
# its docker-default profile and refuses to start any container (a recommends, not a
# dependency, so --no-install-recommends drops it). EL ships no Docker: docker-repo.
DISTRO: Packages = {"apt": ("docker.io", "apparmor"), "dnf": ()}
REPO: Packages = {"apt": ("docker-ce", "docker-ce-cli", "containerd.io", "apparmor"),
                  "dnf": ("docker-ce", "docker-ce-cli", "containerd.io")}
# What holds a docker.version pin (apt-mark is apt's own; dnf needs the versionlock plugin).
HOLD_TOOLS: Packages = {"apt": (), "dnf": ("python3-dnf-plugin-versionlock",)}
# Never upgraded by unattended-upgrades (apt): upgrading any of them restarts Docker or containerd, which
# stops every container on the node, and so every user's kernel. Docker moves when the operator changes
# docker.version and provisions again. Entries are Python regular expressions matched at the start.
UNATTENDED_NEVER = ("docker.io", "docker-ce", "docker-ce-cli", "containerd", "containerd.io", "runc")
# SELinux booleans that let confined containers use NFS mounts (the homes), whichever the policy has:
# container-selinux reads virt_use_nfs; newer policies call it container_use_nfs.
NFS_BOOLEANS = ("container_use_nfs", "virt_use_nfs")
# dockerd's swarm executor tries a registry pull before each task's start unless this is set (moby:
# daemon/cluster/executor/container/controller.go); set in a drop-in of docker.service.
OFFLINE_ENV = "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"
OFFLINE_DROPIN = "/etc/systemd/system/docker.service.d/cablab-images.conf"
OFFLINE_DROPIN_TEXT = ("# Written by cablab-cluster (step docker_engine): swarm tasks start from the node's own images.\n"
                       f"[Service]\nEnvironment={OFFLINE_ENV}")


@dataclass(frozen=True)
class Params:
    docker: Docker
    confine: bool  # SELinux hosts label containers (selinux-enabled); not the hub host, see daemon_json
    nfs: bool  # containers bind NFS mounts (the cluster has shares)
    labels: tuple[str, ...]  # the engine's labels (KEY=VALUE): what places users' servers, see engine_labels


def engine_labels(c: Cluster, h: Host) -> tuple[str, ...]:
    """The host's spec name and, on notebook hosts, NOTEBOOKS_LABEL: swarm constraints on them place
    users' servers (render.notebook_placement), whatever hostname the machine's metadata restores."""
    out = [f"{NODE_LABEL}={h.name}"]
    if h in c.notebook_hosts:
        out.append(f"{NOTEBOOKS_LABEL}=true")
    return tuple(out)


def storage_driver(docker: Docker) -> str:
    return "devicemapper" if docker.storage.driver is StorageDriver.DEVICEMAPPER else "overlay2"


def daemon_json(docker: Docker, labels: tuple[str, ...] = (), selinux: bool = False) -> str:
    """daemon.json; `labels`: the engine's (a change of them alone is applied by a reload, the
    containers keep running; see the template); `selinux`: containers are confined (container_t, a category pair each). Only for
    hosts with SELinux on, and never on the hub host: the hub talks to the docker socket, which SELinux
    denies a confined container (and a stack file cannot turn labelling off for one service)."""
    storage = docker.storage
    cfg: dict = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "20m", "max-file": "3"},
        "storage-driver": storage_driver(docker),
    }
    if labels:
        cfg["labels"] = list(labels)
    if storage.driver is StorageDriver.DEVICEMAPPER:
        cfg["storage-opts"] = [
            # device-mapper doubles a '-' inside a VG name: vg-a → /dev/mapper/vg--a-thinpool
            f"dm.thinpooldev=/dev/mapper/{storage.volume_group.replace('-', '--')}-thinpool",
            "dm.use_deferred_removal=true",
            "dm.use_deferred_deletion=true",
        ]
    if selinux:
        cfg["selinux-enabled"] = True
    return json.dumps(cfg, indent=2, sort_keys=True)


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"daemon_json": daemon_json(p.docker, p.labels),
            "daemon_json_selinux": daemon_json(p.docker, p.labels, selinux=True),
            "storage_driver": storage_driver(p.docker), "hold_tools": HOLD_TOOLS,
            "unattended_never": UNATTENDED_NEVER, "nfs_booleans": NFS_BOOLEANS,
            "offline_dropin": OFFLINE_DROPIN, "offline_dropin_text": OFFLINE_DROPIN_TEXT}


STEP = register(
    __name__, kind="docker_engine", order=50, title="Docker engine, daemon.json, no TCP API",
    applies=lambda c, h: h.is_manager or h.is_worker,
    params=lambda c, h: Params(docker=c.docker, confine=Role.HUB not in h.roles, nfs=bool(c.shares),
                               labels=engine_labels(c, h)),
    packages=lambda p: REPO if p.docker.source is EngineSource.DOCKER_REPO else DISTRO,
    context=context,
)

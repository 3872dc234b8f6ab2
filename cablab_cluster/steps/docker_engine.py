"""The Docker engine (distribution or Docker's repository, optionally pinned), daemon.json, no TCP API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..spec import Docker, EngineSource, StorageDriver
from . import Packages, register

if TYPE_CHECKING:
    from ..render import Renderer

# apparmor: Debian's kernel has AppArmor on; without apparmor_parser Docker cannot load
# its docker-default profile and refuses to start any container (a recommends, not a
# dependency, so --no-install-recommends drops it). EL ships no Docker: docker-repo.
DISTRO: Packages = {"apt": ("docker.io", "apparmor"), "dnf": ()}
REPO: Packages = {"apt": ("docker-ce", "docker-ce-cli", "containerd.io", "apparmor"),
                  "dnf": ("docker-ce", "docker-ce-cli", "containerd.io")}


@dataclass(frozen=True)
class Params:
    docker: Docker


def storage_driver(docker: Docker) -> str:
    return "devicemapper" if docker.storage.driver is StorageDriver.DEVICEMAPPER else "overlay2"


def daemon_json(docker: Docker) -> str:
    storage = docker.storage
    cfg: dict = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "20m", "max-file": "3"},
        "storage-driver": storage_driver(docker),
    }
    if storage.driver is StorageDriver.DEVICEMAPPER:
        cfg["storage-opts"] = [
            # device-mapper doubles a '-' inside a VG name: vg-a → /dev/mapper/vg--a-thinpool
            f"dm.thinpooldev=/dev/mapper/{storage.volume_group.replace('-', '--')}-thinpool",
            "dm.use_deferred_removal=true",
            "dm.use_deferred_deletion=true",
        ]
    return json.dumps(cfg, indent=2, sort_keys=True)


def context(r: Renderer, p: Params) -> Mapping[str, object]:
    return {"daemon_json": daemon_json(p.docker), "storage_driver": storage_driver(p.docker)}


STEP = register(
    __name__, kind="docker_engine", order=50, title="Docker engine, daemon.json, no TCP API",
    applies=lambda c, h: h.is_manager or h.is_worker,
    params=lambda c, h: Params(docker=c.docker),
    packages=lambda p: REPO if p.docker.source is EngineSource.DOCKER_REPO else DISTRO,
    context=context,
)

"""The seed's LVM thin pool for devicemapper (`docker.storage.driver: devicemapper-direct-lvm`).

No SELinux relabelling here (unlike docker_lvm): the thin pool is a block device Docker uses directly,
/var/lib/docker stays on the root file system with the policy's labels, and Docker mounts each
container's thin device with the container's own context.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Storage, StorageDriver
from . import register


@dataclass(frozen=True)
class Params:
    storage: Storage


STEP = register(
    __name__, kind="docker_thinpool", order=40, title="LVM thin pool for devicemapper (direct-lvm)",
    applies=lambda c, h: (h.is_manager or h.is_worker) and c.docker.storage.driver is StorageDriver.DEVICEMAPPER,
    params=lambda c, h: Params(storage=c.docker.storage),
    packages={"apt": ("lvm2", "thin-provisioning-tools"), "dnf": ("lvm2", "device-mapper-persistent-data")},
)

"""The seed's LVM thin pool for devicemapper (`docker.storage.driver: devicemapper-direct-lvm`)."""

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

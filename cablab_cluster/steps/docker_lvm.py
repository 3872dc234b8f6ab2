"""Docker's data root on an LVM volume of its own disk (`docker.storage.driver: lvm`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Storage, StorageDriver
from . import register


@dataclass(frozen=True)
class Params:
    storage: Storage


STEP = register(
    __name__, kind="docker_lvm", order=30, title="Docker's data root on an LVM volume of its own disk",
    applies=lambda c, h: (h.is_manager or h.is_worker) and c.docker.storage.driver is StorageDriver.LVM,
    params=lambda c, h: Params(storage=c.docker.storage),
    packages={"apt": ("lvm2", "xfsprogs"), "dnf": ("lvm2", "xfsprogs")},
)

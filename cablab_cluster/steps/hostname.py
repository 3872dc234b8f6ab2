"""The host's name, and every cluster host's name in /etc/hosts."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Cluster, Host
from . import register


@dataclass(frozen=True)
class Params:
    host: Host
    hosts: tuple[Host, ...]


def params(c: Cluster, h: Host) -> Params:
    return Params(host=h, hosts=tuple(c.hosts))


STEP = register(__name__, kind="hostname", order=10, title="hostname and cluster names in /etc/hosts", params=params)

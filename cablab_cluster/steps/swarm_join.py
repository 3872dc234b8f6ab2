"""Every other swarm host joins, as the manager or worker the spec makes it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..layout import SWARM_TOKEN_DIR
from ..spec import Cluster, Host
from . import Input, InputKind, register


@dataclass(frozen=True)
class Params:
    host: Host
    role: str  # manager or worker
    manager: Host  # the first manager


def inputs(c: Cluster, h: Host, p: Params) -> tuple[Input, ...]:
    manager = p.manager.name
    return (Input(InputKind.JOIN_TOKEN, SWARM_TOKEN_DIR / f"{p.role}.token", "0600", p.role,
                  f"from {manager} (written by its run; or: export CABLAB_SWARM_TOKEN="
                  f"$(ssh {shlex.quote(manager)} sudo docker swarm join-token -q {p.role}))",
                  from_host=manager),)


STEP = register(
    __name__, kind="swarm_join", order=110, title=lambda p: f"join the swarm as {p.role}",
    applies=lambda c, h: h != c.first_manager and (h.is_manager or h.is_worker),
    params=lambda c, h: Params(host=h, role="manager" if h.is_manager else "worker", manager=c.first_manager),
    inputs=inputs,
)

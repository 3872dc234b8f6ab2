"""Every other swarm host joins, as the manager or worker the spec makes it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

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
    return (Input(InputKind.JOIN_TOKEN, token_file(p.role), "0600", p.role,
                  f"the same file on {manager} (written by its run)", from_host=manager),)


def token_file(role: str) -> PurePosixPath:
    """Where the first manager writes the join token of `role` and a joining host reads it."""
    return SWARM_TOKEN_DIR / f"{role}.token"


STEP = register(
    __name__, kind="swarm_join", order=110, title=lambda p: f"join the swarm as {p.role}",
    applies=lambda c, h: h != c.first_manager and (h.is_manager or h.is_worker),
    params=lambda c, h: Params(host=h, role="manager" if h.is_manager else "worker", manager=c.first_manager),
    inputs=inputs, context=lambda r, p: {"copy_command": inputs(r.c, p.host, p)[0].copy_command(p.host.name)},
)

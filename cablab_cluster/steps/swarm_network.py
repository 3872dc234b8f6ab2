"""The overlay network the hub and the notebooks share, made by the first manager.

A network that exists with other settings than the spec's (plain instead of encrypted, not
attachable) cannot be changed in place: it is recreated when no service uses it; else the
run stops and names the exact commands (remove the hub's stack and the users' servers, run
again), since removing them stops every user's server.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Swarm
from . import register


@dataclass(frozen=True)
class Params:
    swarm: Swarm

    @property
    def want(self) -> str:
        """The network's settings as the step's `docker network inspect` format prints them."""
        return f"overlay {'true' if self.swarm.attachable else 'false'} {'encrypted' if self.swarm.encrypted else 'plain'}"

    @property
    def create_args(self) -> tuple[str, ...]:
        return ("--driver", "overlay", *(("--attachable",) if self.swarm.attachable else ()),
                *(("--opt", "encrypted") if self.swarm.encrypted else ()), self.swarm.network)


STEP = register(__name__, kind="swarm_network", order=100, title=lambda p: f"overlay network {p.swarm.network}",
                applies=lambda c, h: h == c.first_manager, params=lambda c, h: Params(swarm=c.swarm),
                context=lambda r, p: {"want": p.want, "create_args": p.create_args})

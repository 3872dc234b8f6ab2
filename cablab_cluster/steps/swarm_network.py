"""The overlay network the hub and the notebooks share, made by the first manager."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Swarm
from . import register


@dataclass(frozen=True)
class Params:
    swarm: Swarm


STEP = register(__name__, kind="swarm_network", order=100, title=lambda p: f"overlay network {p.swarm.network}",
                applies=lambda c, h: h == c.first_manager, params=lambda c, h: Params(swarm=c.swarm))

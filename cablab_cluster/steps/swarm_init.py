"""The swarm, initialised on the first manager, which writes the join tokens."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Host
from . import register


@dataclass(frozen=True)
class Params:
    host: Host


STEP = register(__name__, kind="swarm_init", order=90, title="initialise the swarm",
                applies=lambda c, h: h == c.first_manager, params=lambda c, h: Params(host=h))

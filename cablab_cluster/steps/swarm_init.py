"""The swarm, initialised on the first manager, which writes the join tokens and keeps the
swarm-wide settings of the spec (the dispatcher's heartbeat period) as the spec has them."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import Host, Swarm
from . import register

NS = 1_000_000_000


@dataclass(frozen=True)
class Params:
    host: Host
    swarm: Swarm

    @property
    def heartbeat_ns(self) -> int:
        """The period as `docker info` prints it in JSON (Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod, ns)."""
        return self.swarm.heartbeat * NS


STEP = register(__name__, kind="swarm_init", order=90, title="initialise the swarm",
                applies=lambda c, h: h == c.first_manager, params=lambda c, h: Params(host=h, swarm=c.swarm),
                context=lambda r, p: {"heartbeat_ns": p.heartbeat_ns})

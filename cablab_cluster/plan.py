"""Stage 2 — plan: a validated cluster becomes ordered steps per host, the files each host
needs from the operator, and an order between hosts.

The plan knows *what* each host needs and in which order; it knows nothing of
shell. The steps themselves are units in cablab_cluster/steps/ (a module and its
template each): the plan asks each, in order, whether it applies to a host and with
which typed parameters. Render (stage 3) turns each step into a small script.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from typing import Any

from .layout import STACK  # noqa: F401 - re-exported: cablab_cluster.checks imports it from here
from .spec import Cluster, Host, LoadedSpec
from .steps import Input, InputKind, Packages, StepType, registry

__all__ = ["HostPlan", "Input", "InputKind", "Plan", "Step", "host_steps", "make_plan"]


@dataclass(frozen=True)
class Step:
    """One step of one host: a registered step type with its parameters for this host."""

    type: StepType
    params: Any  # the step module's Params
    title: str
    packages: Packages  # OS package family -> names, installed by the prelude's ensure_packages
    inputs: tuple[Input, ...]

    @property
    def kind(self) -> str:
        return self.type.kind


@dataclass(frozen=True)
class HostPlan:
    host: Host
    steps: tuple[Step, ...]
    after: tuple[str, ...]  # hosts whose scripts must have run before this one
    why_after: str = ""

    @property
    def inputs(self) -> tuple[Input, ...]:
        """The files the operator puts on this host before its script runs, in step order."""
        return tuple(i for s in self.steps for i in s.inputs)


@dataclass(frozen=True)
class Plan:
    spec: LoadedSpec
    hosts: tuple[HostPlan, ...]  # in the order to run them

    @property
    def cluster(self) -> Cluster:
        return self.spec.cluster

    def for_host(self, name: str) -> HostPlan:
        return next(hp for hp in self.hosts if hp.host.name == name)

    @property
    def waves(self) -> tuple[tuple[HostPlan, ...], ...]:
        """The hosts in groups that may run at the same time: each after the waves before it
        (plan order within a wave)."""
        index = {hp.host.name: i for i, hp in enumerate(self.hosts)}
        order = graphlib.TopologicalSorter({hp.host.name: hp.after for hp in self.hosts})
        order.prepare()
        waves = []
        while order.is_active():
            ready = sorted(order.get_ready(), key=index.__getitem__)
            waves.append(tuple(self.hosts[index[n]] for n in ready))
            order.done(*ready)
        return tuple(waves)


# --------------------------------------------------------------------------


def host_steps(c: Cluster, h: Host) -> tuple[Step, ...]:
    """The registered steps that apply to `h`, in their declared order."""
    steps = []
    for unit in registry():
        if not unit.applies(c, h):
            continue
        params = unit.params(c, h)
        for p in params if isinstance(params, list) else [params]:
            steps.append(Step(type=unit, params=p, title=unit.title_of(p), packages=unit.packages_of(p),
                              inputs=tuple(unit.inputs(c, h, p))))
    return tuple(steps)


def _order(c: Cluster) -> list[tuple[Host, tuple[str, ...], str]]:
    """NFS server and first manager first; other managers; workers. Spec order within a rank."""
    server, first = c.nfs_server, c.first_manager
    assert server is not None

    def rank(h: Host) -> int:
        if h == server:
            return 0
        if h == first:
            return 1
        return 2 if h.is_manager else 3

    out = []
    for h in sorted(c.hosts, key=lambda h: (rank(h), c.hosts.index(h))):
        after, why = [], []
        if h != server and c.shares:
            after.append(server.name)
            why.append("mounts its shares")
        if h != first and (h.is_manager or h.is_worker):
            after.append(first.name)
            why.append("joins its swarm")
        out.append((h, tuple(dict.fromkeys(after)), " and ".join(why)))
    return out


def make_plan(spec: LoadedSpec) -> Plan:
    c = spec.cluster
    return Plan(spec=spec, hosts=tuple(HostPlan(host=h, steps=host_steps(c, h), after=after, why_after=why)
                                       for h, after, why in _order(c)))

"""Stage 2 — plan: a validated cluster becomes ordered steps per host, the files each host
needs from the operator, and an order between hosts.

The plan knows *what* each host needs and in which order; it knows nothing of
shell. The steps themselves are units in cablab_cluster/steps/ (a module and its
template each): the plan asks each, in order, whether it applies to a host and with
which typed parameters. Render (stage 3) turns each step into a small script.
"""

from __future__ import annotations

import graphlib
import shlex
from dataclasses import dataclass
from typing import Any

from .layout import STACK  # noqa: F401 - re-exported: cablab_cluster.checks imports it from here
from .spec import Cluster, Host, LoadedSpec, Problem, SpecError
from .steps import Input, InputKind, Packages, StepType, registry

__all__ = ["Gate", "HostPlan", "Input", "InputKind", "Plan", "Step", "host_steps", "make_plan"]


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
class Gate:
    """What a host really waits for on a host before it: one step of that host's script, done
    (its line "step N/M <step>: ..." logged). The rest of that script (the hub's start, say) may
    run beside this host's."""

    host: str
    step: str  # the step's name, as the script logs it (its kind: nfs_server, swarm_init)
    why: str


@dataclass(frozen=True)
class HostPlan:
    host: Host
    steps: tuple[Step, ...]
    after: tuple[str, ...]  # hosts whose scripts must have run before this one
    why_after: str = ""
    gates: tuple[Gate, ...] = ()  # within `after`: the steps actually waited for (none known: whole scripts)

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


# What a host needs from a host before it, and the step there that makes it.
_NEEDS = {"mounts its shares": "nfs_server", "joins its swarm": "swarm_init"}


def _needs(c: Cluster, h: Host) -> list[tuple[Host, str]]:
    """(earlier host, why) for each thing `h` needs from another host: the NFS server's exports
    before it mounts, the first manager's swarm and tokens before it joins."""
    server, first = c.nfs_server, c.first_manager
    needs = []
    if server is not None and h != server and c.shares:
        needs.append((server, "mounts its shares"))
    if h != first and (h.is_manager or h.is_worker):
        needs.append((first, "joins its swarm"))
    return needs


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
        needs = _needs(c, h)
        out.append((h, tuple(dict.fromkeys(up.name for up, _ in needs)), " and ".join(why for _, why in needs)))
    return out


def _gates(c: Cluster, h: Host, steps: dict[str, tuple[Step, ...]]) -> tuple[Gate, ...]:
    """The steps of earlier hosts `h` waits for (_needs); () when one of them is missing there."""
    gates = []
    for up, why in _needs(c, h):
        step = next((s for s in steps[up.name] if s.kind == _NEEDS[why]), None)
        if step is None:
            return ()
        gates.append(Gate(up.name, step.kind, why))
    return tuple(gates)


def make_plan(spec: LoadedSpec) -> Plan:
    c = spec.cluster
    steps = {h.name: host_steps(c, h) for h in c.hosts}
    return Plan(spec=spec, hosts=tuple(HostPlan(host=h, steps=steps[h.name], after=after, why_after=why,
                                                gates=_gates(c, h, steps))
                                       for h, after, why in _order(c)))


@dataclass(frozen=True)
class Command:
    """A command for the operator to run on a host, and why."""

    host: str
    command: str
    why: str


def removal(c: Cluster, name: str) -> tuple[Command, ...]:
    """The commands that take worker `name` out of the swarm: drain it (its tasks, users' servers
    among them, move to the other nodes), wait until nothing runs there, leave, remove the node.
    Afterwards the host goes from the spec and the other hosts' provisioners withdraw its exports
    and firewall rules. Managers are refused (1 or 3 of them: a removal needs a new spec first)."""
    names = [h.name for h in c.hosts]
    if name not in names:
        raise SpecError([Problem("HOST", f"{name!r} is not a host of cluster {c.name}",
                                 f"use one of: {', '.join(names)}")])
    h = c.host(name)
    if not h.is_worker:
        raise SpecError([Problem("HOST", f"{name} is not a worker ({', '.join(r.value for r in h.roles)}); only "
                                         "workers are drained and removed",
                                 "a manager, the hub's or the NFS server's host is replaced, not removed: "
                                 "see the README's operator section")])
    if len(c.notebook_hosts) < 2:
        raise SpecError([Problem("HOST", f"{name} is the only notebook node: users' servers would have nowhere to go",
                                 "add a worker first (see the README's operator section)")])
    m = c.first_manager.name
    q = shlex.quote(name)
    return (
        Command(m, f"docker node update --availability drain {q}",
                f"no new tasks on {name}; its tasks (users' servers among them: their kernels restart) "
                "move to the other nodes"),
        Command(m, f"until [ -z \"$(docker node ps {q} --filter desired-state=running -q)\" ]; do sleep 5; done",
                f"wait until nothing runs on {name} any more"),
        Command(name, "docker swarm leave", f"{name} leaves the swarm"),
        Command(m, f"docker node rm {q}", f"the swarm forgets {name}"),
    )

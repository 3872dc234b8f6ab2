"""Spawn performance and capacity against the physical floor (issue 12), on the lab or any cluster.

    python benchmarks/spawn.py SPEC.yml --ssh-config FILE [--secrets DIR] [--users N | --user NAME ...]
                               [--capacity 10] [--report lab/reports/spawn-<cluster>.json]

1. Spawn vs floor, user by user on the notebook nodes in turn: the hub's REST start → the user's
   /api/status answering through the proxy, twice: the first start fills a new home and follows the
   node's idle time (printed on its own row); the second is the one timed against the others, which,
   like it, find the home filled and the node just used. Then the floor: the same image with the same
   mounts, network, resources and endpoint mode (the hub's own service spec, copied) started directly
   through the Docker API as a plain `jupyter-server` service on the same node: service create (the
   manager's Docker event) → the server's first HTTP answer, seen ON the node by a poll loop inside
   the container's network namespace (no SSH round trip in the interval). p50/p95 of both and their
   ratio are printed (target: hub p50 <= 1.1 x floor p50), never asserted. Between the two, the
   direct start: the hub's service spec itself (`jupyterhub-singleuser`, JupyterHub's variables)
   created through the Docker API, measured as the floor is. It splits the ratio in two: direct /
   floor is JupyterHub's single-user extension in the server's own start; hub / direct is the hub's
   part (its request, the service's creation, its wait for the task and the answer, the proxy route).
   The same three ratios are also taken user by user (a user's starts run back to back on one node)
   and printed as medians with a distribution-free interval for each (the sign test's order
   statistics; with 6 users, the whole range, 97 %), and how many users' hub start was within the
   target: the p50s' ratio alone moved by 0.09 between two runs on the same VMs. The hub's part is
   also split user by user, in seconds (HUB_SPLIT): inside the start (the hub's service created -> the
   server's first answer, less the direct start's create -> answer) and outside it.
2. Capacity: --capacity users started at once (the lab sizes its workers so that exactly 10 fit):
   all ready or failed, the time to all ready against the CPU-bound ideal (capacity x one spawn /
   the notebook nodes' CPUs), peak memory per node (/proc/meminfo sampled on the nodes); then one
   user more: how fast, and with what message, the hub refuses.
3. Where the time goes in one spawn: the hub's log lines (docker service logs --timestamps), the
   manager's and the node's Docker events, the server's first answer on the node, the ready proxy
   route, on one time line (each host's clock offset measured and taken out). And where the hub's
   node's CPU goes over each start, process by process (its /proc before and after, outside the
   timed interval), as medians for hub, direct and floor starts: the processes the hub's start adds
   to most are printed.

Users: the spec's userlist users without overrides (their resources are the default ones) and
without a running server. The hub is driven with an admin's API token: --token-file (a real
cluster), else, on a lab cluster (`hub.auth.lab_password`), one made by logging in an admin.
Figures are printed as a table and written to --report (JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
HUB_TARGET = 1.1  # hub p50 <= 1.1 x floor p50 (issue 12 §1)
CAPACITY_TARGET = 1.25  # time to all ready <= 1.25 x the CPU-bound ideal (issue 12 §2)
START_TIMEOUT = 900.0  # s, generous: a failure is reported, never a slow start
KEEPALIVE = 30.0  # s between requests that keep the capacity run's servers active (inside any cull timeout)
SERVER_PORT = 8888  # dockerspawner's port for the single-user server
FLOOR_PREFIX = "cablab-bench-floor-"
DIRECT_PREFIX = "cablab-bench-direct-"
BENCH_LABEL = "cablab.bench"  # on the floor's and the direct start's services (its value: which)
HUB_WAITS = ("progress", "poll")  # how a hub spawn is waited for (Bench.wait_ready)


# --- Pure parts (tests/test_bench_spawn.py) --------------------------------------------


def busy_cpu_seconds(proc_stat: str, ticks_per_s: float, steal: bool = True) -> float:
    """CPU time spent busy on this machine (all CPUs) from /proc/stat's first line: user, nice,
    system, irq, softirq and steal (not idle, not iowait; guest time is already in user). Without
    `steal` for a VM's own view: steal is time its host ran something else."""
    fields = proc_stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("not /proc/stat")
    user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + (stolen if steal else 0)) / ticks_per_s


def host_busy() -> float:
    return busy_cpu_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def qemu_guest(cmdline: bytes) -> Optional[str]:
    """The libvirt domain a QEMU process runs (`-name guest=DOMAIN,...`), from its /proc cmdline."""
    args = cmdline.split(b"\0")
    if not args or not os.path.basename(args[0]).startswith(b"qemu-system"):
        return None
    for arg in args:
        m = re.match(rb"guest=([^,]+)", arg)
        if m:
            return m.group(1).decode(errors="replace")
    return None


def proc_cpu_seconds(stat: str, ticks_per_s: float) -> float:
    """utime + stime of a /proc/<pid>/stat line (the fields after the command's closing parenthesis)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def vm_cpu(domains: dict[str, str], proc: Path = Path("/proc")) -> dict[str, float]:
    """CPU-seconds each of the cluster's VMs (host name -> libvirt domain) has used so far on this
    machine: its QEMU process's user + system time (every vCPU thread and QEMU's own)."""
    by_domain = {d: h for h, d in domains.items()}
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            guest = qemu_guest((pid_dir / "cmdline").read_bytes())
            if guest in by_domain:
                used[by_domain[guest]] = proc_cpu_seconds((pid_dir / "stat").read_text(), ticks)
        except OSError:
            continue  # gone meanwhile
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {h: round(after[h] - before[h], 1) for h in sorted(after) if h in before}


# The hub's node, process by process, over one spawn (from the node's own accounting: under
# emulation a guest's clock runs on while the host has its vCPU waiting, so this is the guest's view).
NODE_PROCS = "getconf CLK_TCK; cat /proc/stat; cat /proc/[0-9]*/stat 2>/dev/null || true"
GONE = "(exited, interrupts)"  # busy time of no process still there: ones that ended, and interrupts
NODE_PROCS_SHOWN = 8  # rows of the table: the processes with the most more for a hub spawn than a direct one


def process_name(comm: str) -> str:
    """One name for a kernel thread's instances (kworker/1:2H-kblockd, ksoftirqd/0 -> kworker, ksoftirqd)."""
    return comm.split("/", 1)[0] or comm


Processes = dict[tuple[int, int], tuple[str, float]]  # (pid, start time) -> (name, CPU-s so far)


def node_processes(snapshot: str) -> tuple[float, Processes]:
    """(the node's busy CPU-s, its steal left out; {(pid, start time): (name, CPU-s)}) from NODE_PROCS's
    output. A process is its pid and start time: a pid used again is another process."""
    lines = snapshot.splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise ValueError("not NODE_PROCS's output")
    ticks = float(lines[0])
    busy = busy_cpu_seconds("\n".join(lines[1:]), ticks, steal=False)
    used: Processes = {}
    for line in lines[1:]:
        m = re.match(r"(\d+) \((.*)\) ", line)
        if m:
            try:
                started = int(line[line.rindex(")") + 2:].split()[19])  # field 22, starttime
                used[(int(m.group(1)), started)] = (process_name(m.group(2)), proc_cpu_seconds(line, ticks))
            except (IndexError, ValueError):
                continue  # a line cut short
    return busy, used


def processes_delta(before: tuple[float, Processes], after: tuple[float, Processes]) -> dict[str, float]:
    """CPU-s by process name (as `after` names it) between two node_processes snapshots (a process
    started in between counts whole); GONE is the busy time no process still there accounts for."""
    names: dict[str, float] = {}
    for key, (name, used) in after[1].items():
        names[name] = names.get(name, 0.0) + used - before[1].get(key, (name, 0.0))[1]
    busy = after[0] - before[0]
    out = {name: round(v, 2) for name, v in names.items() if round(v, 2) > 0}
    out[GONE] = round(max(0.0, busy - sum(names.values())), 2)
    return out


def node_procs_per_spawn(spawns: list[dict[str, Any]], kinds: Iterable[str]) -> dict[str, dict[str, float]]:
    """p50 over the spawns of each process name's CPU-s ({kind}_node_procs), per kind; a process a spawn
    did not see counts 0 there."""
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        seen = [s[f"{kind}_node_procs"] for s in spawns if s.get(f"{kind}_node_procs")]
        if seen:
            names = sorted({n for procs in seen for n in procs})
            out[kind] = {n: round(Summary.of(p.get(n, 0.0) for p in seen).p50, 2) for n in names}
    return out


ROLES = ("hub's node", "server's node", "other nodes", "all")


def by_role(spawns: list[dict[str, Any]], key: str, hub_host: str) -> dict[str, Optional[float]]:
    """p50 over the spawns of the CPU-seconds (spawn[key]: host -> s) of the hub's VM, of the VM the
    server started on, of the others together, and of all; a server on the hub's own node counts there."""
    got: dict[str, list[float]] = {r: [] for r in ROLES}
    for spawn in spawns:
        cpu = spawn.get(key) or {}
        if not cpu:
            continue
        got["hub's node"].append(cpu.get(hub_host, 0.0))
        got["server's node"].append(cpu.get(spawn.get("node", ""), 0.0) if spawn.get("node") != hub_host else 0.0)
        got["other nodes"].append(sum(v for h, v in cpu.items() if h not in (hub_host, spawn.get("node"))))
        got["all"].append(sum(cpu.values()))
    return {r: Summary.of(v).p50 for r, v in got.items()}


@dataclass(frozen=True)
class Summary:
    """p50/p95 (inclusive quantiles, as numpy's `linear`) of some durations in seconds."""

    n: int
    p50: Optional[float]
    p95: Optional[float]
    min: Optional[float]
    max: Optional[float]

    @classmethod
    def of(cls, values: Iterable[float]) -> "Summary":
        xs = sorted(values)
        if not xs:
            return cls(0, None, None, None, None)
        return cls(len(xs), round(percentile(xs, 50), 2), round(percentile(xs, 95), 2), xs[0], xs[-1])


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; one value is its own percentile."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    if len(xs) == 1:
        return float(xs[0])
    cuts = statistics.quantiles(xs, n=100, method="inclusive")  # the 1st..99th percentiles
    return float(xs[0] if q <= 0 else xs[-1] if q >= 100 else cuts[int(q) - 1])


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a is not None and b else None


@dataclass(frozen=True)
class MedianInterval:
    """The median of some values with a distribution-free interval for it: the order statistics
    x(k) and x(n+1-k), with the largest k whose coverage, 1 - 2 P(Binomial(n, 1/2) < k) (the
    sign test's), is at least the level asked; k = 1 (the whole range) when none is. Made for the
    bench's few per-user ratios (n of 6 to 10), where a bootstrap says less than it seems to."""

    n: int
    p50: float
    low: float
    high: float
    coverage: float  # the interval's exact coverage of the true median, whatever the distribution

    @classmethod
    def of(cls, values: Iterable[float], level: float = 0.9) -> Optional["MedianInterval"]:
        xs = sorted(values)
        n = len(xs)
        if n == 0:
            return None

        def coverage(k: int) -> float:
            return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n

        k = 1
        while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
            k += 1
        return cls(n, round(statistics.median(xs), 3), round(xs[k - 1], 3), round(xs[n - k], 3),
                   round(coverage(k), 3))


# Per-user ratios: each user's hub, direct and floor starts run back to back on the same node, so
# their ratio leaves out what moves between users and over the run (the node, this machine's speed).
PAIRED = (("hub_over_floor", "hub_s", "floor_s"), ("direct_over_floor", "direct_s", "floor_s"),
          ("hub_over_direct", "hub_s", "direct_s"))


def per_user(spawns: Iterable[dict[str, Any]], top: str, bottom: str) -> list[float]:
    """`top` / `bottom` of each user that has both starts."""
    return [s[top] / s[bottom] for s in spawns if s.get(top) is not None and s.get(bottom)]


def medians_per_user(spawns: list[dict[str, Any]], table: Iterable[tuple[str, str, str]],
                     values: Callable[[list[dict[str, Any]], str, str], list[float]],
                     level: float = 0.9) -> dict[str, MedianInterval]:
    """For each (name, top, bottom) of `table`: the median and interval of `values(spawns, top, bottom)`,
    one value per user that has both figures; a name with none is left out."""
    got: dict[str, MedianInterval] = {}
    for name, top, bottom in table:
        interval = MedianInterval.of(values(spawns, top, bottom), level)
        if interval is not None:
            got[name] = interval
    return got


def paired_ratios(spawns: list[dict[str, Any]], level: float = 0.9) -> dict[str, MedianInterval]:
    """Each PAIRED ratio over the users that have both starts: its median and interval."""
    return medians_per_user(spawns, PAIRED, per_user, level)


# The hub's part (hub / direct) in two, user by user, in seconds: inside the start, the hub's service
# created -> the server's first answer against the direct start's create -> answer (the same interval of
# the same service spec: what the hub's start loop and its VM's CPU do to the server's start); outside
# it, the hub's request -> its service created and its first answer -> ready through the proxy.
HUB_INSIDE = ("hub_create_to_answer_s", "direct_s")
HUB_SPLIT = (("inside", *HUB_INSIDE), ("outside", "hub_s", "hub_create_to_answer_s"))


def differences(spawns: Iterable[dict[str, Any]], top: str, bottom: str) -> list[float]:
    """`top` - `bottom` of each user that has both figures (s)."""
    return [s[top] - s[bottom] for s in spawns if s.get(top) is not None and s.get(bottom) is not None]


def hub_split(spawns: list[dict[str, Any]], level: float = 0.9) -> dict[str, MedianInterval]:
    """Each HUB_SPLIT difference over the users that have both figures: its median and interval."""
    return medians_per_user(spawns, HUB_SPLIT, differences, level)


def cpu_bound_ideal(one_spawn: float, spawns: int, cpus: float) -> float:
    """Spawns started at once, if each is CPU work of `one_spawn` s spread over `cpus` CPUs."""
    if cpus <= 0:
        raise ValueError("no CPUs")
    return spawns * one_spawn / cpus


@dataclass(frozen=True)
class DockerEvent:
    """One Docker event (`docker events --format '{{json .}}'`, or the events API decoded)."""

    type: str
    action: str
    actor: str
    attributes: dict[str, str]
    time: float  # s since the epoch, on the clock of the host that emitted it

    @classmethod
    def of(cls, raw: dict[str, Any]) -> "DockerEvent":
        actor = raw.get("Actor") or {}
        when = raw["timeNano"] / 1e9 if raw.get("timeNano") else float(raw.get("time", 0))
        return cls(str(raw.get("Type", "")), str(raw.get("Action", "")), str(actor.get("ID", "")),
                   dict(actor.get("Attributes") or {}), when)


def parse_events(text: str) -> list[DockerEvent]:
    """JSON lines of Docker events (other lines skipped), in time order."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(DockerEvent.of(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
    return sorted(events, key=lambda e: e.time)


def first_event(events: Iterable[DockerEvent], type_: str, action: str) -> Optional[float]:
    return next((e.time for e in events if e.type == type_ and e.action.split(":")[0] == action), None)


def node_state_changes(events: Iterable[DockerEvent], t0: float) -> list[str]:
    """The swarm's node events that changed a node's state or availability (Docker's attributes
    `state.old`/`state.new`, `availability.old`/`availability.new`), as `+SECONDS NAME: ready -> down`."""
    out = []
    for e in sorted(events, key=lambda e: e.time):
        if e.type != "node":
            continue
        a = e.attributes
        changes = [f"{key} {a[key + '.old']} -> {a[key + '.new']}" for key in ("state", "availability")
                   if key + ".new" in a and a.get(key + ".old") != a[key + ".new"]]
        if changes:
            out.append(f"+{e.time - t0:.1f} s {a.get('name', e.actor[:12])}: {', '.join(changes)}")
    return out


def parse_probe(text: str) -> dict[str, Any]:
    """The node probe's output: `running <epoch>`, `answer <epoch> <status line>`, then its events."""
    out: dict[str, Any] = {"events": parse_events(text)}
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and parts[0] in ("running", "answer"):
            out[parts[0]] = float(parts[1].replace(",", "."))
            if parts[0] == "answer" and len(parts) == 3:
                out["status_line"] = parts[2].strip()
    return out


def peak_memory_mib(text: str) -> Optional[float]:
    """The highest `mem <epoch> <used KiB>` line of the memory sampler, in MiB."""
    used = [int(p[2]) for p in (line.split() for line in text.splitlines()) if len(p) == 3 and p[0] == "mem"]
    return round(max(used) / 1024, 1) if used else None


def log_time(stamp: str) -> float:
    """docker service logs --timestamps' RFC 3339 time (nanoseconds, Z) as s since the epoch."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if not m:
        raise ValueError(f"not a docker log time: {stamp!r}")
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def hub_log_milestones(lines: Iterable[str], user: str, service: str) -> dict[str, float]:
    """The first time of each spawn milestone in the hub's log (`docker service logs --timestamps`
    lines, possibly prefixed `cablab_hub.1.xyz@node1    | `); the POST's arrival is its log time
    less the request's duration that JupyterHub logs with it."""
    u, s = re.escape(user), re.escape(service)
    patterns = {
        "hub: start request received": rf" POST /hub/api/users/{u}/server\b.*?\s([\d.]+)ms",
        "hub: service created": rf"Created service {s} ",
        "hub: waiting for the task": rf"Starting service {s} ",
        "hub: server answered the hub": rf"User {u} took [\d.]+ seconds to start",
        "hub: proxy route added": rf"Adding user {u} to proxy ",
        "hub: its progress stream says ready": rf"Server {u} is ready$",
    }
    found: dict[str, float] = {}
    for raw in lines:
        text = raw.split("| ", 1)[1] if re.match(r"\S+@\S+\s+\| ", raw) else raw
        stamp, _, message = text.strip().partition(" ")
        try:
            when = log_time(stamp)
        except ValueError:
            continue
        for label, pattern in patterns.items():
            m = re.search(pattern, message)
            if m and label not in found:
                found[label] = when - (float(m.group(1)) / 1000 if m.groups() else 0.0)
    return found


def timeline(milestones: dict[str, float]) -> list[dict[str, Any]]:
    """Milestones in time order, each with its time from the first and the step from the one before."""
    ordered = sorted(milestones.items(), key=lambda kv: kv[1])
    if not ordered:
        return []
    t0 = ordered[0][1]
    out, before = [], t0
    for label, when in ordered:
        out.append({"milestone": label, "at_s": round(when - t0, 2), "step_s": round(when - before, 2)})
        before = when
    return out


@dataclass
class Offset:
    """A host's clock minus this machine's, from the sample with the shortest round trip (± rtt/2)."""

    seconds: float
    uncertainty: float

    @classmethod
    def best(cls, samples: Iterable[tuple[float, float, float]]) -> "Offset":
        """`samples`: (local before, remote, local after)."""
        before, remote, after = min(samples, key=lambda s: s[2] - s[0])
        return cls(round(remote - (before + after) / 2, 4), round((after - before) / 2, 4))


@dataclass
class Report:
    """What the benchmark writes to --report (JSON) and prints."""

    cluster: str
    when: str
    hub_wait: str = "progress"  # how the hub's spawns were waited for (Bench.wait_ready)
    users: list[str] = field(default_factory=list)
    spawns: list[dict[str, Any]] = field(default_factory=list)  # one per user: node, hub_s, floor_s, ...
    hub: Optional[Summary] = None
    floor: Optional[Summary] = None
    hub_over_floor_p50: Optional[float] = None
    # The hub's own service spec started without the hub (Bench.direct_spawn): its p50 against the
    # floor's (the single-user extension's part) and the hub's against it (the hub's part).
    direct: Optional[Summary] = None
    direct_over_floor_p50: Optional[float] = None
    hub_over_direct_p50: Optional[float] = None
    # Each user's first start through the hub (Bench.spawns: `first_`-keys), before the timed one: with a
    # new home in `first_new_homes` of them; its p50 against the timed hub start's.
    first: Optional[Summary] = None
    first_new_homes: int = 0
    first_over_hub_p50: Optional[float] = None
    # The same ratios user by user (PAIRED): median, and an interval that holds the true median with
    # `coverage`, e.g. {"hub_over_floor": {"n": 6, "p50": 1.21, "low": 1.12, "high": 1.33, ...}}.
    paired: dict[str, MedianInterval] = field(default_factory=dict)
    hub_within_target: Optional[int] = None  # users whose hub start took <= HUB_TARGET x their floor
    hub_split: dict[str, MedianInterval] = field(default_factory=dict)  # HUB_SPLIT: the hub's part, in s
    hub_longer_inside: Optional[int] = None  # users whose hub start was longer inside the start (HUB_INSIDE)
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    capacity: dict[str, Any] = field(default_factory=dict)
    clock_offsets: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    host_cpu_per_spawn: Optional[Summary] = None  # --vms-here: this machine's CPU-seconds per hub spawn
    hub_host: str = ""  # where the hub runs (the first manager)
    # --vms-here: CPU-seconds of each VM, by its part in the spawn, p50 over the spawns: for the hub's
    # spawns (start -> ready) and the floor's (create -> answer), e.g. {"hub": {"server's node": 30.1, ...}}
    vm_cpu_per_spawn: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)
    # The hub's node by process (NODE_PROCS), p50 CPU-s over the spawns, per kind: {"hub": {"dockerd": 0.9, ...}}
    node_procs_per_spawn: dict[str, dict[str, float]] = field(default_factory=dict)

    def summarize(self) -> None:
        cpu = [s["host_cpu_s"] for s in self.spawns if s.get("host_cpu_s") is not None and s.get("hub_s")]
        self.host_cpu_per_spawn = Summary.of(cpu) if cpu else None
        self.vm_cpu_per_spawn = {kind: by_role(self.spawns, key, self.hub_host)
                                 for kind, key in (("hub", "vm_cpu_s"), ("floor", "floor_vm_cpu_s"),
                                                   ("direct", "direct_vm_cpu_s"))
                                 if any(s.get(key) for s in self.spawns)}
        self.node_procs_per_spawn = node_procs_per_spawn(self.spawns, ("hub", "direct", "floor"))
        self.hub = Summary.of(s["hub_s"] for s in self.spawns if s.get("hub_s") is not None)
        self.floor = Summary.of(s["floor_s"] for s in self.spawns if s.get("floor_s") is not None)
        self.hub_over_floor_p50 = ratio(self.hub.p50, self.floor.p50)
        first = [s for s in self.spawns if s.get("first_hub_s") is not None]
        if first:
            self.first = Summary.of(s["first_hub_s"] for s in first)
            self.first_new_homes = sum(1 for s in first if s.get("first_home_new"))
            self.first_over_hub_p50 = ratio(self.first.p50, self.hub.p50)
        direct = [s["direct_s"] for s in self.spawns if s.get("direct_s") is not None]
        self.direct = Summary.of(direct) if direct else None
        if self.direct:
            self.direct_over_floor_p50 = ratio(self.direct.p50, self.floor.p50)
            self.hub_over_direct_p50 = ratio(self.hub.p50, self.direct.p50)
        self.paired = paired_ratios(self.spawns)
        self.hub_split = hub_split(self.spawns)
        inside = differences(self.spawns, *HUB_INSIDE)
        self.hub_longer_inside = sum(1 for x in inside if x > 0) if inside else None
        hub_over_floor = per_user(self.spawns, "hub_s", "floor_s")
        self.hub_within_target = sum(1 for r in hub_over_floor if r <= HUB_TARGET) if hub_over_floor else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def node_procs_rows(self) -> list[str]:
        """The hub's node's processes with the most more CPU for a hub spawn than a direct one."""
        procs = self.node_procs_per_spawn
        hub, direct = procs.get("hub"), procs.get("direct")
        if not hub or not direct:
            return []
        kinds = [k for k in ("hub", "direct", "floor") if k in procs]
        names = sorted(set(hub) | set(direct), key=lambda n: direct.get(n, 0.0) - hub.get(n, 0.0))
        rows = [f"  the hub's node ({self.hub_host}) by process, CPU-s per spawn (p50, the node's own accounting):",
                f"    {'':<22}" + "  ".join(f"{k:>6}" for k in kinds)]
        for name in [n for n in names if n != GONE][:NODE_PROCS_SHOWN] + [GONE]:
            rows.append(f"    {name:<22}" + "  ".join(f"{procs[k].get(name, 0.0):>6.2f}" for k in kinds))
        return rows

    def table(self) -> str:
        def f(x: Any) -> str:
            return "—" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)

        rows = [f"hub spawns waited for by: {self.hub_wait}",
                "spawn (s)                n    p50    p95    min    max"]
        first_note = (f"  ({self.first_new_homes} of {self.first.n} with a new home; p50 "
                      f"{f(self.first_over_hub_p50)} x the next start's)") if self.first else ""
        for name, s, note in (("hub: start -> ready", self.hub, ""), ("direct: create -> answer", self.direct, ""),
                              ("floor: create -> answer", self.floor, ""), ("hub: the first start", self.first, first_note)):
            if s is not None:
                rows.append(f"{name:<24} {s.n:>2} {f(s.p50):>6} {f(s.p95):>6} {f(s.min):>6} {f(s.max):>6}{note}")
        rows.append(f"hub p50 / floor p50: {f(self.hub_over_floor_p50)} (target <= {HUB_TARGET})")
        if self.direct:
            rows.append(f"  of which: direct / floor {f(self.direct_over_floor_p50)} (JupyterHub's single-user "
                        f"extension in the server's start), hub / direct {f(self.hub_over_direct_p50)} (the hub's part)")
        if self.paired:
            level = min(m.coverage for m in self.paired.values())
            rows.append(f"user by user (each user's starts back to back on one node): median [{level:.0%} interval]")
            rows.append("  " + ", ".join(f"{name.replace('_over_', ' / ')} {m.p50:.2f} [{m.low:.2f}-{m.high:.2f}]"
                                         for name, m in self.paired.items()))
            if self.hub_within_target is not None:
                rows.append(f"  hub <= {HUB_TARGET} x floor for {self.hub_within_target} of "
                            f"{self.paired['hub_over_floor'].n} users")
        inside, outside = self.hub_split.get("inside"), self.hub_split.get("outside")
        if inside:
            rows.append(f"  the hub's part (s): inside the start (its service created -> first answer, less the "
                        f"direct start's) {inside.p50:+.2f} [{inside.low:+.2f} to {inside.high:+.2f}], longer for "
                        f"{self.hub_longer_inside} of {inside.n} users")
        if outside:
            rows.append(f"    outside it (its request -> service created, first answer -> ready through the proxy) "
                        f"{outside.p50:.2f} [{outside.low:.2f} to {outside.high:.2f}]")
        if self.host_cpu_per_spawn:
            rows.append(f"this machine's CPU per hub spawn (the VMs run here): p50 {f(self.host_cpu_per_spawn.p50)} "
                        f"CPU-s over {f(self.hub.p50 if self.hub else None)} s, of {os.cpu_count()} CPUs")
        for kind, roles in self.vm_cpu_per_spawn.items():
            rows.append(f"  CPU-s per {kind} spawn, by VM (p50): " + ", ".join(f"{r} {f(v)}" for r, v in roles.items()))
        rows += self.node_procs_rows()
        if self.breakdown:
            rows.append("one spawn, where the time goes (s):")
            rows += [f"  {b['at_s']:>7.2f}  +{b['step_s']:<6.2f} {b['milestone']}" for b in self.breakdown]
        c = self.capacity
        if c:
            rows.append(f"capacity: {c.get('ready')} of {c.get('started')} ready, {c.get('failures')} failed; "
                        f"all ready in {f(c.get('all_ready_s'))} s, CPU-bound ideal {f(c.get('ideal_s'))} s "
                        f"(ratio {f(c.get('over_ideal'))}, target <= {CAPACITY_TARGET})")
            if c.get("host_ideal_s") is not None:
                rows.append(f"  bound by this machine's CPUs (the VMs run here): ideal {f(c.get('host_ideal_s'))} s "
                            f"({c.get('started')} x {f(c.get('host_cpu_per_spawn_s'))} CPU-s / {c.get('host_cpus')} CPUs; "
                            f"ratio {c.get('over_host_ideal') or '—'}); this machine's CPUs busy "
                            f"{c.get('host_busy_share') or 0:.0%} of the time until all were ready")
            for node, mib in (c.get("peak_memory_mib") or {}).items():
                rows.append(f"  peak memory {node}: {f(mib)} MiB of {f(c.get('memory_mib', {}).get(node))}")
            changes = c.get("node_changes")
            if changes is not None:
                rows.append(f"  node state changes while they started: {'; '.join(changes) or 'none'}")
            extra = c.get("one_more")
            if extra:
                running = c.get("running_before_one_more")
                if running is not None:
                    rows.append(f"  running before the one more: {len(running)} of {c.get('started')}")
                rows.append(f"  one more ({extra.get('user')}): {extra.get('outcome')} in {f(extra.get('seconds'))} s: "
                            f"{extra.get('message', '')[:300]}")
        rows += [f"note: {n}" for n in self.notes]
        return "\n".join(rows)


# --- On the nodes (bash, run with sudo through the spec's ssh-config) --------------------

# Waits for the service's container to start on this node, then polls the server from inside the
# container's network namespace and prints the first HTTP status line's time; then the container's
# Docker events of this node. Times are this node's clock (EPOCHREALTIME: bash >= 5).
# It must not slow what it measures (a lab node has one emulated CPU): one `docker events` stream
# instead of a `docker ps` per try (a Go binary's start is ~1 s of CPU under emulation), and no
# process per poll (bash's /dev/tcp in the shell itself; `read -t` on a pipe nobody writes as sleep);
# the container's process from its cgroup (systemd's layout, then cgroupfs'), not a `docker inspect`
# (another Go start, in the middle of the server's; it is the fallback). It asks for `path` (the
# server's API version: the same handler, without authentication, under the hub's prefix or not), not
# a path that one server answers with a rendered 404 page and another with JSON. $5: the cgroup root (tests).
PROBE = r"""
export LC_ALL=C
svc=$1 port=$2 timeout=$3 path=$4 cgroups=${5:-/sys/fs/cgroup}
since=$EPOCHREALTIME end=$(( ${EPOCHREALTIME%.*} + timeout ))
coproc EVENTS { exec docker events --since "$since" --filter type=container --filter event=start \
  --filter "label=com.docker.swarm.service.name=$svc" --format '{{.ID}}'; }
cid=
IFS= read -r -t "$timeout" cid <&"${EVENTS[0]}" || true
kill "$EVENTS_PID" 2>/dev/null || true
[ -n "$cid" ] || exit 3
echo "running $EPOCHREALTIME $cid"
pid=
for procs in "$cgroups/system.slice/docker-$cid.scope/cgroup.procs" "$cgroups/docker/$cid/cgroup.procs"; do
  [ -r "$procs" ] && IFS= read -r pid <"$procs" && break
done
[ -n "$pid" ] || pid=$(docker inspect --format '{{.State.Pid}}' "$cid")
# shellcheck disable=SC2016  # the inner script expands its own variables
nsenter -t "$pid" -n bash -c '
  exec 4<> <(:)  # read -t on it: a sleep without a process
  while :; do
    if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
      printf "GET %s HTTP/1.0\r\n\r\n" "$3" >&3
      l=
      IFS= read -r -t 10 l <&3 || true
      exec 3<&-
      case $l in HTTP/*) echo "answer $EPOCHREALTIME ${l%$'"'"'\r'"'"'}"; exit 0;; esac
    fi
    [ "${EPOCHREALTIME%.*}" -lt "$2" ] || exit 4
    read -r -t 0.05 -u 4 _ || true
  done' probe "$port" "$end" "$path"
docker events --since "$since" --until "$EPOCHREALTIME" --filter "label=com.docker.swarm.service.name=$svc" \
  --format '{{json .}}'
"""

# Exit 0 if the home (%s) is missing or empty, 1 if anything is in it.
HOME_IS_NEW = """sh -c '[ ! -d "$1" ] || [ -z "$(ls -A "$1")" ]' home %s"""

# Used memory (MemTotal - MemAvailable, KiB) every second until the stop file appears (at most 1 h).
SAMPLER = r"""
export LC_ALL=C
stop=$1 n=0
rm -f "$stop"
while [ ! -e "$stop" ] && [ "$n" -lt 3600 ]; do
  awk -v t="$EPOCHREALTIME" '/^MemTotal:/{tot=$2} /^MemAvailable:/{av=$2} END{print "mem", t, tot-av}' /proc/meminfo
  n=$((n+1)); sleep 1
done
"""


class DockerOverSSH:
    """The Docker API of one host through the spec's ssh-config, for the `docker` SDK.

    docker-py's own `ssh://` transport runs `docker system dial-stdio` as the login user and reads
    only ~/.ssh/config; the checks reach hosts through an ssh-config file and run as root with
    sudo. So a local socket, per connection: `ssh -F <config> <host> sudo docker system dial-stdio`
    (the same transport, with the checks' config, master connection and sudo).
    """

    def __init__(self, ssh_config: str, host: str, control_path: Path, command: Optional[list[str]] = None):
        self.dir = Path(tempfile.mkdtemp(prefix="cablab-docker-", dir="/tmp"))
        path = str(self.dir / "docker.sock")
        command = command or ["ssh", "-F", ssh_config, "-o", "ControlMaster=auto", "-o",
                              f"ControlPath={control_path}", "-o", "ControlPersist=60s", host,
                              "sudo docker system dial-stdio"]

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
                assert proc.stdin is not None and proc.stdout is not None
                stdin, stdout, sock = proc.stdin, proc.stdout, self.request

                def upstream() -> None:
                    try:
                        while chunk := sock.recv(65536):
                            stdin.write(chunk)
                            stdin.flush()
                    except OSError:
                        pass
                    finally:
                        try:
                            stdin.close()
                        except OSError:
                            pass

                up = threading.Thread(target=upstream, daemon=True)
                up.start()
                try:
                    while chunk := stdout.read1(65536):
                        sock.sendall(chunk)
                except OSError:
                    pass
                finally:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    proc.terminate()
                    proc.wait(timeout=30)

        self.server = socketserver.ThreadingUnixStreamServer(path, Pipe)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        import docker  # the lab extra

        self.client = docker.DockerClient(base_url=f"unix://{path}", timeout=120)

    def close(self) -> None:
        self.client.close()
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_api_path(user: Optional[str] = None) -> str:
    """What the probe asks a server for: its API version (the same handler in every server, without
    authentication), under JupyterHub's prefix for `user`'s (the hub at /: /user/<name>/), at the root
    for the floor's plain jupyter-server."""
    return f"/user/{quote(user, safe='')}/api" if user else "/api"


def direct_task_template(hub_template: dict[str, Any]) -> dict[str, Any]:
    """The hub's service TaskTemplate as it is (`jupyterhub-singleuser`, JupyterHub's variables, the
    server's API token), to be started without the hub: what the single-user server's own start costs
    with JupyterHub's extension, no hub waiting on it and no proxy route to add. A deep copy, without
    the hub's ForceUpdate counter."""
    template = json.loads(json.dumps(hub_template))
    template.pop("ForceUpdate", None)
    return template


def floor_task_template(hub_template: dict[str, Any], notebook_dir: str, port: int = SERVER_PORT) -> dict[str, Any]:
    """The hub's service TaskTemplate (image, mounts, network, resources, placement) running a plain
    `jupyter-server` without the hub (the args, not the entrypoint, as dockerspawner): JupyterHub's
    variables dropped, no token (it is reached on the node only)."""
    template = direct_task_template(hub_template)
    spec = template.setdefault("ContainerSpec", {})
    spec["Env"] = [e for e in spec.get("Env") or [] if not e.startswith(("JUPYTERHUB_", "JPY_"))]
    spec.pop("Command", None)  # the image's entrypoint (tini) stays, as for the hub's server
    spec["Args"] = ["jupyter-server", "--ServerApp.ip=0.0.0.0", f"--ServerApp.port={port}", "--IdentityProvider.token=",
                    "--ServerApp.allow_remote_access=True", f"--ServerApp.root_dir={notebook_dir}",
                    "--ServerApp.open_browser=False"]
    return template


# --- Against the cluster ------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, spec_path: str, ssh_config: str, secrets: Optional[str], token_file: Optional[str],
                 vms_here: bool = False, hub_wait: str = "progress"):
        self.vms_here = vms_here
        self.hub_wait = hub_wait
        from cablab_cluster.checks.hosts import Nodes, missing_from_ssh_config
        from cablab_cluster.secretstore import secrets_dir
        from cablab_cluster.spec import load_spec

        self.spec = load_spec(spec_path)
        self.cluster = c = self.spec.cluster
        missing = missing_from_ssh_config(Path(ssh_config).read_text(encoding="utf-8", errors="replace"),
                                          [h.name for h in c.hosts])
        if missing:
            raise SystemExit(f"{ssh_config} has no `Host` entry for {', '.join(missing)}")
        self.secrets = Path(secrets) if secrets else secrets_dir(self.spec)
        self.control_dir = Path(tempfile.mkdtemp(prefix="cablab-ssh-", dir="/tmp"))
        self.nodes = Nodes(ssh_config, self.control_dir)
        self._sessions: list[Any] = []  # HubSession, one per thread
        self._local = threading.local()
        self.token = self._token(token_file)
        self.manager = c.first_manager.name
        self.hub_host = c.hub_host.name
        # --vms-here: each host's libvirt domain, as the lab's Vagrantfile names them (lab/harness.py).
        self.domains = {h.name: f"cablab-{c.name}-{h.name}" for h in c.hosts}
        self.docker = DockerOverSSH(ssh_config, self.manager, self.control_dir / f"docker-{self.manager}")
        self.offsets: dict[str, Offset] = {}

    @property
    def hub(self):
        """This thread's HTTPS session with the hub (the capacity phase starts servers from threads)."""
        from cablab_cluster.checks.hub import HubSession

        if not hasattr(self._local, "session"):
            self._local.session = HubSession.for_cluster(self.cluster, self.secrets)
            self._sessions.append(self._local.session)
        return self._local.session

    def close(self) -> None:
        self.docker.close()
        for session in self._sessions:
            session.close()
        self.nodes.close()
        shutil.rmtree(self.control_dir, ignore_errors=True)

    # -- the hub, as an admin --------------------------------------------------------------
    def _token(self, token_file: Optional[str]) -> str:
        if token_file:
            return Path(token_file).read_text(encoding="utf-8").strip()
        if not self.cluster.hub.auth.lab_password:
            raise SystemExit("--token-file: an admin's API token is needed (this cluster logs in through GitHub)")
        admin = next((u.name for u in self.spec.userlist.users if u.admin), None)
        if admin is None:
            raise SystemExit("the userlist has no admin: give --token-file")
        from cablab_cluster.secretstore import read_lab_password

        password = read_lab_password(self.secrets)
        response = self.hub.login(admin, password)
        if response.status != 302:
            raise SystemExit(f"logging in as {admin}: {response}")
        made = self.hub.api("POST", f"/users/{admin}/tokens", {"note": "cablab bench", "expires_in": 14400})
        if made.status not in (200, 201):
            raise SystemExit(f"creating an API token for {admin}: {made}")
        return made.json()["token"]

    def api(self, method: str, path: str, data: Any = None):
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json"}
        body = None
        if data is not None:
            body, headers["Content-Type"] = json.dumps(data).encode(), "application/json"
        return self.hub.request(method, f"/hub/api{path}", body, headers)

    def model(self, user: str) -> Optional[dict]:
        response = self.api("GET", f"/users/{user}")
        if response.status != 200:
            raise RuntimeError(f"GET /hub/api/users/{user}: {response}")
        return (response.json().get("servers") or {}).get("")

    def answers(self, user: str) -> bool:
        """The user's server answers /api/status through the proxy (JSON with `started`)."""
        import httpx

        try:
            r = self.hub.request("GET", f"/user/{user}/api/status", headers={"Authorization": f"token {self.token}"})
        except httpx.HTTPError:
            return False
        if r.status != 200:
            return False
        try:
            return "started" in r.json()
        except ValueError:
            return False

    def wait_ready(self, user: str, interval: float) -> tuple[Optional[float], str]:
        """(the time the server first answered through the proxy, or None; why not).

        progress (the default): as JupyterHub's spawn page waits, on the hub's progress stream, one
        request the hub answers as the spawn goes on, until its `ready` event (the proxy has the
        route then) or its `failed` one; then /api/status through the proxy. A stream that ends
        without either (the hub restarted) or is refused: polling from there.
        poll (--hub-wait poll, the bench before the fourteenth session): /api/status through the
        proxy every `interval` s; until the route exists the hub serves each of these requests,
        on the manager's CPU, which under emulation the server's start on a worker shares."""
        end = time.time() + START_TIMEOUT
        if self.hub_wait == "progress":
            outcome = self.progress_ready(user, end)
            if outcome is not None:
                return outcome
        return self.poll_ready(user, interval, end)

    def progress_ready(self, user: str, end: float) -> Optional[tuple[Optional[float], str]]:
        """wait_ready through the progress stream; None: the stream said neither ready nor failed."""
        from cablab_cluster.checks.hub import spawn_outcome

        outcome = spawn_outcome(self.hub, user, {"Authorization": f"token {self.token}"})
        if outcome is None:
            return None
        if outcome:
            return None, outcome
        self._local.ready_event = time.time()  # a milestone of hub_spawn's breakdown
        while time.time() < end:  # the route is in the proxy: the first request normally answers
            if self.answers(user):
                return time.time(), ""
            time.sleep(0.1)
        return None, f"ready on the hub, but no answer through the proxy after {START_TIMEOUT:.0f} s"

    def poll_ready(self, user: str, interval: float, end: float) -> tuple[Optional[float], str]:
        checked = time.time()
        while time.time() < end:
            if self.answers(user):
                return time.time(), ""
            if time.time() - checked > 5:  # a failed spawn: the hub forgets the server
                checked = time.time()
                if self.model(user) is None:
                    return None, self.failure(user) or "the server stopped while starting"
            time.sleep(interval)
        return None, f"not ready after {START_TIMEOUT:.0f} s"

    def failure(self, user: str) -> str:
        import httpx

        from cablab_cluster.checks.hub import failure_message

        try:
            r = self.hub.request("GET", f"/hub/api/users/{user}/server/progress",
                                 headers={"Authorization": f"token {self.token}", "Accept": "text/event-stream"})
        except httpx.HTTPError:
            return ""
        return failure_message(r.text) if r.status == 200 else ""

    def stop(self, user: str, node: Optional[str] = None) -> None:
        from cablab_cluster.checks.spawner import service_name

        if self.model(user) is not None:
            self.api("DELETE", f"/users/{user}/server")
            end = time.time() + 300
            while self.model(user) is not None and time.time() < end:
                time.sleep(2)
        if node:
            self.container_gone(node, service_name(user))

    def container_gone(self, node: str, service: str) -> None:
        """Wait (120 s at most) until the node runs no container of the service: the next start on
        the node does not share its CPU with a server shutting down."""
        end = time.time() + 120
        while time.time() < end and self.nodes.try_run(
                node, "docker ps -q --filter %s", f"label=com.docker.swarm.service.name={service}").stdout.strip():
            time.sleep(1)

    # -- hosts -------------------------------------------------------------------------------
    def offset(self, host: str) -> Offset:
        if host not in self.offsets:
            samples = []
            for _ in range(3):
                before = time.time()
                remote = float(self.nodes.run(host, "date +%s.%N"))
                samples.append((before, remote, time.time()))
            self.offsets[host] = Offset.best(samples)
        return self.offsets[host]

    def local(self, host: str, when: Optional[float]) -> Optional[float]:
        """A host's clock reading on this machine's clock."""
        return None if when is None else when - self.offset(host).seconds

    def probe(self, host: str, service: str, path: str) -> tuple[threading.Thread, dict[str, Any]]:
        out: dict[str, Any] = {}

        def run() -> None:
            r = self.nodes.try_run(host, "bash -c %s probe %s %s %s %s", PROBE, service, str(SERVER_PORT),
                                   str(int(START_TIMEOUT)), path)
            out.update(parse_probe(r.stdout))
            out["rc"] = r.rc

        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(1.0)  # the probe is polling before anything is started
        return t, out

    def manager_events(self, since: float, **filters: str) -> list[DockerEvent]:
        """The manager's Docker events from `since` (its clock) until now, e.g. type="node"."""
        until = int(time.time() + self.offset(self.manager).seconds) + 2
        raw = self.docker.client.events(since=int(since) - 1, until=until, filters=filters, decode=True)
        return sorted((DockerEvent.of(e) for e in raw), key=lambda e: e.time)

    # -- the hub's node, process by process, over one spawn ----------------------------------
    def node_procs(self) -> Optional[tuple[float, Processes]]:
        r = self.nodes.try_run(self.hub_host, NODE_PROCS)
        try:
            return node_processes(r.stdout)
        except ValueError:
            return None

    def node_procs_since(self, before: Optional[tuple[float, Processes]], kind: str) -> dict[str, Any]:
        """{kind}_node_procs: the hub's node's CPU-s by process since `before` ({} if a snapshot failed)."""
        after = self.node_procs() if before else None
        return {f"{kind}_node_procs": processes_delta(before, after)} if before and after else {}

    # -- --vms-here: this machine's CPU and each VM's over one spawn --------------------------
    def cpu_snapshot(self) -> Optional[tuple[float, dict[str, float]]]:
        return (host_busy(), vm_cpu(self.domains)) if self.vms_here else None

    def cpu_since(self, before: Optional[tuple[float, dict[str, float]]], prefix: str = "") -> dict[str, Any]:
        """{prefix}host_cpu_s and {prefix}vm_cpu_s (host -> CPU-s) since `before` ({} without --vms-here)."""
        if before is None:
            return {}
        busy, vms = before
        out: dict[str, Any] = {f"{prefix}host_cpu_s": round(host_busy() - busy, 1)}
        if vms:
            out[f"{prefix}vm_cpu_s"] = cpu_delta(vms, vm_cpu(self.domains))
        return out

    # -- §1 and §3 ---------------------------------------------------------------------------
    def hub_spawn(self, user: str, node: str, breakdown: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        from cablab_cluster.checks.spawner import service_name
        from cablab_cluster.plan import STACK

        service = service_name(user)
        thread, probe = self.probe(node, service, server_api_path(user))
        procs = self.node_procs()
        cpu = self.cpu_snapshot()
        self._local.ready_event = None
        t0 = time.time()
        response = self.api("POST", f"/users/{user}/server", {"node": node})
        if response.status not in (201, 202):
            return {"error": f"start: {response}"}, {}
        ready, why = self.wait_ready(user, interval=0.25)
        # The CPU of the start -> ready, as the floor's is of its create -> answer: not of the
        # bench's own questions below (the service's spec, the manager's events, the hub's logs).
        result: dict[str, Any] = self.cpu_since(cpu) | self.node_procs_since(procs, "hub")
        thread.join(timeout=120)
        result["hub_s"] = round(ready - t0, 2) if ready else None
        result["hub_start_at"] = round(t0, 2)  # this machine's clock: to line up with other samples
        if why:
            result["error"] = why
        spec: dict[str, Any] = {}
        if ready:
            spec = self.docker.client.api.inspect_service(service)["Spec"]
            created = first_event(self.manager_events(t0 + self.offset(self.manager).seconds,
                                                      type="service", service=service), "service", "create")
            answer = self.local(node, probe.get("answer"))
            created_here = self.local(self.manager, created)
            if answer and created_here:
                result["hub_create_to_answer_s"] = round(answer - created_here, 2)
            if breakdown:
                milestones = {"bench: start request sent": t0, "bench: ready through the proxy": ready,
                              "bench: the progress stream's ready event": self._local.ready_event}
                since = int(t0 + self.offset(self.manager).seconds) - 5
                logs = self.nodes.try_run(self.manager, "docker service logs --raw --timestamps --since %s %s",
                                          str(since), f"{STACK}_hub")
                for label, when in hub_log_milestones((logs.stdout + logs.stderr).splitlines(), user, service).items():
                    milestones[label] = self.local(self.manager, when)
                if created_here:
                    milestones["docker (manager): service created"] = created_here
                for action, label in (("create", "container created (task assigned)"),
                                      ("start", "container started")):
                    when = first_event(probe.get("events", []), "container", action)
                    if when:
                        milestones[f"docker ({node}): {label}"] = self.local(node, when)
                if answer:
                    milestones[f"server ({node}): first HTTP answer"] = answer
                result["breakdown"] = timeline({k: v for k, v in milestones.items() if v is not None})
        return result, spec

    def floor_spawn(self, user: str, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The hub's service `spec` (its TaskTemplate and EndpointSpec) as a plain jupyter-server."""
        template = floor_task_template(spec["TaskTemplate"], str(self.cluster.hub.users.home_target))
        return self.service_spawn("floor", FLOOR_PREFIX + user, node, template, spec.get("EndpointSpec"),
                                  server_api_path())

    def direct_spawn(self, user: str, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The hub's service `spec` itself, created through the Docker API: no hub in the start."""
        return self.service_spawn("direct", DIRECT_PREFIX + user, node, direct_task_template(spec["TaskTemplate"]),
                                  spec.get("EndpointSpec"), server_api_path(user))

    def service_spawn(self, kind: str, service: str, node: str, template: dict[str, Any],
                      endpoint_spec: Optional[dict[str, Any]], path: str) -> dict[str, Any]:
        """Create the service, time create (the manager's event) -> the server's first answer on the
        node, then remove it. The result's keys start with `kind`_ (the floor's status line is
        `status_line`, as before)."""
        self.remove_service(service, node)
        thread, probe = self.probe(node, service, path)
        procs = self.node_procs()
        before = self.cpu_snapshot()
        t0 = time.time()
        self.docker.client.api.create_service(template, name=service, endpoint_spec=endpoint_spec,
                                              labels={BENCH_LABEL: kind})
        thread.join(timeout=START_TIMEOUT + 60)
        # As for the hub's spawn: this machine's CPU from the start to the answer, not the removal.
        cpu = self.cpu_since(before, prefix=f"{kind}_") | self.node_procs_since(procs, kind)
        try:
            created = first_event(self.manager_events(t0 + self.offset(self.manager).seconds,
                                                      type="service", service=service), "service", "create")
            answer, started = probe.get("answer"), first_event(probe.get("events", []), "container", "start")
            status_key = "status_line" if kind == "floor" else f"{kind}_status_line"
            result: dict[str, Any] = {status_key: probe.get("status_line"), f"{kind}_start_at": round(t0, 2), **cpu}
            c_here, a_here = self.local(self.manager, created), self.local(node, answer)
            if c_here and a_here:
                result[f"{kind}_s"] = round(a_here - c_here, 2)
                s_here = self.local(node, started)
                if s_here:
                    result[f"{kind}_create_to_container_start_s"] = round(s_here - c_here, 2)
            else:
                result[f"{kind}_error"] = f"probe rc {probe.get('rc')}: created {created}, answer {answer}"
            return result
        finally:
            self.remove_service(service, node)

    def remove_service(self, service: str, *nodes: str) -> bool:
        """Remove the service, then wait until none of `nodes` runs its container; False: there was none."""
        import docker

        try:
            self.docker.client.api.remove_service(service)
        except docker.errors.NotFound:
            return False
        for node in nodes:
            self.container_gone(node, service)
        return True

    def remove_leftovers(self, report: Report) -> None:
        """Remove the floor and direct services a bench stopped part-way left (a killed run has no
        `finally`): each keeps a server's reservation on its node, and the capacity phase's tenth
        start then finds no room."""
        left = self.docker.client.api.services(filters={"label": BENCH_LABEL})
        for service in sorted(s["Spec"]["Name"] for s in left):
            log(f"removing {service}, left by an earlier bench")
            if self.remove_service(service, *(h.name for h in self.cluster.notebook_hosts)):
                report.notes.append(f"removed {service}, left by an earlier bench")

    def home_is_new(self, user: str) -> Optional[bool]:
        """Whether `user`'s home on the home share is missing or empty (the NFS server's run makes every
        userlist user's home, empty; their first start fills it). None: the spec has no NFS server of
        its own, or the check failed."""
        server = self.cluster.nfs_server
        if server is None:
            return None
        share = self.cluster.share(self.cluster.hub.users.home_share)
        rc = self.nodes.try_run(server.name, HOME_IS_NEW, f"{share.path}/{user}").rc
        return {0: True, 1: False}.get(rc)

    def free_users(self) -> list[str]:
        overrides = set(self.cluster.hub.users.overrides)
        names = [u.name for u in self.spec.userlist.users if u.name not in overrides]
        return [n for n in names if self.model(n) is None]

    def spawns(self, users: list[str], report: Report) -> None:
        hosts = [h.name for h in self.cluster.notebook_hosts]
        for host in {self.manager, *hosts}:
            o = self.offset(host)
            report.clock_offsets[host] = {"seconds": o.seconds, "uncertainty": o.uncertainty}
        for i, user in enumerate(users):
            node = hosts[i % len(hosts)]
            # Two starts through the hub: the first may fill a new home (the hub's links, the image's
            # seed, the server's first files) and comes after the node sat idle while the other
            # node ran the previous user's starts; the second, timed against the floor and the direct
            # start, finds what they find: the home filled, the node just used.
            new_home = self.home_is_new(user)
            log(f"{user} on {node}: through the hub, the first start"
                + {True: " (a new home)", False: " (a home used before)", None: ""}[new_home])
            try:
                first, spec = self.hub_spawn(user, node, breakdown=False)
            finally:
                self.stop(user, node)
            result: dict[str, Any] = {"first_home_new": new_home, **{f"first_{k}": v for k, v in first.items()}}
            if spec:
                log(f"{user} on {node}: through the hub again")
                try:
                    again, spec_again = self.hub_spawn(user, node, breakdown=not report.breakdown)
                finally:
                    self.stop(user, node)
                breakdown = again.pop("breakdown", [])
                report.breakdown = report.breakdown or breakdown
                result |= again
                spec = spec_again or spec
            if spec:
                log(f"{user} on {node}: the floor (the hub's service spec as a plain jupyter-server)")
                result |= self.floor_spawn(user, node, spec)
                log(f"{user} on {node}: direct (the hub's service spec, created without the hub)")
                result |= self.direct_spawn(user, node, spec)
            report.spawns.append({"user": user, "node": node, **result})
            log(f"{user}: {report.spawns[-1]}")
        report.summarize()

    # -- §2 ----------------------------------------------------------------------------------
    def capacity(self, users: list[str], count: int, report: Report) -> None:
        hosts = [h.name for h in self.cluster.notebook_hosts]
        running = self.api("GET", "/users?state=active").json()
        others = [u["name"] for u in running if isinstance(u, dict)]
        if others:
            report.notes.append(f"capacity: other servers were running: {', '.join(others)}")
        stop = f"/tmp/cablab-bench-stop-{os.getpid()}"
        samples: dict[str, str] = {}

        def sample(host: str) -> None:
            samples[host] = self.nodes.try_run(host, "bash -c %s sampler %s", SAMPLER, stop).stdout

        samplers = [threading.Thread(target=sample, args=(h,), daemon=True) for h in hosts]
        for t in samplers:
            t.start()
        time.sleep(3)
        batch, extra = users[:count], users[count] if len(users) > count else None
        busy_at_ready: list[tuple[float, float]] = []  # --vms-here: (ready, this machine's busy CPU-s then)
        busy0 = host_busy() if self.vms_here else None
        t0 = time.time()
        # The ready servers are kept active (a request through the proxy every KEEPALIVE s) until the
        # one more has been tried: the idle culler must not make room for it (the lab's culls after 180 s).
        ready_users: list[str] = []
        done = threading.Event()

        def keepalive() -> None:
            while not done.wait(KEEPALIVE):
                for u in list(ready_users):
                    self.answers(u)

        threading.Thread(target=keepalive, name="capacity-keepalive", daemon=True).start()

        def one(user: str) -> tuple[str, Optional[float], str]:
            r = self.api("POST", f"/users/{user}/server")
            if r.status not in (201, 202):
                return user, None, f"start: {r}"
            ready, why = self.wait_ready(user, interval=2.0)
            if ready is not None:
                ready_users.append(user)
                if busy0 is not None:
                    busy_at_ready.append((ready, host_busy()))
            return user, ready, why

        try:
            with ThreadPoolExecutor(len(batch)) as pool:
                results = list(pool.map(one, batch))
            ready = [r for _, r, _ in results if r is not None]
            c = report.capacity
            c |= {"started": len(batch), "ready": len(ready), "failures": len(batch) - len(ready),
                  "errors": {u: why for u, r, why in results if r is None},
                  "ready_s": {u: round(r - t0, 1) for u, r, _ in results if r is not None},
                  "all_ready_s": round(max(ready) - t0, 1) if len(ready) == len(batch) else None}
            nodes = self.docker.client.api.nodes()
            cpus = {n["Description"]["Hostname"]: n["Description"]["Resources"]["NanoCPUs"] / 1e9 for n in nodes}
            c["memory_mib"] = {n["Description"]["Hostname"]: round(n["Description"]["Resources"]["MemoryBytes"] / 2**20)
                               for n in nodes}
            c["notebook_cpus"] = sum(cpus.get(h, 0) for h in hosts)
            if report.hub and report.hub.p50 and c["notebook_cpus"]:
                c["ideal_s"] = round(cpu_bound_ideal(report.hub.p50, len(batch), c["notebook_cpus"]), 1)
                c["over_ideal"] = ratio(c["all_ready_s"], c["ideal_s"])
            if report.host_cpu_per_spawn and report.host_cpu_per_spawn.p50 and busy0 is not None:
                # The lab's VMs share this machine's CPUs: the workers' CPUs are not independent of
                # the manager's (or of each other), and this is the ideal they can reach together.
                cpus = os.cpu_count() or 1
                c |= {"host_cpus": cpus, "host_cpu_per_spawn_s": report.host_cpu_per_spawn.p50,
                      "host_ideal_s": round(cpu_bound_ideal(report.host_cpu_per_spawn.p50, len(batch), cpus), 1)}
                c["over_host_ideal"] = ratio(c["all_ready_s"], c["host_ideal_s"])
                if busy_at_ready:
                    last, busy_last = max(busy_at_ready)
                    c["host_busy_share"] = round((busy_last - busy0) / cpus / (last - t0), 3)
            # Did a node go down under the load (its tasks then go back to pending elsewhere)? The
            # swarm's own node events over the whole start, on the manager's clock.
            start = t0 + self.offset(self.manager).seconds
            c["node_changes"] = node_state_changes(self.manager_events(start, type="node"), start)
            if extra:
                active = self.api("GET", "/users?state=active").json()
                c["running_before_one_more"] = sorted(u["name"] for u in active if isinstance(u, dict))
                c["one_more"] = self.one_more(extra)
        finally:
            done.set()
            for h in hosts:
                self.nodes.try_run(h, "touch %s", stop)
            for t in samplers:
                t.join(timeout=30)
            report.capacity["peak_memory_mib"] = {h: peak_memory_mib(samples.get(h, "")) for h in hosts}
            for user in users[:count + 1]:
                self.stop(user)
            for h in hosts:
                self.nodes.try_run(h, "rm -f %s", stop)

    def one_more(self, user: str) -> dict[str, Any]:
        """The start of one server too many: refused how fast, and with what message."""
        t0 = time.time()
        r = self.api("POST", f"/users/{user}/server")
        if r.status not in (201, 202):
            return {"user": user, "outcome": f"refused (HTTP {r.status})", "seconds": round(time.time() - t0, 1),
                    "message": r.text[:1000]}
        ready, why = self.wait_ready(user, interval=2.0)
        if ready:
            return {"user": user, "outcome": "STARTED (it should not fit)", "seconds": round(ready - t0, 1)}
        return {"user": user, "outcome": "refused", "seconds": round(time.time() - t0, 1), "message": why}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/spawn.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--ssh-config", required=True, help="OpenSSH config with a `Host <name>` entry per host")
    ap.add_argument("--secrets", help="the spec's secrets directory (default: beside the spec)")
    ap.add_argument("--token-file", help="an admin's JupyterHub API token (lab clusters: made by logging in)")
    ap.add_argument("--users", type=int, default=6, help="how many free userlist users to spawn one by one (default 6)")
    ap.add_argument("--user", action="append", default=[], help="these users instead (repeatable)")
    ap.add_argument("--capacity", type=int, default=10,
                    help="servers started at once, then one more (default 10; 0 skips; needs as many free users + 1)")
    ap.add_argument("--report", help="JSON report (default: lab/reports/spawn-<cluster name>.json)")
    ap.add_argument("--vms-here", action="store_true",
                    help="the cluster's VMs run on this machine (the lab): also this machine's CPU-seconds per "
                         "spawn, and the capacity ideal its CPUs allow")
    ap.add_argument("--hub-wait", choices=HUB_WAITS, default="progress",
                    help="how the bench waits for a hub spawn: the hub's progress stream, as JupyterHub's spawn "
                         "page (default), or polling /api/status through the proxy (the bench before the "
                         "fourteenth session: 4 requests a second in §1, one per 2 s per user in §2)")
    args = ap.parse_args(argv)

    bench = Bench(args.spec, args.ssh_config, args.secrets, args.token_file, vms_here=args.vms_here,
                  hub_wait=args.hub_wait)
    report = Report(bench.cluster.name, time.strftime("%Y-%m-%dT%H:%M:%S%z"), hub_wait=args.hub_wait,
                    hub_host=bench.cluster.hub_host.name)
    out = Path(args.report or ROOT / "lab" / "reports" / f"spawn-{bench.cluster.name}.json")
    try:
        free = bench.free_users()
        users = args.user or free[:args.users]
        report.users = users
        bench.remove_leftovers(report)
        bench.spawns(users, report)
        if args.capacity:
            # Bench users first (the lab's bench01..), so the checks' users stay for the checks.
            pool = sorted(free, key=lambda n: (not n.startswith("bench"), free.index(n)))
            if len(pool) < args.capacity + 1:
                report.notes.append(f"capacity skipped: {len(pool)} free users, {args.capacity + 1} needed")
            else:
                log(f"capacity: {args.capacity} servers at once, then one more")
                bench.capacity(pool[:args.capacity + 1], args.capacity, report)
    finally:
        bench.close()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.to_json())
        print(report.table())
        print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # cablab_cluster and lab from this checkout
    sys.exit(main())

"""A server's start on this machine's own Docker in swarm mode, natively, and what the hub's spawner's
check schedules add to it (issue 12).

    python benchmarks/native_start.py [--image cablab/singleuser:lab] [--runs 6] [--report FILE]

The lab runs under emulation, where a server needs ~7 s after its container starts, so the lab cannot
show what the spawner's own waits cost on a real cluster, where a server answers a fraction of a second
after its container starts. This measures such a start: the single-user image as a swarm service
(`--network host`, one CPU, a tmpfs home, as the spawn benchmark's floor: plain `jupyter-server`)
on this machine's Docker, made a one-node swarm for the run (and left again if it was not one):
service create → its task running (as the Docker API reports it, asked every 20 ms) → the server's
first HTTP answer (asked every 20 ms). Then, from those measured times, when the spawner's two waits
find each step: its task checks (cablab_hub.SwarmSpawner.start_object) and, from there, its answer
checks (wait_until_answering), with the schedules of cablab_hub.checks: the one configured now
(start_check_interval, ready_check_first, ready_check_interval) and the earlier fixed one (task checks
1.0 s apart, then 1.5 times longer each time; answer checks every 0.5 s). The checks' own durations
(milliseconds natively) are not added: the figures are the schedules' delays, computed, not a hub's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.extension import answers, publish  # noqa: E402
from benchmarks.spawn import Summary, floor_task_template, ratio  # noqa: E402

HOME = "/home/jovyan"
PORT0 = 19100
EVERY = 0.02  # s between this benchmark's own asks (task state, answer)


def schedules() -> dict[str, tuple]:
    """name -> (task check delays, answer check delays) factories: the spawner's now and before."""
    from cablab_cluster.bundle import cablab_hub as hub

    traits = hub.CablabSwarmSpawner.class_traits()
    task_first = traits["start_check_interval"].default_value
    ready_first = traits["ready_check_first"].default_value
    ready_most = traits["ready_check_interval"].default_value
    return {
        "now": (lambda: hub.checks(task_first, hub.TASK_CHECK_MOST), lambda: hub.checks(ready_first, ready_most)),
        # before 3fe8eee: task checks 1.0 s apart, then 1.5 times longer each time up to 5 s; answers every 0.5 s
        "before": (lambda: hub.checks(1.0, 5.0), lambda: hub.checks(0.5, 0.5)),
    }


def found_at(ready_at: float, start: float, delays: Iterator[float]) -> float:
    """When a wait that checks at `start`, then after each of `delays`, first finds a state reached at
    `ready_at` (all times in s from the same origin)."""
    at = start
    while at < ready_at:
        at += next(delays)
    return at


def spawner_sees(running: float, answered: float, task_delays: Iterator[float],
                 answer_delays: Iterator[float]) -> float:
    """When the spawner's start returns for a task running at `running` s and a server answering at
    `answered` s after the service's creation (t = 0): the task checks from 0, then the answer checks
    from the check that found the task running."""
    seen_running = found_at(running, 0.0, task_delays)
    return found_at(answered, seen_running, answer_delays)


@dataclass
class Start:
    running_s: float
    answered_s: float
    spawner_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    image: str
    when: str
    starts: list[Start] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    running: Optional[Summary] = None
    answered: Optional[Summary] = None
    spawner: dict[str, Summary] = field(default_factory=dict)
    over_answered_p50: dict[str, Optional[float]] = field(default_factory=dict)

    def summarize(self) -> None:
        self.running = Summary.of(s.running_s for s in self.starts)
        self.answered = Summary.of(s.answered_s for s in self.starts)
        for name in schedules():
            self.spawner[name] = Summary.of(s.spawner_s[name] for s in self.starts if name in s.spawner_s)
            self.over_answered_p50[name] = ratio(self.spawner[name].p50, self.answered.p50)

    def table(self) -> str:
        def f(x: Optional[float]) -> str:
            return "—" if x is None else f"{x:.2f}"

        rows = [f"{self.image} as a swarm service on this machine's Docker, natively (s from service create)",
                "                                           n    p50    min    max"]
        named = [("task running", self.running), ("the server's first answer", self.answered)]
        named += [(f"the spawner finds it ({name} schedules)", s) for name, s in self.spawner.items()]
        for label, s in named:
            if s is not None and s.n:
                rows.append(f"{label:<42} {s.n:>2} {f(s.p50):>6} {f(s.min):>6} {f(s.max):>6}")
        for name, r in self.over_answered_p50.items():
            rows.append(f"spawner ({name}) p50 / first answer p50: {r if r is not None else '—'}")
        rows += [f"failed: {x}" for x in self.failures]
        return "\n".join(rows)


def one_start(client, image: str, name: str, port: int, timeout: float) -> Start:
    from docker.types import ContainerSpec, Resources, RestartPolicy, TaskTemplate

    args = floor_task_template({}, HOME, port)["ContainerSpec"]["Args"]
    args = [a.replace("--ServerApp.ip=0.0.0.0", "--ServerApp.ip=127.0.0.1") for a in args]
    spec = ContainerSpec(image, args=args, mounts=[{"Type": "tmpfs", "Target": HOME}])
    template = TaskTemplate(spec, resources=Resources(cpu_limit=1_000_000_000),
                            restart_policy=RestartPolicy(condition="none"), networks=["host"])
    t0 = time.monotonic()
    client.api.create_service(template, name=name)
    running = answered = None
    url = f"http://127.0.0.1:{port}/api"
    try:
        while time.monotonic() - t0 < timeout:
            if running is None:
                tasks = client.api.tasks(filters={"service": name})
                if any((t.get("Status") or {}).get("State") == "running" for t in tasks):
                    running = time.monotonic() - t0
            if answers(url):
                answered = time.monotonic() - t0
                break
            time.sleep(EVERY)
    finally:
        client.api.remove_service(name)
    if answered is None:
        raise RuntimeError(f"no answer within {timeout:g} s")
    start = Start(round(running if running is not None else answered, 3), round(answered, 3))
    for sched, (task_delays, answer_delays) in schedules().items():
        start.spawner_s[sched] = round(spawner_sees(start.running_s, start.answered_s, task_delays(), answer_delays()), 3)
    return start


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default="cablab/singleuser:lab")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--report", help="JSON report (default: lab/reports/native-start.json)")
    args = ap.parse_args(argv)
    import docker

    client = docker.from_env()
    try:
        client.images.get(args.image)
    except docker.errors.ImageNotFound:
        print(f"native_start: no image {args.image} in this machine's Docker (the lab's images phase builds it)",
              file=sys.stderr)
        return 2
    joined = False
    if client.info().get("Swarm", {}).get("LocalNodeState") != "active":
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        joined = True
    report = Report(args.image, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        for i in range(args.runs):
            try:
                start = one_start(client, args.image, f"cablab-native-{i + 1}", PORT0 + i, args.timeout)
            except (RuntimeError, docker.errors.APIError) as exc:
                report.failures.append(f"#{i + 1}: {exc}")
                print(f"[native] #{i + 1}: failed: {exc}", flush=True)
                continue
            report.starts.append(start)
            print(f"[native] #{i + 1}/{args.runs}: running {start.running_s:.2f} s, answered {start.answered_s:.2f} s, "
                  f"spawner " + ", ".join(f"{k} {v:.2f} s" for k, v in start.spawner_s.items()), flush=True)
            time.sleep(2)  # the removed task's container goes before the next
    finally:
        if joined:
            client.swarm.leave(force=True)
    publish(report, args.report, "native-start.json")
    return 0 if report.starts else 1


if __name__ == "__main__":
    sys.exit(main())

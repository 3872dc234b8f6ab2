"""The fault drills' pure logic (lab/drills.py); the drills themselves need the VM lab."""

from __future__ import annotations

import pytest

from lab import drills
from lab.drills import DrillFailed, Task


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


def test_event_stream_messages_of_a_failed_spawn():
    text = ('data: {"progress": 50, "message": "pending"}\n\n'
            'data: {"progress": 100, "failed": true, "message": "Spawn failed: node node3 cannot take a new server"}\n\n'
            ': keepalive\n')
    events = drills.event_stream_messages(text)
    assert [e["progress"] for e in events] == [50, 100]
    assert events[-1]["failed"] is True and "node3" in events[-1]["message"]

"""Servers started at the session's start (cablab_cluster/checks/early.py), with fake servers."""

from __future__ import annotations

import threading

import pytest

from cablab_cluster.checks import early as early_mod
from cablab_cluster.checks.early import CLAIMED_BY, EarlyStarts, Planned, Role, early_plan
from cablab_cluster.spec import load_spec

ALL = set(CLAIMED_BY.values())
USERS = {"alice", "bob", "carol", "dave", "erin", "frank"}


def test_the_plan_spreads_the_roles_over_the_notebook_nodes(write_spec):
    cluster = load_spec(write_spec()).cluster
    plan = early_plan(cluster, USERS, "bob", ALL)
    assert {(p.user, p.node, p.role) for p in plan} == {
        ("bob", "node2", Role.DAY_ONE), ("erin", "node3", Role.MEMORY),
        ("carol", "node2", Role.IDLE), ("dave", "node3", Role.BUSY)}


def test_the_plan_starts_only_for_selected_checks_users_and_settings(write_spec):
    cluster = load_spec(write_spec()).cluster
    assert early_plan(cluster, USERS, "bob", {"test_swarm_is_up"}) == []
    only_day = early_plan(cluster, USERS, "bob", {CLAIMED_BY[Role.DAY_ONE]})
    assert [p.user for p in only_day] == ["bob"]
    assert "carol" not in {p.user for p in early_plan(cluster, USERS - {"carol"}, "bob", ALL)}

    def long_cull(d):
        d["hub"]["users"]["cull"]["timeout"] = 3600

    def github_only(d):
        d["hub"]["auth"]["lab_password"] = False

    assert {p.user for p in early_plan(load_spec(write_spec(long_cull)).cluster, USERS, "bob", ALL)} == {"bob", "erin"}
    assert early_plan(load_spec(write_spec(github_only)).cluster, USERS, "bob", ALL) == []


class FakeServer:
    def __init__(self, name: str, fail: str = ""):
        self.name, self.fail = name, fail
        self.calls: list[str] = []
        self.ready = threading.Event()

    def stop(self) -> None:
        self.calls.append("stop")

    def start(self, node: str) -> None:
        self.calls.append(f"start {node}")
        if self.fail:
            raise AssertionError(self.fail)


def test_a_claim_returns_the_started_server_and_ends_its_keepalive(monkeypatch):
    monkeypatch.setattr(early_mod, "KEEPALIVE_EVERY", 0.01)
    starts = EarlyStarts(start_timeout=30)
    server = FakeServer("bob")
    pings = threading.Event()
    starts.start(Planned("bob", "node2", Role.DAY_ONE), lambda name: server, lambda s: pings.set(),
                 then=lambda entry: entry.info.update(followed=True))
    assert pings.wait(5)  # kept active until claimed
    got = starts.claim("bob")
    assert got.server is server and got.seconds is not None and got.info == {"followed": True}
    assert server.calls[:2] == ["stop", "start node2"]
    got.thread.join(5)
    assert not got.thread.is_alive()
    assert starts.claim("nobody") is None
    starts.close()
    assert server.calls[-1] == "stop"


def test_a_failed_start_fails_the_check_that_claims_it():
    starts = EarlyStarts(start_timeout=30)
    starts.start(Planned("erin", "node3", Role.MEMORY), lambda name: FakeServer(name, fail="no node"), None)
    with pytest.raises(AssertionError, match="erin's server, started at the session's start: no node"):
        starts.claim("erin")


def test_a_borrowed_server_stays_kept_active_for_the_check_that_claims_it(monkeypatch):
    """borrow: the server once ready, its keepalive going on (a borrowing check neither stops nor
    restarts it); the culler's servers are never lent; a failed start raises for the borrower too."""
    monkeypatch.setattr(early_mod, "KEEPALIVE_EVERY", 0.01)
    starts = EarlyStarts(start_timeout=30)
    servers = {name: FakeServer(name) for name in ("bob", "carol", "dave", "erin")}
    pings = {name: threading.Event() for name in servers}
    for planned in (Planned("bob", "node2", Role.DAY_ONE), Planned("carol", "node2", Role.IDLE),
                    Planned("dave", "node3", Role.BUSY), Planned("erin", "node3", Role.MEMORY)):
        starts.start(planned, servers.__getitem__, lambda s: pings[s.name].set())
    assert starts.borrowable("node2") == ["bob"] and starts.borrowable("node3") == ["erin"]
    assert starts.borrowable("node9") == []
    got = starts.borrow("bob")
    assert got.server is servers["bob"] and got.ready_at is not None
    pings["bob"].clear()
    assert pings["bob"].wait(5) and got.thread.is_alive()  # still kept active
    assert starts.claim("bob") is got
    got.thread.join(5)
    assert not got.thread.is_alive()
    assert starts.borrow("nobody") is None
    starts.close()

    failing = EarlyStarts(start_timeout=30)
    failing.start(Planned("erin", "node3", Role.MEMORY), lambda name: FakeServer(name, fail="no node"), None)
    with pytest.raises(AssertionError, match="erin's server, started at the session's start: no node"):
        failing.borrow("erin")


def test_a_lane_runs_its_visit_beside_the_caller_and_hands_over_its_result_or_its_failure():
    gate = threading.Event()
    lane = early_mod.Lane("browser", lambda: gate.wait(10) and {"browser: sign in -> JupyterLab usable": 1.5})
    assert lane.thread.is_alive()  # it runs while the caller goes on
    gate.set()
    assert lane.claim(timeout=10) == {"browser: sign in -> JupyterLab usable": 1.5}

    def fails():
        raise AssertionError("no plot in 01-explore-the-cube.ipynb")

    with pytest.raises(AssertionError, match="no plot"):
        early_mod.Lane("browser", fails).claim(timeout=10)
    stuck = threading.Event()
    with pytest.raises(AssertionError, match="did not end in 0 s"):
        early_mod.Lane("browser", lambda: stuck.wait(10)).claim(timeout=0.05)
    stuck.set()


def test_a_follow_up_is_waited_for_by_borrowers_and_by_a_claim_that_asks(monkeypatch):
    """The memory check's kernel grows past its limit once erin's server is ready: a borrower's docker
    exec waits until it has ended, the claim for its outcome too; the keepalive goes on meanwhile and
    ends with the claim."""
    monkeypatch.setattr(early_mod, "KEEPALIVE_EVERY", 0.01)
    starts = EarlyStarts(start_timeout=30)
    server = FakeServer("erin")
    gate, pings = threading.Event(), threading.Event()

    def grow(entry):
        assert gate.wait(10)
        entry.info["outcome"] = "dead"

    starts.start(Planned("erin", "node3", Role.MEMORY), lambda name: server, lambda s: pings.set(), then=grow)
    borrowed: list = []
    borrower = threading.Thread(target=lambda: borrowed.append(starts.borrow("erin")))
    borrower.start()
    borrower.join(0.3)
    assert borrower.is_alive() and not borrowed  # the kernel still grows
    entry = starts.started["erin"]
    assert entry.ready_at is not None and not entry.followed.is_set()
    gate.set()
    borrower.join(5)
    assert borrowed == [entry] and entry.info == {"outcome": "dead"}
    assert pings.wait(5) and entry.thread.is_alive()  # kept active after the follow-up
    assert starts.claim("erin", wait_for_follow_up=True) is entry
    entry.thread.join(5)
    assert not entry.thread.is_alive()
    starts.close()


def test_a_failed_follow_up_fails_its_claim_and_never_blocks_a_borrower():
    starts = EarlyStarts(start_timeout=30)

    def grow(entry):
        raise AssertionError("the kernel allocated 960 MiB past erin's 320M limit")

    starts.start(Planned("erin", "node3", Role.MEMORY), FakeServer, None, then=grow)
    with pytest.raises(AssertionError, match="started at the session's start: the kernel allocated 960 MiB"):
        starts.borrow("erin")
    with pytest.raises(AssertionError, match="past erin's 320M limit"):
        starts.claim("erin", wait_for_follow_up=True)


def test_settled_returns_once_every_start_is_ready_or_failed():
    starts = EarlyStarts(start_timeout=30)
    gate = threading.Event()

    class Slow(FakeServer):
        def start(self, node: str) -> None:
            assert gate.wait(10)
            super().start(node)

    starts.start(Planned("bob", "node2", Role.DAY_ONE), Slow, None)
    starts.start(Planned("erin", "node3", Role.MEMORY), lambda name: FakeServer(name, fail="no node"), None)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (starts.settled(), done.set()))
    waiter.start()
    assert not done.wait(0.3)  # bob's start has not ended
    gate.set()
    assert done.wait(5)
    assert starts.started["bob"].ready_at is not None and starts.started["erin"].error is not None
    waiter.join(5)

"""Servers started at the session's start (cablab_cluster/checks/early.py), with fake servers."""

from __future__ import annotations

import threading
import time

import pytest

from cablab_cluster.checks import early as early_mod
from cablab_cluster.checks.early import CLAIMED_BY, EarlyStarts, Planned, Role, early_plan
from cablab_cluster.spec import load_spec

ALL = {name for names in CLAIMED_BY.values() for name in names}
USERS = {"alice", "bob", "carol", "dave", "erin", "frank"}


def test_the_plan_spreads_the_roles_over_the_notebook_nodes(write_spec):
    cluster = load_spec(write_spec()).cluster
    plan = early_plan(cluster, USERS, "bob", ALL)
    # erin's one server serves the memory check, then the culler's as its busy one: no server for dave
    assert [(p.user, p.node, p.role) for p in plan] == [
        ("bob", "node2", Role.DAY_ONE), ("erin", "node3", Role.MEMORY_THEN_BUSY), ("carol", "node2", Role.IDLE)]


def test_the_busy_server_is_daves_where_erins_cannot_serve_both(write_spec):
    cluster = load_spec(write_spec()).cluster
    culler_only = ALL - {early_mod.MEMORY_CHECK}
    assert {(p.user, p.role) for p in early_plan(cluster, USERS, "bob", culler_only)} == {
        ("bob", Role.DAY_ONE), ("carol", Role.IDLE), ("dave", Role.BUSY)}
    memory_only = ALL - {early_mod.CULLER_CHECK}
    assert {(p.user, p.role) for p in early_plan(cluster, USERS, "bob", memory_only)} == {
        ("bob", Role.DAY_ONE), ("erin", Role.MEMORY)}
    assert {(p.user, p.role) for p in early_plan(cluster, USERS - {"erin"}, "bob", ALL)} == {
        ("bob", Role.DAY_ONE), ("carol", Role.IDLE), ("dave", Role.BUSY)}


def test_erins_server_is_lent_and_is_the_busy_one_where_it_serves_both():
    starts = EarlyStarts(start_timeout=30)
    for planned in (Planned("bob", "node2", Role.DAY_ONE), Planned("carol", "node2", Role.IDLE),
                    Planned("erin", "node3", Role.MEMORY_THEN_BUSY)):
        starts.start(planned, FakeServer, None)
    assert starts.borrowable("node3") == ["erin"] and starts.borrowable("node2") == ["bob"]
    assert starts.busy_user() == "erin"
    starts.close()
    assert EarlyStarts(start_timeout=30).busy_user() is None


def test_the_plan_starts_only_for_selected_checks_users_and_settings(write_spec):
    cluster = load_spec(write_spec()).cluster
    assert early_plan(cluster, USERS, "bob", {"test_swarm_is_up"}) == []
    only_day = early_plan(cluster, USERS, "bob", set(CLAIMED_BY[Role.DAY_ONE]))
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


def test_quiet_waits_for_every_follow_up_and_leaves_the_keepalive_on(monkeypatch):
    """The backup lane restarts the hub only once nothing started early asks it anything: the culler's
    watch asks the hub's API until its server is culled."""
    monkeypatch.setattr(early_mod, "KEEPALIVE_EVERY", 0.01)
    starts = EarlyStarts(start_timeout=30)
    gate, pings = threading.Event(), threading.Event()
    starts.start(Planned("carol", "node2", Role.IDLE), FakeServer, None, then=lambda entry: gate.wait(10))
    starts.start(Planned("erin", "node3", Role.MEMORY), FakeServer, lambda s: pings.set())
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (starts.quiet(), done.set()))
    waiter.start()
    assert not done.wait(0.3)  # carol's watch goes on
    gate.set()
    assert done.wait(5)
    assert pings.wait(5) and starts.started["erin"].thread.is_alive()  # erin's server is still kept active
    waiter.join(5)
    starts.close()


def run_day(window, events: list, fail_before_open: bool = False, fail_after_open: bool = False):
    """What the scientist's day does with the window (test_notebook.py), recording each step."""
    try:
        if fail_before_open:
            raise RuntimeError("day one failed")
        window.open()
        events.append("read back")  # reads only
        window.wait_restored(5)
        if fail_after_open:
            raise RuntimeError("a sample failed")
        events.append("samples")  # they write into the home
    except RuntimeError as exc:
        events.append(str(exc))
    finally:
        window.wait_done(5)
        events.append("stop")  # asks the hub


def run_lane(window, events: list, restore_fails: bool = False):
    """What the backup lane does (conftest.py: `lanes`, test_backup.py)."""
    try:
        if not window.ready_to_restart(5):
            events.append("gave up")
            return
        events.append("backup, restore.sh")
        if restore_fails:
            raise AssertionError("restore.sh failed")
        window.restored()
        events.append("hub back")
    except AssertionError as exc:
        events.append(str(exc))
    finally:
        window.done()


def test_the_hub_restarts_while_the_day_runs_its_samples_and_the_day_waits_for_it():
    window = early_mod.HubRestart(expected=True)
    events: list[str] = []
    lane = threading.Thread(target=run_lane, args=(window, events))
    lane.start()
    lane.join(0.2)
    assert lane.is_alive() and events == []  # nothing restarts before the day opens the window
    run_day(window, events)
    lane.join(5)
    assert window.opened_by_day
    # The samples (which write into the home) only after the restore; the stop only once the hub is back.
    assert events.index("backup, restore.sh") < events.index("samples")
    assert events.index("hub back") < events.index("stop") and events[-1] == "stop"


def test_a_failed_restore_never_blocks_the_day_and_a_failed_day_still_waits_for_the_hub():
    window = early_mod.HubRestart(expected=True)
    events: list[str] = []
    lane = threading.Thread(target=run_lane, args=(window, events), kwargs={"restore_fails": True})
    lane.start()
    run_day(window, events)
    lane.join(5)
    assert "restore.sh failed" in events and events[-1] == "stop"  # in time, not after the 5 s waits
    window = early_mod.HubRestart(expected=True)
    events = []
    lane = threading.Thread(target=run_lane, args=(window, events))
    lane.start()
    run_day(window, events, fail_after_open=True)
    lane.join(5)
    assert events.index("hub back") < events.index("stop")


def test_a_day_that_never_opens_it_waits_for_nothing_and_the_lane_runs_when_told_or_gives_up():
    window = early_mod.HubRestart(expected=True)
    events: list[str] = []
    run_day(window, events, fail_before_open=True)
    assert events == ["day one failed", "stop"] and not window.opened_by_day
    lane = threading.Thread(target=run_lane, args=(window, events))
    lane.start()
    window.never()  # test_backup.py, the last check: the lane runs now, after everything
    lane.join(5)
    assert events[-1] == "hub back" and not window.opened_by_day
    cancelled = early_mod.HubRestart(expected=True)
    events = []
    lane = threading.Thread(target=run_lane, args=(cancelled, events))
    lane.start()
    cancelled.cancel()  # the session ended before the backup check
    lane.join(5)
    assert events == ["gave up"]


def test_without_a_backup_lane_the_day_waits_for_nothing():
    window = early_mod.HubRestart()  # not expected: the backup check or the day is not selected
    events: list[str] = []
    run_day(window, events)
    assert events == ["read back", "samples", "stop"]


def test_a_restart_that_does_not_end_fails_the_day_with_what_it_waited_for():
    window = early_mod.HubRestart(expected=True)
    window.open()
    with pytest.raises(AssertionError, match="did not put the database and the homes back in 0 s"):
        window.wait_restored(0.05)
    window.restored()
    window.wait_restored(0.05)
    with pytest.raises(AssertionError, match="hub restart, beside this check, did not end in 0 s"):
        window.wait_done(0.05)


def test_a_wait_with_something_to_do_meanwhile_does_it_in_slices_until_the_restore(monkeypatch):
    monkeypatch.setattr(early_mod, "WAIT_SLICE", 0.05)
    window = early_mod.HubRestart(expected=True)
    window.open()
    slices: list[float] = []
    threading.Timer(0.3, window.restored).start()
    window.wait_restored(5, meanwhile=lambda s: (slices.append(s), time.sleep(0.01)))
    assert window._restored.is_set() and slices and max(slices) <= 0.05
    late = early_mod.HubRestart(expected=True)
    late.open()
    with pytest.raises(AssertionError, match="did not put the database and the homes back in 0 s"):
        late.wait_restored(0.2, meanwhile=lambda s: time.sleep(s))
    early_mod.HubRestart(expected=False).wait_restored(5, meanwhile=slices.append)  # nothing waits

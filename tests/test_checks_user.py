"""The read-only mounts check of the user's container (cablab_cluster/checks/test_user.py), run
here against directories of this machine: `docker exec [-u 0] CID` runs the command locally."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from cablab_cluster.checks import test_user
from cablab_cluster.render import UserMountView


class LocalHost:
    """testinfra's check_output as the checks use it; docker inspect and exec played here."""

    def __init__(self, binds: dict[str, bool]):
        self.binds = binds
        self.calls: list[str] = []

    def check_output(self, command: str, *args: str) -> str:
        line = command % tuple(shlex.quote(a) for a in args)
        self.calls.append(line)
        words = shlex.split(line)
        if words[:2] == ["docker", "inspect"]:
            return json.dumps([{"Destination": d, "RW": rw} for d, rw in self.binds.items()])
        assert words[:2] == ["docker", "exec"], line
        rest = words[2:]
        while rest[0].startswith("-"):  # docker exec's options (-u 0, -w /), then the container
            rest = rest[2:]
        assert rest[0] == "cid", line
        rest = rest[1:]
        done = subprocess.run(rest, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def setup(tmp_path, monkeypatch):
    shares = tmp_path / "mnt"
    mounts = []
    for name in ("cube", "notebooks"):
        real = shares / name
        real.mkdir(parents=True)
        (real / "data").write_text("x")
        link = tmp_path / "home" / name
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(real)
        mounts.append(UserMountView(name, str(real), str(link), str(real), name))
    monkeypatch.setattr(test_user, "user_mounts", lambda cluster: mounts)
    return mounts


def test_links_lead_to_the_read_only_mounts_in_two_execs(tmp_path, monkeypatch):
    mounts = setup(tmp_path, monkeypatch)
    host = LocalHost({m.container_path: False for m in mounts})
    # Not writable: each probe in a directory that is not there (root here writes anywhere else).
    monkeypatch.setattr(test_user.uuid, "uuid4", lambda: type("U", (), {"hex": "nodir/probe"})())
    test_user.check_read_only_mounts({"node2": host}, "node2", "cid", cluster=None)
    assert [c.split()[:3] for c in host.calls] == [["docker", "inspect", "--format"], ["docker", "exec", "cid"],
                                                   ["docker", "exec", "-u"]]
    # root's probes run from /: root_squash keeps root out of the user's home, the container's cwd
    assert host.calls[2].startswith("docker exec -u 0 -w / cid sh -c ")


def test_a_share_root_can_write_fails(tmp_path, monkeypatch):
    mounts = setup(tmp_path, monkeypatch)  # root writes anywhere here: the probes land
    host = LocalHost({m.container_path: False for m in mounts})
    with pytest.raises(AssertionError, match="could write into read-only shares"):
        test_user.check_read_only_mounts({"node2": host}, "node2", "cid", cluster=None)
    assert not list((tmp_path / "mnt" / "cube").glob(".cablab-check-*")), "the probe is removed"


def test_a_link_leading_elsewhere_fails(tmp_path, monkeypatch):
    mounts = setup(tmp_path, monkeypatch)
    (tmp_path / "home" / "cube").unlink()
    (tmp_path / "home" / "cube").symlink_to(tmp_path / "mnt" / "notebooks")
    host = LocalHost({m.container_path: False for m in mounts})
    with pytest.raises(AssertionError, match="leads to .*notebooks, not to the share"):
        test_user.check_read_only_mounts({"node2": host}, "node2", "cid", cluster=None)


def test_a_read_write_bind_fails_before_any_exec(tmp_path, monkeypatch):
    mounts = setup(tmp_path, monkeypatch)
    host = LocalHost({mounts[0].container_path: True, mounts[1].container_path: False})
    with pytest.raises(AssertionError, match="is mounted read-write"):
        test_user.check_read_only_mounts({"node2": host}, "node2", "cid", cluster=None)
    assert len(host.calls) == 1


class FakeSession:
    """The user's hub session as UserServer drives it: the REST API and the progress stream."""

    def __init__(self, stream, models=({"ready": True},)):
        self.stream, self.models = stream, list(models)
        self.calls: list[str] = []

    def api(self, method, path, data=None):
        self.calls.append(f"{method} {path}")
        if method == "POST":
            return type("R", (), {"status": 202})()
        model = self.models.pop(0) if len(self.models) > 1 else self.models[0]
        return type("R", (), {"status": 200, "json": lambda self: {"servers": {"": model} if model else {}}})()

    def events(self, path, headers=None):
        self.calls.append(f"stream {path}")
        if isinstance(self.stream, Exception):
            raise self.stream
        yield from self.stream


def polling_wait_until(check, timeout, what, interval=5.0):
    for _ in range(5):
        got = check()
        if got:
            return got
    raise AssertionError(f"timed out waiting for {what}")


def test_a_start_waits_on_the_progress_stream_without_polling():
    session = FakeSession([{"progress": 50}, {"progress": 100, "ready": True}])
    test_user.UserServer(session, "alice", polling_wait_until).start("node2")
    assert session.calls == ["POST /users/alice/server", "stream /hub/api/users/alice/server/progress"]


def test_a_start_the_stream_says_failed_names_the_hubs_message():
    session = FakeSession([{"progress": 100, "failed": True, "message": "Spawn failed: Timeout"}])
    with pytest.raises(AssertionError, match="alice's server on node3 to be ready: Spawn failed: Timeout; on the first"):
        test_user.UserServer(session, "alice", polling_wait_until).start("node3")


def test_a_start_the_stream_cannot_say_is_polled_on_the_hub():
    from cablab_cluster.checks.hub import StreamRefused

    for stream in (StreamRefused(type("R", (), {"status": 400})()), [{"progress": 50}]):
        session = FakeSession(stream, models=({"ready": False}, {"ready": True}))
        test_user.UserServer(session, "alice", polling_wait_until).start("node2")
        assert session.calls[2:] == ["GET /users/alice"] * 2
    gone = FakeSession([], models=(None,))
    with pytest.raises(AssertionError, match="stopped while starting: on the first manager"):
        test_user.UserServer(gone, "alice", polling_wait_until).start("node2")

"""The shell helpers every provisioner starts with: they change only what
differs, say so in one line per step, and a second run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.spec import load_spec

LAB = Path(__file__).parent.parent / "lab"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the provisioners refuse to run without root")


def script(tmp: Path, body: str, steps: int) -> Path:
    r = Renderer(make_plan(load_spec(LAB / "ubuntu.yml")))
    hp = r.plan.for_host("node2")
    prelude = r.render_template("prelude.sh.j2", host=hp.host, steps=hp.steps[:steps], after=(), why_after="")
    path = tmp / "t.sh"
    path.write_text(prelude + body + r.render_template("footer.sh.j2"))
    return path


BODY = """
step files
install_file 0640 {d}/etc/app.conf <<'CABLAB_EOF'
a = 1
CABLAB_EOF
ensure_dir {d}/data 0:0 0750
step blocks
printf 'keep me\\n' >>{d}/fstab.seed
[ -f {d}/fstab ] || cp {d}/fstab.seed {d}/fstab
ensure_block {d}/fstab shares <<'CABLAB_EOF'
srv:/a /a nfs _netdev 0 0
CABLAB_EOF
"""


def env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "CABLAB_LOG": str(tmp / "log"), "CABLAB_STATE_DIR": str(tmp / "state")}


def run(path: Path, tmp: Path) -> list[str]:
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env(tmp))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def summary(tmp: Path) -> dict:
    """The run's summary (JSON), which tools read instead of the log lines."""
    return json.loads((tmp / "state" / "last-run.json").read_text())


def step_lines(tmp: Path) -> list[str]:
    """The log lines the summary's steps must have printed (the log is for people: same facts)."""
    out = []
    for n, s in enumerate(summary(tmp)["steps"], 1):
        what = f"changed ({';'.join(s['notes'])}) in" if s["changed"] else "ok, no change, in"
        out.append(f"[cablab node2] step {n}/{summary(tmp)['total']} {s['name']}: {what} {s['seconds']:.1f} s")
    return out


def test_first_run_changes_second_run_does_not(tmp_path):
    path = script(tmp_path, BODY.format(d=tmp_path), steps=2)
    first = run(path, tmp_path)
    assert first[1].startswith("[cablab node2] step 1/2 files: changed (wrote ")
    assert first[2].startswith("[cablab node2] step 2/2 blocks: changed (updated ")
    assert first[-1] == "[cablab node2] done: 2 steps, 2 changed: files blocks"
    assert first[1:3] == step_lines(tmp_path)
    s = summary(tmp_path)
    assert (s["host"], s["result"], s["total"], s["changed"]) == ("node2", "ok", 2, 2)
    assert [(x["name"], x["changed"]) for x in s["steps"]] == [("files", True), ("blocks", True)]
    assert s["steps"][0]["notes"] == [f"wrote {tmp_path}/etc/app.conf", f"created {tmp_path}/data",
                                      f"mode 0750 on {tmp_path}/data"]
    assert s["started"] <= s["finished"] and s["finished"].endswith("Z")
    assert oct((tmp_path / "etc/app.conf").stat().st_mode & 0o777) == "0o640"
    assert oct((tmp_path / "data").stat().st_mode & 0o777) == "0o750"
    second = run(path, tmp_path)
    assert second[1:] == [*step_lines(tmp_path), "[cablab node2] done: 2 steps, 0 changed"]
    assert second[1].startswith("[cablab node2] step 1/2 files: ok, no change, in ")
    assert summary(tmp_path)["changed"] == 0 and not any(x["changed"] for x in summary(tmp_path)["steps"])
    fstab = (tmp_path / "fstab").read_text().splitlines()
    assert fstab == ["keep me", "# BEGIN cablab shares", "srv:/a /a nfs _netdev 0 0", "# END cablab shares"]


def test_drift_is_repaired_and_reported(tmp_path):
    path = script(tmp_path, BODY.format(d=tmp_path), steps=2)
    run(path, tmp_path)
    (tmp_path / "etc/app.conf").chmod(0o666)
    (tmp_path / "fstab").write_text("keep me\n# BEGIN cablab shares\nold line\n# END cablab shares\nafter\n")
    out = run(path, tmp_path)
    assert out[1] == step_lines(tmp_path)[0]
    assert summary(tmp_path)["steps"][0]["notes"] == [f"mode 0640 on {tmp_path}/etc/app.conf"]
    assert out[2].startswith("[cablab node2] step 2/2 blocks: changed")
    assert (tmp_path / "fstab").read_text().splitlines() == [  # replaced where it stood
        "keep me", "# BEGIN cablab shares", "srv:/a /a nfs _netdev 0 0", "# END cablab shares", "after"]


def test_two_blocks_in_one_file_settle(tmp_path):
    """fstab holds Docker's LV and the shares: a second run must leave both alone
    (found by the centos lab: each run moved one block behind the other)."""
    body = f"""
step blocks
ensure_block {tmp_path}/fstab docker-data <<'CABLAB_EOF'
/dev/docker/data /var/lib/docker xfs defaults 0 0
CABLAB_EOF
ensure_block {tmp_path}/fstab shares <<'CABLAB_EOF'
srv:/a /a nfs _netdev 0 0
CABLAB_EOF
"""
    (tmp_path / "fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    path = script(tmp_path, body, steps=1)
    assert run(path, tmp_path)[-1] == "[cablab node2] done: 1 steps, 1 changed: blocks"
    first = (tmp_path / "fstab").read_text()
    assert run(path, tmp_path)[-1] == "[cablab node2] done: 1 steps, 0 changed"
    assert (tmp_path / "fstab").read_text() == first == (
        "LABEL=root / ext4 defaults 0 1\n"
        "# BEGIN cablab docker-data\n/dev/docker/data /var/lib/docker xfs defaults 0 0\n# END cablab docker-data\n"
        "# BEGIN cablab shares\nsrv:/a /a nfs _netdev 0 0\n# END cablab shares\n")


def test_a_failing_command_stops_the_script_and_names_the_step(tmp_path):
    path = script(tmp_path, "step broken\nrun false\nstep never\n", steps=2)
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env(tmp_path))
    assert proc.returncode == 1
    assert "ERROR in step broken: command failed: false" in proc.stderr
    assert "never" not in proc.stdout
    s = summary(tmp_path)
    assert (s["result"], s["failed_step"], s["steps"]) == ("failed", "broken", [])
    assert s["error"].startswith("command failed: false (full log: ")


def test_each_step_line_carries_its_wall_time(tmp_path):
    body = "step slow\nsleep 0.4\nstep quick\ntrue\n"
    out = run(script(tmp_path, body, steps=2), tmp_path)
    assert out[1:3] == step_lines(tmp_path)
    slow, quick = (s["seconds"] for s in summary(tmp_path)["steps"])
    assert 0.4 <= slow < 5, out
    assert quick < 0.4, out


def test_ensure_packages_takes_this_familys_names_and_installs_what_is_missing(tmp_path):
    """One word per family (`apt=a b`, `dnf=c`), as the steps' package data renders."""
    record = tmp_path / "installed"
    body = f"""
step packages
pkg_installed() {{ [ "$1" = have ]; }}
pkg_install() {{ printf '%s\\n' "$*" >>{record}; }}
FAMILY=apt
ensure_packages 'apt=have need too' dnf=other 'zypper=nope'
FAMILY=dnf
ensure_packages 'apt=have need' dnf=other
ensure_packages apt=need dnf=
"""
    out = run(script(tmp_path, body, steps=1), tmp_path)
    assert record.read_text().splitlines() == ["need too", "other"]
    assert "changed (installed need too;installed other)" in out[1]


def test_the_summary_is_json_whatever_the_notes_hold(tmp_path):
    """Notes carry paths and messages: quotes, backslashes, tabs, newlines, control characters."""
    body = r"""step odd
changed $'a "quoted" \\ back\\tslash\ttab\nnewline\x01ctl\x7f del é'
"""
    run(script(tmp_path, body, steps=1), tmp_path)
    assert summary(tmp_path)["steps"][0]["notes"] == ['a "quoted" \\ back\\tslash\ttab\nnewline\x01ctl\x7f del é']


FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl as the provisioner asks it: every call logged; enable/start remembered in files.
echo "$*" >>"$FAKE/calls"
[ "$1" != --quiet ] || shift
case "$1" in
  is-enabled) [ -e "$FAKE/enabled-${3:-$2}" ] ;;
  is-active) [ -e "$FAKE/active-${3:-$2}" ] ;;
  enable) : >"$FAKE/enabled-$3" ;;
  start) : >"$FAKE/active-$2" ;;
esac
"""

UNITS = """
step units
install_file 0644 {d}/a.service <<'CABLAB_EOF'
[Service]
ExecStart=/bin/true
CABLAB_EOF
if [ "$LAST_CHANGED" = 1 ]; then units_changed; fi
ensure_service a.service
install_file 0644 {d}/b.conf <<'CABLAB_EOF'
[Unit]
After=a.service
CABLAB_EOF
if [ "$LAST_CHANGED" = 1 ]; then units_changed; fi
ensure_enabled b.service
step after
{fail}
"""


def test_written_units_reach_systemd_at_one_reload_when_needed_and_after_a_stopped_run(tmp_path):
    """A unit file, its enabling and a drop-in: one `daemon-reload` before the start that needs it,
    one at the end for what came after; no reload in a run that changed nothing. A run that stopped
    after writing a unit leaves its mark, and the next run reloads although it writes nothing."""
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "bin" / "systemctl").chmod(0o755)
    environ = {**env(tmp_path), "FAKE": str(fake), "PATH": f"{fake / 'bin'}:{os.environ['PATH']}"}

    def go(body: str, rc: int = 0) -> list[str]:
        calls = fake / "calls"
        calls.unlink(missing_ok=True)
        proc = subprocess.run(["bash", str(script(tmp_path, body, steps=2))], capture_output=True, text=True,
                              env=environ)
        assert proc.returncode == rc, proc.stderr
        return calls.read_text().splitlines() if calls.exists() else []

    d = tmp_path / "units"
    d.mkdir()
    assert go(UNITS.format(d=d, fail="")) == [
        "is-enabled --quiet a.service", "enable --no-reload a.service", "is-active --quiet a.service",
        "daemon-reload", "start a.service",  # a.service's file is known before it starts
        "is-enabled --quiet b.service", "enable --no-reload b.service",
        "daemon-reload"]  # the drop-in and b's links, at the end
    assert go(UNITS.format(d=d, fail="")) == ["is-enabled --quiet a.service", "is-active --quiet a.service",
                                              "is-enabled --quiet b.service"]  # nothing changed: no reload

    (d / "b.conf").write_text("changed by hand\n")
    assert "daemon-reload" not in go(UNITS.format(d=d, fail="run false"), rc=1)  # stopped before the end
    assert go(UNITS.format(d=d, fail=""))[-1] == "daemon-reload"  # the file is right now, the mark says reload
    assert "daemon-reload" not in go(UNITS.format(d=d, fail=""))


COUNTING_MKTEMP = """#!/bin/sh
echo mktemp >>"$FAKE/calls"
exec /usr/bin/mktemp "$@"
"""


def test_files_are_compared_through_one_scratch_directory_removed_at_the_end(tmp_path):
    """install_file and ensure_block, every run and every file: one mktemp a run (each fork costs on
    an emulated VM), the scratch gone when the script ends, whether it ended well or not."""
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "mktemp").write_text(COUNTING_MKTEMP)
    (fake / "bin" / "mktemp").chmod(0o755)
    scratch_home = tmp_path / "tmp"
    scratch_home.mkdir()
    environ = {**env(tmp_path), "FAKE": str(fake), "PATH": f"{fake / 'bin'}:{os.environ['PATH']}",
               "TMPDIR": str(scratch_home)}
    d = tmp_path / "files"
    d.mkdir()
    body = BODY.format(d=d) + f"install_file 0600 {d}/etc/other.conf <<'CABLAB_EOF'\nb = 2\nCABLAB_EOF\n"
    for fail, rc in (("", 0), ("", 0), ("run false", 1)):
        (fake / "calls").unlink(missing_ok=True)
        proc = subprocess.run(["bash", str(script(tmp_path, body + fail + "\n", steps=2))], capture_output=True,
                              text=True, env=environ)
        assert proc.returncode == rc, proc.stderr
        assert (fake / "calls").read_text().splitlines() == ["mktemp"]
        assert list(scratch_home.iterdir()) == []
    assert (d / "etc" / "other.conf").read_text() == "b = 2\n" and (d / "etc" / "app.conf").read_text() == "a = 1\n"
    assert (d / "fstab").read_text().count("srv:/a /a nfs") == 1


def test_services_running_needs_a_running_task_of_every_service_named(tmp_path):
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "docker").write_text('#!/bin/sh\ncat "$FAKE/tasks"\n')
    (fake / "bin" / "docker").chmod(0o755)
    environ = {**env(tmp_path), "FAKE": str(fake), "PATH": f"{fake / 'bin'}:{os.environ['PATH']}"}
    probe = script(tmp_path, "\nstep probe\nif services_running cablab_proxy cablab_hub; then log RUNNING; "
                             "else log NOT; fi\n", steps=1)

    def answer(tasks: str) -> str:
        (fake / "tasks").write_text(tasks)
        proc = subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=environ)
        assert proc.returncode == 0, proc.stderr
        return "RUNNING" if any(line.endswith("RUNNING") for line in proc.stdout.splitlines()) else "NOT"

    assert answer("cablab_proxy.1 Running 5 seconds ago\ncablab_hub.1 Running 2 seconds ago\n") == "RUNNING"
    assert answer("cablab_proxy.1 Running 5 seconds ago\ncablab_hub.1 Starting 2 seconds ago\n") == "NOT"
    assert answer("cablab_proxy.1 Running 5 seconds ago\n") == "NOT"  # no task of the hub yet
    assert answer("cablab_hub_other.1 Running 5 seconds ago\ncablab_proxy.1 Running 1 second ago\n") == "NOT"
    assert answer("") == "NOT"

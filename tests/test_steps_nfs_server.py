"""The NFS server step (steps/nfs_server.sh.j2) run for real in the sandbox of tests/hostile/: the
exports file is rewritten from the spec (a removed host's line goes, `exportfs -ra`), and a share
still exported to a client the spec does not name is withdrawn (`exportfs -u`).

Stub state: /var/lib/cablab-stub-exports is what `exportfs -s` prints (the kernel's export table).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cablab_cluster.plan import make_plan
from cablab_cluster.render import Renderer
from cablab_cluster.spec import load_spec

from test_hostile import Run, _run

LAB = Path(__file__).parent.parent / "lab"
EXPORTS = "/etc/exports.d/cablab.exports"


@pytest.fixture(scope="module")
def script() -> str:
    plan = make_plan(load_spec(LAB / "ubuntu.yml"))
    r = Renderer(plan)
    hp = plan.for_host("node1")
    nfs = [s for s in hp.steps if s.kind == "nfs_server"]
    return "\n".join([r.render_template("prelude.sh.j2", host=hp.host, steps=nfs, after=(), why_after=""),
                      *(r.step(s) for s in nfs), r.render_template("footer.sh.j2")])


def run_steps(script: str, *steps: str) -> Run:
    lines = ["set -euo pipefail", "cat >/provision-nfs.sh <<'SCRIPT_EOF'", script.rstrip("\n"), "SCRIPT_EOF",
             'provision() { exportfs mark "$1"; echo "== $1"; bash /provision-nfs.sh 2>&1 | sed -n "s/^.*\\(step \\|done\\)/\\1/p"; }',
             *steps]
    run = _run("\n".join(lines) + "\n", {"STUB_SECRETS": "", "STUB_FILES": "", "STUB_DISKS": "", "STUB_FINDMNT": "",
                                         "STUB_CONTROL": "true", "STUB_PIN": "24.0", "STUB_DRIVER": "overlay2"}, "apt")
    assert run.rc == 0, run.output
    return run


def exportfs(run: Run, start: str, end: str | None = None) -> list[tuple[str, ...]]:
    calls = list(run.calls)
    first = calls.index(("exportfs", "mark", start)) + 1
    last = calls.index(("exportfs", "mark", end)) if end else len(calls)
    return [c[1:] for c in calls[first:last] if c[0] == "exportfs" and c[1:2] != ("-s",)]


def test_a_removed_hosts_exports_are_withdrawn(script):
    table = "\\n".join(f"{p}  {a}(rw,sync)" for p in ("/srv/nfs/homes", "/srv/nfs/cube", "/srv/nfs/notebooks")
                       for a in ("192.168.56.12", "192.168.56.13", "192.168.56.99"))
    run = run_steps(script, f"install -d /etc/exports.d && echo '/srv/nfs/homes 192.168.56.99(rw)' >{EXPORTS}",
                    f"printf '{table}\\n' >/var/lib/cablab-stub-exports", "provision stale", f"cat {EXPORTS}")
    calls = exportfs(run, "stale")
    assert ("-ra",) in calls  # the rewritten file re-exported
    assert [c for c in calls if c[0] == "-u"] == [("-u", f"192.168.56.99:{p}")
                                                  for p in ("/srv/nfs/homes", "/srv/nfs/cube", "/srv/nfs/notebooks")]
    assert "192.168.56.99" not in run.output.split("== stale", 1)[1].split("done", 1)[1]  # not in the new file
    assert "withdrew /srv/nfs/homes from 192.168.56.99" in run.output


def test_nothing_to_withdraw_changes_nothing(script):
    table = "\\n".join(f"{p}  {a}(rw,sync)" for p in ("/srv/nfs/homes", "/srv/nfs/cube", "/srv/nfs/notebooks")
                       for a in ("192.168.56.12", "192.168.56.13"))
    run = run_steps(script, f"printf '{table}\\n' >/var/lib/cablab-stub-exports", "provision first", "provision again")
    assert [c for c in exportfs(run, "first") if c[0] == "-u"] == []
    assert exportfs(run, "again") == []  # (the stubs' packages and owners do not settle: not a "0 changed" here)
    assert "withdrew" not in run.output
